"""A fake Amazon Rekognition for tests: real HTTP on 127.0.0.1, the real boto3 client in front.

It speaks the JSON 1.1 protocol botocore uses: ``POST /`` with
``X-Amz-Target: RekognitionService.DetectFaces`` (or ``.DetectLabels``),
``Content-Type: application/x-amz-json-1.1``, a SigV4 ``Authorization`` header and the image
base64-encoded in ``Image.Bytes``. Errors come back as ``{"__type": ..., "message": ...}`` with
an ``x-amzn-RequestId`` header, as AWS sends them.

By default the answers are REAL detections of the image sent: faces found by the project's
offline detector (``LocalPhotoAnalyzer``), returned in Rekognition's ``FaceDetails`` shape.
What the Haar detector cannot tell is derived or fixed, never random:

- ``BoundingBox``: the detector's box. ``Confidence``: ``90 + local/10`` (Rekognition reports
  >= 90 for practically every face it returns; the local score is uncalibrated).
- ``Landmarks``: detected eyes and mouth where found, else standard face proportions.
- ``Pose.Roll`` from the eye line; ``Pose.Yaw`` from the eyes' offset in the box; ``Pitch`` 0.
- ``Quality``: the face region's mean luminance and Laplacian sharpness, scaled to 0..100.
- ``Smile``/``Emotions`` from the smile detector; ``AgeRange``, ``Gender``, ``Beard``... fixed.
- Labels: ``Person`` (alias ``Human``, instances at the face boxes), ``Face``, ``Smile``.

Like the real service it refuses images that are not JPEG/PNG (``InvalidImageFormatException``:
HEIC, AVIF, WebP...), over 5 MB or, for DetectLabels, over 10,000 px a side
(``ImageTooLargeException``), and honours ``Attributes``, ``MaxLabels`` and
``MinConfidence``.

Fault injection, for the next requests in order, whatever their target (``fake.script([...])``):

- ``("error", status, aws_type[, headers[, message]])``: that AWS error
- ``("hang", seconds)``: say nothing for that long, then answer normally
- ``("close",)``: close the connection without answering
- ``("malformed",)``: 200 with a body cut off mid-JSON
- ``("faces", [FaceDetail dicts])``: 200 with exactly these ``FaceDetails``
- ``("labels", [Label dicts])``: 200 with exactly these ``Labels``

``face_detail(left=, top=, width=, height=, confidence=, sunglasses=(v, c), occluded=(v, c), yaw=,
**overrides)`` builds a complete FaceDetail (Attributes=ALL shape) for ``("faces", [...])``.

Every request is recorded in ``requests`` (target, monotonic time, headers, image facts).
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.providers.base import Face, Landmark
from pipeline.providers.local_vision import LocalPhotoAnalyzer
from pipeline.providers.photo_decode import decode_photo
from tests.fakes.base import LocalHTTPFake

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # ImageBlob max in botocore's model for Rekognition
# "The maximum image dimensions for DetectLabels is 10K pixels for both width and height."
# (https://docs.aws.amazon.com/rekognition/latest/dg/limits.html)
MAX_LABELS_SIDE = 10_000
EMOTIONS = ("HAPPY", "CALM", "SURPRISED", "CONFUSED", "SAD", "ANGRY", "DISGUSTED", "FEAR")
# Attributes=["DEFAULT"] (or none) returns only these keys and the five main landmarks.
DEFAULT_KEYS = ("BoundingBox", "Confidence", "Pose", "Quality", "Landmarks")
DEFAULT_LANDMARKS = ("eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight")


@dataclass
class RecordedRequest:
    target: str
    t: float  # time.monotonic() when the request arrived
    headers: dict[str, str]
    params: dict[str, Any] = field(default_factory=dict)  # the JSON body without the image bytes
    image_bytes: int = 0
    image_format: str | None = None  # "JPEG"/"PNG"/..., None when unreadable
    image_size: tuple[int, int] | None = None


def aws_error(aws_type: str, message: str) -> dict[str, str]:
    return {"__type": aws_type, "message": message}


def face_detail(
    *,
    left: float = 0.3,
    top: float = 0.2,
    width: float = 0.3,
    height: float = 0.4,
    confidence: float = 99.9,
    sunglasses: tuple[bool, float] = (False, 99.0),
    occluded: tuple[bool, float] = (False, 99.0),
    yaw: float = 0.0,
    **extra: Any,
) -> dict[str, Any]:
    """A complete FaceDetail as Rekognition returns it with Attributes=["ALL"], for scripts."""
    detail: dict[str, Any] = {
        "BoundingBox": {"Width": width, "Height": height, "Left": left, "Top": top},
        "AgeRange": {"Low": 4, "High": 8},
        "Smile": {"Value": True, "Confidence": 97.5},
        "Eyeglasses": {"Value": False, "Confidence": 98.1},
        "Sunglasses": {"Value": sunglasses[0], "Confidence": sunglasses[1]},
        "Gender": {"Value": "Female", "Confidence": 90.0},
        "Beard": {"Value": False, "Confidence": 99.0},
        "Mustache": {"Value": False, "Confidence": 99.0},
        "EyesOpen": {"Value": True, "Confidence": 96.0},
        "MouthOpen": {"Value": False, "Confidence": 88.0},
        "Emotions": [
            {"Type": "HAPPY", "Confidence": 95.0},
            {"Type": "CALM", "Confidence": 3.0},
            {"Type": "SURPRISED", "Confidence": 1.0},
            {"Type": "CONFUSED", "Confidence": 0.5},
            {"Type": "SAD", "Confidence": 0.2},
        ],
        "Landmarks": _proportional_landmarks(left, top, width, height, ()),
        "Pose": {"Roll": 1.5, "Yaw": yaw, "Pitch": -3.0},
        "Quality": {"Brightness": 75.0, "Sharpness": 80.0},
        "Confidence": confidence,
        "FaceOccluded": {"Value": occluded[0], "Confidence": occluded[1]},
        "EyeDirection": {"Yaw": 2.0, "Pitch": -4.0, "Confidence": 95.0},
    }
    detail.update(extra)
    return detail


def _proportional_landmarks(
    left: float, top: float, width: float, height: float, found: tuple[Landmark, ...]
) -> list[dict[str, Any]]:
    """Rekognition always returns every landmark; detected ones win over face proportions."""
    have = {lm.type: (lm.x, lm.y) for lm in found}
    eye_l = have.get("eyeLeft", (left + 0.30 * width, top + 0.40 * height))
    eye_r = have.get("eyeRight", (left + 0.70 * width, top + 0.40 * height))
    mouth = have.get("mouth", ((eye_l[0] + eye_r[0]) / 2, top + 0.78 * height))
    half = 0.16 * width
    points = {
        "eyeLeft": eye_l,
        "eyeRight": eye_r,
        "leftPupil": eye_l,
        "rightPupil": eye_r,
        "nose": ((eye_l[0] + eye_r[0]) / 2, (eye_l[1] + eye_r[1]) / 2 * 0.4 + mouth[1] * 0.6 - 0.05 * height),
        "mouthLeft": (mouth[0] - half, mouth[1]),
        "mouthRight": (mouth[0] + half, mouth[1]),
        "mouthUp": (mouth[0], mouth[1] - 0.04 * height),
        "mouthDown": (mouth[0], mouth[1] + 0.04 * height),
        "chinBottom": (mouth[0], top + height),
    }
    return [{"Type": name, "X": round(x, 6), "Y": round(y, 6)} for name, (x, y) in points.items()]


def _measured_detail(face: Face, gray: np.ndarray, full: bool) -> dict[str, Any]:
    """Rekognition's FaceDetail for a face the offline detector found (see the module doc)."""
    h_img, w_img = gray.shape
    b = face.box
    x0, y0 = int(b.left * w_img), int(b.top * h_img)
    x1, y1 = max(x0 + 1, int((b.left + b.width) * w_img)), max(y0 + 1, int((b.top + b.height) * h_img))
    roi = gray[y0:y1, x0:x1]
    brightness = float(roi.mean()) / 255 * 100
    lap_var = float(cv2.Laplacian(roi, cv2.CV_64F).var())
    sharpness = 100 * (1 - math.exp(-lap_var / 300))

    marks = {lm.type: lm for lm in face.landmarks}
    roll = yaw = 0.0
    if "eyeLeft" in marks and "eyeRight" in marks:
        el, er = marks["eyeLeft"], marks["eyeRight"]
        roll = math.degrees(math.atan2((er.y - el.y) * h_img, (er.x - el.x) * w_img))
        mid = (el.x + er.x) / 2
        yaw = max(-90.0, min(90.0, (mid - (b.left + b.width / 2)) / (b.width / 2) * 90))
    smile = face.attributes.get("smile", {})
    smiling = bool(smile.get("value"))
    detail: dict[str, Any] = {
        "BoundingBox": {"Width": b.width, "Height": b.height, "Left": b.left, "Top": b.top},
        "Landmarks": _proportional_landmarks(b.left, b.top, b.width, b.height, face.landmarks),
        "Pose": {"Roll": round(roll, 3), "Yaw": round(yaw, 3), "Pitch": 0.0},
        "Quality": {"Brightness": round(brightness, 3), "Sharpness": round(sharpness, 3)},
        "Confidence": round(min(99.999, 90 + face.confidence / 10), 3),
    }
    if not full:
        detail["Landmarks"] = [lm for lm in detail["Landmarks"] if lm["Type"] in DEFAULT_LANDMARKS]
        return detail
    eyes_found = "eyeLeft" in marks and "eyeRight" in marks
    top_emotion = "HAPPY" if smiling else "CALM"
    emotions = [{"Type": top_emotion, "Confidence": 92.0}] + [
        {"Type": e, "Confidence": round(8.0 / 2 ** (i + 1), 3)}
        for i, e in enumerate(x for x in EMOTIONS if x != top_emotion)
    ]
    detail.update({
        "AgeRange": {"Low": 25, "High": 35},  # fixed: nothing here estimates age
        "Smile": {"Value": smiling, "Confidence": float(smile.get("confidence", 70.0))},
        "Eyeglasses": {"Value": False, "Confidence": 90.0},
        "Sunglasses": {"Value": False, "Confidence": 95.0 if eyes_found else 70.0},
        "Gender": {"Value": "Female", "Confidence": 50.0},  # fixed
        "Beard": {"Value": False, "Confidence": 90.0},
        "Mustache": {"Value": False, "Confidence": 90.0},
        "EyesOpen": {"Value": eyes_found, "Confidence": 90.0 if eyes_found else 60.0},
        "MouthOpen": {"Value": False, "Confidence": 70.0},
        "Emotions": emotions,
        "FaceOccluded": {"Value": False, "Confidence": 90.0},
        "EyeDirection": {"Yaw": 0.0, "Pitch": 0.0, "Confidence": 80.0},
    })
    return detail


