"""The story's illustrations at print resolution: opened, coloured, cropped around the child's face
and resampled to 300 dpi at their printed size.

The square picture pages crop the 4:3 illustrations to a square around the child's face (OpenCV,
the same detector as photo analysis; the centre when no face is found). The local illustrator
draws 960 x 720 px, about 82 dpi at 8.75 in, so those are upscaled ~3.6x with Lanczos to 2625 px:
the files meet the print shop's resolution rule, but upscaling adds no detail; a production image
model should render at >= 2625 px on the short side for crisp prints.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import cast

from PIL import Image, UnidentifiedImageError

from pipeline.kernel.errors import PermanentStepError
from pipeline.orders.print_files.products import DPI, MM_PER_IN
from pipeline.stories.typeset import Rgb, mix


@dataclass
class Art:
    """One illustration, ready to place: the picture, where the face is, the page colours it gives."""

    image: Image.Image  # RGB, as drawn
    focus_x: float | None  # the face's centre (0..1 of the width), for square crops
    tint: Rgb  # pale page colour from the picture
    shade: Rgb  # deep text colour from the picture


def _open(data: bytes, what: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError):
        raise PermanentStepError(f"{what}: the illustration is not a readable image.") from None
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))  # transparent areas print as paper
        return flat
    return img.convert("RGB") if img.mode != "RGB" else img


def _focus_x(data: bytes) -> float | None:
    """Where the child's face is, across the picture (0..1), or None."""
    try:
        from pipeline.providers.local_vision import LocalPhotoAnalyzer

        face = LocalPhotoAnalyzer(detect_long_side=480).analyze_photo(data).primary_face
    except Exception:  # noqa: BLE001 - a crop guide only: the centre is a fine answer
        return None
    return face.box.left + face.box.width / 2 if face else None


def art(data: bytes, what: str) -> Art:
    """``data`` (PNG or JPEG) as an Art; PermanentStepError naming ``what`` if unreadable."""
    img = _open(data, what)
    average = cast(Rgb, img.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0)))
    shade = cast(Rgb, tuple(round(c * 0.35 + 10) for c in average))
    return Art(img, _focus_x(data), mix(average, (255, 255, 255), 0.86), shade)


def crop(img: Image.Image, aspect: float, focus_x: float | None) -> Image.Image:
    """The largest region of ``aspect`` (w/h), around the face horizontally, else centred."""
    w, h = img.size
    if w / h > aspect:
        cw = max(1, round(h * aspect))
        cx = (0.5 if focus_x is None else focus_x) * w
        x0 = int(min(max(cx - cw / 2, 0), w - cw))
        return img.crop((x0, 0, x0 + cw, h))
    ch = max(1, round(w / aspect))
    y0 = (h - ch) // 2
    return img.crop((0, y0, w, y0 + ch))


def at_dpi(img: Image.Image, w_mm: float, h_mm: float) -> tuple[bytes, int]:
    """JPEG of ``img`` resampled to DPI at w_mm x h_mm (Lanczos); returns (jpeg, effective dpi)."""
    px_w = math.ceil(w_mm / MM_PER_IN * DPI)
    px_h = math.ceil(h_mm / MM_PER_IN * DPI)
    out = io.BytesIO()
    img.resize((px_w, px_h), Image.Resampling.LANCZOS).save(out, "JPEG", quality=90, optimize=True, dpi=(DPI, DPI))
    return out.getvalue(), math.floor(min(px_w / (w_mm / MM_PER_IN), px_h / (h_mm / MM_PER_IN)))
