"""Offline photo analysis with OpenCV Haar cascades (no network, no model downloads).

What this detector can honestly tell, and nothing more:

* Frontal faces (``haarcascade_frontalface_default.xml``). Profiles, strongly tilted heads and
  faces smaller than ~2-3% of the photo's shorter side are not found; those under 6% are reported
  apart, as too small to use (``small_faces``). A photo with no face at the working size
  (DETECT_LONG_SIDE) is looked at once more at twice that size (never upscaled), where a face near
  the cascade's 24 px window is found; those faces count only with both eyes found, and only as
  small faces (the parent is asked for a closer photo instead of told there is no face).
* Eyes (``haarcascade_eye.xml``, falling back to ``haarcascade_eye_tree_eyeglasses.xml``) in the
  upper part of each face, and a smiling mouth (``haarcascade_smile.xml``) in the lower part.
  Landmarks are only reported when a cascade found them; nothing is estimated or invented.
* Labels "Person" and "Face" when a face was found, "Smile" when a smile was found.
  ``haarcascade_upperbody.xml`` was evaluated and dropped: on the scikit-image samples it missed
  the astronaut's upper body and fired on a coffee cup, a microscope slide and a galaxy field.

Landmark naming follows what Amazon Rekognition actually returns: ``eyeLeft`` is the eye on the
left side of the image (the subject's right eye) and ``eyeRight`` the one on the image's right;
real DetectFaces responses have ``eyeLeft.X < eyeRight.X`` for upright faces. ``mouth`` (centre
of the detected smile) is not a Rekognition type (it has mouthLeft/Right/Up/Down) but is the
closest honest thing a smile box gives.

Confidence (0..100) is an uncalibrated, monotone score built from the two things the cascade
itself measures, NOT a probability:

* support: how many overlapping detection windows agreed (OpenCV's own accept criterion,
  "neighbors"), as ``1 - exp(-neighbors / (2 * min_neighbors))``;
* margin: how far the best window in the group got past the last stage's threshold
  (``levelWeights`` from ``detectMultiScale3(..., outputRejectLevels=True)`` minus the last
  ``stageThreshold`` of the cascade XML), as ``1 - exp(-margin / 4)``.

``confidence = 100 * support * margin``. The astronaut sample scores ~87 for its face; a group
that barely passes the neighbours threshold (6 windows) scores ~25-40, and the 2-3 window
groups that get rejected on non-face photos would score ~10-15.

Detection runs on plain grayscale: OpenCV normalises every window by its own variance, and a
global histogram equalisation made faces on large flat backgrounds (a wall, the sky) vanish.

The photo is decoded by ``photo_decode.decode_photo`` (HEIC, reduced JPEG decode, pixel limits);
the analysis is stored as JSON by ``face_json``. Neither depends on OpenCV.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from PIL import Image

from pipeline.providers import haar
from pipeline.providers.base import BoundingBox, Face, Label, Landmark, PhotoAnalysis
from pipeline.providers.face_quality import MIN_FACE_PIXELS, face_pixels
from pipeline.providers.photo_decode import MAX_PIXELS, decode_photo

DETECTOR_NAME = "opencv-haar"

# Faces in a parent's photo are large; 1024 px keeps detection ~0.1-0.3 s on one core.
DETECT_LONG_SIDE = 1024
# Eye/smile search runs on each face resized to this width, so small faces still exceed the
# cascades' 20x20 / 36x18 windows and huge faces do not cost more.
FACE_ROI_WIDTH = 200
MAX_FACES = 20

FACE_MIN_NEIGHBORS = 5
FACE_MIN_SIZE_RATIO = 0.06  # of the shorter side of the photo: smaller faces are too small to use
# Faces down to this (or 24 px, the cascade's window) are still looked for, only to tell the parent
# "too small, take a closer photo" instead of "no face" (pipeline/stories/faces.py).
FACE_DETECT_MIN_RATIO = 0.03
# Nothing found at the working size: one more look on a copy this many times larger, for faces
# down to SMALL_FACE_MIN_RATIO of the shorter side, reported as too small (a face near the cascade's
# 24 px window at the working size is missed there). Only photos with no face pay for it.
SMALL_FACE_PASS = 2
SMALL_FACE_MIN_RATIO = 0.02
EYE_MIN_NEIGHBORS = 4
# The smile cascade is notoriously trigger-happy on lips and chins; only strong groups count.
SMILE_MIN_NEIGHBORS = 20


def _ratio(v: float) -> float:
    return round(min(max(v, 0.0), 1.0), 6)


class LocalPhotoAnalyzer:
    """PhotoAnalyzer backed by OpenCV Haar cascades; works offline, deterministic."""

    def __init__(self, *, max_pixels: int = MAX_PIXELS, detect_long_side: int = DETECT_LONG_SIDE) -> None:
        self.max_pixels = max_pixels
        self.detect_long_side = detect_long_side

    def analyze_photo(self, image: bytes) -> PhotoAnalysis:
        """Faces, eye/mouth landmarks and simple labels; PermanentStepError if unreadable.

        Faces are looked for on a copy ``detect_long_side`` px long. When none is found there,
        they are looked for once more on a copy SMALL_FACE_PASS times larger (made from what was
        decoded anyway), and any face found there is reported in ``small_faces``: a face near the
        cascade's 24 px window at the working size is missed, and the parent must hear "too small,
        take a closer photo", not "no face". Photos with a face never pay for that second pass."""
        decoded = decode_photo(image, max_pixels=self.max_pixels, target_long_side=self.detect_long_side,
                               exact=False)
        full = decoded.image
        work = _resized(full, min(max(full.size), self.detect_long_side))  # never upscaled
        gray = np.asarray(work.convert("L"))
        clfs = haar.classifiers()
        specs = haar.cascade_specs()
        work_h, work_w = gray.shape

        side = max(24, int(round(min(work_w, work_h) * FACE_DETECT_MIN_RATIO)))
        usable_side = max(24, int(round(min(work_w, work_h) * FACE_MIN_SIZE_RATIO)))
        # No global histogram equalisation: OpenCV already normalises each window by its own
        # variance, and equalising a photo dominated by a flat background (a wall, the sky)
        # crushed the face's contrast and lost the face in tests.
        hits = haar.detect(clfs["face"], gray, min_neighbors=FACE_MIN_NEIGHBORS, min_size=(usable_side, usable_side))
        if not hits and side < usable_side:
            # Only for a photo that is refused anyway: look for smaller faces, to say "too small"
            # instead of "no face" (the happy path does not pay for the extra scales).
            hits = haar.detect(clfs["face"], gray, min_neighbors=FACE_MIN_NEIGHBORS, min_size=(side, side))
        only_small = False
        if not hits and max(full.size) > max(work.size):
            # Nothing at the working size: look again, larger (bounded; from the decoded pixels,
            # never upscaled), for faces too small to use, reported as small (a closer photo, please).
            big = _resized(full, min(max(full.size), SMALL_FACE_PASS * self.detect_long_side))
            big_gray = np.asarray(big.convert("L"))
            k = big_gray.shape[1] / work_w
            big_side = max(24, int(round(min(big_gray.shape) * SMALL_FACE_MIN_RATIO)))
            big_max = int(round(usable_side * k * 1.5))
            if big_side < big_max:
                hits = haar.detect(clfs["face"], big_gray, min_neighbors=FACE_MIN_NEIGHBORS,
                               min_size=(big_side, big_side), max_size=(big_max, big_max))
                gray, (work_h, work_w), only_small = big_gray, big_gray.shape, True
        # Largest first (ties by position) so output order is stable and the protagonist leads.
        hits = sorted(hits, key=lambda h: (-h.w * h.h, h.y, h.x))[:MAX_FACES]

        faces: list[Face] = []
        small: list[Face] = []
        for hit in hits:
            conf = haar.confidence(hit, FACE_MIN_NEIGHBORS, specs["face"].last_stage_threshold)
            landmarks, attributes = self._face_parts(gray, hit, work_w, work_h, clfs)
            if only_small and not {"eyeLeft", "eyeRight"} <= {lm.type for lm in landmarks}:
                continue  # the larger look's texture hits (fur, gravel): only faces with both eyes count
            box = BoundingBox(
                left=_ratio(hit.x / work_w),
                top=_ratio(hit.y / work_h),
                width=_ratio(hit.w / work_w),
                height=_ratio(hit.h / work_h),
            )
            face = Face(box=box, confidence=conf, landmarks=landmarks, attributes=attributes)
            too_small = (only_small or min(hit.w, hit.h) < usable_side
                         or face_pixels(face, decoded.width, decoded.height) < MIN_FACE_PIXELS)
            (small if too_small else faces).append(face)

        return PhotoAnalysis(
            image_width=decoded.width,
            image_height=decoded.height,
            faces=tuple(faces),
            labels=_labels(faces),
            detector=DETECTOR_NAME,
            small_faces=tuple(small),
        )

    def _face_parts(
        self,
        gray: np.ndarray,
        hit: haar.Hit,
        work_w: int,
        work_h: int,
        clfs: dict[str, cv2.CascadeClassifier],
    ) -> tuple[tuple[Landmark, ...], dict[str, Any]]:
        """Eyes and smile inside one face; only what the cascades actually found."""
        roi = gray[hit.y : hit.y + hit.h, hit.x : hit.x + hit.w]
        if roi.size == 0:
            return (), {}
        scale = FACE_ROI_WIDTH / hit.w
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        roi = cv2.resize(roi, (FACE_ROI_WIDTH, max(1, round(hit.h * scale))), interpolation=interp)
        # Equalise per face: lighting across a face differs from the photo's overall histogram.
        roi = cv2.equalizeHist(roi)
        rh, rw = roi.shape
        specs = haar.cascade_specs()

        def to_image(px: float, py: float) -> tuple[float, float]:
            return _ratio((hit.x + px / scale) / work_w), _ratio((hit.y + py / scale) / work_h)

        landmarks: list[Landmark] = []
        # Eyes sit in the band 15%..60% of a Haar face box's height.
        top, bottom = int(rh * 0.15), int(rh * 0.60)
        band = roi[top:bottom, :]
        eye_min = (int(rw * 0.12),) * 2
        eye_max = (int(rw * 0.40),) * 2
        eyes = haar.detect(clfs["eye"], band, min_neighbors=EYE_MIN_NEIGHBORS, min_size=eye_min, max_size=eye_max)
        if len(eyes) < 2:
            # Glasses defeat the plain eye cascade; its sibling is trained with them.
            eyes = eyes + haar.detect(
                clfs["eye_glasses"], band, min_neighbors=EYE_MIN_NEIGHBORS, min_size=eye_min, max_size=eye_max
            )
        left_side = [e for e in eyes if e.x + e.w / 2 < rw / 2]
        right_side = [e for e in eyes if e.x + e.w / 2 >= rw / 2]
        for name, group in (("eyeLeft", left_side), ("eyeRight", right_side)):
            if group:
                e = max(group, key=lambda h: (h.neighbors, h.weight))
                x, y = to_image(e.x + e.w / 2, top + e.y + e.h / 2)
                landmarks.append(Landmark(type=name, x=x, y=y))

        attributes: dict[str, Any] = {}
        # The mouth lies in the lower half of a Haar face box (the box ends near the chin).
        mtop = int(rh * 0.50)
        mouth_band = roi[mtop:, :]
        smiles = haar.detect(
            clfs["smile"],
            mouth_band,
            min_neighbors=SMILE_MIN_NEIGHBORS,
            min_size=(int(rw * 0.25), int(rw * 0.12)),
            max_size=(int(rw * 0.80), int(rw * 0.45)),
        )
        # A smile must be roughly centred; off-centre groups are cheeks or jaw lines.
        smiles = [s for s in smiles if abs((s.x + s.w / 2) - rw / 2) < rw * 0.2]
        if smiles:
            s = max(smiles, key=lambda h: (h.neighbors, h.weight))
            x, y = to_image(s.x + s.w / 2, mtop + s.y + s.h / 2)
            landmarks.append(Landmark(type="mouth", x=x, y=y))
            attributes["smile"] = {
                "value": True,
                "confidence": haar.confidence(s, SMILE_MIN_NEIGHBORS, specs["smile"].last_stage_threshold),
            }
        # No smile found is weak evidence (the cascade misses closed-mouth smiles), so the
        # attribute is left out rather than reported as {"value": false}.
        return tuple(landmarks), attributes


def _resized(image: Image.Image, long_side: int) -> Image.Image:
    """``image`` scaled to ``long_side`` px on its longer side (down or up), as decode_photo's exact
    resize does (Lanczos, reducing_gap 3): the working copy is the same pixels it returned."""
    if max(image.size) == long_side:
        return image
    s = long_side / max(image.size)
    size = (max(1, round(image.width * s)), max(1, round(image.height * s)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _labels(faces: list[Face]) -> tuple[Label, ...]:
    if not faces:
        return ()
    best = max(f.confidence for f in faces)
    labels = [
        # Person has no instances: we only know where the face is, not the body's extent.
        Label(name="Person", confidence=best),
        Label(name="Face", confidence=best, instances=tuple(f.box for f in faces), parents=("Person",)),
    ]
    smiles = [
        f.attributes["smile"]["confidence"] for f in faces if f.attributes.get("smile", {}).get("value")
    ]
    if smiles:
        labels.append(Label(name="Smile", confidence=max(smiles), parents=("Face", "Person")))
    return tuple(labels)
