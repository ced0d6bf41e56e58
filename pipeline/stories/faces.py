"""Which face in a photo is the child's, and whether it can be used: one policy for every detector.

A photo is analysed on its own (``photos.analyze``), before or without a story; the story knows
the child's age. So analysis keeps every face it found, and the story start picks the child's
face with :func:`choose_protagonist` and records the choice (``story_outlines.protagonist_face``);
every page's personalization uses exactly that recorded face.

Size (both detectors): a face is *usable* when its box is at least ``MIN_FACE_PIXELS`` (64) pixels
across (the shorter side of the box, in the original photo's pixels) and large in the picture by
the detector's own rule: the offline detector wants the box's side >= 6 % of the photo's shorter
side (``local_vision.FACE_MIN_SIZE_RATIO``, the smallest face its cascade finds reliably at its
1024 px working size); Rekognition wants >= 2 % of the photo's area (``aws.MIN_FACE_AREA``).
Why 64 px: the offline illustrator paints the face into a disc ~120 px across on a 960x720 page,
Replicate's face swap aligns faces to 112-128 px crops, and more than 2x upscaling loses the
likeness. Faces found but smaller are kept apart (``small_faces``): a photo with only those is
refused with :func:`too_small_message` ("too small, take a closer photo"), not "no face".

Choice (several usable faces):

- Rekognition gives each face an ``AgeRange`` {Low, High} (years). The child's face is the one
  whose range is nearest the story's ``child_age`` (0 when the age lies inside the range); ties go
  to the youngest (lowest Low), then the largest. A face too small to use that matches the child's
  age better than every usable face (the child far behind a parent) refuses the photo as too small
  rather than putting the parent in the book.
- The offline detector cannot tell ages: the largest face is used, and when there are several the
  choice records a notice for the parent ("we used the largest face, …") shown with the story.
- The chosen face must be drawable (:func:`face_problems`: sunglasses, covered, turned away);
  otherwise the story fails saying why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.providers.base import Face

MIN_FACE_PIXELS = 64
ATTRIBUTE_CONFIDENCE = 80.0  # sunglasses / occlusion must be this sure before a face is refused
MAX_ABS_YAW = 60.0  # degrees: a face turned further gives half a face to draw from


def face_pixels(face: Face, width: int, height: int) -> int:
    """The shorter side of the face's box in pixels of the (upright) original photo."""
    return int(min(face.box.width * width, face.box.height * height))


def too_small_message(face: Face | None, width: int, height: int) -> str:
    """The parent's message for a photo whose faces are all too small (``face``: the largest)."""
    size = ""
    if face is not None:
        size = (f" (about {round(face.box.width * width)}x{round(face.box.height * height)} pixels in a "
                f"{width}x{height} photo)")
    return (
        f"We found a face in this photo, but it is too small or too far away to use{size}. "
        "Please upload a photo taken closer, in which your child's face fills more of the picture "
        f"(at least {MIN_FACE_PIXELS} pixels across, ideally a head-and-shoulders shot)."
    )


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
    return (f"We could not use this photo: {'; '.join(p for p, _ in problems)}. "
            f"Please upload a clear photo {', '.join(f for _, f in problems)}.")


def age_range(face: Face) -> tuple[int, int] | None:
    """(low, high) years when the detector estimated an age (Rekognition's AgeRange), else None."""
    r = face.attributes.get("age_range")
    if not isinstance(r, dict) or "low" not in r or "high" not in r:
        return None
    return int(r["low"]), int(r["high"])


def age_distance(face: Face, child_age: int) -> int | None:
    """Years between ``child_age`` and the face's estimated range (0 inside it); None if unknown."""
    r = age_range(face)
    if r is None:
        return None
    low, high = r
    return max(low - child_age, child_age - high, 0)


@dataclass(frozen=True)
class ProtagonistChoice:
    """The face a story uses: ``index`` into face_details["faces"], the rule that chose it
    ("only face", "age range", "largest face"), a ``notice`` for the parent when the photo had
    several faces (None otherwise), and ``refusal``: the parent's message when the chosen face
    cannot be used (the story fails with it), else None."""

    index: int
    face: Face
    rule: str
    notice: str | None
    refusal: str | None

    def to_json(self) -> dict[str, Any]:
        """What ``story_outlines.protagonist_face`` stores."""
        return {"index": self.index, "bounding_box": self.face.box.to_json(), "rule": self.rule,
                "age_range": list(r) if (r := age_range(self.face)) else None,
                "notice": self.notice}


def _where(face: Face) -> str:
    cx = face.box.left + face.box.width / 2
    return "on the left" if cx < 0.4 else "on the right" if cx > 0.6 else "in the middle"


def choose_protagonist(faces: list[Face], small_faces: list[Face], child_age: int,
                       width: int, height: int) -> ProtagonistChoice | None:
    """The child's face among ``faces`` (usable size) for a child of ``child_age`` years (policy:
    module doc); None when ``faces`` is empty."""
    if not faces:
        return None

    def area(f: Face) -> float:
        return f.box.width * f.box.height

    order = list(range(len(faces)))
    distances = [age_distance(f, child_age) for f in faces]
    if len(faces) == 1:
        index, rule = 0, "only face"
    elif all(d is not None for d in distances):
        index = min(order, key=lambda i: (distances[i], age_range(faces[i]) or (0, 0), -area(faces[i])))
        rule = "age range"
    else:
        index = max(order, key=lambda i: (area(faces[i]), -i))
        rule = "largest face"
    face = faces[index]
    notice = None
    if len(faces) > 1:
        if rule == "age range":
            r = age_range(face) or (0, 0)
            notice = (f"Your photo shows {len(faces)} faces. We used the face {_where(face)}, estimated "
                      f"{r[0]}-{r[1]} years old, as the closest to {child_age}. If that is not your child, "
                      "please upload a photo of your child alone.")
        else:
            notice = (f"Your photo shows {len(faces)} faces. We used the largest one ({_where(face)}). "
                      "If that is not your child, please upload a photo of your child alone.")
    refusal = None
    chosen_d = distances[index]
    if chosen_d is not None:
        for small in small_faces:
            d = age_distance(small, child_age)
            if d is not None and d < chosen_d:
                refusal = too_small_message(small, width, height)
                break
    if refusal is None and (problems := face_problems(face)):
        refusal = problems_message(problems)
    return ProtagonistChoice(index=index, face=face, rule=rule, notice=notice, refusal=refusal)
