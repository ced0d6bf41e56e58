"""Amazon Rekognition (photo analysis) and Amazon S3 (storage) through boto3.

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
  photo (data minimisation). Landmarks outside the image are dropped, boxes are clipped to it.

Images: Rekognition takes JPEG or PNG of at most 5 MB (``ImageBlob`` max 5242880 bytes), at
least 80x80 px and, for DetectLabels, at most 10,000 px a side. Bytes that do not decode are
refused before any request (PermanentStepError from ``decode_photo``); other formats (HEIC, AVIF,
WEBP, GIF, BMP), PNGs with an EXIF rotation (only JPEG EXIF is honoured by Rekognition) and
anything over 5 MB or 10,000 px are re-encoded upright as JPEG (at most 4096 px), downscaled with
the aspect ratio kept until they fit.

Errors (both services)
----------------------
botocore is built with ``total_max_attempts=1``: the pipeline owns retries. (Note that
``retries={"max_attempts": 1}`` means ONE RETRY in botocore: ``max_attempts`` does not count the
first request.) Throttling (ThrottlingException, ProvisionedThroughputExceeded, LimitExceeded,
SlowDown, HTTP 429), 5xx, InternalServerError/ServiceUnavailable, timeouts, connection errors and
unreadable replies -> TransientStepError (``retry_after`` from ``Retry-After``). Image errors,
credential errors ("check the AWS credentials"), AccessDenied/NoSuchBucket (with the bucket
name) and other 4xx -> PermanentStepError. Messages quote AWS's code, HTTP status and reason
(<= 300 chars, credentials redacted); for credential errors the reason is not quoted at all,
since S3 echoes the access key id and the string it signed.
"""
from __future__ import annotations

import io
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import boto3
import botocore.config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.parsers import ResponseParserError
from PIL import Image

from pipeline.kernel.config import env_number
from pipeline.kernel.errors import PermanentStepError, StepError, TransientStepError, retry_after_seconds
from pipeline.stories.faces import MIN_FACE_PIXELS as FACE_PIXELS_FLOOR
from pipeline.stories.faces import face_pixels, face_problems, problems_message
from pipeline.providers.base import BoundingBox, Face, Label, Landmark, NoHooks, PhotoAnalysis, RequestHooks
from pipeline.providers.local_vision import MAX_PIXELS, decode_photo, open_photo
from pipeline.kernel.storage import ObjectMissing, check_key

T = TypeVar("T")

DETECTOR_NAME = "aws-rekognition"
REKOGNITION = "rekognition"  # provider name for hooks and metrics
S3 = "s3"

DEFAULT_REGION = "us-east-1"
DEFAULT_TIMEOUT = 30.0
MAX_CONNECT_TIMEOUT = 10.0  # a TCP connect slower than this is a dead route, not a slow answer
REASON_CHARS = 300

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

MAX_PHOTO_BYTES = 50 * 1024 * 1024  # read_object: an upload larger than this is refused unread
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 presigned URLs cannot live longer

_THROTTLE_CODES = frozenset({
    "ThrottlingException", "Throttling", "ThrottledException", "ProvisionedThroughputExceededException",
    "LimitExceededException", "RequestLimitExceeded", "TooManyRequestsException", "SlowDown",
    "RequestThrottled", "RequestThrottledException", "BandwidthLimitExceeded",
})
_SERVER_CODES = frozenset({
    "InternalServerError", "InternalError", "InternalFailure", "ServiceUnavailable",
    "ServiceUnavailableException", "ServiceFailure", "RequestTimeout", "RequestTimeoutException",
})
_CREDENTIAL_CODES = frozenset({
    "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
    "InvalidClientTokenId", "SignatureDoesNotMatch", "InvalidAccessKeyId", "ExpiredToken",
    "ExpiredTokenException", "MissingAuthenticationToken", "MissingAuthenticationTokenException",
    "IncompleteSignature", "IncompleteSignatureException", "InvalidToken", "TokenRefreshRequired",
    "AuthFailure", "RequestExpired", "RequestTimeTooSkewed",
})
_MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_CREDENTIAL_HINT = (
    "check the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the "
    "instance role) and their permissions"
)

