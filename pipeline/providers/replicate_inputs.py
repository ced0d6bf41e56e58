"""What the Replicate adapter sends and accepts: the page prompt, the face crop, output images.

The prompt carries the page's scene and one shared character description, never the child's
name (privacy; diffusion models also paint names as garbled lettering). Outputs are checked to
be whole PNG/JPEG/WebP images (at most ``MAX_OUTPUT_PIXELS``) and stored as PNG.
"""
from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any

from PIL import Image, UnidentifiedImageError

from pipeline.kernel.errors import PermanentStepError
from pipeline.providers.base import Face, PageRequest
from pipeline.providers.http_retry import RetryableError
from pipeline.providers.photo_decode import decode_photo
from pipeline.providers.themes import THEMES, resolve_theme

MAX_OUTPUT_PIXELS = 40_000_000  # far above any model's output; stops a decompression bomb
WIDTH, HEIGHT = 960, 720  # the offline illustrator's page size; multiples of 16 for diffusion models
ASPECT_RATIO = "4:3"
# One look for every page, and a face the swap model can find: frontal, uncovered, lit. ``looks``:
# the story's character profile in words (", with short brown hair, light skin and glasses"), or "".
CHARACTER = (
    "a cheerful {who}{looks} in a red jumper and blue trousers, facing the viewer, "
    "whole face clearly visible, uncovered and evenly lit, no hat, no helmet, no mask"
)
NEGATIVE_PROMPT = (
    "text, letters, words, caption, watermark, signature, logo, photo, photorealistic, scary, violent, "
    "blood, weapon, nudity, deformed, extra limbs, extra fingers, blurry face, face covered, helmet visor, "
    "mask, back view, cropped head"
)
DEFAULT_STYLE = "soft watercolour children's book illustration, warm colours, gentle light"


def _scrub_name(text: str, name: str) -> str:
    """Remove the child's name (full, then each part) from text bound for the image model.

    Case-sensitive on purpose: a child called "Sky" must not turn "night sky" into nonsense;
    names in beats are written capitalised."""
    parts = [name.strip()] + [p for p in name.split() if len(p) > 1]
    for part in dict.fromkeys(p for p in parts if p):
        for variant in dict.fromkeys((part, part.title(), part.upper())):
            text = re.sub(rf"(?<!\w){re.escape(variant)}(?!\w)", "the child", text)
    return text


def _scene(beat: str) -> str:
    """The page's main event: a short leading label ("Opening: ...") and a parenthetical
    list of other events are dropped; diffusion models follow one clear scene best."""
    head, sep, rest = beat.partition(": ")
    if sep and len(head.split()) <= 4 and rest:
        beat = rest
    beat = re.sub(r"\s*\((also|and)\b[^)]*\)\s*$", "", beat).strip()
    if len(beat) > 240:
        beat = beat[:240].rsplit(" ", 1)[0]
    return beat


def _wish(hint: str, name: str) -> str:
    """A redo's hint as a prompt descriptor: the child's name scrubbed, quotes, brackets and
    control characters dropped, spaces collapsed, at most 200 characters ("" when none)."""
    text = _scrub_name(" ".join(hint.split()), name) if hint else ""
    text = "".join(ch for ch in text if ch.isprintable() and ch not in '"\\`<>[]{}')
    return text[:200].strip()


def _who(age: int) -> str:
    if age <= 3:
        return "toddler"
    if age <= 8:
        return "young child"
    return "child"


def data_uri(image: bytes) -> str:
    """A data: URI for encoded image bytes (PNG/JPEG/WebP by their magic bytes)."""
    return f"data:{_mime(image) or 'application/octet-stream'};base64,{base64.b64encode(image).decode()}"


def face_photo_data_uri(photo: bytes, face: Face, max_side: int = 512, margin: float = 0.6) -> str:
    """The protagonist's face (with hair and chin) cropped from the photo as a JPEG data: URI.

    Only the face leaves our storage, the swap model cannot pick a sibling in a group photo,
    and the input stays far below Replicate's data: URI size limit."""
    decoded = decode_photo(photo, target_long_side=2048, exact=False)  # EXIF-upright, like the box
    img = decoded.image
    w, h = img.size
    box = face.box
    cx, cy = (box.left + box.width / 2) * w, (box.top + box.height / 2) * h
    side = min(max(box.width * w, box.height * h) * (1 + 2 * margin), w, h)
    x0 = min(max(cx - side / 2, 0.0), w - side)
    y0 = min(max(cy - side / 2, 0.0), h - side)
    out = min(max_side, max(1, int(side)))
    crop = img.resize((out, out), Image.Resampling.LANCZOS, box=(x0, y0, x0 + side, y0 + side))
    buf = io.BytesIO()
    crop.save(buf, "JPEG", quality=90)
    return data_uri(buf.getvalue())


