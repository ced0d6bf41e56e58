"""The offline illustrator (Pillow, no model, no network), split along its seams.

- ``painter``: drawing primitives on a supersampled canvas (colours, shapes, gradients);
- ``page``: one page being drawn (theme ink and skies, outfit, composition);
- ``characters``: the child, with an empty head circle and bare hands;
- ``scenes_sky``, ``scenes_sea``, ``scenes_land``: each theme's scenery;
- ``anchor``: what a base PNG records for ``personalize`` (face anchor, character);
- ``compositing``: putting the child's face from the photo into the head circle;
- ``illustrator``: ``LocalIllustrator``, what the provider registry builds for
  ``IMAGE_PROVIDER=local``.
"""
from pipeline.providers.offline_images.anchor import (
    ANCHOR_KEY,
    CHARACTER_KEY,
    DEFAULT_ANCHOR,
    PLACEHOLDER_SKIN,
    Anchor,
    default_anchor,
    read_anchor,
)
from pipeline.providers.offline_images.compositing import FACE_MARGIN, personalize_png
from pipeline.providers.offline_images.illustrator import LocalIllustrator
from pipeline.providers.offline_images.painter import HEIGHT, WIDTH

__all__ = [
    "ANCHOR_KEY", "CHARACTER_KEY", "DEFAULT_ANCHOR", "FACE_MARGIN", "HEIGHT", "PLACEHOLDER_SKIN", "WIDTH",
    "Anchor", "LocalIllustrator", "default_anchor", "personalize_png", "read_anchor",
]