# Access key ids, SigV4 signatures and session tokens in presigned query strings.
_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b")
_SIGNED = re.compile(r"(?i)(signature|x-amz-security-token|x-amz-credential|credential)=[^\s&,\"']+")


# --- configuration ------------------------------------------------------------------------------


def make_client(service: str, env: Mapping[str, str] | None = None) -> Any:
    """A boto3 client with retries off and per-request timeouts, from the environment.

    ``AWS_REGION``/``AWS_DEFAULT_REGION`` (default us-east-1), ``AWS_ENDPOINT_URL_<SERVICE>`` then
    ``AWS_ENDPOINT_URL`` (a fake, LocalStack, MinIO), ``AWS_TIMEOUT`` seconds (default 30),
    ``S3_ADDRESSING_STYLE`` (auto/path/virtual). Credentials: boto3's own chain.
    """
    e = os.environ if env is None else env
    region = e.get("AWS_REGION", "").strip() or e.get("AWS_DEFAULT_REGION", "").strip() or DEFAULT_REGION
    # The service-specific variable wins, as boto3 itself does when endpoint_url is not passed.
    endpoint = (e.get(f"AWS_ENDPOINT_URL_{service.upper()}", "").strip()
                or e.get("AWS_ENDPOINT_URL", "").strip() or None)
    timeout = env_number(e, "AWS_TIMEOUT", DEFAULT_TIMEOUT, 0.05, 3600.0)
    style = e.get("S3_ADDRESSING_STYLE", "").strip().lower() or "auto"
    if style not in ("auto", "path", "virtual"):
        raise SystemExit(f"configuration error: S3_ADDRESSING_STYLE must be auto, path or virtual (got {style[:20]!r})")
    config = botocore.config.Config(
        # total_max_attempts=1: no botocore retry at all ("max_attempts" would still retry once).
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=min(timeout, MAX_CONNECT_TIMEOUT),
        read_timeout=timeout,
        s3={"addressing_style": style},
        # Presigned S3 URLs: SigV4 (botocore may still presign with the deprecated SigV2).
        signature_version="s3v4" if service == S3 else None,
    )
    # One Session per client: sessions are not thread-safe, clients are.
    return boto3.session.Session().client(service, region_name=region, endpoint_url=endpoint, config=config)


# --- errors -------------------------------------------------------------------------------------


def _redact(text: str) -> str:
    """``text`` without credentials: the configured values themselves, key ids, signatures."""
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID"):
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, "[redacted]")
    text = _KEY_ID.sub("[redacted]", text)
    return _SIGNED.sub(lambda m: f"{m.group(1)}=[redacted]", text)


def _reason(text: object) -> str:
    one_line = " ".join(str(text).split())
    return _redact(one_line)[:REASON_CHARS]




def _hint(headers: Mapping[str, str]) -> float | None:
    return retry_after_seconds(headers.get("retry-after") or headers.get("Retry-After"))


class _Malformed(ValueError):
    """A 2xx reply whose body is not what the API documents (a flaky gateway, a cut body)."""


_UNREADABLE = (_Malformed, ResponseParserError, KeyError, TypeError, ValueError, AttributeError)


def _client_error_parts(exc: ClientError) -> tuple[str, int, str, Mapping[str, str]]:
    error = exc.response.get("Error") or {}
    meta = exc.response.get("ResponseMetadata") or {}
    status = int(meta.get("HTTPStatusCode") or 0)
    code = str(error.get("Code") or status or "Unknown")
    return code, status, str(error.get("Message") or ""), meta.get("HTTPHeaders") or {}


