"""The offline illustrator keeps drawing the same pictures: pixel digests of known pages, stored as data.

``tests/golden/offline_images.json`` was made from ``pipeline.providers.local_images`` (the module
split into ``offline_images``, issue 11), after a test showed both gave byte-identical PNGs. The
digests are of decoded pixels and tEXt chunks, not PNG bytes, so a zlib build that compresses
differently does not fail here (same-bytes-across-processes is tests/test_local_providers.py's).
A deliberate change to the drawing, or a Pillow release that rasterises shapes differently, fails
here: look at a few pages, then rewrite the file with
``.venv/bin/python -m tests.test_offline_images_golden --write`` and say why in the commit.
Issue 13 added one page per theme drawn with a character profile (``|profile`` keys); the pages
without one were unchanged by it.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from skimage import data as skdata

from pipeline.providers.base import BoundingBox, Face, Outline, PageRequest, StoryRequest
from pipeline.providers.offline_images import LocalIllustrator
from pipeline.providers.profile import CharacterProfile
from pipeline.providers.themes import THEMES

GOLDEN = Path(__file__).with_name("golden") / "offline_images.json"
SEEDS = (1, 987654321)
PAGES = (1, 7)  # of a 12-page story
PERSONALIZED = {"seed": 1, "page": 1}  # every theme's first page of seed 1 also gets a face
# skimage's astronaut (lossless PNG, so no JPEG decoder enters the digest); her face's box
FACE = Face(BoundingBox(0.35, 0.12, 0.18, 0.2), 99.0)
# The same page again with a character profile (issue 13: hair, hands' skin, glasses), base and
# personalized, under ``key + "|profile"`` and ``key + "|profile|face"``.
PROFILE = CharacterProfile(skin_rgb=(150, 105, 75), skin_tone="medium-brown", hair_rgb=(70, 45, 30),
                           hair_colour="dark brown", hair_length="long", glasses=True)


def photo() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(buf, "PNG")
    return buf.getvalue()


def request(theme: str, seed: int, page: int, profile: CharacterProfile | None = None) -> PageRequest:
    story = StoryRequest("Mia", 5, theme, 12, seed, profile)
    return PageRequest(story, Outline("t", tuple(f"beat {i}" for i in range(12))), page)


def pixels_digest(png: bytes) -> dict[str, Any]:
    """Size, mode, sha256 of the raw pixels, and the tEXt chunks of a PNG."""
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        text = {k: v for k, v in im.info.items() if isinstance(v, str)}
        return {"size": list(im.size), "mode": im.mode, "pixels": hashlib.sha256(im.tobytes()).hexdigest(),
                "text": text}


def key(theme: str, seed: int, page: int) -> str:
    return f"{theme}|{seed}|{page}"


def drawn(ill: LocalIllustrator, face_photo: bytes, theme: str) -> dict[str, Any]:
    """``{key: digest}`` of a theme's base pages, and of its personalized page under ``key + "|face"``."""
    out: dict[str, Any] = {}
    for seed, page in itertools.product(SEEDS, PAGES):
        req = request(theme, seed, page)
        base = ill.draw_base(req)
        out[key(theme, seed, page)] = pixels_digest(base)
        if {"seed": seed, "page": page} == PERSONALIZED:
            out[key(theme, seed, page) + "|face"] = pixels_digest(ill.personalize(base, face_photo, FACE, req))
            req = request(theme, seed, page, PROFILE)
            base = ill.draw_base(req)
            out[key(theme, seed, page) + "|profile"] = pixels_digest(base)
            out[key(theme, seed, page) + "|profile|face"] = pixels_digest(ill.personalize(base, face_photo, FACE, req))
    return out


def build(ill: Any) -> dict[str, Any]:
    """The golden file's content for the illustrator ``ill``."""
    face_photo = photo()
    return {k: v for theme in sorted(THEMES) for k, v in drawn(ill, face_photo, theme).items()}


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDEN.read_text(encoding="utf-8"))
    return data


def test_golden_file_covers_every_theme(golden: dict[str, Any]) -> None:
    assert {k.split("|")[0] for k in golden} == set(THEMES)
    assert len(golden) == len(THEMES) * (len(SEEDS) * len(PAGES) + 3)


@pytest.mark.parametrize("theme", sorted(THEMES))
def test_base_and_personalized_pages_are_the_stored_pixels(theme: str, golden: dict[str, Any]) -> None:
    # Given the theme's stored pages, When they are drawn (and one personalized) again
    now = drawn(LocalIllustrator(), photo(), theme)
    # Then every page has the stored size, pixels and recorded anchor/character
    assert now == {k: v for k, v in golden.items() if k.startswith(theme + "|")}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.test_offline_images_golden --write")
    GOLDEN.write_text(json.dumps(build(LocalIllustrator()), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}")
