"""Providers that do the least possible work: for measuring orchestration overhead only."""
from __future__ import annotations

import io

from PIL import Image

from pipeline.providers.base import (
    BoundingBox,
    Face,
    Label,
    Outline,
    PageRequest,
    PhotoAnalysis,
    StoryRequest,
)

_PNG: bytes | None = None


def _tiny_png() -> bytes:
    global _PNG
    if _PNG is None:
        buf = io.BytesIO()
        Image.new("RGB", (8, 6), (120, 160, 220)).save(buf, "PNG")
        _PNG = buf.getvalue()
    return _PNG


class InstantAnalyzer:
    def analyze_photo(self, image: bytes) -> PhotoAnalysis:
        face = Face(BoundingBox(0.4, 0.2, 0.2, 0.3), 99.0)
        return PhotoAnalysis(8, 6, (face,), (Label("Face", 99.0),), "instant")


class InstantWriter:
    def write_outline(self, req: StoryRequest) -> Outline:
        return Outline(f"{req.child_name}'s story", tuple(f"beat {i}" for i in range(1, req.page_count + 1)))

    def write_page(self, req: PageRequest) -> str:
        return f"{req.story.child_name}, page {req.page_number}."


class InstantIllustrator:
    def draw_base(self, req: PageRequest) -> bytes:
        return _tiny_png()

    def personalize(self, base: bytes, photo: bytes, face: Face, req: PageRequest) -> bytes:
        return base
