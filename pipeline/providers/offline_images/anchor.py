"""What a drawn base page carries in its PNG for ``personalize``: the face anchor and the character.

``draw_base`` writes two tEXt chunks, so ``personalize`` can run in another process with only the
bytes:

- ``face_anchor`` (``ANCHOR_KEY``) = ``{"cx", "cy", "r"}``: the empty head circle, in page pixels;
- ``character`` (``CHARACTER_KEY``) = ``{"ink": [r, g, b], "ink_width": w, "hands": [[x, y, r], ...]}``:
  the outline colour and width (pixels) and the bare hands drawn in ``PLACEHOLDER_SKIN``, which
  ``personalize`` repaints in the photo's skin tone;
- ``character_profile`` (``PROFILE_KEY``, when the story has a profile): the character profile the
  child was painted from (pipeline/providers/character.py: hair, skin colour, glasses; never the
  name), kept by ``personalize``, so the page itself says which child it shows.

Both are optional for ``personalize``: a base from another provider gets the face at
``default_anchor`` and no hand recolouring.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image, PngImagePlugin

from pipeline.providers.offline_images.painter import HEIGHT, RGB, WIDTH

ANCHOR_KEY = "face_anchor"
CHARACTER_KEY = "character"
PROFILE_KEY = "character_profile"
PNG_COMPRESS_LEVEL = 3  # level 6 costs ~10 ms more per page for ~20% smaller files

PLACEHOLDER_SKIN: RGB = (238, 200, 168)  # bare hands before personalize repaints them
PLACEHOLDER_FACE: RGB = (250, 236, 220)  # the empty head circle


@dataclass(frozen=True)
class Anchor:
    """Where the face goes: centre (cx, cy) and radius r, in pixels of the page."""

    cx: float
    cy: float
    r: float

    def to_json(self) -> str:
        """``{"cx": .., "cy": .., "r": ..}`` with sorted keys (the ``face_anchor`` chunk's text)."""
        return json.dumps({"cx": self.cx, "cy": self.cy, "r": self.r}, sort_keys=True)


def default_anchor(width: int, height: int) -> Anchor:
    """Fallback for bases without a face_anchor: centred, 60% down, r = 12% of the height (pixels)."""
    return Anchor(cx=round(width / 2, 1), cy=round(height * 0.60, 1), r=round(height * 0.12, 1))


DEFAULT_ANCHOR = default_anchor(WIDTH, HEIGHT)


def encode_png(img: Image.Image, text: dict[str, str]) -> bytes:
    """``img`` as PNG bytes with one tEXt chunk per ``text`` item, in key order (deterministic)."""
    info = PngImagePlugin.PngInfo()
    for key in sorted(text):
        info.add_text(key, text[key])
    buf = io.BytesIO()
    img.save(buf, "PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def read_anchor(png: bytes) -> Anchor | None:
    """The face_anchor recorded in a PNG by draw_base, or None (absent or malformed)."""
    try:
        with Image.open(io.BytesIO(png)) as im:
            raw = im.info.get(ANCHOR_KEY) if isinstance(im.info, dict) else None
        if not raw:
            return None
        d = json.loads(raw)
        anchor = Anchor(cx=float(d["cx"]), cy=float(d["cy"]), r=float(d["r"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return anchor if anchor.r > 0 else None


def read_character(info: dict[str, object]) -> dict[str, Any]:
    """The ``character`` chunk from a PNG's ``info``: ``{"hands", "ink", "ink_width"}``, or ``{}``
    when absent or malformed (then the face is pasted with default ink and no hands repainted)."""
    raw = info.get(CHARACTER_KEY)
    if not isinstance(raw, str):
        return {}
    try:
        d = json.loads(raw)
        hands = [[float(v) for v in h[:3]] for h in d.get("hands", []) if len(h) >= 3]
        ink = [int(v) for v in d.get("ink", [40, 32, 60])[:3]]
        ink_width = float(d.get("ink_width", 2.4))
    except (ValueError, TypeError, AttributeError):
        return {}
    if len(ink) != 3:  # e.g. "ink": [1, 2] once failed personalize with an IndexError
        return {}
    return {"hands": hands, "ink": ink, "ink_width": ink_width}
