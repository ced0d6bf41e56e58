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
    """Finds one fixed face in any photo, without reading it."""

    def analyze_photo(self, image: bytes) -> PhotoAnalysis:
        """One face box at (0.4, 0.2, 0.2, 0.3) in an 8x6 image, labelled "Face"."""
        face = Face(BoundingBox(0.4, 0.2, 0.2, 0.3), 99.0)
        return PhotoAnalysis(8, 6, (face,), (Label("Face", 99.0),), "instant")


class InstantWriter:
    """Writes placeholder text at once."""

    def write_outline(self, req: StoryRequest) -> Outline:
        """Title "<name>'s story", beats "beat 1".."beat N"."""
        return Outline(f"{req.child_name}'s story", tuple(f"beat {i}" for i in range(1, req.page_count + 1)))

    def write_page(self, req: PageRequest) -> str:
        """The text "<name>, page <n>."."""
        return f"{req.story.child_name}, page {req.page_number}."


class InstantIllustrator:
    """Draws an 8x6 PNG at once."""

    def draw_base(self, req: PageRequest) -> bytes:
        """The same tiny 8x6 PNG for every page."""
        return _tiny_png()

    def personalize(self, base: bytes, photo: bytes, face: Face, req: PageRequest) -> bytes:
        """The base unchanged."""
        return base
