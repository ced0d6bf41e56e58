"""Putting the child's face in: crop the photo around the face, match the page's light, frame it.

The functions take the base page (pixels, RGB) and the anchor recorded by ``draw_base``
(``anchor``); sizes and positions are page pixels, face boxes are fractions of the photo
(``pipeline.providers.base.BoundingBox``).
"""
from __future__ import annotations

import io
import math
from typing import cast

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, UnidentifiedImageError

from pipeline.kernel.errors import PermanentStepError
from pipeline.providers.base import Face
from pipeline.providers.offline_images.anchor import (
    ANCHOR_KEY,
    CHARACTER_KEY,
    PLACEHOLDER_SKIN,
    PROFILE_KEY,
    Anchor,
    default_anchor,
    encode_png,
    read_anchor,
    read_character,
)
from pipeline.providers.offline_images.painter import RGB, Color, rgba
from pipeline.providers.photo_decode import decode_photo
from pipeline.providers.profile import CharacterProfile

FACE_MARGIN = 0.35  # extra crop around the detected face box on each side (hair, chin)


def personalize_png(base: bytes, photo: bytes, face: Face, profile: CharacterProfile | None = None) -> bytes:
    """``base`` (a PNG page) with the face of ``face``'s box in ``photo`` pasted into its head circle.

    The circle is the base's ``face_anchor`` or ``default_anchor``; the face is cropped square
    with ``FACE_MARGIN`` around the box, tinted 8% towards the page's surrounding light, framed
    by an ink ring, and the ``character`` chunk's bare hands are repainted in the skin colour of
    ``profile`` (the story's character profile: the same on every page), else in the photo's skin
    tone. Returns an RGB PNG of the base's size keeping the base's chunks, and recording
    ``profile`` in the ``character_profile`` chunk when given.

    Raises PermanentStepError if the base or the photo can't be read, or if the face box lies
    outside the photo.
    """
    try:
        with Image.open(io.BytesIO(base)) as im:
            im.load()
            info = dict(im.info)
            page = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        # The base is ours, not the parent's: still permanent, a retry reads the same bytes.
        raise PermanentStepError(
            "The page illustration could not be read; it needs to be drawn again."
        ) from exc
    anchor = read_anchor(base) or default_anchor(page.width, page.height)
    character = read_character(cast(dict[str, object], info))
    ink_rgb = character.get("ink", [40, 32, 60])
    ink: RGB = (int(ink_rgb[0]), int(ink_rgb[1]), int(ink_rgb[2]))

    face_img, skin = _face_disc(photo, face, anchor.r)
    if profile is not None:
        skin = profile.skin_rgb
    face_img = _blend_ambient(face_img, page, anchor)
    _paste_face(page, face_img, anchor, ink)
    ink_width = float(character.get("ink_width", 2.4))
    for x, y, r in character.get("hands", []):
        _paint_disc(page, float(x), float(y), float(r), skin, ink, ring_width=ink_width)

    text = {k: v for k, v in info.items() if isinstance(v, str) and k in (ANCHOR_KEY, CHARACTER_KEY, PROFILE_KEY)}
    if profile is not None:
        text[PROFILE_KEY] = profile.to_text()
    return encode_png(page, text)


def _face_disc(photo: bytes, face: Face, radius: float) -> tuple[Image.Image, RGB]:
    """Square RGB crop (side 2*radius px) around the face with margin, and a skin tone."""
    side_px = max(2, int(round(2 * radius)))
    # Decode only the resolution the crop needs (JPEG draft scaling, no full-image resize):
    # the crop must still cover side_px pixels, with 25% to spare for the LANCZOS downscale.
    box = face.box
    frac = max(min(max(box.width, box.height), 1.0), 1e-3) * (1 + 2 * FACE_MARGIN)
    target = int(min(8192, max(256, math.ceil(side_px * 1.25 / frac))))
    decoded = decode_photo(photo, target_long_side=target, exact=False)
    img = decoded.image
    w, h = img.size

    # Clamp the face box into the photo; a box partly outside still crops what is there.
    left = min(max(box.left, 0.0), 1.0)
    top = min(max(box.top, 0.0), 1.0)
    right = min(max(box.left + box.width, left), 1.0)
    bottom = min(max(box.top + box.height, top), 1.0)
    fx0, fy0, fx1, fy1 = left * w, top * h, right * w, bottom * h
    if fx1 - fx0 < 1 or fy1 - fy0 < 1:
        raise PermanentStepError(
            "The face position for this photo lies outside the photo; please re-upload the photo."
        )
    cx, cy = (fx0 + fx1) / 2, (fy0 + fy1) / 2
    side = max(fx1 - fx0, fy1 - fy0) * (1 + 2 * FACE_MARGIN)
    side = min(side, w, h)
    # Shift the square inside the photo rather than padding with a blank border.
    x0 = min(max(cx - side / 2, 0.0), w - side)
    y0 = min(max(cy - side / 2, 0.0), h - side)
    crop = img.resize((side_px, side_px), Image.Resampling.LANCZOS, box=(x0, y0, x0 + side, y0 + side))

    # Skin tone: median of the cheeks/nose band, which avoids hair, eyes and background.
    sk = np.asarray(img.crop((int(fx0 + 0.3 * (fx1 - fx0)), int(fy0 + 0.5 * (fy1 - fy0)),
                              max(int(fx0 + 0.7 * (fx1 - fx0)), int(fx0) + 1),
                              max(int(fy0 + 0.72 * (fy1 - fy0)), int(fy0) + 1))), dtype=np.uint8).reshape(-1,
                                                                                                          3)
    skin: RGB = PLACEHOLDER_SKIN
    if len(sk):
        med = np.median(sk, axis=0)
        skin = (int(med[0]), int(med[1]), int(med[2]))
    return crop, skin