class FakeRekognition(LocalHTTPFake):
    """``start()``, ``stop()``, ``url`` (the endpoint for ``AWS_ENDPOINT_URL``), ``requests``."""

    name = "fake-rekognition"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[RecordedRequest] = []
        self._script: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()
        self._analyzer = LocalPhotoAnalyzer()
        # One detection thread: OpenCV cascades load per thread, and every connection gets a new
        # handler thread; reloading them each time would make answers slow and uneven.
        self._detector = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-rekognition-detect")

    @property
    def url(self) -> str:
        return self.root

    def _before_start(self) -> None:
        self._detector.submit(self._warm_up).result()

    def _after_stop(self) -> None:
        self._detector.shutdown(wait=True)

    def script(self, items: list[tuple[Any, ...]]) -> None:
        """Queue responses for the next requests (then back to real detections)."""
        with self._lock:
            self._script.extend(items)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()

    def targets(self) -> list[str]:
        with self._lock:
            return [r.target for r in self.requests]

    # --- used by the handler ---------------------------------------------------------------

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(rec)

    def _next(self) -> tuple[Any, ...] | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def detect(self, image: bytes, op: str, params: dict[str, Any]) -> dict[str, Any]:
        """The service's answer to a valid request, computed on the detection thread."""
        return self._detector.submit(self._detect, image, op, params).result()

    def _warm_up(self) -> None:
        buf = io.BytesIO()
        Image.new("RGB", (96, 96), "gray").save(buf, "PNG")
        self._analyzer.analyze_photo(buf.getvalue())

    def _detect(self, image: bytes, op: str, params: dict[str, Any]) -> dict[str, Any]:
        analysis = self._analyzer.analyze_photo(image)
        if op == "DetectFaces":
            attrs = params.get("Attributes") or ["DEFAULT"]
            full = "ALL" in attrs
            gray = np.asarray(decode_photo(image, target_long_side=1024).image.convert("L"))
            return {"FaceDetails": [_measured_detail(f, gray, full) for f in analysis.faces]}
        labels: list[dict[str, Any]] = []
        if analysis.faces:
            conf = round(min(99.999, 90 + max(f.confidence for f in analysis.faces) / 10), 3)
            boxes = [
                {"BoundingBox": {"Width": f.box.width, "Height": f.box.height, "Left": f.box.left,
                                 "Top": f.box.top}, "Confidence": conf}
                for f in analysis.faces
            ]
            labels.append({"Name": "Person", "Confidence": conf, "Instances": boxes, "Parents": [],
                           "Aliases": [{"Name": "Human"}], "Categories": [{"Name": "Person Description"}]})
            labels.append({"Name": "Face", "Confidence": conf, "Instances": [], "Parents": [{"Name": "Person"}],
                           "Aliases": [], "Categories": [{"Name": "Person Description"}]})
            smiles = [f.attributes["smile"]["confidence"] for f in analysis.faces if "smile" in f.attributes]
            if smiles:
                labels.append({"Name": "Smile", "Confidence": round(min(99.0, 80 + max(smiles) / 5), 3),
                               "Instances": [], "Parents": [{"Name": "Face"}, {"Name": "Person"}],
                               "Aliases": [], "Categories": [{"Name": "Expressions and Emotions"}]})
        min_conf = float(params.get("MinConfidence", 55.0))
        labels = [lb for lb in labels if lb["Confidence"] >= min_conf][: int(params.get("MaxLabels", 1000))]
        return {"Labels": labels, "LabelModelVersion": "3.0"}


