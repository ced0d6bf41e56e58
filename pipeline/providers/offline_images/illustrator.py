"""The offline illustrator: a themed picture-book page drawn with Pillow, and the face put in.

``draw_base`` paints a 960x720 scene for the page's theme with a child character whose head is
an empty circle, and records where that circle is (and the bare hands) in the PNG itself
(``anchor``). ``personalize`` puts the child's face from the photo in (``compositing``).

Determinism: ``random.Random(f"story-style:{seed}")`` picks the story's sky palette and outfit
(same look on every page) and ``random.Random(seed * 1000 + page)`` the page's composition
(child position and pose, props, creatures); a redone page (``req.revision`` > 1) seeds its
composition with the revision and the parent's hint too, and a colour word in the hint tints the
scenery (``hint_colour``). Pillow, numpy and zlib are deterministic, so the
same request (and the same photo) gives byte-identical PNGs, also across processes.

Everything is drawn at 2x and box-reduced for anti-aliasing (``painter``); the child is drawn
by ``characters``, the scenery by ``scenes_sky``, ``scenes_sea`` and ``scenes_land``.
"""
from __future__ import annotations

import json
import random
from collections.abc import Callable

from PIL import Image

from pipeline.kernel.errors import PermanentStepError
from pipeline.providers.base import Face, PageRequest
from pipeline.providers.hints import hint_colour
from pipeline.providers.offline_images.anchor import ANCHOR_KEY, CHARACTER_KEY, PROFILE_KEY, encode_png
from pipeline.providers.offline_images.characters import POSES, draw_child
from pipeline.providers.offline_images.compositing import personalize_png
from pipeline.providers.offline_images.page import STYLES, Page, pick_outfit
from pipeline.providers.offline_images.painter import SS, WIDTH, Painter, gradient
from pipeline.providers.offline_images.scenes_land import scene_dinosaurs, scene_forest
from pipeline.providers.offline_images.scenes_sea import scene_pirates, scene_underwater
from pipeline.providers.offline_images.scenes_sky import scene_space, scene_superhero
from pipeline.providers.themes import THEMES, resolve_theme

# Theme id -> the painter of its scenery (everything but the child).
SCENES: dict[str, Callable[[Page], None]] = {
    "space_adventure": scene_space,
    "underwater": scene_underwater,
    "enchanted_forest": scene_forest,
    "dinosaurs": scene_dinosaurs,
    "pirates": scene_pirates,
    "superhero": scene_superhero,
}


class LocalIllustrator:
    """Illustrator that draws offline with Pillow; same request -> same PNG bytes."""

    def draw_base(self, req: PageRequest) -> bytes:
        """The page's scene with the child's head left as an empty circle: a 960x720 RGB PNG
        with the ``face_anchor`` and ``character`` chunks (``anchor``). The story's character
        profile, when it has one, paints the hair, bare hands and glasses and is recorded in a
        ``character_profile`` chunk (the same on every page of the story).

        Raises PermanentStepError for a theme ``pipeline.providers.themes`` does not know.
        """
        theme = resolve_theme(req.story.theme)
        if theme is None:
            raise PermanentStepError(
                f"Unknown story theme {req.story.theme!r}; known themes: {', '.join(sorted(THEMES))}."
            )
        # String seeds go through SHA-512 (stable across processes and PYTHONHASHSEED), which
        # decorrelates neighbouring integer seeds' first draws.
        story_rng = random.Random(f"story-style:{req.story.seed}")
        rng = random.Random(req.story.seed * 1000 + req.page_number if req.revision <= 1
                            else f"page:{req.story.seed}:{req.page_number}:r{req.revision}:{req.hint}")
        style = STYLES[theme.id]
        sky = story_rng.choice(style.skies)
        outfit = pick_outfit(story_rng)

        canvas = gradient([(0.0, sky[0]), (0.55, sky[1]), (1.0, sky[2])])
        painter = Painter(canvas, style.ink, ink_width=2.4)
        child_x = rng.choice((0.27, 0.5, 0.73)) * WIDTH + rng.uniform(-25, 25)
        if child_x < WIDTH * 0.4:
            props = [WIDTH * rng.uniform(0.7, 0.8), WIDTH * rng.uniform(0.52, 0.58)]
        elif child_x > WIDTH * 0.6:
            props = [WIDTH * rng.uniform(0.2, 0.3), WIDTH * rng.uniform(0.42, 0.48)]
        else:
            props = [WIDTH * rng.uniform(0.12, 0.18), WIDTH * rng.uniform(0.82, 0.88)]
            rng.shuffle(props)
        pose = rng.choice(sorted(POSES))
        ground_y = rng.uniform(650, 675)
        feet_y, tilt, flying = ground_y, rng.choice((0.0, 0.0, -6.0, 6.0)), False
        if theme.id in ("superhero", "underwater") and rng.random() < 0.4:
            # Flying over the city / swimming above the sand: lifted, leaning into the motion.
            flying = True
            feet_y = rng.uniform(500, 560)
            tilt = rng.choice((-14.0, 14.0))
            pose = "cheer" if theme.id == "superhero" else rng.choice(("reach", "wave"))
        page = Page(
            theme=theme.id, canvas=canvas, p=painter, rng=rng, sky=sky, outfit=outfit, ink=style.ink,
            child_x=child_x, ground_y=ground_y, head_r=round(rng.uniform(58, 66)), pose=pose,
            feet_y=feet_y, tilt=tilt, flying=flying, props_x=props, character=req.story.character,
        )
        SCENES[theme.id](page)
        if (tint := hint_colour(req.hint)) is not None:
            # A redo's wish naming a colour ("make the dragon green"): the scenery takes it on.
            canvas.paste(Image.blend(canvas, Image.new(canvas.mode, canvas.size, tint), 0.35))
        if not flying:
            # A soft shadow grounds the child.
            painter.ellipse(page.child_x, ground_y - 2, 1.2 * page.head_r, 0.22 * page.head_r, (0, 0, 0, 50),
                            outline=None)
        placement = draw_child(page)

        img = canvas.reduce(SS)
        hands = [list(h) for h in placement.hands]
        character = {"ink": list(style.ink), "ink_width": painter.ink_width, "hands": hands}
        text = {ANCHOR_KEY: placement.anchor.to_json(), CHARACTER_KEY: json.dumps(character, sort_keys=True)}
        if req.story.character is not None:
            text[PROFILE_KEY] = req.story.character.to_text()
        return encode_png(img, text)

    def personalize(self, base: bytes, photo: bytes, face: Face, req: PageRequest) -> bytes:
        """Paste the child's face from ``photo`` into the base's head circle (PNG, base's size).

        See ``compositing.personalize_png``; from ``req`` only the story's character profile
        (the hands' skin colour, recorded in the page).
        """
        return personalize_png(base, photo, face, req.story.character)
