"""The Rekognition analyzer and S3 storage through the real boto3, against fakes on 127.0.0.1.

Rekognition: tests/fakes/rekognition_server.py (real detections by default, scripted faults).
S3: moto's server, behind a small fault-injecting proxy (503 SlowDown, hangs, closes).
"""
from __future__ import annotations

import io
import json
import socket
import threading
import time
import traceback
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import numpy as np
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image

from pipeline.kernel.errors import PermanentStepError, StepError, TransientStepError
from pipeline.kernel.storage import ObjectMissing, UnsafeKey
from pipeline.providers.aws import make_client
from pipeline.providers.face_json import analysis_from_json, analysis_to_json
from pipeline.providers.rekognition import DETECTOR_NAME, RekognitionAnalyzer
from pipeline.providers.s3 import S3Objects, S3Storage
from tests.fakes.rekognition_server import FakeRekognition, face_detail
from tests.support import astronaut_png, faceless_png

KEY_ID = "AKIAFAKEKEYID0123456"
SECRET = "fAkeSeCrEt/0123456789+abcdefghijklmnopqrs"  # 40 chars, like a real secret key
TOKEN = "FakeSessionToken//DoNotLeak0123456789"
TIMEOUT = 5.0  # AWS_TIMEOUT by default: detection on a big photo must fit comfortably
SHORT_TIMEOUT = 0.5  # for the hang tests: hangs are 2 s, so a timeout shows within ~0.5 s

# In skimage.data.astronaut() (512x512) the face spans roughly x 180..270, y 65..165.
ASTRONAUT_FACE_X = (170, 290)
ASTRONAUT_FACE_Y = (55, 180)


class RecordingHooks:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.calls: list[tuple[str, ...]] = []

    def before(self, provider: str, operation: str) -> None:
        self.calls.append(("before", provider, operation))
        if self.refuse:
            raise TransientStepError("quota spent", retry_after=1.5)

    def after(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        self.calls.append(("after", provider, operation, outcome))

    def outcomes(self) -> list[str]:
        return [c[3] for c in self.calls if c[0] == "after"]


def raised(kind: type[StepError], call: Callable[[], Any]) -> StepError:
    """The StepError ``call`` raises; its text and traceback hold no credential."""
    with pytest.raises(kind) as info:
        call()
    err = info.value
    text = "".join(traceback.format_exception(err)) + repr(err)
    for secret in (SECRET, TOKEN, KEY_ID):
        assert secret not in text
    return err


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Dummy credentials, no ~/.aws files, no instance metadata: only the fakes are reachable."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_REKOGNITION",
                 "AWS_DEFAULT_REGION", "REKOGNITION_MIN_FACE_CONFIDENCE", "S3_PREFIX", "S3_ADDRESSING_STYLE",
                 "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_TIMEOUT", str(TIMEOUT))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# --- Rekognition ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rekognition_server() -> Iterator[FakeRekognition]:
    fake = FakeRekognition().start()
    yield fake
    fake.stop()


@pytest.fixture()
def fake(rekognition_server: FakeRekognition, monkeypatch: pytest.MonkeyPatch) -> FakeRekognition:
    rekognition_server.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", rekognition_server.url)
    return rekognition_server


@pytest.fixture()
def hooks() -> RecordingHooks:
    return RecordingHooks()


@pytest.fixture()
def analyzer(fake: FakeRekognition, hooks: RecordingHooks) -> RekognitionAnalyzer:
    return RekognitionAnalyzer.from_env(hooks=hooks)


@pytest.fixture(scope="module")
def astronaut() -> bytes:
    return astronaut_png()