class _Handler(BaseHTTPRequestHandler):
    owner: FakeRekognition
    protocol_version = "HTTP/1.1"  # keep-alive, like AWS (botocore pools connections)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        return None

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        target = self.headers.get("X-Amz-Target", "")
        rec = RecordedRequest(target=target, t=time.monotonic(),
                              headers={k.lower(): v for k, v in self.headers.items()})
        self.owner._record(rec)

        if not self.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 Credential="):
            self._error(400, "MissingAuthenticationTokenException", "Missing Authentication Token")
            return
        if self.headers.get("Content-Type") != "application/x-amz-json-1.1":
            self._error(400, "SerializationException", "Unexpected content type")
            return
        op = target.removeprefix("RekognitionService.")
        if not target.startswith("RekognitionService.") or op not in ("DetectFaces", "DetectLabels"):
            self._error(400, "UnknownOperationException", f"Unknown operation {target[:60]}")
            return
        try:
            params = json.loads(raw)
            image = base64.b64decode(params["Image"]["Bytes"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            self._error(400, "InvalidParameterException", "Request has invalid parameters")
            return
        rec.params = {k: v for k, v in params.items() if k != "Image"}
        rec.image_bytes = len(image)
        try:
            with Image.open(io.BytesIO(image)) as im:
                rec.image_format, rec.image_size = im.format, im.size
        except (UnidentifiedImageError, OSError, ValueError):
            pass

        step = self.owner._next() or ("normal",)
        kind = step[0]
        if kind == "error":
            status, aws_type = int(step[1]), str(step[2])
            headers = dict(step[3]) if len(step) > 3 else {}
            message = str(step[4]) if len(step) > 4 else f"Scripted {aws_type}"
            self._error(status, aws_type, message, headers)
        elif kind == "hang":
            # The client gives up meanwhile; the late answer then goes to a closed socket.
            if self.owner._stopping.wait(float(step[1])):
                self.close_connection = True  # the fake is stopping: nothing left to answer with
                return
            self._answer(op, image, params, rec)
        elif kind == "close":
            self.close_connection = True
        elif kind == "malformed":
            self._send(200, b'{"FaceDetails": [{"BoundingBox": {"Width": 0.2, "Hei')
        elif kind == "faces":
            self._send(200, {"FaceDetails": step[1]})
        elif kind == "labels":
            self._send(200, {"Labels": step[1], "LabelModelVersion": "3.0"})
        else:
            self._answer(op, image, params, rec)

    def _answer(self, op: str, image: bytes, params: dict[str, Any], rec: RecordedRequest) -> None:
        if len(image) > MAX_IMAGE_BYTES:
            self._error(400, "ImageTooLargeException", "Image size is too large.")
            return
        if rec.image_format not in ("JPEG", "PNG"):
            self._error(400, "InvalidImageFormatException", "Request has invalid image format")
            return
        if op == "DetectLabels" and rec.image_size and max(rec.image_size) > MAX_LABELS_SIDE:
            self._error(400, "ImageTooLargeException", "Image dimensions exceed the limit.")
            return
        self._send(200, self.owner.detect(image, op, params))

    def _error(self, status: int, aws_type: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, aws_error(aws_type, message), headers)

    def _send(self, status: int, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left


FakeRekognition.handler = _Handler