def _transport_error(exc: BotoCoreError, service: str, op: str) -> tuple[str, StepError]:
    """(hooks outcome, error) for what botocore raises before or instead of an HTTP answer."""
    what = f"{service} {op}"
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return "timeout", TransientStepError(f"{what} timed out ({type(exc).__name__}); will retry.")
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | HTTPClientError
                  | ResponseStreamingError | IncompleteReadError):
        return "connection_error", TransientStepError(
            f"{what} failed: connection problem ({type(exc).__name__}: {_reason(exc)}); will retry.")
    if isinstance(exc, FlexibleChecksumError):
        return "malformed", TransientStepError(f"{what}: the reply failed its checksum; will retry.")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return "client_error", PermanentStepError(
            f"{what} could not be called: no usable AWS credentials were found; {_CREDENTIAL_HINT}.")
    if isinstance(exc, ParamValidationError):
        return "client_error", PermanentStepError(f"{what} was refused before sending: {_reason(exc)}")
    # Anything else from botocore is configuration (no region, unknown endpoint...): fix, not retry.
    return "client_error", PermanentStepError(f"{what} could not be called: {type(exc).__name__}: {_reason(exc)}")


def _service_error(exc: ClientError, service: str, op: str) -> tuple[str, StepError]:
    """(hooks outcome, error) for an error answer that has no more specific meaning."""
    code, status, message, headers = _client_error_parts(exc)
    said = f"{code}, HTTP {status}" + (f": {_reason(message)}" if message else "")
    if code in _THROTTLE_CODES or status == 429:
        return "throttled", TransientStepError(
            f"{service} is throttling requests ({said}); will retry.", retry_after=_hint(headers))
    if code in _SERVER_CODES or status >= 500:
        return "server_error", TransientStepError(
            f"{service} had a server error ({said}); will retry.", retry_after=_hint(headers))
    if code in _CREDENTIAL_CODES:
        # No reason quoted: S3's SignatureDoesNotMatch echoes the key id and the signed string.
        return "client_error", PermanentStepError(
            f"{service} refused our credentials ({code}, HTTP {status}): {_CREDENTIAL_HINT}.")
    return "client_error", PermanentStepError(f"{service} refused the request {op} ({said}).")


def _call(
    hooks: RequestHooks,
    provider: str,
    service: str,
    op: str,
    send: Callable[[], Any],
    parse: Callable[[Any], T],
    on_error: Callable[[ClientError], tuple[str, StepError] | None] | None = None,
) -> T:
    """One request with hooks around it; every botocore failure becomes a StepError.

    ``on_error`` may give a more specific meaning to an error answer (NoSuchKey, an image
    error); None falls back to the generic mapping.
    """
    hooks.before(provider, op)  # may raise TransientStepError (shared quota spent): propagate
    started = time.monotonic()
    outcome = "ok"
    try:
        return parse(send())
    except ClientError as exc:
        mapped = on_error(exc) if on_error is not None else None
        outcome, error = mapped if mapped is not None else _service_error(exc, service, op)
        # from None: botocore's exception text may carry what _redact removed.
        raise error from None
    except BotoCoreError as exc:  # before _UNREADABLE: a few of these are also ValueErrors
        outcome, error = _transport_error(exc, service, op)
        raise error from None
    except _UNREADABLE as exc:
        # botocore's own parser fails on a body of the wrong shape (a string where the model
        # says object...) with plain AttributeError/TypeError, so those count as malformed too.
        outcome = "malformed"
        raise TransientStepError(
            f"{service} {op} sent a reply we could not read ({type(exc).__name__}: {_reason(exc)}); will retry."
        ) from None
    finally:
        hooks.after(provider, op, outcome, time.monotonic() - started)


# --- Rekognition --------------------------------------------------------------------------------


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Malformed(f"not a number: {str(value)[:40]!r}")
    return float(value)


def _box(d: Mapping[str, Any]) -> BoundingBox:
    """Rekognition's box clipped to the image (a face cut by the edge has Left < 0)."""
    left, top = _num(d["Left"]), _num(d["Top"])
    right, bottom = left + _num(d["Width"]), top + _num(d["Height"])
    left, top, right, bottom = max(left, 0.0), max(top, 0.0), min(right, 1.0), min(bottom, 1.0)
    if right <= left or bottom <= top:
        raise _Malformed("a bounding box outside the image")
    return BoundingBox(left=round(left, 6), top=round(top, 6), width=round(right - left, 6),
                       height=round(bottom - top, 6))


