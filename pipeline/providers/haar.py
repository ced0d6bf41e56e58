"""OpenCV Haar cascades for the offline photo analyzer (pipeline/providers/local_vision.py):
the cascade files, one classifier set per thread, detection with OpenCV's own grouping of
overlapping windows kept with their neighbour counts and last-stage weights, and the
uncalibrated 0..100 confidence built from those two (see local_vision's module docstring).
Rectangles are (x, y, w, h) in pixels of the image searched.
"""
from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from fractions import Fraction

import cv2
import numpy as np

GROUP_EPS = 0.2  # OpenCV's GROUP_EPS in detectMultiScale


# --- cascades -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CascadeSpec:
    """A cascade XML file (``path``) and its last stage's threshold (for :func:`confidence`)."""

    path: str
    last_stage_threshold: float


CASCADE_FILES = {
    "face": "haarcascade_frontalface_default.xml",
    "eye": "haarcascade_eye.xml",
    "eye_glasses": "haarcascade_eye_tree_eyeglasses.xml",
    "smile": "haarcascade_smile.xml",
}
_specs_lock = threading.Lock()
_specs: dict[str, CascadeSpec] | None = None
# CascadeClassifier keeps per-call scratch state, so instances are not shared between
# threads; each thread (one per prefork process in Celery) loads its own set once.
_thread_local = threading.local()


def cascade_specs() -> dict[str, CascadeSpec]:
    """Paths and last-stage thresholds, read once per process."""
    global _specs
    with _specs_lock:
        if _specs is None:
            specs: dict[str, CascadeSpec] = {}
            for key, name in CASCADE_FILES.items():
                path = cv2.data.haarcascades + name  # type: ignore[attr-defined]
                with open(path, encoding="utf-8") as fh:
                    thresholds = re.findall(r"<stageThreshold>([^<]+)</stageThreshold>", fh.read())
                if not thresholds:
                    raise RuntimeError(f"cannot read stage thresholds from {path}")
                specs[key] = CascadeSpec(path=path, last_stage_threshold=float(thresholds[-1]))
            _specs = specs
        return _specs


def classifiers() -> dict[str, cv2.CascadeClassifier]:
    """This thread's classifiers by cascade name (OpenCV classifiers are not thread-safe:
    one set per thread, loaded on first use)."""
    cached: dict[str, cv2.CascadeClassifier] | None = getattr(_thread_local, "classifiers", None)
    if cached is None:
        cached = {}
        for key, spec in cascade_specs().items():
            clf = cv2.CascadeClassifier(spec.path)
            if clf.empty():
                raise RuntimeError(f"OpenCV could not load cascade {spec.path}")
            cached[key] = clf
        _thread_local.classifiers = cached
    return cached


# --- detection ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One grouped detection: a rectangle (pixels), its neighbour count and best last-stage weight."""

    x: int
    y: int
    w: int
    h: int
    neighbors: int  # raw windows merged into this detection
    weight: float  # best last-stage sum among them (OpenCV levelWeights)


def _similar(rects: np.ndarray, eps: float) -> np.ndarray:
    """cv::SimilarRects for all pairs of integer rects (rows are x, y, w, h).

    OpenCV tests ``|a - b| <= eps * (min_w + min_h) * 0.5`` in doubles. With eps = p/q and
    integer inputs that is exactly ``2q|a - b| <= p (min_w + min_h)`` (the double threshold is
    never below the exact one, because 0.2 and friends round up in binary), and int32 numpy
    is ~15x faster than float64 for the few hundred raw windows a cascade returns.
    """
    frac = Fraction(eps).limit_denominator(1000)
    p, q = frac.numerator, frac.denominator
    r = rects.astype(np.int32)
    x, y, w, h = r[:, 0], r[:, 1], r[:, 2], r[:, 3]
    limit = p * (np.minimum.outer(w, w) + np.minimum.outer(h, h))
    k = 2 * q
    m = k * np.abs(np.subtract.outer(x, x)) <= limit
    m &= k * np.abs(np.subtract.outer(y, y)) <= limit
    m &= k * np.abs(np.subtract.outer(x + w, x + w)) <= limit
    m &= k * np.abs(np.subtract.outer(y + h, y + h)) <= limit
    return m


