"""One page being drawn: the theme's ink and skies, the story's outfit, the composition so far.

``Page`` is what the illustrator hands to a scene painter and to ``characters.draw_child``;
positions and sizes in it are page pixels (960x720).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from PIL import Image

from pipeline.providers.offline_images.anchor import Anchor
from pipeline.providers.offline_images.painter import RGB, Painter
from pipeline.providers.profile import CharacterProfile


@dataclass(frozen=True)
class Outfit:
    """The child's clothes for a whole story (RGB colours); ``accent`` trims cap, cape or scarf."""

    shirt: RGB
    pants: RGB
    shoes: RGB
    accent: RGB


_SHIRTS: tuple[RGB, ...] = (
    (240, 104, 92), (250, 186, 56), (82, 156, 228), (84, 196, 158), (168, 126, 222), (250, 146, 58),
)
_PANTS: tuple[RGB, ...] = ((52, 72, 132), (70, 112, 172), (108, 70, 118), (104, 116, 66), (116, 82, 58))
_SHOES: tuple[RGB, ...] = ((214, 60, 60), (250, 250, 245), (60, 52, 64), (64, 120, 200))


def pick_outfit(story_rng: random.Random) -> Outfit:
    """An outfit drawn from the story's style generator (so every page of a story matches)."""
    shirt = story_rng.choice(_SHIRTS)
    accent = story_rng.choice([c for c in _SHIRTS if c != shirt])
    return Outfit(shirt=shirt, pants=story_rng.choice(_PANTS), shoes=story_rng.choice(_SHOES), accent=accent)


@dataclass(frozen=True)
class ThemeStyle:
    """A theme's outline colour and its sky gradients (one drawn per story)."""

    ink: RGB
    skies: tuple[tuple[RGB, RGB, RGB], ...]  # (top, middle, bottom) options, one per story


STYLES: dict[str, ThemeStyle] = {
    "space_adventure": ThemeStyle(ink=(30, 24, 62), skies=(
        ((10, 14, 46), (38, 30, 92), (92, 56, 138)), ((8, 24, 52), (20, 56, 102), (60, 108, 150)),
        ((20, 10, 48), (62, 28, 96), (140, 66, 130)))),
    "underwater": ThemeStyle(ink=(16, 48, 78), skies=(
        ((96, 214, 226), (34, 140, 196), (14, 60, 124)), ((120, 222, 210), (30, 156, 170), (12, 76, 112)),
        ((110, 196, 240), (46, 116, 200), (24, 48, 120)))),
    "enchanted_forest": ThemeStyle(ink=(38, 34, 52), skies=(
        ((44, 58, 112), (118, 104, 176), (250, 194, 170)), ((30, 70, 96), (84, 140, 150), (236, 222, 160)),
        ((56, 44, 102), (158, 104, 168), (252, 176, 150)))),
    "dinosaurs": ThemeStyle(ink=(70, 48, 38), skies=(
        ((118, 194, 236), (176, 222, 236), (255, 226, 172)), ((250, 176, 110), (252, 208, 150), (255, 236,
                                                                                                 190)),
        ((140, 206, 226), (200, 232, 214), (250, 240, 180)))),
    "pirates": ThemeStyle(ink=(52, 38, 34), skies=(
        ((98, 180, 236), (160, 214, 244), (236, 244, 236)), ((250, 150, 110), (252, 196, 140), (255, 230,
                                                                                                180)),
        ((124, 196, 240), (190, 226, 246), (255, 240, 214)))),
    "superhero": ThemeStyle(ink=(38, 28, 62), skies=(
        ((86, 150, 240), (150, 196, 250), (236, 240, 255)), ((252, 120, 120), (255, 170, 120), (255, 218,
                                                                                                150)),
        ((90, 70, 180), (210, 110, 170), (255, 190, 140)))),
}


@dataclass
class Page:
    """Everything a scene painter needs for one page."""

    theme: str
    canvas: Image.Image
    p: Painter
    rng: random.Random  # page composition
    sky: tuple[RGB, RGB, RGB]
    outfit: Outfit
    ink: RGB
    child_x: float
    ground_y: float
    head_r: float
    pose: str
    feet_y: float = 0.0  # where the child's feet are (above ground_y when flying or swimming)
    tilt: float = 0.0
    flying: bool = False
    props_x: list[float] = field(default_factory=list)  # x positions free for big props
    character: CharacterProfile | None = None  # the story's child: hair, skin, glasses (never the name)


@dataclass(frozen=True)
class Placement:
    """Where ``draw_child`` put the head circle and the bare hands, in page pixels."""

    anchor: Anchor
    hands: tuple[tuple[float, float, float], ...]  # bare hands to recolour (x, y, r)