def _flag(d: Mapping[str, Any]) -> dict[str, Any]:
    value = d["Value"]
    if not isinstance(value, bool):
        raise _Malformed("a boolean attribute without a boolean Value")
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
        raise _Malformed("no FaceDetails list")
    return [_face(d) for d in details]


def _labels_reply(reply: Mapping[str, Any]) -> tuple[Label, ...]:
    labels = reply.get("Labels")
    if not isinstance(labels, list):
        raise _Malformed("no Labels list")
    return tuple(
        Label(
            name=str(lb["Name"]),
            confidence=_num(lb["Confidence"]),
            instances=tuple(_box(i["BoundingBox"]) for i in lb.get("Instances") or [] if i.get("BoundingBox")),
            parents=tuple(str(p["Name"]) for p in lb.get("Parents") or []),
        )
        for lb in labels
    )


def _exif_orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(0x0112, 1))
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError):
        return 1  # a damaged EXIF block: decode_photo treats it as upright too
    return value if 1 <= value <= 8 else 1


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
            fmt, orientation = im.format, _exif_orientation(im)
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
        """pipeline.stories.faces.face_problems with this adapter's thresholds."""
        return face_problems(face, attribute_confidence=self.attribute_confidence, max_abs_yaw=self.max_abs_yaw)

    def _call(self, op: str, parse: Callable[[Any], T], send: Callable[[], Any]) -> T:
        return _call(self.hooks, REKOGNITION, "Amazon Rekognition", op, send, parse, self._image_error)

    @staticmethod
    def _image_error(exc: ClientError) -> tuple[str, StepError] | None:
        code, status, message, _ = _client_error_parts(exc)
        said = f"Amazon Rekognition: {code}, HTTP {status}" + (f": {_reason(message)}" if message else "")
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


# --- S3 -----------------------------------------------------------------------------------------


def _normalise_prefix(prefix: str) -> str:
    cleaned = prefix.strip().strip("/")
    return f"{check_key(cleaned)}/" if cleaned else ""


class S3Objects:
    """Reads objects from any bucket: the uploaded photo, whose row names its own bucket.

    Usable without an output bucket (photos in S3, generated files stored locally).
    """

    def __init__(self, client: Any = None, hooks: RequestHooks | None = None) -> None:
        self.client = client if client is not None else make_client(S3)
        self.hooks: RequestHooks = hooks if hooks is not None else NoHooks()

    @classmethod
    def from_env(cls, hooks: RequestHooks | None = None, env: Mapping[str, str] | None = None) -> S3Objects:
        return cls(client=make_client(S3, env), hooks=hooks)

    def read_object(self, bucket: str, key: str) -> bytes:
        """The photo at ``photos.bucket`` + ``photos.object_key`` (no prefix is applied)."""
        if not bucket:
            raise PermanentStepError("The photo's row has no bucket, so it cannot be read from S3.")
        return self._read(bucket, check_key(key), MAX_PHOTO_BYTES)

    def _read(self, bucket: str, key: str, max_bytes: int | None) -> bytes:
        def fetch() -> bytes:
            reply = self.client.get_object(Bucket=bucket, Key=key)
            body = reply["Body"]
            try:
                length = reply.get("ContentLength")
                if max_bytes is not None and isinstance(length, int) and length > max_bytes:
                    raise PermanentStepError(
                        f"The photo is too large ({length // (1024 * 1024)} MB; at most "
                        f"{max_bytes // (1024 * 1024)} MB). Please upload a smaller JPEG or PNG.")
                # Read inside the request's hooks and error mapping: a connection dropped
                # mid-body is as transient as one dropped before the headers.
                data: bytes = body.read()
            finally:
                body.close()
            return data

        return self._call("GetObject", bucket, key, fetch, lambda data: data)

    def _call(self, op: str, bucket: str, key: str, send: Callable[[], Any], parse: Callable[[Any], T]) -> T:
        def on_error(exc: ClientError) -> tuple[str, StepError] | None:
            code, status, _, _ = _client_error_parts(exc)
            if code in _MISSING_CODES or (status == 404 and code != "NoSuchBucket"):
                return "client_error", ObjectMissing(f"The stored file {key!r} does not exist in bucket {bucket!r}.")
            if code == "NoSuchBucket":
                return "client_error", PermanentStepError(
                    f"The S3 bucket {bucket!r} does not exist (NoSuchBucket, HTTP {status}): check the bucket "
                    "name (S3_BUCKET, or the photo's row) and AWS_REGION.")
            if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
                return "client_error", PermanentStepError(
                    f"The S3 bucket {bucket!r} is in another region ({code}, HTTP {status}): set AWS_REGION to "
                    "the bucket's region.")
            if code in ("AccessDenied", "AllAccessDisabled", "AccountProblem") or (
                status == 403 and code not in _CREDENTIAL_CODES  # HEAD errors have no code, only 403
            ):
                missing = " (S3 also answers 403 for a missing object when the credentials may not list " \
                          "the bucket)" if op != "PutObject" else ""
                return "client_error", PermanentStepError(
                    f"Access to S3 bucket {bucket!r} was denied ({code}, HTTP {status}) for {op}{missing}: "
                    f"{_CREDENTIAL_HINT}, and the bucket policy.")
            return None

        return _call(self.hooks, S3, f"Amazon S3 (bucket {bucket!r})", op, send, parse, on_error)


