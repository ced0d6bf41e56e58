"""The character profile: how the child looks, for painting the same child on every page.

A profile is derived per usable face from the photo's pixels (and from Rekognition's face
attributes when Rekognition analysed the photo), stored with the analysis
(``photos.character_profile``, a list aligned with ``face_details.faces``) and read by every page
of a story for the face its start chose (``story_outlines.protagonist_face``). It holds only what
an illustrator paints:

``{"version": 1,
   "hair": {"colour": "dark brown", "rgb": [r, g, b], "length": "short" | "medium" | "long"} | null,
   "skin": {"tone": "light" | ... | "dark brown", "rgb": [r, g, b]},
   "glasses": {"value": bool, "source": "rekognition" | "pixels"}}``

Never in it: the child's name, age, gender, or anything about ethnicity. The skin entry is a
measured colour (the median of the cheeks) and a lightness bucket of it, only for painting; the
hair is the dominant colour just above the face and how far down beside the face it reaches. It
is face data: whatever clears ``face_details`` clears it (db/photos.py ``clear_face_data``).

How each part is measured (honest limits):

- skin: median RGB of the cheeks/nose band (30-70 % across, 50-72 % down the face box: no hair,
  eyes or background), the same band the offline compositing used for the hands; the tone is a
  bucket of its CIELAB lightness L*.
- hair colour: the most common colour (coarse 3-D histogram, then the median of that bin) among
  the pixels just above the face box that are not skin-coloured. A bald child, or hair the same
  colour as the wall behind, is measured as the wall: ``hair`` is None when too few pixels there
  differ from the skin.
- hair length: how far down the hair colour continues beside the face (strips just outside the
  box): above the eyes' level short, to the jaw medium, below the chin long.
- glasses: Rekognition's ``Eyeglasses`` (DetectFaces with ``Attributes=["ALL"]``, a FaceDetail's
  ``Eyeglasses: {Value, Confidence}``; https://docs.aws.amazon.com/rekognition/latest/APIReference/API_FaceDetail.html)
  when the photo was analysed by Rekognition; offline, a frame's bridge: a thin dark line across
  the nose between the eyes, in most columns of that gap. Rimless glasses are missed.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.providers.base import BoundingBox, Face, Landmark
from pipeline.providers.profile import RGB, VERSION, CharacterProfile, hair_colour, skin_tone

# The decode size profiles are measured on (at least; a JPEG is decoded at the smallest DCT scale
# above it): a usable face is then >= ~45 px, plenty for colours and a frame's bridge.
PROFILE_LONG_SIDE = 768
# Rekognition's Eyeglasses must be at least this sure to count (either way).
EYEGLASSES_CONFIDENCE = 50.0

# --- measuring ----------------------------------------------------------------------------------

def _region(img: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    h, w = img.shape[:2]
    xa, xb = int(max(0, round(x0))), int(min(w, round(x1)))
    ya, yb = int(max(0, round(y0))), int(min(h, round(y1)))
    if xb <= xa or yb <= ya:
        return np.zeros((0, 0, 3), dtype=img.dtype)
    return img[ya:yb, xa:xb]


def _dist(pixels: np.ndarray, rgb: Any) -> np.ndarray:
    return np.sqrt(((pixels.astype(np.float32) - np.asarray(rgb, dtype=np.float32)) ** 2).sum(axis=-1))


def _dominant(pixels: np.ndarray) -> RGB:
    """The median colour of the most populated 32-level RGB bin of ``pixels`` (N x 3)."""
    bins = (pixels // 32).astype(np.int32)
    keys = bins[:, 0] * 64 + bins[:, 1] * 8 + bins[:, 2]
    top = np.bincount(keys).argmax()
    med = np.median(pixels[keys == top], axis=0)
    return int(med[0]), int(med[1]), int(med[2])


SKIN_DISTANCE = 48.0  # RGB distance under which a pixel counts as skin
HAIR_DISTANCE = 72.0  # ... and as the hair's colour (looser: hair is shaded at the sides)
HAIR_MIN_SHARE = 0.25  # of the band above the face that must differ from the skin for hair to count


def measure(img: np.ndarray, face: Face) -> CharacterProfile:
    """The profile of ``face`` in ``img`` (H x W x 3 uint8 RGB, upright, the face box in ratios
    of it); Rekognition's ``eyeglasses`` attribute wins over the pixels when present.

    Raises ValueError when the face box holds no pixels."""
    h, w = img.shape[:2]
    box = face.box
    fx0, fy0, fw, fh = box.left * w, box.top * h, box.width * w, box.height * h
    if fw < 2 or fh < 2:
        raise ValueError("the face box holds no pixels")
    cheeks = _region(img, fx0 + 0.3 * fw, fy0 + 0.5 * fh, fx0 + 0.7 * fw, fy0 + 0.72 * fh).reshape(-1, 3)
    if not len(cheeks):
        raise ValueError("the face box holds no pixels")
    med = np.median(cheeks, axis=0)
    skin: RGB = (int(med[0]), int(med[1]), int(med[2]))

    hair_rgb, colour, length = _hair(img, skin, fx0, fy0, fw, fh)
    glasses, source = _glasses(img, face, skin, fx0, fy0, fw, fh)
    return CharacterProfile(skin_rgb=skin, skin_tone=skin_tone(skin), hair_rgb=hair_rgb, hair_colour=colour,
                            hair_length=length, glasses=glasses, glasses_source=source)


def _hair(img: np.ndarray, skin: RGB, fx0: float, fy0: float, fw: float,
          fh: float) -> tuple[RGB | None, str | None, str | None]:
    band = _region(img, fx0 + 0.2 * fw, fy0 - 0.3 * fh, fx0 + 0.8 * fw, fy0 + 0.02 * fh).reshape(-1, 3)
    if not len(band):
        return None, None, None
    not_skin = band[_dist(band, skin) > SKIN_DISTANCE]
    if len(not_skin) < HAIR_MIN_SHARE * len(band):
        return None, None, None
    hair = _dominant(not_skin)
    # Length: rows down the strips beside the face, while the hair colour goes on (gaps of up to
    # 10 % of the face's height bridged: an ear, a strand of background).
    strips = [_region(img, fx0 - 0.22 * fw, 0, fx0 - 0.02 * fw, img.shape[0]),
              _region(img, fx0 + 1.02 * fw, 0, fx0 + 1.22 * fw, img.shape[0])]
    reach = 0.0
    step = max(1, int(fh * 0.02))
    gap_limit = 0.1 * fh
    for strip in strips:
        if strip.size == 0:
            continue
        y, last_hair = int(max(0, fy0)), int(max(0, fy0))
        while y < min(strip.shape[0], fy0 + 2.0 * fh):
            row = strip[y]
            if (_dist(row, hair) < HAIR_DISTANCE).mean() >= 0.3:
                last_hair = y
            elif y - last_hair > gap_limit:
                break
            y += step
        reach = max(reach, (last_hair - fy0) / fh)
    length = "short" if reach < 0.45 else "medium" if reach < 1.05 else "long"
    return hair, hair_colour(hair), length


def _eyes(face: Face, fx0: float, fy0: float, fw: float, fh: float, w: int, h: int) -> tuple[float, float, float]:
    """(left eye x, right eye x, eyes' y) in pixels: the landmarks when found, else where eyes sit
    in a face box (30 % and 70 % across, 40 % down)."""
    marks = {lm.type: lm for lm in face.landmarks}
    if "eyeLeft" in marks and "eyeRight" in marks:
        left, right = marks["eyeLeft"], marks["eyeRight"]
        return left.x * w, right.x * w, (left.y + right.y) / 2 * h
    return fx0 + 0.3 * fw, fx0 + 0.7 * fw, fy0 + 0.4 * fh


def _glasses(img: np.ndarray, face: Face, skin: RGB, fx0: float, fy0: float, fw: float,
             fh: float) -> tuple[bool, str]:
    said = face.attributes.get("eyeglasses")
    if isinstance(said, dict) and isinstance(said.get("value"), bool) \
            and float(said.get("confidence", 0)) >= EYEGLASSES_CONFIDENCE:
        return bool(said["value"]), "rekognition"
    h, w = img.shape[:2]
    ex0, ex1, ey = _eyes(face, fx0, fy0, fw, fh, w, h)
    gap = ex1 - ex0
    if gap < 4:
        return False, "pixels"
    bridge = _region(img, ex0 + 0.35 * gap, ey - 0.15 * fh, ex1 - 0.35 * gap, ey + 0.06 * fh)
    if bridge.size == 0:
        return False, "pixels"
    luma = bridge.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    skin_luma = float(np.dot(skin, (0.299, 0.587, 0.114)))
    dark = luma < min(skin_luma - 50.0, skin_luma * 0.6)
    runs = dark.sum(axis=0)
    # A frame's bridge: a thin dark line crossing most columns; a shadow or brow is thick or patchy.
    crossed = (runs >= 1) & (runs <= max(2, 0.08 * fh))
    return bool(crossed.mean() >= 0.7), "pixels"


def profiles_for(img: np.ndarray, faces: tuple[Face, ...] | list[Face]) -> list[dict[str, Any] | None]:
    """``[profile JSON | None]`` aligned with ``faces`` (None for a face that cannot be measured)."""
    out: list[dict[str, Any] | None] = []
    for face in faces:
        try:
            out.append(measure(img, face).to_json())
        except ValueError:
            out.append(None)
    return out


def profiles_from_photo(photo: bytes, faces: tuple[Face, ...] | list[Face]) -> dict[str, Any]:
    """The ``photos.character_profile`` value for a photo's usable faces: ``{"version": 1,
    "faces": [profile | None, ...]}`` aligned with ``face_details.faces``; the photo is decoded
    upright at about PROFILE_LONG_SIDE px (decode_photo: a JPEG's reduced decode; PermanentStepError
    if unreadable) and only the pixels around each face are converted (what ``measure`` reads)."""
    from pipeline.providers.photo_decode import decode_photo

    image = decode_photo(photo, target_long_side=PROFILE_LONG_SIDE, exact=False).image
    w, h = image.size
    out: list[dict[str, Any] | None] = []
    for face in faces:
        b = face.box
        # What measure reads: 0.3 of the face's height above it, 0.22 of its width either side,
        # down to two heights below its top (the hair's length), with a margin.
        x0, y0 = max(0, int((b.left - 0.3 * b.width) * w)), max(0, int((b.top - 0.4 * b.height) * h))
        x1 = min(w, int((b.left + 1.3 * b.width) * w) + 1)
        y1 = min(h, int((b.top + 2.1 * b.height) * h) + 1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            out.append(None)
            continue
        crop = np.asarray(image.crop((x0, y0, x1, y1)).convert("RGB"))
        cw, ch = x1 - x0, y1 - y0
        local = Face(
            BoundingBox((b.left * w - x0) / cw, (b.top * h - y0) / ch, b.width * w / cw, b.height * h / ch),
            face.confidence,
            tuple(Landmark(lm.type, (lm.x * w - x0) / cw, (lm.y * h - y0) / ch) for lm in face.landmarks),
            face.attributes,
        )
        out.extend(profiles_for(crop, [local]))
    return {"version": VERSION, "faces": out}