def _mime(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def as_png(data: bytes) -> bytes:
    """The downloaded output checked to be a whole image, as PNG (our storage keys say .png)."""
    mime = _mime(data)
    if mime is None:
        raise PermanentStepError(
            f"The image service returned something that is not a PNG, JPEG or WebP image ({len(data)} bytes)."
        )
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_OUTPUT_PIXELS:
                raise PermanentStepError(f"The image service returned an oversized image ({im.width}x{im.height}).")
            im.load()
            if mime == "image/png":
                return data
            buf = io.BytesIO()
            im.convert("RGBA" if "A" in im.getbands() else "RGB").save(buf, "PNG", compress_level=3)
            return buf.getvalue()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        # Right magic bytes but undecodable: a truncated transfer; the next copy may be whole.
        raise RetryableError(f"The image from the image service was incomplete ({len(data)} bytes).") from exc


def decode_data_uri(uri: str) -> bytes:
    """The bytes of a base64 ``data:`` URI; PermanentStepError if it is not one."""
    header, sep, payload = uri.partition(",")
    if not sep or not header.endswith(";base64"):
        raise PermanentStepError("The image service returned a data: URI that is not base64.")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PermanentStepError("The image service returned a malformed data: URI.") from exc


def base_input(req: PageRequest) -> dict[str, Any]:
    """The base illustration's model input for one page: prompt (theme setting, the page's scene
    without the child's name, the shared character, described from the story's character profile
    when it has one, and style), negative prompt, 960x720 / 4:3,
    the story's seed, one PNG output. Deterministic for a page (``find`` relies on it).
    PermanentStepError for an unknown theme or a page with no beat."""
    theme = resolve_theme(req.story.theme)
    if theme is None:
        raise PermanentStepError(
            f"Unknown story theme {req.story.theme[:60]!r}. Choose one of: {', '.join(sorted(THEMES))}."
        )
    if not 1 <= req.page_number <= len(req.outline.beats):
        raise PermanentStepError(
            f"Page {req.page_number} has no beat in the outline ({len(req.outline.beats)} beats)."
        )
    # The child's name never goes into an image prompt: the provider does not need it (privacy),
    # and diffusion models paint names as garbled lettering on the picture.
    name = req.story.child_name
    scene = _scrub_name(_scene(req.outline.beats[req.page_number - 1]), name)
    style = _scrub_name(req.outline.style.strip(), name) or DEFAULT_STYLE
    profile = req.story.character
    # The profile's words only (hair, skin colour, glasses): the same on every page of the story.
    looks = f" with {profile.descriptor()}," if profile is not None else ""
    character = CHARACTER.format(who=_who(req.story.child_age), looks=looks)
    prompt = (
        f"Children's picture-book illustration, {theme.setting}. Scene: {scene}. "
        f"Main character: {character}. Style: {style}. No text or lettering anywhere in the picture."
    )
    if wish := _wish(req.hint, name):
        # A redo's hint from the parent: a quoted descriptor of the picture, after the fixed
        # parts (data about the scene; it cannot remove the rules above, and it is capped).
        prompt += f' Requested change to this picture: "{wish}".'
    return {
        "prompt": prompt,
        "negative_prompt": NEGATIVE_PROMPT,
        "width": WIDTH,
        "height": HEIGHT,
        "aspect_ratio": ASPECT_RATIO,
        # One seed for every page of a story: the same character and palette throughout (a
        # redone page's revision moves it: the same input would give the same picture).
        "seed": req.story.seed if req.revision <= 1 else req.story.seed + req.revision,
        "num_outputs": 1,
        "output_format": "png",
        # flux's fp8 fast path is not deterministic even with a seed.
        "go_fast": False,
    }