class S3Storage(S3Objects):
    """Storage on one S3 bucket (generated images and books), keys under ``prefix``.

    An S3 PUT is atomic: a reader never sees half an object, and a re-run overwrites its own.
    """

    def __init__(self, bucket: str, prefix: str = "", client: Any = None, hooks: RequestHooks | None = None) -> None:
        if not bucket:
            raise ValueError("bucket is empty")
        super().__init__(client=client, hooks=hooks)
        self.bucket = bucket
        self.prefix = _normalise_prefix(prefix)

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r})"

    @classmethod
    def from_env(cls, hooks: RequestHooks | None = None, env: Mapping[str, str] | None = None) -> S3Storage:
        """``S3_BUCKET`` (required: SystemExit without it) and ``S3_PREFIX``."""
        e = os.environ if env is None else env
        bucket = e.get("S3_BUCKET", "").strip()
        if not bucket:
            raise SystemExit("configuration error: S3_BUCKET is not set (S3 storage needs the output bucket's name)")
        return cls(bucket, prefix=e.get("S3_PREFIX", ""), client=make_client(S3, e), hooks=hooks)

    def object_key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        k = self.object_key(key)
        self._call("PutObject", self.bucket, k,
                   lambda: self.client.put_object(Bucket=self.bucket, Key=k, Body=data, ContentType=content_type),
                   lambda _reply: None)

    def get(self, key: str) -> bytes:
        return self._read(self.bucket, self.object_key(key), None)

    def exists(self, key: str) -> bool:
        k = self.object_key(key)

        def head() -> bool:
            try:
                self.client.head_object(Bucket=self.bucket, Key=k)
            except ClientError as exc:
                code, status, _, _ = _client_error_parts(exc)
                if status == 404 and code != "NoSuchBucket":  # HEAD has no body: a bare 404 is "absent"
                    return False
                raise
            return True

        return self._call("HeadObject", self.bucket, k, head, bool)

    def url(self, key: str, expires_in: int = 3600) -> str:
        """A presigned GET URL valid for ``expires_in`` seconds (computed locally, no request).

        With temporary credentials the URL carries the session token, as SigV4 requires: hand
        it only to whoever should read the object.
        """
        if not 1 <= expires_in <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"expires_in must be between 1 and {MAX_PRESIGN_SECONDS} seconds")
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.object_key(key)}, ExpiresIn=expires_in
        )
        return url