def _blend_ambient(face_img: Image.Image, page: Image.Image, anchor: Anchor) -> Image.Image:
    """Nudge the photo towards the scene's light (8% of the surrounding colour) so it sits in."""
    r = anchor.r
    x0, y0 = int(max(anchor.cx - 1.8 * r, 0)), int(max(anchor.cy - 1.8 * r, 0))
    x1, y1 = int(min(anchor.cx + 1.8 * r, page.width)), int(min(anchor.cy + 1.8 * r, page.height))
    if x1 <= x0 or y1 <= y0:
        return face_img
    ambient = np.asarray(page.crop((x0, y0, x1, y1)), dtype=np.float32).reshape(-1, 3).mean(axis=0)
    arr = np.asarray(face_img, dtype=np.float32)
    out = arr * 0.92 + ambient * 0.08
    img = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")
    return ImageEnhance.Color(img).enhance(1.08)


def _disc_alpha(size: int, radius: float, feather: float, scale: int = 1) -> Image.Image:
    """Anti-aliased disc mask with a soft edge of ``feather`` px."""
    n = size * scale
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    c = (n - 1) / 2
    d = np.sqrt((xx - c) ** 2 + (yy - c) ** 2) / scale
    a = np.clip((radius - d) / max(feather, 1e-3), 0.0, 1.0)
    return Image.fromarray(np.rint(a * 255).astype(np.uint8), "L")


def _paste_face(page: Image.Image, face_img: Image.Image, anchor: Anchor, ink: RGB) -> None:
    r = anchor.r
    size = face_img.width
    x = int(round(anchor.cx - size / 2))
    y = int(round(anchor.cy - size / 2))
    mask = _disc_alpha(size, radius=size / 2 - 0.5, feather=max(2.0, r * 0.05))
    page.paste(face_img, (x, y), mask)
    # Ring over the feathered edge: the face reads as a framed portrait, not a cut-out.
    _ring(page, anchor.cx, anchor.cy, r, ink, width=max(2.0, r * 0.07))


def _ring(page: Image.Image, cx: float, cy: float, r: float, ink: RGB, width: float) -> None:
    """A light inner band with an ink line, drawn anti-aliased on a 4x patch."""
    k = 4
    pad = width + 4
    half = r + pad
    x0, y0 = int(math.floor(cx - half)), int(math.floor(cy - half))
    n = int(math.ceil(2 * half)) + 1
    patch = Image.new("RGBA", (n * k, n * k), (0, 0, 0, 0))
    d = ImageDraw.Draw(patch)
    ccx, ccy = (cx - x0) * k, (cy - y0) * k

    def circ(rad: float, col: Color, w: float) -> None:
        d.ellipse((ccx - rad * k, ccy - rad * k, ccx + rad * k, ccy + rad * k), outline=col,
                  width=max(1, int(round(w * k))))

    circ(r + width * 0.5, rgba(ink, 255), width)
    circ(r - width * 0.35, (255, 255, 255, 110), width * 0.6)
    patch = patch.resize((n, n), Image.Resampling.BOX)
    page.paste(patch, (x0, y0), patch)


def _paint_disc(page: Image.Image, cx: float, cy: float, r: float, fill: RGB, ink: RGB,
                ring_width: float) -> None:
    """Repaint a placeholder hand: filled disc with an ink outline, anti-aliased on a 4x patch."""
    k = 4
    half = r + ring_width + 2
    x0, y0 = int(math.floor(cx - half)), int(math.floor(cy - half))
    n = int(math.ceil(2 * half)) + 1
    patch = Image.new("RGBA", (n * k, n * k), (0, 0, 0, 0))
    d = ImageDraw.Draw(patch)
    ccx, ccy = (cx - x0) * k, (cy - y0) * k
    rr = (r + 0.6) * k  # a hair larger than the placeholder so none of it peeks out
    d.ellipse((ccx - rr, ccy - rr, ccx + rr, ccy + rr), fill=rgba(fill, 255), outline=rgba(ink, 255),
              width=max(1, int(round(ring_width * k))))
    patch = patch.resize((n, n), Image.Resampling.BOX)
    page.paste(patch, (x0, y0), patch)
