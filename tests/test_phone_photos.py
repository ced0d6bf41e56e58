"""Photos as phones send them (issue 10, fault 5): HEIC/HEIF and AVIF, 48-200 MP JPEGs, faces too
small to use, and a parent with the child in one photo. Real files (pillow-heif encodes the HEIC),
real worker processes for what happens in the pipeline, the Rekognition fake checked against
botocore's own service model."""
from __future__ import annotations

import functools
import io
import json
import os
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from pipeline.kernel.errors import PermanentStepError
from pipeline.providers.base import BoundingBox, Face
from pipeline.providers.local_vision import LocalPhotoAnalyzer
from pipeline.providers.offline_images import read_anchor
from pipeline.providers.photo_decode import decode_photo, photo_format
from pipeline.providers.rekognition import RekognitionAnalyzer
from pipeline.stories.faces import choose_protagonist
from tests.fakes.rekognition_server import FakeRekognition, face_detail
from tests.support import Db, WorkerProcess, external_send, flush_redis

BROKER = os.environ["CELERY_BROKER_URL"]
# The Rekognition worker's own broker, so the session's offline worker never takes its messages
# (TEST_REDIS_DB + 1, shared with the other real-provider modules' own workers, one module at a time).
REK_BROKER = (f"{os.environ.get('TEST_REDIS_URL', 'redis://127.0.0.1:6379')}/"
              f"{int(os.environ.get('TEST_REDIS_DB', '11')) + 1}")
ROOT = Path(__file__).resolve().parent.parent
AWS = {"AWS_ACCESS_KEY_ID": "AKIAPHONETESTKEY0000", "AWS_SECRET_ACCESS_KEY": "phone/secret/0000000000000000000000",
       "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "AWS_TIMEOUT": "10"}
# In skimage.data.astronaut() (512x512) the face spans roughly x 180..270, y 65..165.
FACE_X, FACE_Y = (180, 280), (60, 200)


def _encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())


def _centre(box: BoundingBox, w: int, h: int) -> tuple[float, float]:
    return (box.left + box.width / 2) * w, (box.top + box.height / 2) * h


@functools.lru_cache(maxsize=2)
def heic_astronaut(orientation: int = 1) -> bytes:
    """A real HEIC (HEVC in HEIF, as an iPhone writes) of the astronaut, encoded by pillow-heif;
    with ``orientation`` 6 the pixels are stored sideways and the container says how to turn them."""
    img = _astronaut().crop((0, 0, 400, 512))
    if orientation == 6:
        exif = Image.Exif()
        exif[0x0112] = 6
        return _encode(img.transpose(Image.Transpose.ROTATE_90), "HEIF", quality=85, exif=exif.tobytes())
    return _encode(img, "HEIF", quality=85)


def _big_jpeg_script(width: int, height: int, path: Path, progressive: bool = False) -> str:
    return f"""
from PIL import Image
from skimage import data
canvas = Image.new("RGB", ({width}, {height}), (120, 140, 160))
face = Image.fromarray(data.astronaut()).resize(({height}, {height}), Image.Resampling.BILINEAR)
canvas.paste(face, ({width} // 8, 0))
canvas.save({str(path)!r}, "JPEG", quality=85, progressive={progressive})
"""