def test_a_real_photo_gives_one_face_with_landmarks_attributes_and_labels(
    fake: FakeRekognition, analyzer: RekognitionAnalyzer, hooks: RecordingHooks, astronaut: bytes
) -> None:
    a = analyzer.analyze_photo(astronaut)

    assert a.detector == DETECTOR_NAME == "aws-rekognition"
    assert (a.image_width, a.image_height) == (512, 512)
    assert len(a.faces) == 1 and a.primary_face is a.faces[0]
    face = a.faces[0]
    cx, cy = (face.box.left + face.box.width / 2) * 512, (face.box.top + face.box.height / 2) * 512
    assert ASTRONAUT_FACE_X[0] < cx < ASTRONAUT_FACE_X[1] and ASTRONAUT_FACE_Y[0] < cy < ASTRONAUT_FACE_Y[1]
    assert face.confidence >= 90
    marks = {lm.type: lm for lm in face.landmarks}
    assert {"eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight"} <= set(marks)
    assert marks["eyeLeft"].x < marks["eyeRight"].x  # Rekognition's naming: image left first
    assert marks["eyeLeft"].y < marks["mouthLeft"].y
    attrs = face.attributes
    assert {"age_range", "smile", "eyeglasses", "sunglasses", "eyes_open", "emotions", "pose", "quality",
            "face_occluded"} <= set(attrs)
    assert "gender" not in attrs and "beard" not in attrs
    assert attrs["sunglasses"]["value"] is False
    assert len(attrs["emotions"]) == 3
    assert [e["confidence"] for e in attrs["emotions"]] == sorted((e["confidence"] for e in attrs["emotions"]),
                                                                   reverse=True)
    assert set(attrs["pose"]) == {"roll", "yaw", "pitch"}
    person = {lb.name: lb for lb in a.labels}["Person"]
    assert person.instances and person.confidence >= 70
    assert "Person" in {lb.name: lb for lb in a.labels}["Face"].parents

    # What the step stores: JSON for the JSONB columns, and back.
    faces_json, labels_json, objects_json = analysis_to_json(a)
    json.dumps([faces_json, labels_json, objects_json])
    assert faces_json["detector"] == "aws-rekognition" and faces_json["primary_face_index"] == 0
    assert any(o["name"] == "Person" for o in objects_json)
    assert analysis_from_json(faces_json, labels_json, objects_json) == a

    # The requests as AWS would see them: JSON 1.1, signed, the PNG sent unchanged.
    assert fake.targets() == ["RekognitionService.DetectFaces", "RekognitionService.DetectLabels"]
    faces_req, labels_req = fake.requests
    assert faces_req.headers["content-type"] == "application/x-amz-json-1.1"
    assert faces_req.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")
    assert "/us-east-1/rekognition/aws4_request" in faces_req.headers["authorization"]
    assert faces_req.params == {"Attributes": ["ALL"]}
    assert labels_req.params == {"MaxLabels": 50, "MinConfidence": 70.0}
    assert faces_req.image_bytes == len(astronaut) and faces_req.image_format == "PNG"
    assert hooks.calls == [("before", "rekognition", "DetectFaces"), ("after", "rekognition", "DetectFaces", "ok"),
                           ("before", "rekognition", "DetectLabels"), ("after", "rekognition", "DetectLabels", "ok")]


def test_a_photo_without_a_face_gives_no_faces_and_no_label_request(
    fake: FakeRekognition, analyzer: RekognitionAnalyzer
) -> None:
    a = analyzer.analyze_photo(faceless_png())

    assert a.faces == () and a.primary_face is None and a.labels == ()
    assert (a.image_width, a.image_height) == (600, 400)
    assert fake.targets() == ["RekognitionService.DetectFaces"]  # the step fails it: labels would be wasted


def test_several_faces_are_all_kept_and_the_largest_is_the_protagonist(
    fake: FakeRekognition, analyzer: RekognitionAnalyzer, astronaut: bytes
) -> None:
    small = face_detail(left=0.05, top=0.1, width=0.15, height=0.2)
    large = face_detail(left=0.4, top=0.2, width=0.35, height=0.45)
    medium = face_detail(left=0.75, top=0.5, width=0.2, height=0.25)
    fake.script([("faces", [small, large, medium])])

    a = analyzer.analyze_photo(astronaut)

    assert len(a.faces) == 3
    assert a.primary_face is not None and a.primary_face.box.left == 0.4
    assert a.faces[0] == a.primary_face  # largest first
    assert analysis_to_json(a)[0]["primary_face_index"] == 0


