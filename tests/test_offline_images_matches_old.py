"""Temporary: offline_images draws and composites byte-for-byte what local_images did.

Runs while both exist (issue 11); after local_images is deleted, tests/test_offline_images_golden.py
keeps the outputs fixed with stored pixel digests.
"""
from __future__ import annotations

import io

import pytest
from PIL import Image
from skimage import data as skdata

from pipeline.providers import local_images as old
from pipeline.providers import offline_images as new
from pipeline.providers.base import BoundingBox, Face, Outline, PageRequest, StoryRequest
from pipeline.themes import THEMES

FACE = Face(BoundingBox(0.35, 0.12, 0.18, 0.2), 99.0)


def _req(theme: str, page: int, seed: int, pages: int = 12) -> PageRequest:
    story = StoryRequest("Mia", 5, theme, pages, seed)
    return PageRequest(story, Outline("t", tuple(f"b{i}" for i in range(pages))), page)


@pytest.fixture(scope="module")
def photo() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("theme", sorted(THEMES))
def test_every_base_and_personalized_page_is_the_same_bytes(theme: str, photo: bytes) -> None:
    o, n = old.LocalIllustrator(), new.LocalIllustrator()
    for seed in (1, 2, 3, 42, 987654321, 2**40 + 7):
        for page in (1, 2, 5, 12):
            req = _req(theme, page, seed)
            base = n.draw_base(req)
            assert base == o.draw_base(req), (seed, page)
            a, b = new.read_anchor(base), old.read_anchor(base)
            assert a is not None and b is not None and vars(a) == vars(b)
            if page in (1, 5):
                assert n.personalize(base, photo, FACE, req) == o.personalize(base, photo, FACE, req)


def test_foreign_and_damaged_bases_are_personalized_the_same(photo: bytes) -> None:
    o, n = old.LocalIllustrator(), new.LocalIllustrator()
    req = _req("pirates", 1, 9)
    buf = io.BytesIO()
    Image.new("RGB", (800, 600), (30, 120, 200)).save(buf, "PNG")
    plain = buf.getvalue()
    assert n.personalize(plain, photo, FACE, req) == o.personalize(plain, photo, FACE, req)
    base = n.draw_base(req)
    img = Image.open(io.BytesIO(base))
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("face_anchor", '{"cx": 100, "cy": 120, "r": 40}')
    info.add_text("character", '{"ink": [1, 2, 3, 4], "hands": [[10, 20], [30, 40, 5]]}')
    out = io.BytesIO()
    img.save(out, "PNG", pnginfo=info)
    odd = out.getvalue()
    assert n.personalize(odd, photo, FACE, req) == o.personalize(odd, photo, FACE, req)
    edge = Face(BoundingBox(0.9, -0.1, 0.3, 0.4), 80.0)
    assert n.personalize(base, photo, edge, req) == o.personalize(base, photo, edge, req)
    assert vars(new.default_anchor(800, 600)) == vars(old.default_anchor(800, 600))
