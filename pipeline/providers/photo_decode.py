"""Photo decoding for every photo analyzer and illustrator (vendor-neutral: no OpenCV, no SDK).

What a parent's phone or browser uploads (JPEG/MPO, PNG, HEIC/HEIF through libheif's Pillow
plugin ``pillow-heif``, AVIF when Pillow has it, WebP, GIF, BMP) becomes an upright 8-bit RGB
Pillow image at bounded memory:

* ``MAX_PIXELS`` (64 MP) is the most ever decoded at once; baseline JPEGs larger than that are
  decoded reduced by libjpeg's DCT scaling (1/2, 1/4, 1/8; Pillow's ``Image.draft``), up to
  ``MAX_JPEG_PIXELS`` (260 MP: 200 MP phone sensors). Other formats and progressive JPEGs are
  refused above ``MAX_PIXELS`` before any pixel is decoded.
* Orientation: JPEG's EXIF tag (0x0112) is applied; HEIF's ``irot``/``imir`` boxes are applied
  by libheif itself (pillow-heif resets the EXIF orientation to 1 so it is not applied twice).
* Anything unreadable, empty or too large raises PermanentStepError with a message a parent can
  act on (``UNREADABLE_MESSAGE``, ``EMPTY_MESSAGE``, ``HEIC_MESSAGE``, a "too large" message).

Used by the OpenCV analyzer (local_vision.py), the Rekognition adapter (rekognition.py, to validate and
re-encode what it sends), the Replicate adapter (the face crop) and the offline illustrator.
"""
from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError, features

from pipeline.kernel.errors import PermanentStepError

# Memory bound: at most this many pixels are ever decoded at once (a decoded 64 MP RGB image is
# already ~190 MB). Formats that must be decoded in full (PNG, HEIC, WebP, progressive JPEG...)
# may have at most this many pixels; baseline JPEGs are decoded reduced (DCT scaling, 1/2..1/8)
# until they fit, so a 108 or 200 MP phone JPEG is read at bounded memory.
MAX_PIXELS = 64_000_000
# Baseline JPEGs up to this many pixels (a 200 MP phone sensor is 16320x12240 = 199.8 MP): even
# decoded at 1/8 scale, libjpeg still reads every coefficient, so time grows with the source.
MAX_JPEG_PIXELS = 260_000_000

# iPhones save HEIC by default; pillow-heif (libheif) reads HEIC/HEIF and applies the container's
# rotation (irot/imir) itself, resetting the EXIF orientation to 1 so it is not applied twice.
# Thumbnails, depth maps and auxiliary images are never needed here: not read (less memory).
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

# Only formats a phone or browser produces; fewer decoders means less attack surface.
# AVIF is read by Pillow itself (>= 11.3 with libavif in its wheels) when it was built with it.
_ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "HEIF") + (
    ("AVIF",) if features.check("avif") else ()
)  # JPEG covers MPO
# Formats that can be decoded at a reduced size (libjpeg's DCT scaling through Image.draft).
_REDUCIBLE_FORMATS = ("JPEG", "MPO")

UNREADABLE_MESSAGE = (
    "The photo could not be read as an image (it may be damaged or not a photo). "
    "Please upload a JPEG or PNG (or an iPhone's HEIC) photo."
)
EMPTY_MESSAGE = "The uploaded photo is empty (0 bytes). Please upload a JPEG or PNG (or an iPhone's HEIC) photo."
HEIC_MESSAGE = (
    "The photo is in HEIC/HEIF/AVIF format (common on phones) but could not be read: it may be "
    "damaged or use a variant we cannot decode. Please upload it again, or as a JPEG or PNG."
)


@dataclass(frozen=True)
class DecodedPhoto:
    """An upright RGB photo, possibly reduced, with the size of the full upright original."""

    image: Image.Image  # mode "RGB", EXIF orientation applied
    width: int  # of the original after EXIF transpose
    height: int


def _too_large_message(width: int, height: int, limit: int, what: str = "photos") -> str:
    return (
        f"The photo is too large ({width}x{height} pixels, {width * height / 1e6:.0f} megapixels; "
        f"{what} can have at most {limit // 1_000_000} megapixels). Please upload a smaller photo "
        f"(a phone's normal photo size works)."
    )