def test_faces_below_the_confidence_threshold_are_dropped(
    fake: FakeRekognition, analyzer: RekognitionAnalyzer, astronaut: bytes
) -> None:
    big_but_unsure = face_detail(left=0.1, top=0.1, width=0.5, height=0.6, confidence=85.0)
    sure = face_detail(left=0.65, top=0.3, width=0.2, height=0.25, confidence=99.5)
    fake.script([("faces", [big_but_unsure, sure])])

    a = analyzer.analyze_photo(astronaut)

    assert [f.confidence for f in a.faces] == [99.5]
    assert a.primary_face is not None and a.primary_face.box.left == 0.65


def test_only_unsure_faces_count_as_no_face(fake: FakeRekognition, analyzer: RekognitionAnalyzer,
                                           astronaut: bytes) -> None:
    fake.script([("faces", [face_detail(confidence=60.0)])])

    assert analyzer.analyze_photo(astronaut).primary_face is None
    assert fake.targets() == ["RekognitionService.DetectFaces"]


def test_the_confidence_threshold_comes_from_the_environment(
    fake: FakeRekognition, monkeypatch: pytest.MonkeyPatch, astronaut: bytes
) -> None:
    monkeypatch.setenv("REKOGNITION_MIN_FACE_CONFIDENCE", "50")
    fake.script([("faces", [face_detail(confidence=60.0)])])

    assert RekognitionAnalyzer.from_env().analyze_photo(astronaut).primary_face is not None

    monkeypatch.setenv("REKOGNITION_MIN_FACE_CONFIDENCE", "150")
    with pytest.raises(SystemExit, match="REKOGNITION_MIN_FACE_CONFIDENCE"):
        RekognitionAnalyzer.from_env()


@pytest.mark.parametrize(("detail", "words"), [
    (face_detail(sunglasses=(True, 95.0)), "sunglasses"),
    (face_detail(occluded=(True, 88.0)), "covered"),
    (face_detail(yaw=72.0), "turned too far"),
    (face_detail(yaw=-65.0), "turned too far"),
    (face_detail(sunglasses=(True, 99.0), yaw=80.0), "sunglasses; the child's face is turned"),
])
def test_a_protagonist_we_cannot_draw_from_is_refused_with_the_reason(
    fake: FakeRekognition, analyzer: RekognitionAnalyzer, astronaut: bytes, detail: dict[str, Any], words: str
) -> None:
    # A clear second face does not save the photo: the protagonist is the largest one.
    fake.script([("faces", [detail, face_detail(left=0.0, top=0.0, width=0.05, height=0.05)])])

    err = raised(PermanentStepError, lambda: analyzer.analyze_photo(astronaut))

    assert words in str(err) and "Please upload a clear photo" in str(err)
    assert fake.targets() == ["RekognitionService.DetectFaces"]  # no labels for a refused photo


def test_unsure_sunglasses_and_a_small_pose_are_accepted(fake: FakeRekognition, analyzer: RekognitionAnalyzer,
                                                        astronaut: bytes) -> None:
    fake.script([("faces", [face_detail(sunglasses=(True, 70.0), occluded=(True, 50.0), yaw=45.0)])])

    a = analyzer.analyze_photo(astronaut)

    assert a.primary_face is not None and a.primary_face.attributes["sunglasses"]["value"] is True


def test_a_face_too_few_pixels_across_is_refused(fake: FakeRekognition, analyzer: RekognitionAnalyzer) -> None:
    # 30% of a 200x200 photo is 60 px: a big share of the picture, too few pixels for a likeness.
    photo = _png(Image.fromarray(np.asarray(Image.open(io.BytesIO(astronaut_png())).resize((200, 200)))))
    fake.script([("faces", [face_detail(width=0.3, height=0.3)])])

    a = analyzer.analyze_photo(photo)

    # the step refuses it as too small (tests/test_phone_photos.py), not as "no face"
    assert a.faces == () and len(a.small_faces) == 1
    assert fake.targets() == ["RekognitionService.DetectFaces"]


def test_a_face_under_two_percent_of_the_photo_is_too_small(fake: FakeRekognition, analyzer: RekognitionAnalyzer,
                                                            astronaut: bytes) -> None:
    fake.script([("faces", [face_detail(width=0.1, height=0.15), face_detail(left=0.0, top=0.0, width=0.05,
                                                                              height=0.05)])])  # 1.5% and 0.25%
    a = analyzer.analyze_photo(astronaut)

    assert a.faces == () and [f.box.width for f in a.small_faces] == [0.1, 0.05]


