"""The child's look from the character profile (pipeline/providers/character.py): hair, glasses.

Drawn around the empty head circle, so the photo's face (``compositing``) sits inside the
painted hair on every page. Positions are page pixels; ``r`` is the head circle's radius.

- Hair, in the profile's measured colour: a cap behind the head reaching 0.28 r above it and
  about 0.15 r beyond it at the temples (every length), and behind the shoulders a fall down to
  the jaw (``medium``) or past the shoulders (``long``). The cap is what
  :func:`hair_sample_points` points at: 45-75 degrees either side of the top, 1.09-1.13 r from
  the head's centre, outside the personalized face's frame (up to 1.07 r) and clear of the
  hats, so a test can read the colour back (a space helmet covers it).
- Glasses: round frames on the placeholder face (the base picture; on the personalized page the
  photo itself shows them).
"""
from __future__ import annotations

import math

from pipeline.providers.offline_images.page import Page
from pipeline.providers.profile import CharacterProfile

CAP_DROP = 0.12  # the cap's centre above the head's, in head radii
CAP_RADIUS = 1.16  # in head radii
FALL_BOTTOM = {"medium": 0.75, "long": 1.7}  # how far below the head's centre the hair falls, radii
FALL_HALF_WIDTH = {"medium": 1.14, "long": 1.18}


def draw_hair(pg: Page, hx: float, hy: float, r: float, profile: CharacterProfile | None) -> None:
    """The profile's hair behind the head circle (nothing without a measured hair colour)."""
    if profile is None or profile.hair_rgb is None:
        return
    hair = profile.hair_rgb
    p = pg.p
    length = profile.hair_length or "short"
    if length in FALL_BOTTOM:
        half = FALL_HALF_WIDTH[length] * r
        p.rect(hx - half, hy - 0.2 * r, hx + half, hy + FALL_BOTTOM[length] * r, hair, radius=0.45 * r)
    p.circle(hx, hy - CAP_DROP * r, CAP_RADIUS * r, hair)


def draw_glasses(pg: Page, hx: float, hy: float, r: float, profile: CharacterProfile | None) -> None:
    """Round frames on the placeholder face when the profile says glasses."""
    if profile is None or not profile.glasses:
        return
    p = pg.p
    w = 0.06 * r
    for side in (-1, 1):
        p.circle(hx + side * 0.36 * r, hy - 0.05 * r, 0.24 * r, None, outline=pg.ink, width=w)
    p.line([(hx - 0.12 * r, hy - 0.08 * r), (hx + 0.12 * r, hy - 0.08 * r)], pg.ink, w)


def hair_sample_points(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Page pixels inside the painted hair cap of a head circle at (cx, cy) with radius ``r``
    (module doc): where a test reads the hair colour back."""
    pts = []
    for deg in range(45, 76, 5):
        for rho in (1.09, 1.11, 1.13):
            a = math.radians(deg)
            for side in (-1, 1):
                pts.append((cx + side * math.sin(a) * rho * r, cy - math.cos(a) * rho * r))
    return pts
