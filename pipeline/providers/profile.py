"""The character profile's value type: how the child looks, as stored and as words for prompts.

The shape, what is measured and how, and what never goes in it: pipeline/providers/character.py,
which derives profiles from a photo. This module has no image code, so every provider's request
(``base.StoryRequest.character``) can carry a profile.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

RGB = tuple[int, int, int]
VERSION = 1

# CIELAB L* lower bounds of the skin-tone buckets, lightest first (words for painting prompts).
SKIN_TONES: tuple[tuple[float, str], ...] = (
    (72.0, "light"), (62.0, "light-medium"), (52.0, "medium"), (42.0, "medium-brown"), (32.0, "brown"),
    (-1.0, "dark-brown"),
)
HAIR_LENGTHS = ("short", "medium", "long")


@dataclass(frozen=True)
class CharacterProfile:
    """One face's profile (pipeline/providers/character.py): colours as sRGB 0..255, words for prompts."""

    skin_rgb: RGB
    skin_tone: str
    hair_rgb: RGB | None = None
    hair_colour: str | None = None
    hair_length: str | None = None
    glasses: bool = False
    glasses_source: str = "pixels"

    def to_json(self) -> dict[str, Any]:
        """The stored JSON shape (pipeline/providers/character.py, module doc)."""
        hair = None
        if self.hair_rgb is not None:
            hair = {"colour": self.hair_colour, "rgb": list(self.hair_rgb), "length": self.hair_length}
        return {"version": VERSION, "hair": hair,
                "skin": {"tone": self.skin_tone, "rgb": list(self.skin_rgb)},
                "glasses": {"value": self.glasses, "source": self.glasses_source}}

    def to_text(self) -> str:
        """The JSON as compact text with sorted keys (the PNG chunk's value; deterministic)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, d: Any) -> CharacterProfile | None:
        """The profile stored by :meth:`to_json`, or None when ``d`` is None or malformed (a page
        is then drawn without one, as before profiles existed)."""
        if not isinstance(d, dict):
            return None
        try:
            skin = d["skin"]
            hair = d.get("hair")
            glasses = d.get("glasses") or {}
            return cls(
                skin_rgb=_rgb(skin["rgb"]), skin_tone=str(skin["tone"]),
                hair_rgb=_rgb(hair["rgb"]) if hair else None,
                hair_colour=str(hair["colour"]) if hair else None,
                hair_length=str(hair["length"]) if hair and hair.get("length") in HAIR_LENGTHS else None,
                glasses=bool(glasses.get("value", False)), glasses_source=str(glasses.get("source", "pixels")),
            )
        except (KeyError, TypeError, ValueError, IndexError):
            return None

    def descriptor(self) -> str:
        """Words for an image prompt, e.g. "short dark-brown hair, medium-brown skin and glasses";
        a function of the profile only (the same words on every page)."""
        parts = []
        if self.hair_colour:
            length = f"{self.hair_length} " if self.hair_length else ""
            parts.append(f"{length}{self.hair_colour.replace(' ', '-')} hair")
        parts.append(f"{self.skin_tone} skin")
        if self.glasses:
            parts.append("glasses")
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _rgb(v: Any) -> RGB:
    r, g, b = (int(x) for x in v[:3])
    if not all(0 <= c <= 255 for c in (r, g, b)):
        raise ValueError("colour out of range")
    return r, g, b


# --- colour words -------------------------------------------------------------------------------

_SRGB_TO_XYZ = ((0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722), (0.0193, 0.1192, 0.9505))
_WHITE = (0.95047, 1.0, 1.08883)  # D65


def lab(rgb: Any) -> tuple[float, float, float]:
    """CIELAB (D65) of an sRGB 0..255 colour: (L* 0..100, a*, b*)."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (float(v) / 255.0 for v in rgb[:3])]
    xyz = [sum(m * c for m, c in zip(row, lin, strict=True)) / w for row, w in zip(_SRGB_TO_XYZ, _WHITE, strict=True)]
    f = [v ** (1 / 3) if v > 216 / 24389 else (24389 / 27 * v + 16) / 116 for v in xyz]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def skin_tone(rgb: Any) -> str:
    """The lightness bucket of a measured skin colour (SKIN_TONES), for painting words only."""
    lightness = lab(rgb)[0]
    return next(name for floor, name in SKIN_TONES if lightness >= floor)


def hair_colour(rgb: Any) -> str:
    """A hair colour word for a measured colour: black, dark brown, brown, light brown, blond,
    red, grey or white (by CIELAB lightness, chroma and hue)."""
    lightness, a, b = lab(rgb)
    chroma = math.hypot(a, b)
    hue = math.degrees(math.atan2(b, a)) % 360
    if chroma < 10 and lightness >= 45:
        return "white" if lightness >= 80 else "grey"
    if lightness < 18:
        return "black"
    if chroma >= 28 and 15 <= hue <= 60 and a >= 18:
        return "red"
    if lightness < 35:
        return "dark brown"
    if lightness < 48:
        return "brown"
    if lightness < 60:
        return "light brown"
    return "blond"
