"""Photo analyses as JSON for the ``photos`` table's JSONB columns, and back (vendor-neutral).

``analysis_to_json`` gives the three columns ``face_details``, ``detected_labels`` and
``detected_objects``; ``analysis_from_json`` and ``face_from_json`` read them back. The shapes
(ratios of the image size, confidences 0..100, Rekognition's landmark names) are those of
``pipeline.providers.base``; every analyzer (OpenCV, Rekognition) is stored the same way.

``face_details``::

    {"detector": str, "image": {"width": int, "height": int},
     "primary_face_index": int | None,            # the face a story draws from by default
     "faces": [{"bounding_box": {"left", "top", "width", "height"}, "confidence": float,
                "landmarks": [{"type": str, "x": float, "y": float}], "attributes": {...}}],
     "small_faces": [... same shape: faces too small to use ...]}

``detected_labels``: ``[{"name", "confidence", "parents": [str]}]``; ``detected_objects``:
``[{"name", "confidence", "bounding_box"}]`` (one per labelled instance).
"""
from __future__ import annotations

import copy
from typing import Any

from pipeline.providers.base import BoundingBox, Face, Label, Landmark, PhotoAnalysis
from pipeline.stories.faces import face_problems


def _primary_index(faces: tuple[Face, ...]) -> int | None:
    if not faces:
        return None
    # The first of the largest faces that can be drawn from (PhotoAnalysis.primary_face when it
    # can); the story start chooses the child's face itself (pipeline/stories/faces.py).
    areas = [(not face_problems(f), f.box.width * f.box.height) for f in faces]
    return areas.index(max(areas))


def _face_to_json(face: Face) -> dict[str, Any]:
    return {
        "bounding_box": face.box.to_json(),
        "confidence": face.confidence,
        "landmarks": [{"type": lm.type, "x": lm.x, "y": lm.y} for lm in face.landmarks],
        "attributes": copy.deepcopy(face.attributes),
    }


def _box_from_json(d: dict[str, Any]) -> BoundingBox:
    return BoundingBox(
        left=float(d["left"]), top=float(d["top"]), width=float(d["width"]), height=float(d["height"])
    )


def _face_from_dict(d: dict[str, Any]) -> Face:
    return Face(
        box=_box_from_json(d["bounding_box"]),
        confidence=float(d["confidence"]),
        landmarks=tuple(
            Landmark(type=str(lm["type"]), x=float(lm["x"]), y=float(lm["y"]))
            for lm in d.get("landmarks", [])
        ),
        attributes=copy.deepcopy(dict(d.get("attributes", {}))),
    )


def analysis_to_json(a: PhotoAnalysis) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(face_details, detected_labels, detected_objects), JSON-serialisable, for JSONB columns."""
    face_details: dict[str, Any] = {
        "detector": a.detector,
        "image": {"width": a.image_width, "height": a.image_height},
        "primary_face_index": _primary_index(a.faces),
        "faces": [_face_to_json(f) for f in a.faces],
        "small_faces": [_face_to_json(f) for f in a.small_faces],
    }
    labels = [
        {"name": lb.name, "confidence": lb.confidence, "parents": list(lb.parents)} for lb in a.labels
    ]
    objects = [
        {"name": lb.name, "confidence": lb.confidence, "bounding_box": box.to_json()}
        for lb in a.labels
        for box in lb.instances
    ]
    return face_details, labels, objects


def analysis_from_json(
    face_details: dict[str, Any],
    detected_labels: list[dict[str, Any]],
    detected_objects: list[dict[str, Any]],
) -> PhotoAnalysis:
    """Inverse of analysis_to_json (instances come back from detected_objects by name)."""
    instances: dict[str, list[BoundingBox]] = {}
    for obj in detected_objects:
        instances.setdefault(str(obj["name"]), []).append(_box_from_json(obj["bounding_box"]))
    labels = tuple(
        Label(
            name=str(lb["name"]),
            confidence=float(lb["confidence"]),
            instances=tuple(instances.get(str(lb["name"]), ())),
            parents=tuple(str(p) for p in lb.get("parents", [])),
        )
        for lb in detected_labels
    )
    return PhotoAnalysis(
        image_width=int(face_details["image"]["width"]),
        image_height=int(face_details["image"]["height"]),
        faces=tuple(_face_from_dict(f) for f in face_details.get("faces", [])),
        labels=labels,
        detector=str(face_details["detector"]),
        small_faces=tuple(_face_from_dict(f) for f in face_details.get("small_faces", [])),
    )


def face_from_json(face_details: dict[str, Any] | None) -> Face | None:
    """The primary face stored by analysis_to_json, or None when the photo had no face.

    Raises ValueError if the stored structure is malformed (a data bug, not the parent's).
    """
    if not face_details:
        return None
    try:
        faces = face_details.get("faces") or []
        if not faces:
            return None
        if "primary_face_index" in face_details:
            index = face_details["primary_face_index"]
            if index is None:
                return None
        else:
            # Older rows without the index: same rule as PhotoAnalysis.primary_face.
            index = _primary_index(tuple(_face_from_dict(f) for f in faces))
        return _face_from_dict(faces[int(index)])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"malformed face_details: {exc!r}") from exc
