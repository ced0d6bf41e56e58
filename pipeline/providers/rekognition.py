"""Amazon Rekognition (photo analysis) through boto3: ``RekognitionAnalyzer``.

Requests, timeouts and the error policy are shared with S3 (pipeline/providers/aws.py); the
API shapes followed are DetectFaces and DetectLabels
(https://docs.aws.amazon.com/rekognition/latest/APIReference/API_DetectFaces.html,
.../API_DetectLabels.html).

RekognitionAnalyzer policy
--------------------------
One ``DetectFaces`` (``Attributes=["ALL"]``) per photo, then one ``DetectLabels`` only when the
photo is usable (a rejected photo costs one request, not two).

- Faces below ``min_face_confidence`` (default 90, ``REKOGNITION_MIN_FACE_CONFIDENCE``) are
  dropped: Rekognition scores real faces ~99, lower scores are mostly posters, patterns, pets.
- No face left -> an analysis with no faces (no labels); the step fails it with NO_FACE.
- Faces too small to use (under 2% of the photo's area, or under 64 pixels across: why in
  pipeline/stories/faces.py; Rekognition itself only promises faces >= 40 px at 1080p) are returned apart
  (``small_faces``): a photo with only those is refused as "too small, take a closer photo".
- Several usable faces -> all kept, with their ``AgeRange``; the story start picks the child's face
  by age (pipeline/stories/faces.py). The photo is refused here (PermanentStepError, saying which problem and
  what photo to send instead) only when every usable face, the largest named, is unusable:
  * sunglasses (``Sunglasses`` true with confidence >= 80): the likeness needs the eyes;
  * heavily covered (``FaceOccluded`` true with confidence >= 80): a hand, hair, a mask;
  * turned away (``|Pose.Yaw| > 60`` degrees): a profile gives half a face to draw from.
- Gender, beard and moustache are not kept: nothing here needs them, and this is a child's
  photo (data minimisation). ``Eyeglasses`` feeds the character profile's glasses
  (pipeline/providers/character.py); Rekognition has no hair attribute, so hair comes from
  pixels. Landmarks outside the image are dropped, boxes are clipped to it.

Images: Rekognition takes JPEG or PNG of at most 5 MB (``ImageBlob`` max 5242880 bytes), at
least 80x80 px and, for DetectLabels, at most 10,000 px a side. Bytes that do not decode are
refused before any request (PermanentStepError from ``decode_photo``); other formats (HEIC, AVIF,
WEBP, GIF, BMP), PNGs with an EXIF rotation (only JPEG EXIF is honoured by Rekognition) and
anything over 5 MB or 10,000 px are re-encoded upright as JPEG (at most 4096 px), downscaled with
the aspect ratio kept until they fit.
"""
from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from botocore.exceptions import ClientError
from PIL import Image

from pipeline.config import env_number
from pipeline.kernel import usage
from pipeline.kernel.errors import PermanentStepError, StepError
from pipeline.providers import usage_calls
from pipeline.providers.aws import REKOGNITION, Malformed, call, client_error_parts, make_client, reason
from pipeline.providers.base import BoundingBox, Face, Label, Landmark, NoHooks, PhotoAnalysis, RequestHooks
from pipeline.providers.face_quality import MIN_FACE_PIXELS as FACE_PIXELS_FLOOR
from pipeline.providers.face_quality import face_pixels, face_problems, problems_message
from pipeline.providers.photo_decode import MAX_PIXELS, decode_photo, exif_orientation, open_photo

T = TypeVar("T")

DETECTOR_NAME = "aws-rekognition"

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Rekognition's limit for Image.Bytes
MIN_IMAGE_SIDE = 80  # Rekognition's minimum image width and height
MAX_IMAGE_SIDE = 10_000  # DetectLabels' maximum image width and height (AWS "Guidelines and quotas")
MAX_SEND_LONG_SIDE = 4096  # re-encoded photos: more pixels than this do not find more faces
JPEG_QUALITY = 90
CHECK_LONG_SIDE = 1024  # decode size for validating bytes we send unchanged (JPEG draft: cheap)

