"""What a detector's face must be to be drawn from: big enough (``MIN_FACE_PIXELS`` across, the
shorter side of its box in the original photo's pixels) and not hidden or turned away
(:func:`face_problems`, from the attributes a detector reports). Vendor-neutral, beside the
detectors that apply it (local_vision, face_json); the story's choice of the child's face among
them, and the parents' messages, are in pipeline/stories/faces.py (which explains the numbers).
"""
from __future__ import annotations

from typing import Any

from pipeline.providers.base import Face

MIN_FACE_PIXELS = 64
ATTRIBUTE_CONFIDENCE = 80.0  # sunglasses / occlusion must be this sure before a face is refused
MAX_ABS_YAW = 60.0  # degrees: a face turned further gives half a face to draw from


def face_pixels(face: Face, width: int, height: int) -> int:
    """The shorter side of the face's box in pixels of the (upright) original photo."""
    return int(min(face.box.width * width, face.box.height * height))


def face_problems(face: Face, *, attribute_confidence: float = ATTRIBUTE_CONFIDENCE,
                  max_abs_yaw: float = MAX_ABS_YAW) -> list[tuple[str, str]]:
    """(problem, what photo to send instead) for each reason ``face`` cannot be drawn from, using
    the attributes a detector reported (Rekognition's Sunglasses, FaceOccluded, Pose.Yaw; the
    offline detector reports none of these, so its faces have no such problems)."""
    problems: list[tuple[str, str]] = []
    a = face.attributes

    def sure(flag: Any) -> bool:
        return bool(isinstance(flag, dict) and flag.get("value") is True
                    and float(flag.get("confidence", 0.0)) >= attribute_confidence)

    if sure(a.get("sunglasses")):
        problems.append(("the child seems to be wearing sunglasses", "without sunglasses"))
    if sure(a.get("face_occluded")):
        problems.append(("part of the child's face is covered (for example by a hand, hair or an object)",
                         "with the whole face visible"))
    yaw = (a.get("pose") or {}).get("yaw")
    if yaw is not None and abs(float(yaw)) > max_abs_yaw:
        problems.append(("the child's face is turned too far to the side", "with the child facing the camera"))
    return problems


def problems_message(problems: list[tuple[str, str]]) -> str:
    """The parent's message for :func:`face_problems`' list: what is wrong, and what to send."""
    return (f"We could not use this photo: {'; '.join(p for p, _ in problems)}. "
            f"Please upload a clear photo {', '.join(f for _, f in problems)}.")