def test_boxes_are_clipped_and_landmarks_outside_the_image_dropped(
    fake: FakeRekognition, analyzer: RekognitionAnalyzer, astronaut: bytes
) -> None:
    detail = face_detail(left=-0.1, top=0.2, width=0.5, height=0.5)
    detail["Landmarks"] = [{"Type": "eyeLeft", "X": -0.02, "Y": 0.4}, {"Type": "eyeRight", "X": 0.2, "Y": 0.4}]
    fake.script([("faces", [detail])])

    face = analyzer.analyze_photo(astronaut).faces[0]

    assert (face.box.left, face.box.width) == (0.0, 0.4)
    assert [lm.type for lm in face.landmarks] == ["eyeRight"]


@pytest.mark.parametrize(("code", "headers", "retry_after"), [
    ("ThrottlingException", {"Retry-After": "3"}, 3.0),
    ("ProvisionedThroughputExceededException", {}, None),
    ("LimitExceededException", {"Retry-After": "1.5"}, 1.5),
])
def test_throttling_is_transient_with_retry_after(
    fake: FakeRekognition, analyzer: RekognitionAnalyzer, hooks: RecordingHooks, astronaut: bytes,
    code: str, headers: dict[str, str], retry_after: float | None
) -> None:
    fake.script([("error", 400, code, headers)])

    err = raised(TransientStepError, lambda: analyzer.analyze_photo(astronaut))

    assert isinstance(err, TransientStepError) and err.retry_after == retry_after
    assert code in str(err) and "HTTP 400" in str(err)
    assert len(fake.requests) == 1  # botocore did not retry
    assert hooks.outcomes() == ["throttled"]


@pytest.mark.parametrize(("status", "code"), [
    (500, "InternalServerError"), (503, "ServiceUnavailableException"), (502, "BadGateway"), (504, "504"),
])
def test_server_errors_are_transient_and_not_retried_by_botocore(
    fake: FakeRekognition, analyzer: RekognitionAnalyzer, hooks: RecordingHooks, astronaut: bytes,
    status: int, code: str
) -> None:
    fake.script([("error", status, code)])

    err = raised(TransientStepError, lambda: analyzer.analyze_photo(astronaut))

    assert f"HTTP {status}" in str(err)
    assert len(fake.requests) == 1
    assert hooks.outcomes() == ["server_error"]


def test_a_server_error_on_labels_is_transient_too(fake: FakeRekognition, analyzer: RekognitionAnalyzer,
                                                   hooks: RecordingHooks, astronaut: bytes) -> None:
    fake.script([("faces", [face_detail()]), ("error", 500, "InternalServerError")])

    raised(TransientStepError, lambda: analyzer.analyze_photo(astronaut))

    assert hooks.outcomes() == ["ok", "server_error"]