MIN_FACE_CONFIDENCE = 90.0
MIN_LABEL_CONFIDENCE = 70.0
MAX_LABELS = 50
ATTRIBUTE_CONFIDENCE = 80.0  # sunglasses / occlusion must be this sure before we refuse a photo
MAX_ABS_YAW = 60.0
MIN_FACE_AREA = 0.02
MIN_FACE_PIXELS = FACE_PIXELS_FLOOR  # pipeline/stories/faces.py says why
TOP_EMOTIONS = 3


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Malformed(f"not a number: {str(value)[:40]!r}")
    return float(value)


def _box(d: Mapping[str, Any]) -> BoundingBox:
    """Rekognition's box clipped to the image (a face cut by the edge has Left < 0)."""
    left, top = _num(d["Left"]), _num(d["Top"])
    right, bottom = left + _num(d["Width"]), top + _num(d["Height"])
    left, top, right, bottom = max(left, 0.0), max(top, 0.0), min(right, 1.0), min(bottom, 1.0)
    if right <= left or bottom <= top:
        raise Malformed("a bounding box outside the image")
    return BoundingBox(left=round(left, 6), top=round(top, 6), width=round(right - left, 6),
                       height=round(bottom - top, 6))


def _flag(d: Mapping[str, Any]) -> dict[str, Any]:
    value = d["Value"]
    if not isinstance(value, bool):
        raise Malformed("a boolean attribute without a boolean Value")
    return {"value": value, "confidence": _num(d["Confidence"])}


_FLAGS = (("Smile", "smile"), ("Eyeglasses", "eyeglasses"), ("Sunglasses", "sunglasses"),
          ("EyesOpen", "eyes_open"), ("MouthOpen", "mouth_open"), ("FaceOccluded", "face_occluded"))