def group(rects: np.ndarray, weights: np.ndarray, min_neighbors: int, eps: float) -> list[Hit]:
    """cv::groupRectangles, but keeping both the neighbour count and the best levelWeight.

    OpenCV returns only one of the two per call; re-implementing the grouping lets one
    detection pass give both (checked against cv2.groupRectangles in the tests).
    """
    n = len(rects)
    if n == 0:
        return []
    rs = rects.astype(np.float64)
    # Equivalence classes of the similarity graph (cv::partition): every window takes the
    # smallest index it can reach, so each class ends up labelled by its first member.
    similar = _similar(rects, eps)
    root = np.arange(n)
    while True:
        nxt = np.where(similar, root[None, :], n).min(axis=1)
        nxt = nxt[nxt]  # pointer jumping: converge in a few rounds even for long chains
        if np.array_equal(nxt, root):
            break
        root = nxt
    # Number classes in order of their first member, as cv::partition does (output order).
    roots = np.unique(root)
    labels = np.searchsorted(roots, root)
    k = len(roots)
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros((k, 4), dtype=np.float64)
    np.add.at(sums, labels, rs)
    best = np.full(k, -np.inf)
    np.maximum.at(best, labels, np.asarray(weights, dtype=np.float64))
    # Only classes above the threshold can be kept or can swallow another, so loop over those.
    strong = [int(c) for c in np.flatnonzero(counts > min_neighbors)]
    # OpenCV averages in single precision (float s = 1.f / n; cvRound(sum * s), half-to-even);
    # doing it in doubles rounds some windows 1 px differently.
    scaled = sums.astype(np.float32) * (np.float32(1.0) / counts.astype(np.float32))[:, None]
    rounded = np.rint(scaled).astype(np.int64)
    avg = {c: [int(v) for v in rounded[c]] for c in strong}

    hits: list[Hit] = []
    for i in strong:
        n1 = int(counts[i])
        x1, y1, w1, h1 = avg[i]
        swallowed = False
        for j in strong:
            if j == i:
                continue
            n2 = int(counts[j])
            x2, y2, w2, h2 = avg[j]
            dx, dy = int(round(w2 * eps)), int(round(h2 * eps))
            # Drop a small rectangle inside a better-supported large one (OpenCV's rule).
            if (
                x1 >= x2 - dx
                and y1 >= y2 - dy
                and x1 + w1 <= x2 + w2 + dx
                and y1 + h1 <= y2 + h2 + dy
                and (n2 > max(3, n1) or n1 < 3)
            ):
                swallowed = True
                break
        if not swallowed:
            hits.append(Hit(x1, y1, w1, h1, n1, float(best[i])))
    return hits


def detect(
    clf: cv2.CascadeClassifier,
    gray: np.ndarray,
    *,
    min_neighbors: int,
    min_size: tuple[int, int],
    max_size: tuple[int, int] = (0, 0),
    scale_factor: float = 1.1,
) -> list[Hit]:
    """Windows of ``clf`` over ``gray`` (a 2-D uint8 array) between ``min_size`` and ``max_size``
    (w, h pixels; (0, 0) = no maximum), grouped like OpenCV's own ``minNeighbors`` grouping
    (:func:`group`) but keeping each group's neighbour count and best last-stage weight; ``[]``
    when the image is smaller than ``min_size``."""
    if gray.shape[0] < min_size[1] or gray.shape[1] < min_size[0]:
        return []
    # minNeighbors=0 returns the raw windows with their levelWeights; we group them ourselves.
    rects, _levels, weights = clf.detectMultiScale3(
        gray,
        scaleFactor=scale_factor,
        minNeighbors=0,
        minSize=min_size,
        maxSize=max_size,
        outputRejectLevels=True,
    )
    if len(rects) == 0:
        return []
    return group(np.asarray(rects).reshape(-1, 4), np.ravel(weights), min_neighbors, GROUP_EPS)


def confidence(hit: Hit, min_neighbors: int, last_stage_threshold: float) -> float:
    """Uncalibrated 0..100 score from neighbour support and last-stage margin (module doc)."""
    support = 1.0 - math.exp(-hit.neighbors / (2.0 * max(min_neighbors, 1)))
    margin = max(hit.weight - last_stage_threshold, 0.0)
    strength = 1.0 - math.exp(-margin / 4.0)
    return round(100.0 * support * strength, 2)