def test_a_hang_past_the_read_timeout_is_transient_after_exactly_one_request(
    fake: FakeRekognition, hooks: RecordingHooks, astronaut: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_TIMEOUT", str(SHORT_TIMEOUT))
    analyzer = RekognitionAnalyzer.from_env(hooks=hooks)
    fake.script([("hang", 2.0)])
    started = time.monotonic()

    err = raised(TransientStepError, lambda: analyzer.analyze_photo(astronaut))

    assert time.monotonic() - started < SHORT_TIMEOUT + 1.0
    assert "timed out" in str(err)
    assert len(fake.requests) == 1
    assert hooks.outcomes() == ["timeout"]


def test_a_closed_connection_is_transient(fake: FakeRekognition, analyzer: RekognitionAnalyzer,
                                          hooks: RecordingHooks, astronaut: bytes) -> None:
    fake.script([("close",)])

    raised(TransientStepError, lambda: analyzer.analyze_photo(astronaut))

    assert len(fake.requests) == 1 and hooks.outcomes() == ["connection_error"]


def test_nothing_listening_is_transient(monkeypatch: pytest.MonkeyPatch, astronaut: bytes) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    hooks = RecordingHooks()

    raised(TransientStepError, lambda: RekognitionAnalyzer.from_env(hooks=hooks).analyze_photo(astronaut))

    assert hooks.outcomes() == ["connection_error"]


@pytest.mark.parametrize("step", [
    ("malformed",),  # a body cut off mid-JSON
    ("faces", [{"Confidence": 99.0}]),  # a face without its box
    ("faces", [face_detail(Confidence="high")]),
    ("faces", "not a list"),
])
def test_a_malformed_reply_is_transient(fake: FakeRekognition, analyzer: RekognitionAnalyzer,
                                        hooks: RecordingHooks, astronaut: bytes, step: tuple[Any, ...]) -> None:
    fake.script([step])

    err = raised(TransientStepError, lambda: analyzer.analyze_photo(astronaut))

    assert "could not read" in str(err)
    assert hooks.outcomes() == ["malformed"]


@pytest.mark.parametrize(("code", "words"), [
    ("InvalidImageFormatException", "JPEG or PNG"),
    ("ImageTooLargeException", "too large"),
    ("InvalidParameterException", "could not use this photo"),
])
def test_image_errors_are_permanent_and_readable(fake: FakeRekognition, analyzer: RekognitionAnalyzer,
                                                 hooks: RecordingHooks, astronaut: bytes, code: str,
                                                 words: str) -> None:
    fake.script([("error", 400, code, {}, "Request has invalid image format")])

    err = raised(PermanentStepError, lambda: analyzer.analyze_photo(astronaut))

    assert words in str(err) and code in str(err) and "HTTP 400" in str(err)
    assert hooks.outcomes() == ["client_error"]


@pytest.mark.parametrize("code", ["AccessDeniedException", "UnrecognizedClientException",
                                  "InvalidSignatureException"])
def test_credential_errors_are_permanent_and_never_show_a_secret(
    fake: FakeRekognition, analyzer: RekognitionAnalyzer, astronaut: bytes, code: str
) -> None:
    # Worst case on purpose: a gateway that echoes the credentials in its message.
    fake.script([("error", 400, code, {}, f"The key {KEY_ID} with secret {SECRET} and token {TOKEN} is bad")])

    err = raised(PermanentStepError, lambda: analyzer.analyze_photo(astronaut))

    assert "check the AWS credentials" in str(err) and code in str(err)


def test_an_echoed_secret_in_any_quoted_reason_is_redacted(fake: FakeRekognition, analyzer: RekognitionAnalyzer,
                                                           astronaut: bytes) -> None:
    fake.script([("error", 500, "InternalServerError", {}, f"boom near {SECRET} / {KEY_ID} / {TOKEN}"),
                 ("error", 400, "SomethingNew", {}, f"Signature=abc123 secret {SECRET}")])

    first = raised(TransientStepError, lambda: analyzer.analyze_photo(astronaut))
    second = raised(PermanentStepError, lambda: analyzer.analyze_photo(astronaut))

    assert "[redacted]" in str(first) and "boom near" in str(first)
    assert "SomethingNew" in str(second) and "abc123" not in str(second)


@pytest.mark.parametrize(("data", "words"), [
    (b"this is not an image at all", "could not be read as an image"),
    (b"", "empty"),
    (_png(Image.new("RGB", (60, 60), "white")), "too small"),
])
def test_unusable_bytes_are_refused_before_any_request(fake: FakeRekognition, analyzer: RekognitionAnalyzer,
                                                      hooks: RecordingHooks, data: bytes, words: str) -> None:
    err = raised(PermanentStepError, lambda: analyzer.analyze_photo(data))

    assert words in str(err)
    assert fake.requests == [] and hooks.calls == []


def test_an_image_over_5_mb_is_downscaled_to_jpeg_and_accepted(fake: FakeRekognition,
                                                              analyzer: RekognitionAnalyzer) -> None:
    # The astronaut at 2000x1600 with noise that PNG cannot compress: ~9 MB.
    base = Image.open(io.BytesIO(astronaut_png())).resize((2000, 1600), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(7).integers(-12, 13, (1600, 2000, 3))
    big = _png(Image.fromarray(np.clip(np.asarray(base, dtype=np.int16) + noise, 0, 255).astype(np.uint8)))
    assert len(big) > 5 * 1024 * 1024

    a = analyzer.analyze_photo(big)

    assert (a.image_width, a.image_height) == (2000, 1600)
    assert a.primary_face is not None
    sent = fake.requests[0]
    assert sent.image_format == "JPEG" and sent.image_bytes <= 5 * 1024 * 1024
    assert sent.image_size is not None and abs(sent.image_size[0] / sent.image_size[1] - 2000 / 1600) < 0.01


def test_a_rotated_jpeg_is_sent_unchanged_and_sized_upright(fake: FakeRekognition,
                                                            analyzer: RekognitionAnalyzer) -> None:
    # Stored sideways (640x480) with EXIF orientation 6: upright it is 480x640, as Rekognition
    # (which applies JPEG EXIF orientation itself) reports its boxes.
    im = Image.open(io.BytesIO(astronaut_png())).resize((480, 640)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92, exif=exif.tobytes())

    a = analyzer.analyze_photo(buf.getvalue())

    assert (a.image_width, a.image_height) == (480, 640)
    assert a.primary_face is not None and a.primary_face.box.top < 0.5  # found upright, in the top half
    assert fake.requests[0].image_bytes == len(buf.getvalue()) and fake.requests[0].image_size == (640, 480)


def test_a_format_rekognition_does_not_take_is_sent_as_jpeg(fake: FakeRekognition,
                                                           analyzer: RekognitionAnalyzer) -> None:
    buf = io.BytesIO()
    Image.open(io.BytesIO(astronaut_png())).save(buf, "WEBP", quality=90)

    a = analyzer.analyze_photo(buf.getvalue())

    assert a.primary_face is not None
    assert fake.requests[0].image_format == "JPEG" and fake.requests[0].image_size == (512, 512)


def test_a_hook_that_refuses_stops_the_request(fake: FakeRekognition, astronaut: bytes) -> None:
    hooks = RecordingHooks(refuse=True)

    err = raised(TransientStepError, lambda: RekognitionAnalyzer.from_env(hooks=hooks).analyze_photo(astronaut))

    assert isinstance(err, TransientStepError) and err.retry_after == 1.5
    assert fake.requests == [] and hooks.calls == [("before", "rekognition", "DetectFaces")]


def test_make_client_turns_retries_off_and_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:8")
    monkeypatch.setenv("AWS_TIMEOUT", "12")

    rek, s3 = make_client("rekognition"), make_client("s3")

    assert rek.meta.region_name == "eu-west-1" and rek.meta.endpoint_url == "http://127.0.0.1:9"
    assert s3.meta.endpoint_url == "http://127.0.0.1:8"  # the service's own variable wins
    assert rek.meta.config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert (rek.meta.config.read_timeout, rek.meta.config.connect_timeout) == (12.0, 10.0)
    assert s3.meta.config.signature_version == "s3v4"
    monkeypatch.setenv("AWS_TIMEOUT", "soon")
    with pytest.raises(SystemExit, match="AWS_TIMEOUT"):
        make_client("s3")


# --- S3 ------------------------------------------------------------------------------------------


class FaultProxy:
    """HTTP proxy in front of moto: forwards everything, unless a scripted fault is next.

    Script items: ``("error", status, s3_code[, headers])`` (S3's XML error body),
    ``("hang", seconds)`` (then forwards), ``("close",)``. Records (method, path, t).
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.requests: list[tuple[str, str, float]] = []
        self._script: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    proxy.requests.append((self.command, self.path, time.monotonic()))
                    step = proxy._script.popleft() if proxy._script else ("forward",)
                try:
                    if step[0] == "error":
                        self._error(int(step[1]), str(step[2]), dict(step[3]) if len(step) > 3 else {})
                        return
                    if step[0] == "close":
                        self.close_connection = True
                        return
                    if step[0] == "hang":
                        proxy._stopping.wait(float(step[1]))
                    self._forward(body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _handle

            def _error(self, status: int, code: str, headers: dict[str, str]) -> None:
                xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                       f"<Message>Scripted {code}</Message><RequestId>{uuid.uuid4().hex[:16]}</RequestId>"
                       "<HostId>fake</HostId></Error>").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(xml)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(xml)

            def _forward(self, body: bytes) -> None:
                conn = HTTPConnection(*proxy.upstream, timeout=10)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}  # answered here
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, items: list[tuple[Any, ...]]) -> None:
        with self._lock:
            self._script.extend(items)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def moto_proxy() -> Iterator[FaultProxy]:
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    proxy = FaultProxy(moto.get_host_and_port())
    yield proxy
    proxy.stop()
    moto.stop()


@pytest.fixture()
def proxy(moto_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> FaultProxy:
    moto_proxy.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_proxy.url)
    return moto_proxy


@pytest.fixture()
def buckets(proxy: FaultProxy) -> tuple[str, str]:
    """(output bucket, uploads bucket), fresh for each test."""
    client = boto3.session.Session().client("s3", region_name="us-east-1", endpoint_url=proxy.url)
    names = (f"out-{uuid.uuid4().hex[:12]}", f"uploads-{uuid.uuid4().hex[:12]}")
    for name in names:
        client.create_bucket(Bucket=name)
    proxy.reset()
    return names


@pytest.fixture()
def storage(buckets: tuple[str, str], hooks: RecordingHooks, monkeypatch: pytest.MonkeyPatch) -> S3Storage:
    monkeypatch.setenv("S3_BUCKET", buckets[0])
    return S3Storage.from_env(hooks=hooks)


def test_put_get_exists_and_a_presigned_url_that_serves_the_object(
    storage: S3Storage, proxy: FaultProxy, hooks: RecordingHooks
) -> None:
    data = astronaut_png()
    key = "stories/s1/pages/01/base.png"
    assert storage.exists(key) is False

    storage.put(key, data, "image/png")

    assert storage.exists(key) is True
    assert storage.get(key) == data
    url = storage.url(key, expires_in=120)
    assert "X-Amz-Expires=120" in url and "X-Amz-Signature=" in url and SECRET not in url
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.read() == data
        assert resp.headers["Content-Type"] == "image/png"
    assert [c for c in hooks.calls if c[0] == "after"] == [
        ("after", "s3", "HeadObject", "ok"), ("after", "s3", "PutObject", "ok"),
        ("after", "s3", "HeadObject", "ok"), ("after", "s3", "GetObject", "ok")]


def test_the_prefix_is_prepended_and_read_object_reads_the_photo_bucket(
    buckets: tuple[str, str], proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, uploads = buckets
    monkeypatch.setenv("S3_BUCKET", out)
    monkeypatch.setenv("S3_PREFIX", "/staging/books/")
    storage = S3Storage.from_env()
    raw = boto3.session.Session().client("s3", region_name="us-east-1", endpoint_url=proxy.url)
    raw.put_object(Bucket=uploads, Key="users/u1/photo.png", Body=b"photo-bytes", ContentType="image/png")

    storage.put("stories/s1/book.pdf", b"%PDF-1.7", "application/pdf")

    head = raw.head_object(Bucket=out, Key="staging/books/stories/s1/book.pdf")
    assert head["ContentType"] == "application/pdf"
    assert storage.read_object(uploads, "users/u1/photo.png") == b"photo-bytes"


def test_photos_can_be_read_without_an_output_bucket(buckets: tuple[str, str], proxy: FaultProxy,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("S3_BUCKET", raising=False)
    raw = boto3.session.Session().client("s3", region_name="us-east-1", endpoint_url=proxy.url)
    raw.put_object(Bucket=buckets[1], Key="p.jpg", Body=b"jpeg")

    assert S3Objects.from_env().read_object(buckets[1], "p.jpg") == b"jpeg"
    with pytest.raises(PermanentStepError, match="no bucket"):
        S3Objects.from_env().read_object("", "p.jpg")


def test_a_missing_key_is_object_missing(storage: S3Storage, buckets: tuple[str, str],
                                         hooks: RecordingHooks) -> None:
    with pytest.raises(ObjectMissing, match="nope.png"):
        storage.get("nope.png")
    with pytest.raises(ObjectMissing):
        storage.read_object(buckets[1], "users/u1/nope.png")
    assert hooks.outcomes() == ["client_error", "client_error"]


def test_a_missing_bucket_is_permanent_and_names_it(proxy: FaultProxy) -> None:
    storage = S3Storage("no-such-bucket-here", client=make_client("s3"))

    for call in (lambda: storage.put("a.png", b"x", "image/png"), lambda: storage.get("a.png")):
        err = raised(PermanentStepError, call)
        assert not isinstance(err, ObjectMissing)
        assert "no-such-bucket-here" in str(err) and "NoSuchBucket" in str(err)


def test_unsafe_keys_are_refused_without_a_request(storage: S3Storage, proxy: FaultProxy) -> None:
    for key in ("../etc/passwd", "/abs.png", "a//b.png", ""):
        with pytest.raises(UnsafeKey):
            storage.get(key)
    with pytest.raises(UnsafeKey):
        storage.read_object("uploads", "a/../../b.png")
    assert proxy.requests == []


@pytest.mark.parametrize(("status", "code", "headers", "outcome", "retry_after"), [
    (503, "SlowDown", {"Retry-After": "2"}, "throttled", 2.0),
    (503, "ServiceUnavailable", {}, "server_error", None),
    (500, "InternalError", {}, "server_error", None),
])
def test_s3_overload_and_server_errors_are_transient(
    storage: S3Storage, proxy: FaultProxy, hooks: RecordingHooks,
    status: int, code: str, headers: dict[str, str], outcome: str, retry_after: float | None
) -> None:
    proxy.script([("error", status, code, headers)])

    err = raised(TransientStepError, lambda: storage.put("a.png", b"x", "image/png"))

    assert isinstance(err, TransientStepError) and err.retry_after == retry_after
    assert code in str(err) and f"HTTP {status}" in str(err)
    assert len(proxy.requests) == 1 and hooks.outcomes() == [outcome]


def test_an_s3_timeout_is_transient_after_exactly_one_request(
    buckets: tuple[str, str], proxy: FaultProxy, hooks: RecordingHooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_TIMEOUT", str(SHORT_TIMEOUT))
    storage = S3Storage(buckets[0], hooks=hooks)
    storage.put("a.png", b"x", "image/png")
    proxy.reset()
    proxy.script([("hang", 2.0)])
    started = time.monotonic()

    err = raised(TransientStepError, lambda: storage.get("a.png"))

    assert time.monotonic() - started < SHORT_TIMEOUT + 1.0 and "timed out" in str(err)
    assert len(proxy.requests) == 1 and hooks.outcomes()[-1] == "timeout"


def test_an_s3_connection_closed_is_transient(storage: S3Storage, proxy: FaultProxy) -> None:
    proxy.script([("close",)])

    raised(TransientStepError, lambda: storage.exists("a.png"))


def test_access_denied_is_permanent_names_the_bucket_and_hides_credentials(
    storage: S3Storage, proxy: FaultProxy
) -> None:
    proxy.script([("error", 403, "AccessDenied"), ("error", 403, "Forbidden"), ("error", 403, "SignatureDoesNotMatch")])

    denied = raised(PermanentStepError, lambda: storage.get("a.png"))
    head_denied = raised(PermanentStepError, lambda: storage.exists("a.png"))  # HEAD: a bare 403
    bad_signature = raised(PermanentStepError, lambda: storage.put("a.png", b"x", "image/png"))

    assert storage.bucket in str(denied) and "credentials" in str(denied)
    assert storage.bucket in str(head_denied) and "HTTP 403" in str(head_denied)
    assert "check the AWS credentials" in str(bad_signature)


def test_s3_from_env_requires_the_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("S3_BUCKET", raising=False)

    with pytest.raises(SystemExit, match="S3_BUCKET"):
        S3Storage.from_env()


def test_presigned_urls_are_time_limited(storage: S3Storage) -> None:
    with pytest.raises(ValueError):
        storage.url("a.png", expires_in=8 * 24 * 3600)
    assert "X-Amz-Expires=900" in storage.url("a.png")  # PRESIGNED_URL_SECONDS' default


def test_presigned_url_lifetime_is_configurable_and_bounded(storage: S3Storage,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRESIGNED_URL_SECONDS", "60")
    assert "X-Amz-Expires=60" in storage.url("a.png")
    for bad in ("0", "604801", "ten"):
        monkeypatch.setenv("PRESIGNED_URL_SECONDS", bad)
        with pytest.raises(SystemExit, match="configuration error: PRESIGNED_URL_SECONDS"):
            storage.url("a.png")