def _looks_like_heif(data: bytes) -> bool:
    # ISO-BMFF: size(4) 'ftyp' brand(4); HEIC/HEIF/AVIF brands.
    return data[4:8] == b"ftyp" and data[8:12] in (
        b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif",
    )


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency goes onto white, 16/32-bit is rescaled."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        # convert("L") would clip 16-bit values at 255 (a white photo), so rescale instead.
        arr = np.asarray(im, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        lo = float(arr.min()) if arr.size else 0.0
        if im.mode == "F" and hi <= 1.0 and lo >= 0.0:
            arr = arr * 255.0
        elif hi > 65535.0 or lo < 0.0:
            arr = (arr - lo) * (255.0 / max(hi - lo, 1e-9))
        elif hi > 255.0:
            arr = arr / 257.0
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if im.mode == "RGB":
        return im
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def exif_orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8; 1 when absent or when the EXIF block itself is corrupt.

    A damaged EXIF block is common (editing apps) and must not make a good photo unreadable.
    """
    try:
        value = int(im.getexif().get(0x0112, 1))
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error):
        return 1
    return value if 1 <= value <= 8 else 1


def open_photo(data: bytes) -> Image.Image:
    """Open lazily (header only). JPEGs skip ``Image.open``'s decompression-bomb check (it
    refuses anything over ~179 MP before a reduced decode could read it): ``decode_photo``
    applies its own limits, per format, before any pixel is decoded."""
    if data[:3] == b"\xff\xd8\xff":
        return JpegImagePlugin.jpeg_factory(io.BytesIO(data))
    return Image.open(io.BytesIO(data), formats=_ALLOWED_FORMATS)


def _dct_scale(width: int, height: int, target_long_side: int | None, max_pixels: int) -> int:
    """libjpeg's scale denominator (1, 2, 4 or 8): the smallest decode whose longer side is still
    >= ``target_long_side`` (None: full size), reduced further until it has <= ``max_pixels``."""
    scale = 1
    if target_long_side is not None:
        for s in (8, 4, 2):
            if math.ceil(max(width, height) / s) >= target_long_side:
                scale = s
                break
    while scale < 8 and math.ceil(width / scale) * math.ceil(height / scale) > max_pixels:
        scale *= 2
    return scale


def decode_photo(
    data: bytes, *, max_pixels: int = MAX_PIXELS, target_long_side: int | None = None, exact: bool = True,
    max_jpeg_pixels: int = MAX_JPEG_PIXELS,
) -> DecodedPhoto:
    """Decode uploaded photo bytes (JPEG/MPO, PNG, HEIC/HEIF, AVIF, WebP, GIF, BMP, whatever the
    row's content_type says: the bytes decide) into an upright RGB image.

    With ``target_long_side`` (pixels) the image is decoded no smaller than that on its longer
    side (never upscaled); with ``exact`` the result is then resized to exactly that size.
    Memory: at most ``max_pixels`` pixels are decoded. Baseline JPEGs (what phones write) are
    decoded reduced by libjpeg's DCT scaling (1/2, 1/4, 1/8) until they fit, so sources up to
    ``max_jpeg_pixels`` (260 MP: 200 MP phone sensors) are read; the result is then smaller than
    ``target_long_side`` when the target would not fit. Other formats, and progressive JPEGs
    (libjpeg keeps every coefficient of those in memory), are decoded in full and refused above
    ``max_pixels`` before decoding (the decompression-bomb guard). Orientation: JPEG's EXIF tag
    is applied; HEIF's ``irot``/``imir`` are applied by libheif (pillow-heif).

    Raises PermanentStepError with a parent-readable message for anything unreadable or too large.
    """
    if not data:
        raise PermanentStepError(EMPTY_MESSAGE)
    try:
        im = open_photo(data)
        raw_w, raw_h = im.size
        if raw_w <= 0 or raw_h <= 0:
            raise PermanentStepError(UNREADABLE_MESSAGE)
        fmt = im.format or ""
        progressive = bool(im.info.get("progressive") or im.info.get("progression"))
        if fmt in _REDUCIBLE_FORMATS and not progressive:
            if raw_w * raw_h > max_jpeg_pixels:
                raise PermanentStepError(_too_large_message(raw_w, raw_h, max_jpeg_pixels, "JPEG photos"))
        elif raw_w * raw_h > max_pixels:
            what = "progressive JPEG photos" if fmt in _REDUCIBLE_FORMATS else f"{fmt or 'such'} photos"
            raise PermanentStepError(_too_large_message(raw_w, raw_h, max_pixels, what))
        orientation = exif_orientation(im)
        if fmt in _REDUCIBLE_FORMATS:
            scale = _dct_scale(raw_w, raw_h, target_long_side, max_pixels)
            if math.ceil(raw_w / scale) * math.ceil(raw_h / scale) > max_pixels:
                raise PermanentStepError(_too_large_message(raw_w, raw_h, max_pixels * 64, "JPEG photos"))
            if scale > 1:
                # draft picks the largest scale keeping both sides >= the request: exactly `scale`.
                im.draft("RGB", (max(1, raw_w // scale), max(1, raw_h // scale)))
        im.load()
        if orientation != 1:
            im = ImageOps.exif_transpose(im)  # type: ignore[assignment]
        rgb = _to_rgb(im)
    except PermanentStepError:
        raise
    except Image.DecompressionBombError as exc:
        raise PermanentStepError(
            "The photo is too large to process. Please upload a smaller photo (a phone's normal photo size works)."
        ) from exc
    # Pillow's decoders report bad bytes with these; anything else is our bug and propagates.
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error,
            IndexError) as exc:
        raise PermanentStepError(HEIC_MESSAGE if _looks_like_heif(data) else UNREADABLE_MESSAGE) from exc

    # Size of the upright original: orientations 5-8 swap width and height.
    width, height = (raw_h, raw_w) if orientation in (5, 6, 7, 8) else (raw_w, raw_h)
    if exact and target_long_side is not None and max(rgb.size) > target_long_side:
        s = target_long_side / max(rgb.size)
        size = (max(1, round(rgb.width * s)), max(1, round(rgb.height * s)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return DecodedPhoto(image=rgb, width=width, height=height)


def photo_format(data: bytes) -> tuple[str, str] | None:
    """(Pillow format name, MIME type) of photo bytes from their header, e.g. ("HEIF",
    "image/heif"); None when not a photo format we read. Decodes no pixels. The upload's
    ``content_type`` is what a client said; this is what the bytes are."""
    try:
        with open_photo(data) as im:
            fmt = im.format or ""
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError):
        return None
    mime = Image.MIME.get(fmt) or ("image/heif" if fmt == "HEIF" else None)
    return (fmt, mime) if mime else None