def _attributes(d: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-ready attributes; only what Rekognition returned (and nothing about gender)."""
    out: dict[str, Any] = {}
    if "AgeRange" in d:
        out["age_range"] = {"low": int(_num(d["AgeRange"]["Low"])), "high": int(_num(d["AgeRange"]["High"]))}
    for src, dst in _FLAGS:
        if src in d:
            out[dst] = _flag(d[src])
    if "Emotions" in d:
        emotions = sorted(((_num(e["Confidence"]), str(e["Type"])) for e in d["Emotions"]), reverse=True)
        out["emotions"] = [{"type": t, "confidence": c} for c, t in emotions[:TOP_EMOTIONS]]
    if "Pose" in d:
        out["pose"] = {k.lower(): _num(d["Pose"][k]) for k in ("Roll", "Yaw", "Pitch")}
    if "Quality" in d:
        out["quality"] = {k.lower(): _num(d["Quality"][k]) for k in ("Brightness", "Sharpness")}
    if "EyeDirection" in d:
        out["eye_direction"] = {k.lower(): _num(d["EyeDirection"][k]) for k in ("Yaw", "Pitch", "Confidence")}
    return out


def _face(d: Mapping[str, Any]) -> Face:
    landmarks = []
    for lm in d.get("Landmarks") or []:
        x, y = _num(lm["X"]), _num(lm["Y"])
        # Rekognition estimates landmarks of a face cut by the edge outside the image; there is
        # nothing to draw from there.
        if 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0:
            landmarks.append(Landmark(type=str(lm["Type"]), x=round(x, 6), y=round(y, 6)))
    return Face(box=_box(d["BoundingBox"]), confidence=_num(d["Confidence"]), landmarks=tuple(landmarks),
                attributes=_attributes(d))


def _faces_reply(reply: Mapping[str, Any]) -> list[Face]:
    details = reply.get("FaceDetails")
    if not isinstance(details, list):
        raise Malformed("no FaceDetails list")
    return [_face(d) for d in details]


def _labels_reply(reply: Mapping[str, Any]) -> tuple[Label, ...]:
    labels = reply.get("Labels")
    if not isinstance(labels, list):
        raise Malformed("no Labels list")
    return tuple(
        Label(
            name=str(lb["Name"]),
            confidence=_num(lb["Confidence"]),
            instances=tuple(_box(i["BoundingBox"]) for i in lb.get("Instances") or [] if i.get("BoundingBox")),
            parents=tuple(str(p["Name"]) for p in lb.get("Parents") or []),
        )
        for lb in labels
    )


def _encode_jpeg(im: Image.Image, long_side: int) -> bytes:
    if max(im.size) > long_side:
        s = long_side / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


class RekognitionAnalyzer:
    """PhotoAnalyzer on Amazon Rekognition DetectFaces + DetectLabels (policy: module doc)."""

    def __init__(
        self,
        client: Any = None,
        hooks: RequestHooks | None = None,
        min_face_confidence: float = MIN_FACE_CONFIDENCE,
        *,
        min_label_confidence: float = MIN_LABEL_CONFIDENCE,
        max_labels: int = MAX_LABELS,
        min_face_area: float = MIN_FACE_AREA,
        min_face_pixels: int = MIN_FACE_PIXELS,
        max_abs_yaw: float = MAX_ABS_YAW,
        attribute_confidence: float = ATTRIBUTE_CONFIDENCE,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.client = client if client is not None else make_client(REKOGNITION)
        self.hooks: RequestHooks = hooks if hooks is not None else NoHooks()
        self.min_face_confidence = min_face_confidence
        self.min_label_confidence = min_label_confidence
        self.max_labels = max_labels
        self.min_face_area = min_face_area
        self.min_face_pixels = min_face_pixels
        self.max_abs_yaw = max_abs_yaw
        self.attribute_confidence = attribute_confidence
        self.max_image_bytes = max_image_bytes
        self.max_pixels = max_pixels

    @classmethod
    def from_env(cls, hooks: RequestHooks | None = None, env: Mapping[str, str] | None = None) -> RekognitionAnalyzer:
        """An analyzer from the AWS variables (``make_client``) and
        ``REKOGNITION_MIN_FACE_CONFIDENCE`` / ``REKOGNITION_MIN_LABEL_CONFIDENCE`` (0..100)."""
        e = os.environ if env is None else env
        return cls(
            client=make_client(REKOGNITION, e),
            hooks=hooks,
            min_face_confidence=env_number(e, "REKOGNITION_MIN_FACE_CONFIDENCE", MIN_FACE_CONFIDENCE, 0, 100),
            min_label_confidence=env_number(e, "REKOGNITION_MIN_LABEL_CONFIDENCE", MIN_LABEL_CONFIDENCE, 0, 100),
        )

    def analyze_photo(self, image: bytes) -> PhotoAnalysis:
        """Faces (with AgeRange etc.), then labels when a face can be used; faces too small to
        use come back in ``small_faces`` (the step refuses the photo as too small); a photo whose
        every usable face is in sunglasses, covered or turned away raises PermanentStepError."""
        payload, width, height = self.prepare_image(image)
        found = self._call("DetectFaces", _faces_reply,
                           lambda: self.client.detect_faces(Image={"Bytes": payload}, Attributes=["ALL"]))
        found = [f for f in found if f.confidence >= self.min_face_confidence]
        # Largest first (ties by position), as the offline analyzer orders them.
        found.sort(key=lambda f: (-f.box.width * f.box.height, f.box.top, f.box.left))
        faces = [f for f in found if not self.too_small(f, width, height)]
        small = tuple(f for f in found if self.too_small(f, width, height))
        if not faces:
            return PhotoAnalysis(image_width=width, image_height=height, faces=(), labels=(), detector=DETECTOR_NAME,
                                 small_faces=small)
        if all(self.problems(f) for f in faces):
            self.check_protagonist(faces[0], width, height)
        labels = self._call(
            "DetectLabels", _labels_reply,
            lambda: self.client.detect_labels(Image={"Bytes": payload}, MaxLabels=self.max_labels,
                                              MinConfidence=self.min_label_confidence),
        )
        return PhotoAnalysis(image_width=width, image_height=height, faces=tuple(faces), labels=labels,
                             detector=DETECTOR_NAME, small_faces=small)

    def too_small(self, face: Face, width: int, height: int) -> bool:
        """Under ``min_face_area`` of the photo or ``min_face_pixels`` across (pipeline/stories/faces.py)."""
        return (face.box.width * face.box.height < self.min_face_area
                or face_pixels(face, width, height) < self.min_face_pixels)

    def prepare_image(self, image: bytes) -> tuple[bytes, int, int]:
        """(bytes to send, upright width, upright height); PermanentStepError if unusable.

        Rekognition reads only JPEG and PNG bytes, at most 5 MB, at least 80 px and (DetectLabels)
        at most 10,000 px a side (https://docs.aws.amazon.com/rekognition/latest/dg/limits.html,
        .../images-information.html); it applies a JPEG's EXIF orientation itself. Anything else
        (HEIC, AVIF, WebP, GIF, BMP, a rotated PNG, over 5 MB or 10,000 px) is decoded upright
        and re-encoded as JPEG, at most ``MAX_SEND_LONG_SIDE`` px (more pixels find no more
        faces: AWS's minimum face size grows with the image), smaller until under 5 MB."""
        decoded = decode_photo(image, max_pixels=self.max_pixels, target_long_side=CHECK_LONG_SIDE, exact=False)
        width, height = decoded.width, decoded.height
        if min(width, height) < MIN_IMAGE_SIDE:
            raise PermanentStepError(
                f"The photo is too small ({width}x{height} pixels). Please upload a photo at least "
                f"{MIN_IMAGE_SIDE} pixels wide and high, ideally a recent phone photo."
            )
        with open_photo(image) as im:  # header only; decode_photo already read it
            fmt, orientation = im.format, exif_orientation(im)
        fmt = "JPEG" if fmt == "MPO" else fmt  # iPhone multi-picture JPEGs: the first frame is a JPEG
        # Rekognition applies JPEG EXIF orientation itself, but not PNG's.
        if (len(image) <= self.max_image_bytes and max(width, height) <= MAX_IMAGE_SIDE
                and (fmt == "JPEG" or (fmt == "PNG" and orientation == 1))):
            return image, width, height
        full = decode_photo(image, max_pixels=self.max_pixels, target_long_side=MAX_SEND_LONG_SIDE).image
        long_side = max(full.size)
        for _ in range(8):
            data = _encode_jpeg(full, long_side)
            if len(data) <= self.max_image_bytes:
                return data, width, height
            # Bytes scale about with the pixel count; aim a little under the limit.
            long_side = max(MIN_IMAGE_SIDE, int(long_side * math.sqrt(self.max_image_bytes / len(data)) * 0.9))
        raise PermanentStepError(
            "The photo could not be made small enough to analyse. Please upload a smaller JPEG or PNG."
        )

    def check_protagonist(self, face: Face, width: int, height: int) -> None:
        """PermanentStepError naming each problem of ``face`` that a new photo would fix."""
        problems: list[tuple[str, str]] = []
        if self.too_small(face, width, height):
            problems.append(("the child's face is too small in the picture",
                             "taken closer, so that the face fills more of the picture"))
        problems += self.problems(face)
        if problems:
            raise PermanentStepError(problems_message(problems))

    def problems(self, face: Face) -> list[tuple[str, str]]:
        """pipeline.providers.face_quality.face_problems with this adapter's thresholds."""
        return face_problems(face, attribute_confidence=self.attribute_confidence, max_abs_yaw=self.max_abs_yaw)

    def _call(self, op: str, parse: Callable[[Any], T], send: Callable[[], Any]) -> T:
        usage_calls.rekognition_hold()  # BudgetReached: nothing sent

        def sent() -> Any:
            reply = send()
            usage_calls.rekognition_record(op, reply)  # one call, billed once answered
            return reply
        try:
            return call(self.hooks, REKOGNITION, "Amazon Rekognition", op, sent, parse, self._image_error)
        finally:
            usage.release("rekognition")  # (a recorded call's hold is gone already)

    @staticmethod
    def _image_error(exc: ClientError) -> tuple[str, StepError] | None:
        code, status, message, _ = client_error_parts(exc)
        said = f"Amazon Rekognition: {code}, HTTP {status}" + (f": {reason(message)}" if message else "")
        if code == "InvalidImageFormatException":
            return "client_error", PermanentStepError(
                f"The photo's format could not be read by the face detection service. Please upload a "
                f"JPEG or PNG photo. ({said})")
        if code == "ImageTooLargeException":
            return "client_error", PermanentStepError(
                f"The photo is too large for the face detection service. Please upload a smaller JPEG or "
                f"PNG photo. ({said})")
        if code == "InvalidParameterException":
            return "client_error", PermanentStepError(
                f"The face detection service could not use this photo (it may be too small or damaged). "
                f"Please upload a clear JPEG or PNG photo. ({said})")
        return None