@pytest.fixture(scope="session")
def jpeg_108mp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12000x9000 (108 MP) phone-like JPEG with the astronaut 9000 px tall, made in a child
    process so this one never holds the 324 MB of raw pixels."""
    path = tmp_path_factory.mktemp("big") / "108mp.jpg"
    subprocess.run([sys.executable, "-c", _big_jpeg_script(12000, 9000, path)], check=True, timeout=120)
    return path


# --- HEIC / HEIF / AVIF ----------------------------------------------------------------------------


def test_a_real_heic_is_a_heif_file_not_a_renamed_jpeg() -> None:
    heic = heic_astronaut()
    assert heic[4:12] == b"ftypheic" and b"\xff\xd8\xff" not in heic[:64]
    assert photo_format(heic) == ("HEIF", "image/heif")


@pytest.mark.parametrize("make", [
    pytest.param(lambda: heic_astronaut(), id="heic"),
    pytest.param(lambda: heic_astronaut(orientation=6), id="heic-rotated-irot"),
    pytest.param(lambda: _encode(_astronaut().crop((0, 0, 400, 512)), "AVIF", quality=80), id="avif"),
])
def test_heic_and_avif_photos_are_analysed_upright(make: Any) -> None:
    # given an iPhone-style HEIC (also stored sideways, turned by its container) or an AVIF
    photo = make()
    # when analysed offline
    a = LocalPhotoAnalyzer().analyze_photo(photo)
    # then the face is found where it is in the upright picture, in upright coordinates
    assert (a.image_width, a.image_height) == (400, 512) and len(a.faces) == 1
    cx, cy = _centre(a.faces[0].box, 400, 512)
    assert FACE_X[0] <= cx <= FACE_X[1] and FACE_Y[0] <= cy <= FACE_Y[1]


def test_a_damaged_heic_says_so() -> None:
    heic = heic_astronaut()
    with pytest.raises(PermanentStepError, match="HEIC/HEIF/AVIF format .* could not be read"):
        decode_photo(heic[: len(heic) // 3])


# --- big JPEGs -------------------------------------------------------------------------------------


def _patch_sof(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header (SOF0/SOF2) claiming another size: a header-only giant."""
    i = 2
    while i < len(jpeg):
        marker, length = jpeg[i + 1], struct.unpack(">H", jpeg[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC2):
            return jpeg[:i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]
        i += 2 + length
    raise AssertionError("no SOF marker")


def test_a_108_megapixel_jpeg_is_read_at_bounded_memory(jpeg_108mp: Path) -> None:
    # given a 108 MP JPEG (over Pillow's own 89 MP warning and our 64 MP full-decode limit)
    script = f"""
import json, time
from pathlib import Path
from pipeline.providers.local_vision import LocalPhotoAnalyzer
data = Path({str(jpeg_108mp)!r}).read_bytes()
def peak_mb():
    # VmHWM: this process's own peak RSS. Not getrusage's ru_maxrss, which keeps the peak of the
    # process that forked us across exec (a long pytest run's ~1 GB).
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
analyzer = LocalPhotoAnalyzer()
t = time.perf_counter()
a = analyzer.analyze_photo(data)
print(json.dumps({{"seconds": time.perf_counter() - t, "faces": len(a.faces),
                  "size": [a.image_width, a.image_height],
                  "peak_mb": peak_mb()}}))
"""
    # when a fresh process analyses it
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # then the face is found, and the process never held the full image (324 MB as RGB)
    assert result["faces"] == 1 and result["size"] == [12000, 9000]
    assert result["peak_mb"] < 250, result


@pytest.mark.parametrize(("fmt", "size", "words"), [
    ("JPEG", (20000, 15000), "JPEG photos can have at most 260 megapixels"),
    ("progressive", (9000, 8000), "progressive JPEG photos can have at most 64 megapixels"),
])
def test_giant_jpegs_are_refused_from_their_header(fmt: str, size: tuple[int, int], words: str) -> None:
    small = _encode(_astronaut(), "JPEG", quality=80, progressive=fmt == "progressive")
    giant = _patch_sof(small, *size)
    t = time.perf_counter()
    with pytest.raises(PermanentStepError, match=words):
        decode_photo(giant, target_long_side=1024)
    assert time.perf_counter() - t < 1.0  # refused before decoding anything


def test_a_huge_png_is_refused_with_a_clear_message() -> None:
    # a PNG cannot be decoded reduced: over 64 MP it is a decompression bomb
    from tests.test_local_providers import _png_header_only

    with pytest.raises(PermanentStepError, match=r"too large \(9000x8000 pixels, 72 megapixels; PNG photos"):
        decode_photo(_png_header_only(9000, 8000), target_long_side=1024)


@pytest.fixture()
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in AWS.items():
        monkeypatch.setenv(k, v)


def test_the_rekognition_adapter_sends_only_jpeg_or_png_within_aws_limits(jpeg_108mp: Path, aws_env: None) -> None:
    fake = FakeRekognition().start()
    try:
        env = {**AWS, "AWS_ENDPOINT_URL_REKOGNITION": fake.url}
        analyzer = RekognitionAnalyzer.from_env(env=env)
        # an HEIC is converted to JPEG (Rekognition reads JPEG and PNG only)
        a = analyzer.analyze_photo(heic_astronaut(orientation=6))
        sent = fake.requests[0]
        assert sent.image_format == "JPEG" and sent.image_size == (400, 512) and len(a.faces) == 1
        # a 108 MP JPEG (12000 px wide: over DetectLabels' 10,000 px) is sent smaller, under 5 MB
        fake.reset()
        a = analyzer.analyze_photo(jpeg_108mp.read_bytes())
        assert (a.image_width, a.image_height) == (12000, 9000) and len(a.faces) == 1
        for r in fake.requests:
            assert r.image_format == "JPEG" and r.image_size is not None and max(r.image_size) <= 4096
            assert r.image_bytes <= 5 * 1024 * 1024
        assert [r.target.split(".")[1] for r in fake.requests] == ["DetectFaces", "DetectLabels"]
    finally:
        fake.stop()


# --- faces: too small, and whose -----------------------------------------------------------------


def small_face_photo() -> bytes:
    """A 4000x3000 phone photo of a child far away: the face is ~130 px (4% of the height)."""
    canvas = Image.new("RGB", (4000, 3000), (120, 140, 160))
    canvas.paste(_astronaut().resize((700, 700)), (1500, 1000))
    return _encode(canvas, "JPEG", quality=90)


def test_a_face_too_small_is_told_apart_from_no_face() -> None:
    a = LocalPhotoAnalyzer().analyze_photo(small_face_photo())
    assert a.faces == () and len(a.small_faces) == 1


def _face(left: float, width: float, ages: tuple[int, int] | None) -> Face:
    attrs = {"age_range": {"low": ages[0], "high": ages[1]}} if ages else {}
    return Face(box=BoundingBox(left, 0.2, width, width), confidence=99.0, attributes=attrs)


def test_the_child_is_chosen_by_age_where_the_detector_tells_ages() -> None:
    parent, child = _face(0.05, 0.4, (31, 39)), _face(0.6, 0.2, (3, 7))
    choice = choose_protagonist([parent, child], [], 5, 2000, 1500)
    assert choice is not None and choice.face is child and choice.rule == "age range" and choice.refusal is None
    assert choice.notice and "2 faces" in choice.notice and "3-7 years" in choice.notice
    # two children: the one whose range holds the age; none holds it: the nearest, then the youngest
    older = _face(0.3, 0.25, (9, 13))
    assert choose_protagonist([parent, older, child], [], 11, 2000, 1500).face is older  # type: ignore[union-attr]
    assert choose_protagonist([parent, older, child], [], 8, 2000, 1500).face is child  # type: ignore[union-attr]


def test_without_ages_the_largest_face_is_used_and_the_parent_told() -> None:
    big, small = _face(0.05, 0.4, None), _face(0.6, 0.2, None)
    choice = choose_protagonist([small, big], [], 5, 2000, 1500)
    assert choice is not None and choice.face is big and choice.rule == "largest face"
    assert choice.notice and "largest one (on the left)" in choice.notice
    single = choose_protagonist([big], [], 5, 2000, 1500)
    assert single is not None and single.notice is None and single.rule == "only face"


def test_a_child_too_small_behind_a_parent_refuses_rather_than_using_the_parent() -> None:
    parent, far_child = _face(0.05, 0.4, (31, 39)), _face(0.7, 0.02, (4, 6))
    choice = choose_protagonist([parent], [far_child], 5, 2000, 1500)
    assert choice is not None and choice.refusal and "too small" in choice.refusal


# --- the fake Rekognition answers in AWS's published shapes -----------------------------------------


def _check_shape(value: Any, shape: Any, path: str) -> None:
    """``value`` conforms to botocore's output ``shape`` (types, member names, enums, ranges)."""
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(value, dict), path
        unknown = set(value) - set(shape.members)
        assert not unknown, f"{path}: not in AWS's model: {unknown}"
        for name, member in value.items():
            _check_shape(member, shape.members[name], f"{path}.{name}")
    elif kind == "list":
        assert isinstance(value, list), path
        for i, item in enumerate(value):
            _check_shape(item, shape.member, f"{path}[{i}]")
    elif kind in ("float", "double"):
        assert isinstance(value, int | float) and not isinstance(value, bool), path
    elif kind in ("integer", "long"):
        assert isinstance(value, int) and not isinstance(value, bool), path
        if "min" in shape.metadata:
            assert value >= shape.metadata["min"], path
    elif kind == "boolean":
        assert isinstance(value, bool), path
    elif kind == "string":
        assert isinstance(value, str), path
        if shape.enum:
            assert value in shape.enum, f"{path}: {value!r} not in {shape.enum}"


@pytest.mark.parametrize("source", ["measured", "scripted"])
def test_fake_rekognition_replies_match_botocores_service_model(source: str, aws_env: None) -> None:
    model = botocore.session.get_session().get_service_model("rekognition")
    fake = FakeRekognition().start()
    try:
        if source == "scripted":
            fake.script([("faces", [face_detail(AgeRange={"Low": 3, "High": 7})])])
        client = RekognitionAnalyzer.from_env(env={**AWS, "AWS_ENDPOINT_URL_REKOGNITION": fake.url}).client
        png = _encode(_astronaut(), "PNG")
        faces = client.detect_faces(Image={"Bytes": png}, Attributes=["ALL"])
        labels = client.detect_labels(Image={"Bytes": png}, MaxLabels=10)
    finally:
        fake.stop()
    for reply, op in ((faces, "DetectFaces"), (labels, "DetectLabels")):
        reply = {k: v for k, v in reply.items() if k != "ResponseMetadata"}
        _check_shape(reply, model.operation_model(op).output_shape, op)
    detail = faces["FaceDetails"][0]
    assert {"AgeRange", "BoundingBox", "Landmarks", "Pose", "Quality", "Confidence"} <= set(detail)
    assert 0 <= detail["AgeRange"]["Low"] <= detail["AgeRange"]["High"]


# --- through real workers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rekognition() -> Iterator[FakeRekognition]:
    fake = FakeRekognition().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def rekognition_worker(db: Db, rekognition: FakeRekognition,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A worker that analyses photos with Rekognition (the fake); the rest offline."""
    flush_redis(REK_BROKER)
    w = WorkerProcess(tmp_path_factory.mktemp("rek") / "worker.log",
                      env={**AWS, "VISION_PROVIDER": "rekognition", "AWS_ENDPOINT_URL_REKOGNITION": rekognition.url,
                           "CELERY_BROKER_URL": REK_BROKER, "REDIS_URL": REK_BROKER})
    w.start()
    yield w
    w.stop()


def _stored(db: Db, image: bytes, ext: str, content_type: str) -> str:
    return db.photo(image, object_key=f"uploads/{uuid.uuid4()}.{ext}", content_type=content_type)


@pytest.mark.parametrize("content_type", ["image/heic", "IMAGE/HEIF", "image/heic-sequence", "image/jpeg",
                                          "application/octet-stream"])
def test_a_heic_photo_makes_a_completed_story(clean_db: Db, worker: WorkerProcess, content_type: str) -> None:
    # given an iPhone HEIC, stored sideways with its rotation in the container, whatever type the
    # client sent with it (right, uppercase, a sequence type, mislabelled, unknown)
    photo = _stored(clean_db, heic_astronaut(orientation=6), "heic", content_type)
    story = clean_db.story(photo, age=5)
    # when the API sends the story
    external_send(BROKER, "stories.generate", {"story_id": story})
    # then it completes, with the face found upright where it is
    row = clean_db.wait_story(story)
    assert row["status"] == "completed", row["error_message"]
    ph = clean_db.one("SELECT face_details FROM photos WHERE id = :p", p=photo)["face_details"]
    assert ph["image"] == {"width": 400, "height": 512}
    box = ph["faces"][0]["bounding_box"]
    cx, cy = (box["left"] + box["width"] / 2) * 400, (box["top"] + box["height"] / 2) * 512
    assert FACE_X[0] <= cx <= FACE_X[1] and FACE_Y[0] <= cy <= FACE_Y[1]


@pytest.mark.timeout(240)
def test_a_108_megapixel_jpeg_makes_a_completed_story(clean_db: Db, worker: WorkerProcess,
                                                      jpeg_108mp: Path) -> None:
    photo = _stored(clean_db, jpeg_108mp.read_bytes(), "jpg", "image/jpeg")
    story = clean_db.story(photo)
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story, timeout=180)
    assert row["status"] == "completed", row["error_message"]


def test_a_face_too_small_fails_with_a_closer_photo_request(clean_db: Db, worker: WorkerProcess) -> None:
    # given a photo where the child is far away, and one with no face at all
    far = _stored(clean_db, small_face_photo(), "jpg", "image/jpeg")
    far_story = clean_db.story(far)
    none = _stored(clean_db, _encode(Image.fromarray(skdata.coffee()), "PNG"), "png", "image/png")
    none_story = clean_db.story(none)
    for s in (far_story, none_story):
        external_send(BROKER, "stories.generate", {"story_id": s})
    # then the first fails saying the face is too small, asking for a closer photo
    row = clean_db.wait_story(far_story)
    assert row["status"] == "failed"
    assert "too small" in row["error_message"] and "closer" in row["error_message"]
    ph = clean_db.one("SELECT ai_error_message FROM photos WHERE id = :p", p=far)
    assert "too small" in ph["ai_error_message"] and "could not find a face" not in ph["ai_error_message"]
    # and the second still says there is no face
    assert "could not find a face" in clean_db.wait_story(none_story)["error_message"]


def family_photo(child_tint: bool = True) -> tuple[bytes, tuple[int, int, int, int], tuple[int, int, int, int]]:
    """A 1200x800 photo: a big head on the left (the parent) and a smaller one on the right (the
    child, tinted blue so a crop of it can be recognised). Returns (JPEG, parent box, child box),
    boxes as (x, y, w, h) pixels; each face is over 2 % of the photo (Rekognition's usable size)."""
    canvas = Image.new("RGB", (1200, 800), (235, 235, 235))
    head = _astronaut().crop((130, 20, 330, 240))  # 200x220; the face is at x 50..145, y 45..155
    parent = head.resize((500, 550))
    child = head.resize((300, 330))
    if child_tint:
        r, g, b = child.split()
        child = Image.merge("RGB", (r.point(lambda v: v * 0.3), g.point(lambda v: v * 0.6),
                                    b.point(lambda v: min(255, v * 1.3 + 40))))
    canvas.paste(parent, (60, 100))
    canvas.paste(child, (800, 300))
    p = (60 + 50 * 5 // 2, 100 + 45 * 5 // 2, 95 * 5 // 2, 110 * 5 // 2)
    c = (800 + 50 * 3 // 2, 300 + 45 * 3 // 2, 95 * 3 // 2, 110 * 3 // 2)
    return _encode(canvas, "JPEG", quality=92), p, c


def _disc_blueness(db: Db, story: str) -> float:
    """Mean (blue - red) inside the face disc of a personalized page."""
    page = db.pages(story)[0]
    base = (db.storage / page["base_image_key"]).read_bytes()
    anchor = read_anchor(base)
    assert anchor is not None
    img = np.asarray(Image.open(io.BytesIO((db.storage / page["personalized_image_key"]).read_bytes())).convert("RGB"),
                     dtype=np.float64)
    r = int(anchor.r * 0.6)
    disc = img[int(anchor.cy) - r:int(anchor.cy) + r, int(anchor.cx) - r:int(anchor.cx) + r]
    return float((disc[..., 2] - disc[..., 0]).mean())


def _box(px: tuple[int, int, int, int]) -> dict[str, float]:
    x, y, w, h = px
    return {"Left": x / 1200, "Top": y / 800, "Width": w / 1200, "Height": h / 800}


def test_rekognition_parent_and_child_the_childs_face_is_used(clean_db: Db, rekognition: FakeRekognition,
                                                              rekognition_worker: WorkerProcess) -> None:
    # given a photo of a parent (larger face) with the child, and Rekognition's ages for both faces
    photo_bytes, parent_px, child_px = family_photo()
    b_parent, b_child = _box(parent_px), _box(child_px)
    rekognition.reset()
    rekognition.script([("faces", [
        face_detail(left=b_parent["Left"], top=b_parent["Top"], width=b_parent["Width"], height=b_parent["Height"],
                    AgeRange={"Low": 33, "High": 41}),
        face_detail(left=b_child["Left"], top=b_child["Top"], width=b_child["Width"], height=b_child["Height"],
                    AgeRange={"Low": 3, "High": 7}),
    ])])
    photo = _stored(clean_db, photo_bytes, "jpg", "image/jpeg")
    story = clean_db.story(photo, name="Ada", age=5)
    # when the story runs
    external_send(REK_BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story)
    assert row["status"] == "completed", row["error_message"]
    # then the story recorded the child's face, chosen by age, with a notice for the parent
    chosen = clean_db.one("SELECT protagonist_face FROM story_outlines WHERE story_id = :s", s=story)[
        "protagonist_face"]
    assert chosen["rule"] == "age range" and chosen["age_range"] == [3, 7]
    assert abs(chosen["bounding_box"]["left"] - b_child["Left"]) < 1e-6
    assert "2 faces" in chosen["notice"] and "3-7 years old" in chosen["notice"]
    # and the pages show the child's (blue-tinted) face, not the parent's
    assert _disc_blueness(clean_db, story) > 20


def test_offline_detector_parent_and_child_uses_the_largest_and_says_so(clean_db: Db,
                                                                        worker: WorkerProcess) -> None:
    # given the same family photo, analysed offline (the Haar detector cannot tell ages)
    photo_bytes, _, _ = family_photo()
    photo = _stored(clean_db, photo_bytes, "jpg", "image/jpeg")
    story = clean_db.story(photo, name="Ada", age=5)
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story)
    assert row["status"] == "completed", row["error_message"]
    # then the documented policy: the largest face, and a notice the parent and operator can read
    chosen = clean_db.one("SELECT protagonist_face FROM story_outlines WHERE story_id = :s", s=story)[
        "protagonist_face"]
    assert chosen["rule"] == "largest face" and chosen["age_range"] is None
    assert "largest one (on the left)" in chosen["notice"] and "photo of your child alone" in chosen["notice"]
    assert _disc_blueness(clean_db, story) < 0  # the untinted (larger) face
    status = subprocess.run([sys.executable, "-m", "pipeline.operations.cli", "status", story], cwd=ROOT,
                            capture_output=True,
                            text=True, timeout=60, env=os.environ)
    assert "largest one (on the left)" in status.stdout, status.stdout + status.stderr


def test_the_chosen_childs_face_must_be_drawable_whatever_the_parents() -> None:
    # the parent in sunglasses does not refuse the photo; the child in sunglasses does
    shades = {"sunglasses": {"value": True, "confidence": 97.0}}
    parent, child = _face(0.05, 0.4, (31, 39)), _face(0.6, 0.2, (3, 7))
    parent_shaded = Face(box=parent.box, confidence=99.0, attributes={**parent.attributes, **shades})
    child_shaded = Face(box=child.box, confidence=99.0, attributes={**child.attributes, **shades})
    ok = choose_protagonist([parent_shaded, child], [], 5, 2000, 1500)
    assert ok is not None and ok.face is child and ok.refusal is None
    refused = choose_protagonist([parent, child_shaded], [], 5, 2000, 1500)
    assert refused is not None and refused.refusal and "sunglasses" in refused.refusal
