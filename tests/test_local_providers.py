"""Tests for the offline providers: OpenCV Haar photo analysis and the Pillow illustrator (offline_images)."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from skimage import data as skdata

from pipeline.kernel.errors import PermanentStepError
from pipeline.providers.base import BoundingBox, Face, Outline, PageRequest, PhotoAnalysis, StoryRequest
from pipeline.providers.face_json import analysis_from_json, analysis_to_json, face_from_json
from pipeline.providers.haar import GROUP_EPS, classifiers, group
from pipeline.providers.local_vision import LocalPhotoAnalyzer
from pipeline.providers.offline_images import (
    ANCHOR_KEY,
    CHARACTER_KEY,
    FACE_MARGIN,
    PLACEHOLDER_SKIN,
    LocalIllustrator,
    default_anchor,
    read_anchor,
)
from pipeline.providers.themes import THEMES

REPO = Path(__file__).resolve().parents[1]

# In skimage.data.astronaut() (512x512) the face spans roughly x 180..270, y 65..165.
ASTRONAUT_FACE_X = (180, 280)
ASTRONAUT_FACE_Y = (60, 200)


def _encode(arr_or_img: np.ndarray | Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def analyzer() -> LocalPhotoAnalyzer:
    return LocalPhotoAnalyzer()


@pytest.fixture(scope="module")
def astronaut_jpeg() -> bytes:
    return _encode(skdata.astronaut(), "JPEG", quality=92)


@pytest.fixture(scope="module")
def astronaut_face(analyzer: LocalPhotoAnalyzer, astronaut_jpeg: bytes) -> Face:
    face = analyzer.analyze_photo(astronaut_jpeg).primary_face
    assert face is not None
    return face


def _centre_px(box: BoundingBox, width: int, height: int) -> tuple[float, float]:
    return ((box.left + box.width / 2) * width, (box.top + box.height / 2) * height)


def _page(theme: str = "space_adventure", page: int = 1, seed: int = 42, pages: int = 4) -> PageRequest:
    story = StoryRequest(child_name="Mia", child_age=5, theme=theme, page_count=pages, seed=seed)
    outline = Outline(title="Mia's adventure", beats=tuple(f"beat {i}" for i in range(pages)))
    return PageRequest(story=story, outline=outline, page_number=page)


def _rgb(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def _png_info(png: bytes) -> dict[str, object]:
    with Image.open(io.BytesIO(png)) as im:
        return dict(im.info)


# --- photo analysis ---------------------------------------------------------------------------


def test_astronaut_has_exactly_one_face_over_her_face(analyzer: LocalPhotoAnalyzer, astronaut_jpeg: bytes) -> None:
    # given the astronaut portrait
    # when it is analysed
    result = analyzer.analyze_photo(astronaut_jpeg)
    # then exactly one face is found, centred on her face, with a plausible size and confidence
    assert result.detector == "opencv-haar"
    assert (result.image_width, result.image_height) == (512, 512)
    assert len(result.faces) == 1
    face = result.faces[0]
    cx, cy = _centre_px(face.box, 512, 512)
    assert ASTRONAUT_FACE_X[0] <= cx <= ASTRONAUT_FACE_X[1]
    assert ASTRONAUT_FACE_Y[0] <= cy <= ASTRONAUT_FACE_Y[1]
    assert 0.12 <= face.box.width <= 0.3 and 0.12 <= face.box.height <= 0.3
    assert 50.0 <= face.confidence <= 100.0
    assert [lb.name for lb in result.labels][:2] == ["Person", "Face"]
    assert result.labels[1].instances == (face.box,)


def test_astronaut_eyes_and_smile_are_found_inside_the_face(astronaut_face: Face) -> None:
    # given the astronaut's detected face
    lms = {lm.type: lm for lm in astronaut_face.landmarks}
    box = astronaut_face.box
    # then both eyes are found in the upper part of the face, eyeLeft on the image's left
    # (Rekognition's convention), and the smiling mouth in the lower part
    assert {"eyeLeft", "eyeRight"} <= set(lms)
    left, right = lms["eyeLeft"], lms["eyeRight"]
    assert left.x < right.x
    for eye in (left, right):
        assert box.left < eye.x < box.left + box.width
        assert box.top < eye.y < box.top + 0.6 * box.height
    assert "mouth" in lms
    assert lms["mouth"].y > box.top + 0.5 * box.height
    assert astronaut_face.attributes["smile"]["value"] is True
    assert 0 < astronaut_face.attributes["smile"]["confidence"] <= 100


def test_blurred_mouth_reports_no_smile(analyzer: LocalPhotoAnalyzer) -> None:
    # given the astronaut with her mouth blurred away
    img = skdata.astronaut().copy()
    img[118:170, 185:265] = cv2.GaussianBlur(img[118:170, 185:265], (0, 0), 6)
    # when analysed
    result = analyzer.analyze_photo(_encode(img))
    # then the face is still found but no smile or mouth is invented
    assert len(result.faces) == 1
    assert "smile" not in result.faces[0].attributes
    assert "mouth" not in {lm.type for lm in result.faces[0].landmarks}
    assert "Smile" not in {lb.name for lb in result.labels}


@pytest.mark.parametrize(
    "name, image",
    [
        ("coffee", skdata.coffee()),
        ("chelsea the cat", skdata.chelsea()),
        ("rocket", skdata.rocket()),
        ("noise", np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)),
        ("solid colour", np.full((480, 640, 3), (200, 100, 50), dtype=np.uint8)),
    ],
)
def test_photos_without_people_have_no_faces(analyzer: LocalPhotoAnalyzer, name: str, image: np.ndarray) -> None:
    # given a photo with no human face
    # when analysed
    result = analyzer.analyze_photo(_encode(image))
    # then no face and no labels are reported
    assert result.faces == (), name
    assert result.labels == ()
    assert result.primary_face is None


def _truncated_jpeg() -> bytes:
    full = _encode(skdata.astronaut(), "JPEG", quality=90)
    return full[: len(full) // 2]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"this is a text file, not a photo", id="text"),
        pytest.param(_truncated_jpeg(), id="truncated-jpeg"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, id="png-signature-then-garbage"),
        pytest.param(b"%PDF-1.4\n%...", id="pdf"),
    ],
)
def test_unreadable_bytes_raise_a_readable_permanent_error(analyzer: LocalPhotoAnalyzer, payload: bytes) -> None:
    # given bytes that are not a readable photo
    # when analysed
    with pytest.raises(PermanentStepError) as err:
        analyzer.analyze_photo(payload)
    # then the message tells a parent what to do, without library jargon
    msg = str(err.value)
    assert "JPEG or PNG" in msg
    assert "cannot identify" not in msg and "truncated" not in msg.lower()


def test_heic_upload_gets_a_specific_message(analyzer: LocalPhotoAnalyzer) -> None:
    # given the start of an iPhone HEIC file
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 32
    # when analysed, then the parent is told the format is the problem
    with pytest.raises(PermanentStepError, match="HEIC"):
        analyzer.analyze_photo(heic)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size; enough for Pillow to open it lazily."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def test_huge_images_are_rejected_before_decoding(analyzer: LocalPhotoAnalyzer) -> None:
    # given a PNG claiming 20000x20000 pixels (a decompression bomb shape)
    bomb = _png_header_only(20000, 20000)
    # when analysed, then it is refused as too large, not decoded
    with pytest.raises(PermanentStepError, match="too large"):
        analyzer.analyze_photo(bomb)


def test_pixel_limit_is_configurable(astronaut_jpeg: bytes) -> None:
    # given an analyzer limited to 0.1 megapixels and a 512x512 photo
    small_limit = LocalPhotoAnalyzer(max_pixels=100_000)
    # when analysed as a PNG (decoded in full), then it is refused with the "too large" message
    with pytest.raises(PermanentStepError, match="too large"):
        small_limit.analyze_photo(_encode(skdata.astronaut(), "PNG"))
    # while the same photo as a baseline JPEG is decoded at half size (DCT scaling), within the limit
    result = small_limit.analyze_photo(astronaut_jpeg)
    assert (result.image_width, result.image_height) == (512, 512)


def test_exif_rotated_jpeg_is_turned_upright(analyzer: LocalPhotoAnalyzer) -> None:
    # given a non-square portrait stored sideways with EXIF orientation 6 ("rotate 90 CW to view")
    upright = Image.fromarray(skdata.astronaut()[:, :400])  # 400 wide, 512 tall
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 512 wide, 400 tall, face sideways
    exif = Image.Exif()
    exif[0x0112] = 6
    with_flag = _encode(stored, "JPEG", quality=92, exif=exif.tobytes())
    without_flag = _encode(stored, "JPEG", quality=92)
    # when both are analysed
    rotated = analyzer.analyze_photo(with_flag)
    sideways = analyzer.analyze_photo(without_flag)
    # then the sideways pixels alone show no face, but with the flag the upright face is found
    # and size and box are reported in upright coordinates
    assert sideways.faces == ()
    assert (rotated.image_width, rotated.image_height) == (400, 512)
    assert len(rotated.faces) == 1
    cx, cy = _centre_px(rotated.faces[0].box, 400, 512)
    assert ASTRONAUT_FACE_X[0] <= cx <= ASTRONAUT_FACE_X[1]
    assert ASTRONAUT_FACE_Y[0] <= cy <= ASTRONAUT_FACE_Y[1]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_corrupt_exif_block_does_not_make_a_photo_unreadable(analyzer: LocalPhotoAnalyzer) -> None:
    # given a good JPEG carrying a damaged EXIF segment (as some editing apps write)
    jpeg = _encode(skdata.astronaut(), "JPEG", quality=90)
    seg = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05" + b"\xff" * 40
    damaged = jpeg[:2] + b"\xff\xe1" + (len(seg) + 2).to_bytes(2, "big") + seg + jpeg[2:]
    # when analysed, then it is read as an upright photo and the face is found
    assert len(analyzer.analyze_photo(damaged).faces) == 1


def _png16_gray() -> bytes:
    gray = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    ok, buf = cv2.imencode(".png", gray)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(_encode(Image.fromarray(skdata.astronaut()).convert("L")), id="grayscale-png"),
        pytest.param(_encode(Image.fromarray(skdata.astronaut()).convert("RGBA")), id="rgba-png"),
        pytest.param(_png16_gray(), id="16-bit-png"),
        pytest.param(_encode(Image.fromarray(skdata.astronaut()).convert("P"), "GIF"), id="gif"),
        pytest.param(_encode(skdata.astronaut(), "WEBP", quality=90), id="webp"),
        pytest.param(_encode(Image.fromarray(skdata.astronaut()).convert("CMYK"), "JPEG"), id="cmyk-jpeg"),
    ],
)
def test_common_formats_and_modes_are_read(analyzer: LocalPhotoAnalyzer, payload: bytes) -> None:
    # given the astronaut in another format or pixel mode
    # when analysed
    result = analyzer.analyze_photo(payload)
    # then her face is found in the same place (16-bit is not clipped to white, etc.)
    assert len(result.faces) == 1
    cx, cy = _centre_px(result.faces[0].box, 512, 512)
    assert ASTRONAUT_FACE_X[0] <= cx <= ASTRONAUT_FACE_X[1]
    assert ASTRONAUT_FACE_Y[0] <= cy <= ASTRONAUT_FACE_Y[1]


def test_large_photo_is_downscaled_but_reported_in_original_ratios(analyzer: LocalPhotoAnalyzer) -> None:
    # given a 2048x2048 version of the astronaut (detection runs at 1024)
    big = _encode(Image.fromarray(skdata.astronaut()).resize((2048, 2048), Image.Resampling.BICUBIC), "JPEG")
    # when analysed
    result = analyzer.analyze_photo(big)
    # then the size is the original's and the box ratios land on the face
    assert (result.image_width, result.image_height) == (2048, 2048)
    assert len(result.faces) == 1
    cx, cy = _centre_px(result.faces[0].box, 512, 512)
    assert ASTRONAUT_FACE_X[0] <= cx <= ASTRONAUT_FACE_X[1]
    assert ASTRONAUT_FACE_Y[0] <= cy <= ASTRONAUT_FACE_Y[1]


@pytest.fixture(scope="module")
def phone_photo() -> bytes:
    """A 4000x3000 JPEG, mostly flat grey wall, with the astronaut (1500 px) at (1200, 600)."""
    canvas = Image.new("RGB", (4000, 3000), (120, 140, 160))
    face = Image.fromarray(skdata.astronaut()).resize((1500, 1500), Image.Resampling.BICUBIC)
    canvas.paste(face, (1200, 600))
    return _encode(canvas, "JPEG", quality=90)


def test_face_on_a_large_flat_background_is_found(analyzer: LocalPhotoAnalyzer, phone_photo: bytes) -> None:
    # given a phone-sized photo dominated by a flat wall (global histogram equalisation used to
    # wash out the face here)
    # when analysed
    result = analyzer.analyze_photo(phone_photo)
    # then the face is found where the astronaut's face was pasted (centre ~ (1855, 932))
    assert (result.image_width, result.image_height) == (4000, 3000)
    assert len(result.faces) == 1
    cx, cy = _centre_px(result.faces[0].box, 4000, 3000)
    assert abs(cx - 1855) < 100 and abs(cy - 932) < 100


def test_two_people_primary_face_is_the_largest(analyzer: LocalPhotoAnalyzer) -> None:
    # given a wide photo with the astronaut at full size on the left and at 60% on the right
    a = skdata.astronaut()
    small = np.asarray(Image.fromarray(a).resize((307, 307)))
    canvas = np.full((512, 512 + 400, 3), 235, dtype=np.uint8)
    canvas[:, :512] = a
    canvas[60:367, 560:867] = small
    # (at twice the size, so that both faces are over the 64 px a face needs to be usable)
    photo = Image.fromarray(canvas).resize((1824, 1024), Image.Resampling.BICUBIC)
    # when analysed
    result = analyzer.analyze_photo(_encode(photo))
    # then both faces are found and the primary one is the big face on the left
    assert len(result.faces) == 2
    primary = result.primary_face
    assert primary is not None
    cx, _ = _centre_px(primary.box, 912, 512)
    assert cx < 512
    assert result.labels[1].name == "Face" and len(result.labels[1].instances) == 2


def test_own_grouping_matches_opencv_group_rectangles() -> None:
    # given raw (ungrouped) detection windows on a face photo and on a busy non-face photo
    clf = classifiers()["face"]
    for img in (skdata.astronaut(), skdata.retina(), skdata.chelsea()):
        gray = cv2.equalizeHist(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
        raw, _levels, weights = clf.detectMultiScale3(gray, 1.1, 0, minSize=(24, 24), outputRejectLevels=True)
        rects = np.asarray(raw).reshape(-1, 4)
        for min_neighbors in (1, 3, 5):
            # when grouped by our re-implementation and by OpenCV
            hits = group(rects, np.ravel(weights), min_neighbors, GROUP_EPS)
            ours = [(h.x, h.y, h.w, h.h, h.neighbors) for h in hits]
            cv_rects, cv_counts = cv2.groupRectangles(rects.tolist(), min_neighbors, GROUP_EPS)
            theirs = (
                [(*map(int, r), int(n)) for r, n in zip(cv_rects, cv_counts, strict=False)] if len(cv_rects) else []
            )
            # then the boxes and neighbour counts are identical
            assert ours == theirs


def test_own_grouping_matches_opencv_on_random_window_sets() -> None:
    # given random, clustered and chain-like sets of windows (chains stress transitive merging,
    # clusters the averaging's rounding)
    rng = np.random.default_rng(7)
    for t in range(150):
        n = int(rng.integers(1, 250))
        if t % 3 == 0:
            xy = np.cumsum(rng.integers(-3, 4, (n, 2)), axis=0) + 200
            wh = np.repeat(rng.integers(20, 60, (n, 1)), 2, axis=1)
        elif t % 3 == 1:
            centres, sizes = rng.integers(0, 800, (5, 2)), rng.integers(20, 120, (5, 1))
            idx = rng.integers(0, 5, n)
            xy = centres[idx] + rng.integers(-8, 9, (n, 2))
            wh = np.repeat(sizes[idx] + rng.integers(-6, 7, (n, 1)), 2, axis=1)
        else:
            xy, wh = rng.integers(0, 500, (n, 2)), rng.integers(10, 200, (n, 2))
        rects = np.clip(np.concatenate([xy, wh], axis=1), 1, None).astype(np.int32)
        for min_neighbors in (1, 3, 5):
            # when grouped both ways, then boxes, counts and order are identical
            hits = group(rects, np.zeros(n), min_neighbors, GROUP_EPS)
            ours = [(h.x, h.y, h.w, h.h, h.neighbors) for h in hits]
            cv_rects, cv_counts = cv2.groupRectangles(rects.tolist(), min_neighbors, GROUP_EPS)
            theirs = (
                [(*map(int, r), int(c)) for r, c in zip(cv_rects, cv_counts, strict=False)] if len(cv_rects) else []
            )
            assert ours == theirs


def test_analysis_from_several_threads_is_identical(analyzer: LocalPhotoAnalyzer, astronaut_jpeg: bytes) -> None:
    # given one analysis as reference
    reference = analyzer.analyze_photo(astronaut_jpeg)
    # when the same photo is analysed concurrently (each thread has its own cascades)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: analyzer.analyze_photo(astronaut_jpeg), range(6)))
    # then every result is identical
    assert all(r == reference for r in results)


# --- JSON for the database --------------------------------------------------------------------


def test_json_round_trip_is_exact(analyzer: LocalPhotoAnalyzer, astronaut_jpeg: bytes) -> None:
    # given an analysis with a face, landmarks, attributes and labels
    analysis = analyzer.analyze_photo(astronaut_jpeg)
    # when it goes through JSON text as it would through Postgres JSONB
    face_details, labels, objects = (json.loads(json.dumps(x)) for x in analysis_to_json(analysis))
    # then the structure is as documented and both the primary face and the whole analysis
    # come back exactly
    assert face_details["detector"] == "opencv-haar"
    assert face_details["image"] == {"width": 512, "height": 512}
    assert face_details["primary_face_index"] == 0
    assert set(face_details["faces"][0]) == {"bounding_box", "confidence", "landmarks", "attributes"}
    assert set(face_details["faces"][0]["bounding_box"]) == {"left", "top", "width", "height"}
    assert [lb["name"] for lb in labels] == [lb.name for lb in analysis.labels]
    assert all(set(lb) == {"name", "confidence", "parents"} for lb in labels)
    assert [o["name"] for o in objects] == ["Face"]
    assert objects[0]["bounding_box"] == face_details["faces"][0]["bounding_box"]
    assert face_from_json(face_details) == analysis.primary_face
    assert analysis_from_json(face_details, labels, objects) == analysis


def test_json_for_a_photo_without_faces(analyzer: LocalPhotoAnalyzer) -> None:
    # given an analysis of a photo with no face
    analysis = analyzer.analyze_photo(_encode(skdata.coffee()))
    # when serialised
    face_details, labels, objects = analysis_to_json(analysis)
    # then there is no primary face and face_from_json says so
    assert face_details["primary_face_index"] is None and face_details["faces"] == []
    assert labels == [] and objects == []
    assert face_from_json(face_details) is None
    assert face_from_json(None) is None
    assert face_from_json({}) is None


def test_json_primary_face_is_the_largest_not_the_first() -> None:
    # given an analysis whose largest face is not listed first
    small = Face(box=BoundingBox(0.1, 0.1, 0.1, 0.1), confidence=80.0)
    smile = {"smile": {"value": True, "confidence": 60.0}}
    large = Face(box=BoundingBox(0.5, 0.2, 0.3, 0.3), confidence=70.0, attributes=smile)
    analysis = PhotoAnalysis(image_width=100, image_height=80, faces=(small, large), labels=(), detector="x")
    # when serialised and read back
    face_details, _, _ = analysis_to_json(analysis)
    # then the index points at the large face and it is returned
    assert face_details["primary_face_index"] == 1
    assert face_from_json(json.loads(json.dumps(face_details))) == large
    # and rows without the index fall back to the same rule
    del face_details["primary_face_index"]
    assert face_from_json(face_details) == large


def test_face_from_json_rejects_malformed_rows() -> None:
    # given a stored row whose face lacks a bounding box
    bad = {
        "detector": "x",
        "image": {"width": 1, "height": 1},
        "primary_face_index": 0,
        "faces": [{"confidence": 1}],
    }
    # when read, then a ValueError names the problem
    with pytest.raises(ValueError, match="malformed face_details"):
        face_from_json(bad)


# --- illustration -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def illustrator() -> LocalIllustrator:
    return LocalIllustrator()


def test_draw_base_is_a_960x720_png_with_a_face_anchor(illustrator: LocalIllustrator) -> None:
    # given a page request
    # when the base is drawn
    png = illustrator.draw_base(_page("underwater", 2))
    # then it is a 960x720 PNG whose anchor circle lies inside the image
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.size == (960, 720)
    anchor = read_anchor(png)
    assert anchor is not None
    assert 40 <= anchor.r <= 100
    assert anchor.r <= anchor.cx <= 960 - anchor.r and anchor.r <= anchor.cy <= 720 - anchor.r
    # and the head placeholder is drawn there: a light, nearly flat disc
    px = _rgb(png)
    inner = px[int(anchor.cy) - 10 : int(anchor.cy) + 10, int(anchor.cx) - 10 : int(anchor.cx) + 10]
    assert inner.reshape(-1, 3).std(axis=0).max() < 3 and inner.mean() > 200


def test_draw_base_is_deterministic_in_process_and_across_processes(illustrator: LocalIllustrator) -> None:
    # given the same request twice in this process and once in a fresh interpreter
    req = _page("pirates", 3, seed=987654321)
    first, second = illustrator.draw_base(req), illustrator.draw_base(req)
    code = (
        "import hashlib, sys\n"
        "from pipeline.providers.base import StoryRequest, Outline, PageRequest\n"
        "from pipeline.providers.offline_images import LocalIllustrator\n"
        "story = StoryRequest('Mia', 5, 'pirates', 4, 987654321)\n"
        "req = PageRequest(story, Outline('t', ('a', 'b', 'c', 'd')), 3)\n"
        "sys.stdout.write(hashlib.sha256(LocalIllustrator().draw_base(req)).hexdigest())\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
    ).stdout
    # then all three are byte-identical
    assert first == second
    assert other == hashlib.sha256(first).hexdigest()


def test_draw_base_differs_across_themes_and_pages(illustrator: LocalIllustrator) -> None:
    # given page 1 of every theme and pages 1-4 of one story
    themes = {t: _rgb(illustrator.draw_base(_page(t, 1))) for t in THEMES}
    pages = [_rgb(illustrator.draw_base(_page("dinosaurs", n))) for n in range(1, 5)]
    # then every pair differs substantially (not just a few pixels)
    theme_imgs = list(themes.values())
    for i in range(len(theme_imgs)):
        for j in range(i + 1, len(theme_imgs)):
            assert np.abs(theme_imgs[i] - theme_imgs[j]).mean() > 20
    for i in range(len(pages)):
        for j in range(i + 1, len(pages)):
            assert np.abs(pages[i] - pages[j]).mean() > 5


def test_story_keeps_its_look_and_other_stories_differ(illustrator: LocalIllustrator) -> None:
    # given two pages of one story and the same page of another story
    a1, a2 = (_rgb(illustrator.draw_base(_page("space_adventure", n, seed=1))) for n in (1, 2))
    b1 = _rgb(illustrator.draw_base(_page("space_adventure", 1, seed=5)))
    # then the story's pages share the sky palette (top rows) while the other story's page differs
    sky = lambda px: px[:40].reshape(-1, 3).mean(axis=0)  # noqa: E731
    assert np.abs(sky(a1) - sky(a2)).max() < 12
    assert not np.array_equal(a1, b1)


def test_theme_aliases_draw_the_same_and_unknown_themes_fail(illustrator: LocalIllustrator) -> None:
    # given the alias "ocean" for "underwater" and a theme nobody knows
    # then the alias draws the same page, and the unknown theme is a permanent error listing themes
    assert illustrator.draw_base(_page("ocean", 1)) == illustrator.draw_base(_page("underwater", 1))
    with pytest.raises(PermanentStepError, match="space_adventure"):
        illustrator.draw_base(_page("cooking_show", 1))


def _disc_mask(shape: tuple[int, int], cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_personalize_puts_the_photo_face_on_the_head(
    illustrator: LocalIllustrator, astronaut_jpeg: bytes, astronaut_face: Face
) -> None:
    # given a base page and the astronaut's detected face
    req = _page("enchanted_forest", 2)
    base = illustrator.draw_base(req)
    anchor = read_anchor(base)
    assert anchor is not None
    # when the page is personalised
    out = illustrator.personalize(base, astronaut_jpeg, astronaut_face, req)
    before, after = _rgb(base), _rgb(out)
    assert after.shape == (720, 960, 3)

    # then the disc shows the face box of the photo, centred and scaled by the documented margin
    face_px = int(round(2 * anchor.r / (1 + 2 * FACE_MARGIN)))
    photo = Image.open(io.BytesIO(astronaut_jpeg)).convert("RGB")
    b = astronaut_face.box
    expected = np.asarray(
        photo.crop(tuple(round(v * 512) for v in (b.left, b.top, b.left + b.width, b.top + b.height))).resize(
            (face_px, face_px), Image.Resampling.LANCZOS
        ),
        dtype=np.int16,
    )
    x0, y0 = int(round(anchor.cx - face_px / 2)), int(round(anchor.cy - face_px / 2))
    got = after[y0 : y0 + face_px, x0 : x0 + face_px]
    inner = _disc_mask((face_px, face_px), (face_px - 1) / 2, (face_px - 1) / 2, face_px * 0.45)
    assert np.abs(got - expected)[inner].mean() < 20
    # and it is no longer the placeholder
    head = _disc_mask(before.shape[:2], anchor.cx, anchor.cy, anchor.r * 0.9)
    assert np.abs(after - before)[head].mean() > 30

    # and pixels away from the head and the hands are untouched
    info = _png_info(base)
    hands = json.loads(str(info[CHARACTER_KEY]))["hands"]
    touched = _disc_mask(before.shape[:2], anchor.cx, anchor.cy, anchor.r * 1.25)
    for hx, hy, hr in hands:
        touched |= _disc_mask(before.shape[:2], hx, hy, hr + 4)
    assert np.array_equal(after[~touched], before[~touched])
    assert ANCHOR_KEY in _png_info(out)


def test_personalize_paints_bare_hands_in_the_photo_skin_tone(
    illustrator: LocalIllustrator, astronaut_jpeg: bytes, astronaut_face: Face
) -> None:
    # given a theme where the child has bare hands (pirates)
    req = _page("pirates", 1)
    base = illustrator.draw_base(req)
    hands = json.loads(str(_png_info(base)[CHARACTER_KEY]))["hands"]
    assert len(hands) == 2
    # when personalised
    out = _rgb(illustrator.personalize(base, astronaut_jpeg, astronaut_face, req))
    before = _rgb(base)
    # then each hand's centre changes from the placeholder to a skin tone taken from the photo
    for hx, hy, _hr in hands:
        x, y = int(round(hx)), int(round(hy))
        assert np.abs(before[y, x] - np.array(PLACEHOLDER_SKIN)).max() <= 3
        assert np.abs(out[y, x] - np.array(PLACEHOLDER_SKIN)).max() > 10


def test_recorded_hands_match_the_drawn_hands_on_every_pose(illustrator: LocalIllustrator) -> None:
    # given many pages of the bare-handed themes (poses vary, some bodies lean)
    checked = 0
    for theme in ("underwater", "enchanted_forest", "dinosaurs", "pirates"):
        for seed in (1, 2):
            for page in range(1, 5):
                png = illustrator.draw_base(_page(theme, page, seed=seed, pages=4))
                px = _rgb(png)
                hands = json.loads(str(_png_info(png)[CHARACTER_KEY]))["hands"]
                # then every recorded hand sits on unobstructed placeholder-skin pixels, so the
                # repaint in personalize never paints over a hood, snorkel or prop
                for hx, hy, hr in hands:
                    for dx, dy in ((0, 0), (0.5, 0), (-0.5, 0), (0, 0.5), (0, -0.5)):
                        x, y = int(round(hx + dx * hr)), int(round(hy + dy * hr))
                        assert np.abs(px[y, x] - np.array(PLACEHOLDER_SKIN)).max() <= 6, (theme, seed, page)
                    checked += 1
    assert checked == 64


def test_personalize_is_deterministic(
    illustrator: LocalIllustrator, astronaut_jpeg: bytes, astronaut_face: Face
) -> None:
    # given the same base, photo and face twice
    req = _page("superhero", 4)
    base = illustrator.draw_base(req)
    # then the output bytes are identical, so a re-run writes the same file
    assert illustrator.personalize(base, astronaut_jpeg, astronaut_face, req) == illustrator.personalize(
        base, astronaut_jpeg, astronaut_face, req
    )


def test_personalize_without_anchor_uses_the_default_position(
    illustrator: LocalIllustrator, astronaut_jpeg: bytes, astronaut_face: Face
) -> None:
    # given a plain 960x720 PNG from "another provider", with no face_anchor
    base_img = np.zeros((720, 960, 3), dtype=np.uint8)
    base_img[:] = (90, 160, 220)
    base = _encode(base_img)
    assert read_anchor(base) is None
    # when personalised
    after = _rgb(illustrator.personalize(base, astronaut_jpeg, astronaut_face, _page()))
    # then the face sits at the documented default disc and the rest is untouched
    anchor = default_anchor(960, 720)
    assert (anchor.cx, anchor.cy, anchor.r) == (480.0, 432.0, 86.4)
    head = _disc_mask((720, 960), anchor.cx, anchor.cy, anchor.r * 0.9)
    outside = ~_disc_mask((720, 960), anchor.cx, anchor.cy, anchor.r * 1.25)
    assert np.abs(after - base_img.astype(np.int16))[head].mean() > 30
    assert np.array_equal(after[outside], base_img.astype(np.int16)[outside])


def test_a_malformed_character_chunk_is_ignored_like_a_missing_one(
    illustrator: LocalIllustrator, astronaut_jpeg: bytes, astronaut_face: Face
) -> None:
    # given a drawn base, and copies whose character chunk is missing or has a two-value ink
    base = illustrator.draw_base(_page())
    with Image.open(io.BytesIO(base)) as im:
        im.load()
        anchor = im.info[ANCHOR_KEY]
        img = im.copy()

    def with_chunks(**text: str) -> bytes:
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_text(k, v)
        buf = io.BytesIO()
        img.save(buf, "PNG", pnginfo=info)
        return buf.getvalue()

    missing = with_chunks(face_anchor=anchor)
    short_ink = with_chunks(face_anchor=anchor, character='{"ink": [1, 2], "hands": [[10, 20, 5]]}')
    # when both are personalised, then the malformed one is not an error and looks like the missing one
    assert _rgb(illustrator.personalize(short_ink, astronaut_jpeg, astronaut_face, _page())).tolist() == _rgb(
        illustrator.personalize(missing, astronaut_jpeg, astronaut_face, _page())).tolist()


def test_personalize_from_a_large_jpeg_matches_the_small_photo(
    illustrator: LocalIllustrator,
    analyzer: LocalPhotoAnalyzer,
    phone_photo: bytes,
    astronaut_jpeg: bytes,
    astronaut_face: Face,
) -> None:
    # given the same face in a 4000x3000 JPEG (decoded at reduced scale) and in the 512 px photo
    req = _page("underwater", 3)
    base = illustrator.draw_base(req)
    anchor = read_anchor(base)
    assert anchor is not None
    big_face = analyzer.analyze_photo(phone_photo).primary_face
    assert big_face is not None
    # when both are personalised
    from_big = _rgb(illustrator.personalize(base, phone_photo, big_face, req))
    from_small = _rgb(illustrator.personalize(base, astronaut_jpeg, astronaut_face, req))
    # then the faces on the head look alike (same person, same framing)
    head = _disc_mask((720, 960), anchor.cx, anchor.cy, anchor.r * 0.6)
    assert np.abs(from_big - from_small)[head].mean() < 25


def test_personalize_rejects_unreadable_photos(illustrator: LocalIllustrator, astronaut_face: Face) -> None:
    # given a good base and a photo that is not an image
    req = _page()
    base = illustrator.draw_base(req)
    # when personalised, then the parent gets the unreadable-photo message
    with pytest.raises(PermanentStepError, match="JPEG or PNG"):
        illustrator.personalize(base, b"\xff\xd8\xff\xe0 broken", astronaut_face, req)


def test_personalize_clamps_face_boxes_outside_the_photo(illustrator: LocalIllustrator, astronaut_jpeg: bytes) -> None:
    # given face boxes hanging off the photo's edges
    req = _page("dinosaurs", 1)
    base = illustrator.draw_base(req)
    hanging = (
        BoundingBox(-0.2, -0.1, 0.5, 0.5),
        BoundingBox(0.8, 0.85, 0.4, 0.4),
        BoundingBox(0.0, 0.0, 1.5, 1.5),
    )
    for box in hanging:
        # when personalised
        out = illustrator.personalize(base, astronaut_jpeg, Face(box=box, confidence=90.0), req)
        # then a full-size page comes out
        with Image.open(io.BytesIO(out)) as im:
            assert im.size == (960, 720)
    # and a box entirely outside the photo is a clear permanent error
    with pytest.raises(PermanentStepError):
        outside = Face(box=BoundingBox(1.2, 1.2, 0.2, 0.2), confidence=90.0)
        illustrator.personalize(base, astronaut_jpeg, outside, req)


def test_personalize_handles_an_exif_rotated_photo(illustrator: LocalIllustrator, analyzer: LocalPhotoAnalyzer) -> None:
    # given the astronaut stored sideways with EXIF orientation 6, analysed by the local analyzer
    stored = Image.fromarray(skdata.astronaut()).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = _encode(stored, "JPEG", quality=92, exif=exif.tobytes())
    face = analyzer.analyze_photo(photo).primary_face
    assert face is not None
    req = _page("space_adventure", 1)
    base = illustrator.draw_base(req)
    anchor = read_anchor(base)
    assert anchor is not None
    # when personalised
    after = _rgb(illustrator.personalize(base, photo, face, req))
    upright = _rgb(illustrator.personalize(base, _encode(skdata.astronaut(), "JPEG", quality=92), face, req))
    # then the face is cropped from the upright photo (same as personalising the upright file)
    head = _disc_mask((720, 960), anchor.cx, anchor.cy, anchor.r * 0.9)
    assert np.abs(after - upright)[head].mean() < 6


# --- a face too small for the working size (fault 2 of the new-user test) --------------------------

def _astronaut_in(size: int, pos: tuple[int, int], canvas: tuple[int, int] = (4000, 3000)) -> bytes:
    """skimage's astronaut pasted at ``size`` px into a plain ``canvas`` JPEG at ``pos`` (her face is
    ~19% of the picture: ~93 px when pasted at 500)."""
    bg = Image.new("RGB", canvas, (120, 130, 140))
    bg.paste(Image.fromarray(skdata.astronaut()).resize((size, size), Image.Resampling.LANCZOS), pos)
    return _encode(bg, "JPEG", quality=90)


@pytest.mark.parametrize("size", [400, 500, 700])
@pytest.mark.parametrize("where", ["top-left", "centre", "bottom-right", "bottom-left"])
def test_a_small_face_far_away_is_reported_too_small_not_missing(
        analyzer: LocalPhotoAnalyzer, size: int, where: str) -> None:
    from pipeline.stories.faces import too_small_message

    # given a 4000x3000 photo with the astronaut pasted small (face 75..130 px: 2.5-4.5% of 3000)
    pos = {"top-left": (0, 0), "centre": (1750, 1250), "bottom-right": (4000 - size, 3000 - size),
           "bottom-left": (200, 2000)}[where]
    result = analyzer.analyze_photo(_astronaut_in(size, pos))
    # then no usable face, but her face among the small ones, where it is and about as large
    assert result.primary_face is None and result.small_faces, (size, where)
    k = size / 512

    def on_her_face(f: Face) -> bool:
        cx, cy = _centre_px(f.box, 4000, 3000)
        return (pos[0] + ASTRONAUT_FACE_X[0] * k <= cx <= pos[0] + ASTRONAUT_FACE_X[1] * k
                and pos[1] + ASTRONAUT_FACE_Y[0] * k <= cy <= pos[1] + ASTRONAUT_FACE_Y[1] * k)

    hits = [f for f in result.small_faces if on_her_face(f)]
    assert hits, [f.box for f in result.small_faces]
    assert 0.12 * size <= hits[0].box.width * 4000 <= 0.3 * size
    # and the parent is told it is too small (pipeline/stories/photo_step.py uses the largest)
    assert "too small" in too_small_message(result.small_faces[0], result.image_width, result.image_height)


@pytest.mark.parametrize("name", ["chelsea", "rocket", "cat", "hubble_deep_field"])
def test_the_larger_look_finds_no_face_in_large_photos_without_people(analyzer: LocalPhotoAnalyzer, name: str) -> None:
    # given a 4000x3000 photo with no human face (nothing found at the working size)
    photo = _encode(Image.fromarray(getattr(skdata, name)()).convert("RGB").resize((4000, 3000)), "JPEG", quality=90)
    result = analyzer.analyze_photo(photo)
    # then the larger look does not turn fur or stars into a "too small" face
    assert result.faces == () and result.small_faces == (), name


def test_only_a_photo_without_a_face_pays_for_the_larger_look(
        analyzer: LocalPhotoAnalyzer, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.providers.local_vision as lv

    sizes: list[int] = []
    real = lv._resized
    monkeypatch.setattr(lv, "_resized", lambda im, side: sizes.append(side) or real(im, side))
    # a usable face at the working size: one copy, the working one
    assert analyzer.analyze_photo(_astronaut_in(1200, (1000, 800))).primary_face is not None
    assert sizes == [lv.DETECT_LONG_SIDE]
    # none there: one more, larger (a 4000 px JPEG decoded at 1/2: its 2000 px, never upscaled to 2048)
    sizes.clear()
    assert analyzer.analyze_photo(_astronaut_in(400, (1750, 1250))).small_faces
    assert sizes == [lv.DETECT_LONG_SIDE, 2000]
    # a photo no larger than the working size is never upscaled for it
    sizes.clear()
    result = analyzer.analyze_photo(_encode(skdata.coffee()))
    assert result.faces == () and sizes == [max(skdata.coffee().shape[:2])]
