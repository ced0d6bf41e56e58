"""Offline illustrator: themed picture-book pages drawn with Pillow, and face compositing.

``draw_base`` paints a 960x720 scene for the page's theme with a child character whose head is
an empty circle. Where that circle is goes into the PNG itself (tEXt chunk ``face_anchor`` =
``{"cx","cy","r"}`` in pixels), so ``personalize`` can run in another process with only the
bytes. A second chunk ``character`` = ``{"ink": [r,g,b], "ink_width": w, "hands": [[x,y,r], ...]}``
lists bare hands drawn in a placeholder skin tone; ``personalize`` repaints them in a tone sampled
from the photo so hands and face match. Both chunks are optional for ``personalize``: a base from
another provider gets the face at ``default_anchor`` (horizontal centre, 60% down, radius 12% of
the height) and no hand recolouring.

Determinism: ``random.Random(f"story-style:{seed}")`` picks the story's sky palette and outfit
(same look on every page) and ``random.Random(seed * 1000 + page)`` the page's composition
(child position and pose, props, creatures). Pillow, numpy and zlib are deterministic, so the
same request (and the same photo) gives byte-identical PNGs, also across processes.

Everything is drawn at 2x and box-reduced for anti-aliasing.
"""
from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, PngImagePlugin, UnidentifiedImageError

from pipeline.kernel.errors import PermanentStepError
from pipeline.providers.base import Face, PageRequest
from pipeline.providers.local_vision import decode_photo
from pipeline.stories.themes import THEMES, resolve_theme

WIDTH, HEIGHT = 960, 720
SS = 2  # supersampling factor
ANCHOR_KEY = "face_anchor"
CHARACTER_KEY = "character"
FACE_MARGIN = 0.35  # extra crop around the detected face box on each side (hair, chin)
PNG_COMPRESS_LEVEL = 3  # level 6 costs ~10 ms more per page for ~20% smaller files

RGB = tuple[int, int, int]
RGBA = tuple[int, int, int, int]
Color = RGB | RGBA
Point = tuple[float, float]

PLACEHOLDER_SKIN: RGB = (238, 200, 168)
PLACEHOLDER_FACE: RGB = (250, 236, 220)


@dataclass(frozen=True)
class Anchor:
    """Where the face goes, in pixels of the page."""

    cx: float
    cy: float
    r: float

    def to_json(self) -> str:
        return json.dumps({"cx": self.cx, "cy": self.cy, "r": self.r}, sort_keys=True)


def default_anchor(width: int, height: int) -> Anchor:
    """Fallback for bases without a face_anchor: centred, 60% down, r = 12% of the height."""
    return Anchor(cx=round(width / 2, 1), cy=round(height * 0.60, 1), r=round(height * 0.12, 1))


DEFAULT_ANCHOR = default_anchor(WIDTH, HEIGHT)


# --- colour helpers ---------------------------------------------------------------------------


def _mix(a: Sequence[int], b: Sequence[int], t: float) -> RGB:
    return (
        int(round(a[0] + (b[0] - a[0]) * t)),
        int(round(a[1] + (b[1] - a[1]) * t)),
        int(round(a[2] + (b[2] - a[2]) * t)),
    )


def _dark(c: Sequence[int], t: float = 0.25) -> RGB:
    return _mix(c, (0, 0, 0), t)


def _light(c: Sequence[int], t: float = 0.3) -> RGB:
    return _mix(c, (255, 255, 255), t)


def _a(c: Sequence[int], alpha: int) -> RGBA:
    return (int(c[0]), int(c[1]), int(c[2]), alpha)


# --- painter ----------------------------------------------------------------------------------

_INK = "ink"  # outline value meaning "the theme's ink colour"
Stroke = RGB | RGBA | str | None  # a colour, _INK, or None for no outline


class _Painter:
    """ImageDraw in page coordinates (960x720) on a supersampled canvas, with an ink outline.

    On an RGB canvas translucent fills blend; on an RGBA layer they replace (used for the body,
    which is opaque and may be rotated as a whole).
    """

    def __init__(self, img: Image.Image, ink: RGB, ink_width: float, origin: Point = (0.0, 0.0)) -> None:
        self.img = img
        self.draw = ImageDraw.Draw(img, "RGBA")
        self.ink = ink
        self.ink_width = ink_width
        self.ox, self.oy = origin

    def _pt(self, x: float, y: float) -> Point:
        return ((x - self.ox) * SS, (y - self.oy) * SS)

    def _box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        a, b = self._pt(x0, y0)
        c, d = self._pt(x1, y1)
        return (min(a, c), min(b, d), max(a, c), max(b, d))

    def _outline(self, outline: Stroke, width: float | None) -> tuple[Color | None, int]:
        if outline is None:
            return None, 0
        color: Color = self.ink if isinstance(outline, str) else outline
        w = self.ink_width if width is None else width
        return color, max(1, int(round(w * SS)))

    def ellipse(
        self, cx: float, cy: float, rx: float, ry: float, fill: Color | None,
        outline: Stroke = _INK, width: float | None = None,
    ) -> None:
        col, w = self._outline(outline, width)
        self.draw.ellipse(self._box(cx - rx, cy - ry, cx + rx, cy + ry), fill=fill, outline=col, width=w)

    def circle(
        self, cx: float, cy: float, r: float, fill: Color | None, outline: Stroke = _INK,
        width: float | None = None,
    ) -> None:
        self.ellipse(cx, cy, r, r, fill, outline, width)

    def polygon(
        self, pts: Sequence[Point], fill: Color | None, outline: Stroke = _INK, width: float | None = None
    ) -> None:
        col, w = self._outline(outline, width)
        self.draw.polygon([self._pt(x, y) for x, y in pts], fill=fill, outline=col, width=w)

    def rect(
        self, x0: float, y0: float, x1: float, y1: float, fill: Color | None, radius: float = 0,
        outline: Stroke = _INK, width: float | None = None,
    ) -> None:
        col, w = self._outline(outline, width)
        box = self._box(x0, y0, x1, y1)
        rad = min(radius * SS, (box[2] - box[0]) / 2, (box[3] - box[1]) / 2)
        if rad > 0:
            self.draw.rounded_rectangle(box, radius=rad, fill=fill, outline=col, width=w)
        else:
            self.draw.rectangle(box, fill=fill, outline=col, width=w)

    def line(self, pts: Sequence[Point], color: Color, width: float, round_caps: bool = True) -> None:
        w = max(1, int(round(width * SS)))
        self.draw.line([self._pt(x, y) for x, y in pts], fill=color, width=w, joint="curve")
        if round_caps:
            for x, y in (pts[0], pts[-1]):
                px, py = self._pt(x, y)
                self.draw.ellipse((px - w / 2, py - w / 2, px + w / 2, py + w / 2), fill=color)

    def stroke(self, pts: Sequence[Point], color: Color, width: float) -> None:
        """A limb or stem: ink-outlined thick round-capped line."""
        self.line(pts, self.ink, width + 2 * self.ink_width)
        self.line(pts, color, width)

    def arc(
        self, cx: float, cy: float, rx: float, ry: float, start: float, end: float, color: Color, width: float
    ) -> None:
        self.draw.arc(self._box(cx - rx, cy - ry, cx + rx, cy + ry), start, end, fill=color,
                      width=max(1, int(round(width * SS))))

    def pieslice(
        self, cx: float, cy: float, rx: float, ry: float, start: float, end: float, fill: Color,
        outline: Stroke = _INK, width: float | None = None,
    ) -> None:
        col, w = self._outline(outline, width)
        self.draw.pieslice(self._box(cx - rx, cy - ry, cx + rx, cy + ry), start, end, fill=fill, outline=col,
                           width=w)

    def chord(
        self, cx: float, cy: float, rx: float, ry: float, start: float, end: float, fill: Color,
        outline: Stroke = _INK, width: float | None = None,
    ) -> None:
        col, w = self._outline(outline, width)
        self.draw.chord(self._box(cx - rx, cy - ry, cx + rx, cy + ry), start, end, fill=fill, outline=col,
                        width=w)

    def glow(self, cx: float, cy: float, r: float, color: RGB, strength: int = 60) -> None:
        """Soft light with a smooth radial falloff (computed small, then upscaled: cheap)."""
        n = max(8, int(r * SS / 4))
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        c = (n - 1) / 2
        d = np.sqrt((xx - c) ** 2 + (yy - c) ** 2) / (n / 2)
        a = np.clip(1.0 - d, 0.0, 1.0) ** 2 * (strength / 100.0) * 255.0
        mask = Image.fromarray(np.rint(a).astype(np.uint8), "L").resize(
            (int(2 * r * SS), int(2 * r * SS)), Image.Resampling.BILINEAR)
        x0, y0 = self._pt(cx - r, cy - r)
        self.img.paste(tuple(color), (int(x0), int(y0), int(x0) + mask.width, int(y0) + mask.height), mask)

    def blob(self, circles: Sequence[tuple[float, float, float]], fill: Color, outline: Stroke = None,
             width: float | None = None) -> None:
        """Union of discs as one shape: translucent without overlap seams, outline only outside."""
        pad = (self.ink_width if width is None else width) + 2
        x0 = min(c[0] - c[2] for c in circles) - pad
        y0 = min(c[1] - c[2] for c in circles) - pad
        x1 = max(c[0] + c[2] for c in circles) + pad
        y1 = max(c[1] + c[2] for c in circles) + pad
        size = (int((x1 - x0) * SS) + 1, int((y1 - y0) * SS) + 1)
        alpha = fill[3] if len(fill) == 4 else 255
        col, w = self._outline(outline, width)

        def mask_for(grow: float) -> Image.Image:
            m = Image.new("L", size, 0)
            md = ImageDraw.Draw(m)
            for cx, cy, r in circles:
                rr = (r + grow) * SS
                px, py = (cx - x0) * SS, (cy - y0) * SS
                md.ellipse((px - rr, py - rr, px + rr, py + rr), fill=alpha)
            return m

        ox, oy = self._pt(x0, y0)
        box = (int(ox), int(oy), int(ox) + size[0], int(oy) + size[1])
        if col is not None:
            self.img.paste(tuple(col[:3]), box, mask_for(w / SS))
        self.img.paste(tuple(fill[:3]), box, mask_for(0.0))


def _gradient(stops: Sequence[tuple[float, RGB]]) -> Image.Image:
    """Vertical gradient for the supersampled canvas (one column, stretched: cheap)."""
    h = HEIGHT * SS
    y = np.linspace(0.0, 1.0, h)
    pos = np.array([s[0] for s in stops])
    cols = np.array([s[1] for s in stops], dtype=np.float64)
    col = np.stack([np.interp(y, pos, cols[:, c]) for c in range(3)], axis=1)
    column = np.clip(np.rint(col), 0, 255).astype(np.uint8)[:, None, :]
    return Image.fromarray(column, "RGB").resize((WIDTH * SS, h), Image.Resampling.NEAREST)


def _wavy(x0: float, x1: float, y: float, amp: float, phase: float, freq: float, bottom: float,
          harmonics: float = 0.35, n: int = 48) -> list[Point]:
    """Polygon of a softly wavy band from y down to ``bottom`` (hills, sea, sand)."""
    pts: list[Point] = []
    for i in range(n + 1):
        x = x0 + (x1 - x0) * i / n
        t = x / WIDTH * math.tau * freq + phase
        pts.append((x, y + amp * math.sin(t) + amp * harmonics * math.sin(2.3 * t + 1.7)))
    return pts + [(x1, bottom), (x0, bottom)]


def _star_points(cx: float, cy: float, r_out: float, r_in: float, n: int = 5,
                 rot: float = -90.0) -> list[Point]:
    pts = []
    for i in range(2 * n):
        r = r_out if i % 2 == 0 else r_in
        ang = math.radians(rot + i * 180.0 / n)
        pts.append((cx + r * math.cos(ang), cy + r * math.sin(ang)))
    return pts


def _sparkle(p: _Painter, cx: float, cy: float, r: float, color: Color) -> None:
    p.polygon(_star_points(cx, cy, r, r * 0.28, n=4, rot=-90), color, outline=None)


def _cloud(p: _Painter, cx: float, cy: float, w: float, color: Color, outline: Stroke = None) -> None:
    puffs = [(-0.32, 0.05, 0.2), (-0.1, -0.12, 0.27), (0.17, -0.06, 0.23), (0.36, 0.07, 0.16), (0.02, 0.1,
                                                                                                0.2),
             (-0.42, 0.12, 0.12), (0.22, 0.12, 0.16)]
    p.blob([(cx + dx * w, cy + dy * w, rr * w) for dx, dy, rr in puffs], color, outline=outline)


def _leaf(p: _Painter, x: float, y: float, angle: float, length: float, droop: float, width: float,
          color: RGB) -> None:
    """A curved, tapered frond from (x, y): palm leaves, ferns."""
    dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    left: list[Point] = []
    right: list[Point] = []
    n = 12
    for i in range(n + 1):
        t = i / n
        px = x + dx * length * t
        py = y + dy * length * t + droop * length * t * t
        # Tangent for the normal.
        tx, ty = dx * length, dy * length + 2 * droop * length * t
        norm = math.hypot(tx, ty) or 1.0
        nx, ny = -ty / norm, tx / norm
        half = width * 0.5 * math.sin(math.pi * min(max(t, 0.04), 0.96)) ** 0.7
        left.append((px + nx * half, py + ny * half))
        right.append((px - nx * half, py - ny * half))
    p.polygon(left + right[::-1], color)
    p.line([left[0], ((left[n // 2][0] + right[n // 2][0]) / 2, (left[n // 2][1] + right[n // 2][1]) / 2),
            right[-1]], _dark(color, 0.25), 1.4)


# --- palettes and outfits ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Outfit:
    shirt: RGB
    pants: RGB
    shoes: RGB
    accent: RGB


_SHIRTS: tuple[RGB, ...] = (
    (240, 104, 92), (250, 186, 56), (82, 156, 228), (84, 196, 158), (168, 126, 222), (250, 146, 58),
)
_PANTS: tuple[RGB, ...] = ((52, 72, 132), (70, 112, 172), (108, 70, 118), (104, 116, 66), (116, 82, 58))
_SHOES: tuple[RGB, ...] = ((214, 60, 60), (250, 250, 245), (60, 52, 64), (64, 120, 200))


def _outfit(story_rng: random.Random) -> _Outfit:
    shirt = story_rng.choice(_SHIRTS)
    accent = story_rng.choice([c for c in _SHIRTS if c != shirt])
    return _Outfit(shirt=shirt, pants=story_rng.choice(_PANTS), shoes=story_rng.choice(_SHOES), accent=accent)


@dataclass(frozen=True)
class _Theme:
    ink: RGB
    skies: tuple[tuple[RGB, RGB, RGB], ...]  # (top, middle, bottom) options, one per story


_STYLE: dict[str, _Theme] = {
    "space_adventure": _Theme(ink=(30, 24, 62), skies=(
        ((10, 14, 46), (38, 30, 92), (92, 56, 138)), ((8, 24, 52), (20, 56, 102), (60, 108, 150)),
        ((20, 10, 48), (62, 28, 96), (140, 66, 130)))),
    "underwater": _Theme(ink=(16, 48, 78), skies=(
        ((96, 214, 226), (34, 140, 196), (14, 60, 124)), ((120, 222, 210), (30, 156, 170), (12, 76, 112)),
        ((110, 196, 240), (46, 116, 200), (24, 48, 120)))),
    "enchanted_forest": _Theme(ink=(38, 34, 52), skies=(
        ((44, 58, 112), (118, 104, 176), (250, 194, 170)), ((30, 70, 96), (84, 140, 150), (236, 222, 160)),
        ((56, 44, 102), (158, 104, 168), (252, 176, 150)))),
    "dinosaurs": _Theme(ink=(70, 48, 38), skies=(
        ((118, 194, 236), (176, 222, 236), (255, 226, 172)), ((250, 176, 110), (252, 208, 150), (255, 236,
                                                                                                 190)),
        ((140, 206, 226), (200, 232, 214), (250, 240, 180)))),
    "pirates": _Theme(ink=(52, 38, 34), skies=(
        ((98, 180, 236), (160, 214, 244), (236, 244, 236)), ((250, 150, 110), (252, 196, 140), (255, 230,
                                                                                                180)),
        ((124, 196, 240), (190, 226, 246), (255, 240, 214)))),
    "superhero": _Theme(ink=(38, 28, 62), skies=(
        ((86, 150, 240), (150, 196, 250), (236, 240, 255)), ((252, 120, 120), (255, 170, 120), (255, 218,
                                                                                                150)),
        ((90, 70, 180), (210, 110, 170), (255, 190, 140)))),
}


@dataclass
class _Page:
    """Everything a scene painter needs for one page."""

    theme: str
    canvas: Image.Image
    p: _Painter
    rng: random.Random  # page composition
    sky: tuple[RGB, RGB, RGB]
    outfit: _Outfit
    ink: RGB
    child_x: float
    ground_y: float
    head_r: float
    pose: str
    feet_y: float = 0.0  # where the child's feet are (above ground_y when flying or swimming)
    tilt: float = 0.0
    flying: bool = False
    props_x: list[float] = field(default_factory=list)  # x positions free for big props


@dataclass(frozen=True)
class _Placement:
    anchor: Anchor
    hands: tuple[tuple[float, float, float], ...]  # bare hands to recolour (x, y, r)


# --- the child --------------------------------------------------------------------------------

# Hand and elbow targets for the arm on the image's right, in head radii from the head centre.
_ARMS: dict[str, tuple[Point, Point]] = {
    "down": ((0.84, 1.62), (0.96, 2.22)),
    "up": ((1.08, 0.62), (1.3, -0.12)),
    "wave": ((1.2, 0.78), (1.42, 0.1)),
    "out": ((1.1, 1.18), (1.66, 1.02)),
    "hip": ((1.08, 1.6), (0.7, 2.02)),
}
_POSES: dict[str, tuple[str, str]] = {  # (image-left arm, image-right arm)
    "wave": ("down", "wave"),
    "cheer": ("up", "up"),
    "point": ("hip", "out"),
    "relaxed": ("down", "down"),
    "hero": ("hip", "hip"),
    "reach": ("out", "down"),
}


def _rotate_point(x: float, y: float, px: float, py: float, deg: float) -> Point:
    """Where Image.rotate(deg, center=(px, py)) moves (x, y) (counter-clockwise on screen)."""
    a = math.radians(deg)
    dx, dy = x - px, y - py
    return (px + dx * math.cos(a) + dy * math.sin(a), py - dx * math.sin(a) + dy * math.cos(a))


def _draw_child(pg: _Page) -> _Placement:
    """Body on its own layer (so it can lean), then the head circle and headwear on top."""
    r = pg.head_r
    hx = round(pg.child_x)
    hy = round(pg.feet_y - 3.55 * r)
    o = pg.outfit
    theme = pg.theme
    gloves = theme in ("space_adventure", "superhero")

    # Layer just covering the body's reach (hands, cape), in page coordinates; rotation cost
    # grows with its area.
    lx0, ly0 = hx - 2.1 * r, hy - 0.45 * r
    lx1, ly1 = hx + 2.1 * r, hy + 3.75 * r
    layer = Image.new("RGBA", (int((lx1 - lx0) * SS), int((ly1 - ly0) * SS)), (0, 0, 0, 0))
    b = _Painter(layer, pg.ink, pg.p.ink_width, origin=(lx0, ly0))

    suit = {"space_adventure": (236, 240, 248), "underwater": o.accent, "superhero": o.shirt}.get(theme,
                                                                                                  o.shirt)
    pants = {"space_adventure": (236, 240, 248), "underwater": o.accent, "superhero": o.shirt,
             "pirates": (60, 56, 80), "dinosaurs": (150, 120, 80)}.get(theme, o.pants)
    if theme == "dinosaurs":
        suit = (214, 186, 124)
    elif theme == "pirates":
        suit = (248, 246, 238)
    sleeve = suit
    # Gloves for astronauts and heroes; everyone else gets placeholder skin, repainted later.
    hand_col = {"space_adventure": (250, 250, 250), "superhero": (252, 208, 64)}.get(theme, PLACEHOLDER_SKIN)

    # Behind the body: cape, cloak, backpack.
    if theme == "superhero":
        sway = -1 if pg.rng.random() < 0.5 else 1
        b.polygon([(hx - 0.6 * r, hy + 0.95 * r), (hx + 0.6 * r, hy + 0.95 * r),
                   (hx + 1.25 * r + sway * 0.5 * r, hy + 3.3 * r), (hx + sway * 0.6 * r, hy + 3.05 * r),
                   (hx - 1.25 * r + sway * 0.5 * r, hy + 3.35 * r)], o.accent)
    elif theme == "enchanted_forest":
        b.polygon([(hx - 0.55 * r, hy + 0.9 * r), (hx + 0.55 * r, hy + 0.9 * r),
                   (hx + 1.05 * r, hy + 3.0 * r), (hx - 1.05 * r, hy + 3.0 * r)], o.accent)
    elif theme == "space_adventure":
        b.rect(hx - 0.8 * r, hy + 1.0 * r, hx + 0.8 * r, hy + 2.2 * r, (170, 180, 200), radius=0.22 * r)

    # Legs and shoes.
    for side in (-1, 1):
        lx = hx + side * 0.3 * r
        b.rect(lx - 0.2 * r, hy + 2.0 * r, lx + 0.2 * r, hy + 3.38 * r, pants, radius=0.12 * r)
        shoe = o.shoes
        if theme == "underwater":
            b.ellipse(lx + side * 0.22 * r, hy + 3.42 * r, 0.42 * r, 0.14 * r, (250, 200, 60))
            continue
        if theme in ("pirates", "dinosaurs"):
            shoe = (70, 50, 40)
        if theme == "superhero":
            shoe = o.accent
        b.ellipse(lx + side * 0.08 * r, hy + 3.4 * r, 0.3 * r, 0.16 * r, shoe)

    # Torso.
    b.rect(hx - 0.64 * r, hy + 0.86 * r, hx + 0.64 * r, hy + 2.38 * r, suit, radius=0.34 * r)
    if theme == "pirates":
        for i in range(4):
            y = hy + (1.18 + i * 0.3) * r
            b.rect(hx - 0.6 * r, y, hx + 0.6 * r, y + 0.13 * r, o.shirt, outline=None)
        b.rect(hx - 0.64 * r, hy + 0.86 * r, hx + 0.64 * r, hy + 2.38 * r, None, radius=0.34 * r)
        b.rect(hx - 0.66 * r, hy + 1.95 * r, hx + 0.66 * r, hy + 2.12 * r, (206, 48, 52), radius=0.05 * r)
    elif theme == "space_adventure":
        b.rect(hx - 0.64 * r, hy + 1.5 * r, hx + 0.64 * r, hy + 1.66 * r, o.accent, outline=None)
        b.rect(hx - 0.3 * r, hy + 1.12 * r, hx + 0.3 * r, hy + 1.42 * r, (90, 110, 150), radius=0.06 * r)
        for i, c in enumerate(((240, 80, 80), (250, 210, 70), (90, 210, 130))):
            b.circle(hx - 0.16 * r + i * 0.16 * r, hy + 1.27 * r, 0.055 * r, c, outline=None)
        b.rect(hx - 0.64 * r, hy + 0.86 * r, hx + 0.64 * r, hy + 2.38 * r, None, radius=0.34 * r)
    elif theme == "superhero":
        b.polygon(_star_points(hx, hy + 1.45 * r, 0.36 * r, 0.15 * r), (252, 208, 64))
        b.rect(hx - 0.64 * r, hy + 1.98 * r, hx + 0.64 * r, hy + 2.14 * r, (252, 208, 64), outline=None)
    elif theme == "dinosaurs":
        for side in (-1, 1):
            b.rect(hx + side * 0.34 * r - 0.15 * r, hy + 1.3 * r, hx + side * 0.34 * r + 0.15 * r,
                   hy + 1.55 * r,
                   _dark(suit, 0.12), radius=0.04 * r, width=pg.p.ink_width * 0.6)
        b.polygon([(hx - 0.4 * r, hy + 0.9 * r), (hx + 0.4 * r, hy + 0.9 * r), (hx, hy + 1.35 * r)], o.accent)
    elif theme == "enchanted_forest":
        b.rect(hx - 0.64 * r, hy + 1.9 * r, hx + 0.64 * r, hy + 2.05 * r, (120, 80, 50), outline=None)
        b.rect(hx - 0.1 * r, hy + 1.86 * r, hx + 0.1 * r, hy + 2.09 * r, (240, 200, 80), radius=0.03 * r)
    elif theme == "underwater":
        b.rect(hx - 0.64 * r, hy + 1.6 * r, hx + 0.64 * r, hy + 1.72 * r, _light(suit, 0.5), outline=None)
    else:
        b.rect(hx - 0.2 * r, hy + 0.86 * r, hx + 0.2 * r, hy + 1.1 * r, _light(suit, 0.4), radius=0.08 * r)

    # Arms, then hands on top so a repaint of a hand never covers anything else.
    left_pose, right_pose = _POSES[pg.pose]
    hands_local: list[tuple[float, float, float]] = []
    for side, pose in ((-1, left_pose), (1, right_pose)):
        (ex, ey), (hx_, hy_) = _ARMS[pose]
        sh = (hx + side * 0.5 * r, hy + 1.12 * r)
        el = (hx + side * ex * r, hy + ey * r)
        ha = (hx + side * hx_ * r, hy + hy_ * r)
        b.stroke([sh, el, ha], sleeve, 0.3 * r)
        hr = 0.17 * r
        b.circle(ha[0], ha[1], hr, hand_col)
        if not gloves:
            hands_local.append((ha[0], ha[1], hr))

    # Lean the whole body around the neck; the head stays upright.
    pivot = (hx, hy + 0.9 * r)
    if pg.tilt:
        # Bilinear is plenty: the canvas is box-reduced 2x afterwards; bicubic costs 3x more.
        layer = layer.rotate(pg.tilt, resample=Image.Resampling.BILINEAR,
                             center=((pivot[0] - lx0) * SS, (pivot[1] - ly0) * SS))
        hands_local = [(*_rotate_point(x, y, pivot[0], pivot[1], pg.tilt), hr) for x, y, hr in hands_local]

    # Things around the head that raised arms must pass in front of: drawn before the body.
    p = pg.p
    if theme == "enchanted_forest":
        p.circle(hx, hy - 0.06 * r, 1.2 * r, o.accent)
        p.polygon([(hx - 0.5 * r, hy - 1.1 * r), (hx + 0.1 * r, hy - 1.75 * r), (hx + 0.55 * r,
                                                                                 hy - 1.05 * r)],
                  o.accent)
    elif theme == "underwater":
        side = 1 if pg.child_x < WIDTH / 2 else -1
        tx = hx + side * 1.1 * r
        # Runs down beside the head and into the mouth; the photo covers the inner end.
        p.stroke([(tx, hy - 1.15 * r), (tx, hy + 0.25 * r), (hx + side * 0.95 * r, hy + 0.5 * r),
                  (hx + side * 0.7 * r, hy + 0.45 * r)], (250, 200, 60), 0.16 * r)
        p.rect(tx - 0.11 * r, hy - 1.3 * r, tx + 0.11 * r, hy - 1.05 * r, (240, 90, 80), radius=0.05 * r)
    pg.canvas.paste(layer, (int(round(lx0 * SS)), int(round(ly0 * SS))), layer)

    # The placeholder head, then headwear kept outside the face circle (the photo covers it).
    p.circle(hx, hy, r, PLACEHOLDER_FACE)
    p.circle(hx, hy, r * 0.55, _a(_dark(PLACEHOLDER_FACE, 0.06), 255), outline=None)
    if theme == "space_adventure":
        p.circle(hx, hy, 1.2 * r, None, outline=(220, 230, 245), width=0.14 * r)
        p.circle(hx, hy, 1.28 * r, None)
        p.circle(hx, hy, 1.12 * r, None)
        p.arc(hx, hy, 1.2 * r, 1.2 * r, 200, 250, (255, 255, 255), 0.06 * r)
        p.line([(hx + 0.5 * r, hy - 1.22 * r), (hx + 0.7 * r, hy - 1.62 * r)], pg.ink, 0.07 * r)
        p.circle(hx + 0.7 * r, hy - 1.66 * r, 0.1 * r, (240, 80, 80))
    elif theme == "dinosaurs":
        khaki = (226, 204, 150)
        p.ellipse(hx, hy - 1.02 * r, 1.15 * r, 0.16 * r, khaki)
        p.chord(hx, hy - 1.1 * r, 0.78 * r, 0.7 * r, 180, 360, khaki)
        p.rect(hx - 0.74 * r, hy - 1.2 * r, hx + 0.74 * r, hy - 1.1 * r, o.accent, outline=None)
    elif theme == "pirates":
        hat = (44, 40, 52)
        p.polygon([(hx - 1.2 * r, hy - 1.05 * r), (hx - 0.6 * r, hy - 1.7 * r), (hx, hy - 1.5 * r),
                   (hx + 0.6 * r, hy - 1.7 * r), (hx + 1.2 * r, hy - 1.05 * r), (hx, hy - 1.14 * r)], hat)
        p.line([(hx - 1.1 * r, hy - 1.08 * r), (hx, hy - 1.18 * r), (hx + 1.1 * r, hy - 1.08 * r)],
               (240, 196, 70), 0.06 * r)
        p.circle(hx, hy - 1.4 * r, 0.14 * r, (245, 245, 240), width=pg.p.ink_width * 0.6)

    hands = tuple((round(x, 1), round(y, 1), round(hr, 1)) for x, y, hr in hands_local)
    return _Placement(anchor=Anchor(cx=float(hx), cy=float(hy), r=float(round(r))), hands=hands)


# --- scenes -----------------------------------------------------------------------------------


def _scene_space(pg: _Page) -> None:
    p, rng = pg.p, pg.rng
    for _ in range(3):
        p.glow(rng.uniform(0, WIDTH), rng.uniform(60, 420), rng.uniform(160, 260),
               rng.choice([(255, 120, 200), (120, 200, 255), (180, 140, 255)]), strength=70)
    for _ in range(150):
        p.circle(rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT * 0.78), rng.choice((0.8, 1.1, 1.5, 2.0)),
                 (255, 255, 235, rng.randint(140, 255)), outline=None)
    for _ in range(rng.randint(6, 10)):
        _sparkle(p, rng.uniform(20, WIDTH - 20), rng.uniform(20, 420), rng.uniform(6, 13), (255, 244, 200))

    # Planets in the sky, away from the child.
    palette = [(246, 170, 92), (120, 200, 226), (236, 116, 140), (150, 214, 126), (188, 156, 236)]
    rng.shuffle(palette)
    rocket_x = pg.props_x[0] if pg.props_x else WIDTH * 0.82
    spots = [x for x in (0.1, 0.3, 0.5, 0.7, 0.9)
             if abs(x * WIDTH - pg.child_x) > 150 and abs(x * WIDTH - rocket_x) > 120]
    rng.shuffle(spots)
    for i, fx in enumerate(spots[:3]):
        pr = rng.uniform(38, 78) if i else rng.uniform(70, 100)
        cx, cy = fx * WIDTH + rng.uniform(-40, 40), rng.uniform(110, 300)
        col = palette[i]
        ringed = i == 0 and rng.random() < 0.7
        if ringed:
            p.arc(cx, cy, pr * 1.75, pr * 0.42, 180, 360, _light(col, 0.45), pr * 0.12)
        p.circle(cx, cy, pr, col)
        for k in range(3):
            yy = cy - pr * 0.5 + k * pr * 0.42
            half = math.sqrt(max(pr * pr - (yy - cy) ** 2, 0))
            p.rect(cx - half * 0.92, yy, cx + half * 0.92, yy + pr * 0.1, _a(_dark(col, 0.15), 160),
                   radius=pr * 0.05, outline=None)
        p.circle(cx - pr * 0.28, cy - pr * 0.28, pr * 0.45, _a(_light(col, 0.5), 110), outline=None)
        if ringed:
            p.arc(cx, cy, pr * 1.75, pr * 0.42, 0, 180, _light(col, 0.45), pr * 0.12)
            p.arc(cx, cy, pr * 1.75 + pr * 0.07, pr * 0.42 + pr * 0.07, 5, 175, pg.ink, 2)

    # Moon ground with craters.
    ground = (176, 170, 204)
    p.polygon(_wavy(-10, WIDTH + 10, pg.ground_y - 30, 14, rng.uniform(0, 6), 1.2, HEIGHT + 10), ground)
    p.polygon(_wavy(-10, WIDTH + 10, pg.ground_y + 10, 8, rng.uniform(0, 6), 2.0, HEIGHT + 10),
              _dark(ground, 0.12), outline=None)
    for _ in range(6):
        cx = rng.uniform(30, WIDTH - 30)
        if abs(cx - pg.child_x) < 90:
            continue
        cy = rng.uniform(pg.ground_y - 5, HEIGHT - 25)
        cr = rng.uniform(16, 34)
        p.ellipse(cx, cy, cr, cr * 0.36, _dark(ground, 0.22), width=pg.p.ink_width * 0.7)
        p.ellipse(cx, cy + cr * 0.06, cr * 0.8, cr * 0.24, _dark(ground, 0.3), outline=None)

    # Rocket: landed beside the child, or flying past.
    rx = rocket_x
    flying = rng.random() < 0.4
    s = rng.uniform(0.85, 1.05)
    base_y = rng.uniform(260, 360) if flying else pg.ground_y - 8
    tilt = rng.uniform(-18, 18) if flying else 0.0
    _rocket(p, rx, base_y, s, tilt, pg.outfit.accent, flame=flying)


def _rocket(p: _Painter, x: float, base_y: float, s: float, tilt: float, accent: RGB, flame: bool) -> None:
    h = 230 * s
    w = 74 * s

    def T(dx: float, dy: float) -> Point:
        return _rotate_point(x + dx, base_y + dy, x, base_y - h / 2, tilt)

    if flame:
        p.polygon([T(-w * 0.32, -4), T(0, h * 0.42), T(w * 0.32, -4)], (255, 170, 60), outline=None)
        p.polygon([T(-w * 0.18, -4), T(0, h * 0.26), T(w * 0.18, -4)], (255, 236, 120), outline=None)
    for side in (-1, 1):
        p.polygon([T(side * w * 0.42, -h * 0.36), T(side * w * 0.95, -h * 0.02), T(side * w * 0.95, h * 0.04),
                   T(side * w * 0.4, -h * 0.08)], accent)
    body = []
    for i in range(25):
        t = i / 24
        yy = -h * 0.08 - t * h * 0.92
        half = w * 0.5 * math.sqrt(max(0.0, 1 - ((t - 0.38) / 0.64) ** 2)) if t > 0.38 else w * 0.5
        body.append((half, yy))
    pts = [T(hw, yy) for hw, yy in body] + [T(-hw, yy) for hw, yy in reversed(body)]
    p.polygon(pts, (244, 244, 250))
    tip = [(hw, yy) for hw, yy in body if yy < -h * 0.78]
    nose = [T(hw, yy) for hw, yy in tip] + [T(-hw, yy) for hw, yy in reversed(tip)]
    p.polygon(nose, accent)
    p.polygon([T(-w * 0.42, -h * 0.08), T(w * 0.42, -h * 0.08), T(w * 0.3, 0), T(-w * 0.3, 0)], (120, 126,
                                                                                                 150))
    cx, cy = T(0, -h * 0.52)
    p.circle(cx, cy, w * 0.26, (230, 232, 240))
    p.circle(cx, cy, w * 0.18, (110, 190, 240), width=p.ink_width * 0.7)
    p.circle(cx - w * 0.05, cy - w * 0.05, w * 0.06, (230, 248, 255), outline=None)
    p.polygon([T(-w * 0.06, -h * 0.35), T(w * 0.06, -h * 0.35), T(w * 0.06, -h * 0.08), T(-w * 0.06,
                                                                                          -h * 0.08)],
              accent)


def _scene_underwater(pg: _Page) -> None:
    p, rng = pg.p, pg.rng
    for _ in range(5):
        x = rng.uniform(-100, WIDTH)
        wdt = rng.uniform(40, 90)
        p.polygon([(x, -5), (x + wdt, -5), (x + wdt + 220, HEIGHT * 0.8), (x + 120, HEIGHT * 0.8)],
                  (255, 255, 255, 18), outline=None)
    far = _mix(pg.sky[2], (20, 90, 110), 0.35)
    p.polygon(_wavy(-10, WIDTH + 10, pg.ground_y - 120, 40, rng.uniform(0, 6), 1.6, HEIGHT), _a(far, 170),
              outline=None)
    sand = (240, 214, 156)
    p.polygon(_wavy(-10, WIDTH + 10, pg.ground_y - 24, 12, rng.uniform(0, 6), 1.4, HEIGHT + 10), sand)
    for _ in range(10):
        x, y = rng.uniform(0, WIDTH), rng.uniform(pg.ground_y, HEIGHT - 10)
        p.arc(x, y, 18, 5, 200, 340, _dark(sand, 0.15), 2)

    # Seaweed and coral behind the child, clear of the child's column.
    xs = [x for x in np.linspace(30, WIDTH - 30, 12).tolist() if abs(x - pg.child_x) > 110]
    rng.shuffle(xs)
    for x in xs[:6]:
        hgt = rng.uniform(150, 300)
        base = pg.ground_y - 10 + rng.uniform(-8, 20)
        amp, ph = rng.uniform(8, 16), rng.uniform(0, 6)
        left = [(x - 9 + amp * math.sin(ph + i * 0.7), base - hgt * i / 12) for i in range(13)]
        right = [(x + 9 + amp * math.sin(ph + i * 0.7) - 8 * i / 12, base - hgt * i / 12) for i in range(13)]
        p.polygon(left + right[::-1], rng.choice([(70, 170, 100), (46, 140, 96), (110, 190, 90)]))
    for x in xs[6:9]:
        base = pg.ground_y + rng.uniform(-5, 20)
        col = rng.choice([(250, 120, 130), (252, 160, 90), (210, 110, 200)])
        for k in range(5):
            ang = math.radians(-150 + k * 30)
            ln = rng.uniform(45, 80)
            mx, my = x + math.cos(ang) * ln * 0.55, base + math.sin(ang) * ln * 0.55
            ex, ey = x + math.cos(ang) * ln, base + math.sin(ang) * ln
            p.stroke([(x, base), (mx, my), (ex, ey - 10)], col, 11)
    # A starfish and shells on the sand.
    sx = pg.props_x[0] if pg.props_x else 120
    p.polygon(_star_points(sx, pg.ground_y + 34, 26, 11), (250, 140, 90))
    p.pieslice(sx + 70, pg.ground_y + 40, 20, 16, 180, 360, (250, 220, 230))

    # Sea creatures: rejection-sampled so they neither overlap each other nor the child.
    placed: list[tuple[float, float, float]] = []
    head_y = pg.feet_y - 3.55 * pg.head_r

    def free_spot(radius: float, y_lo: float, y_hi: float) -> tuple[float, float] | None:
        for _ in range(14):
            x, y = rng.uniform(radius, WIDTH - radius), rng.uniform(y_lo, y_hi)
            near_child = (abs(x - pg.child_x) < 2.0 * pg.head_r + radius
                          and y > head_y - 1.5 * pg.head_r - radius)
            if not near_child and all(math.hypot(x - px, y - py) > radius + pr + 8 for px, py, pr in placed):
                placed.append((x, y, radius))
                return x, y
        return None

    if rng.random() < 0.6:
        spot = free_spot(50, 120, 260)
        if spot:
            _jellyfish(p, spot[0], spot[1] - 20, rng.choice([(240, 170, 220), (190, 170, 250)]))
    fish_cols = [(252, 150, 60), (250, 210, 70), (120, 200, 250), (240, 110, 150), (150, 230, 160)]
    for i in range(rng.randint(4, 6)):
        s = rng.uniform(0.7, 1.25)
        spot = free_spot(40 * s, 50, pg.ground_y - 200)
        if spot:
            _fish(p, spot[0], spot[1], s, rng.choice((-1, 1)), fish_cols[i % len(fish_cols)])
    for _ in range(18):
        bx, by = rng.uniform(0, WIDTH), rng.uniform(20, pg.ground_y - 40)
        br = rng.uniform(4, 13)
        p.circle(bx, by, br, (255, 255, 255, 40), outline=(255, 255, 255, 170), width=1.4)
        p.circle(bx - br * 0.35, by - br * 0.35, br * 0.25, (255, 255, 255, 200), outline=None)


def _fish(p: _Painter, x: float, y: float, s: float, facing: int, col: RGB) -> None:
    L, Hh = 62 * s, 36 * s
    tail_x = x - facing * L * 0.5
    fin = _dark(col, 0.1)
    p.polygon([(tail_x, y), (tail_x - facing * 26 * s, y - 18 * s), (tail_x - facing * 22 * s, y + 18 * s)],
              fin)
    p.polygon([(x - facing * 6 * s, y - Hh * 0.45), (x + facing * 10 * s, y - Hh * 0.85),
               (x + facing * 18 * s, y - Hh * 0.4)], fin)
    p.ellipse(x, y, L / 2, Hh / 2, col)
    for k in (-0.1, 0.12):
        start, end = (270, 90) if facing > 0 else (90, 270)
        p.arc(x + facing * k * L, y, 8 * s, Hh * 0.45, start, end, (255, 255, 255), 3 * s)
    ex = x + facing * L * 0.28
    p.circle(ex, y - 4 * s, 6 * s, (255, 255, 255), width=1.5)
    p.circle(ex + facing * 1.5 * s, y - 4 * s, 3 * s, (30, 30, 40), outline=None)
    p.arc(x + facing * L * 0.38, y + 6 * s, 5 * s, 3 * s, 0, 180, p.ink, 1.5)


def _jellyfish(p: _Painter, x: float, y: float, col: RGB) -> None:
    for k in range(5):
        tx = x - 28 + k * 14
        pts = [(tx + 6 * math.sin(i * 0.9 + k), y + 8 + i * 11) for i in range(8)]
        p.line(pts, _a(_dark(col, 0.1), 220), 4)
    p.chord(x, y + 10, 44, 48, 180, 360, _a(col, 235))
    p.circle(x - 14, y - 10, 5, (40, 30, 50), outline=None)
    p.circle(x + 14, y - 10, 5, (40, 30, 50), outline=None)
    p.arc(x, y - 4, 8, 6, 20, 160, (40, 30, 50), 2)


def _scene_forest(pg: _Page) -> None:
    p, rng = pg.p, pg.rng
    moon_x = rng.uniform(120, WIDTH - 120)
    p.glow(moon_x, 110, 120, (255, 240, 200), strength=90)
    p.circle(moon_x, 110, 44, (255, 246, 214), outline=None)
    for _ in range(40):
        p.circle(rng.uniform(0, WIDTH), rng.uniform(0, 260), rng.choice((0.8, 1.2, 1.6)), (255, 255, 240,
                                                                                           200),
                 outline=None)
    for col, base, scale in (((86, 96, 150), pg.ground_y - 230, 0.7), ((64, 104, 118), pg.ground_y - 150,
                                                                       0.9)):
        x = -40.0 + rng.uniform(0, 40)
        while x < WIDTH + 40:
            hgt = rng.uniform(140, 230) * scale
            wdt = rng.uniform(70, 110) * scale
            p.polygon([(x - wdt / 2, base + 10), (x, base - hgt), (x + wdt / 2, base + 10)], col,
                      outline=None)
            p.polygon([(x - wdt * 0.36, base - hgt * 0.3), (x, base - hgt * 1.02), (x + wdt * 0.36,
                                                                                    base - hgt * 0.3)],
                      _light(col, 0.06), outline=None)
            x += wdt * rng.uniform(0.45, 0.8)
        p.rect(-10, base + 8, WIDTH + 10, HEIGHT, col, outline=None)
    grass = (92, 150, 84)
    p.polygon(_wavy(-10, WIDTH + 10, pg.ground_y - 60, 18, rng.uniform(0, 6), 1.1, HEIGHT + 10), grass)
    # A path winding towards the child.
    px = pg.child_x
    p.polygon([(px - 120, HEIGHT + 5), (px - 30, pg.ground_y - 40), (px + 40, pg.ground_y - 40),
               (px + 150, HEIGHT + 5)], (222, 196, 146), outline=None)

    # Big storybook trees at the free side(s).
    for tx in pg.props_x[:2]:
        _tree(p, tx + rng.uniform(-30, 30), pg.ground_y - 20, rng.uniform(0.9, 1.15), rng,
              door=rng.random() < 0.5)
    for _ in range(rng.randint(4, 6)):
        mx = rng.uniform(30, WIDTH - 30)
        if abs(mx - pg.child_x) < 100:
            continue
        cap = rng.choice([(230, 70, 70), (240, 140, 60), (200, 90, 200)])
        _mushroom(p, mx, pg.ground_y + rng.uniform(-20, 50), rng.uniform(0.6, 1.2), cap)
    for _ in range(14):
        fx, fy = rng.uniform(30, WIDTH - 30), rng.uniform(pg.ground_y - 5, HEIGHT - 12)
        c = rng.choice([(255, 240, 120), (255, 170, 200), (200, 190, 255), (255, 255, 255)])
        for k in range(5):
            a = k * math.tau / 5
            p.circle(fx + 5 * math.cos(a), fy + 5 * math.sin(a), 3.6, c, outline=None)
        p.circle(fx, fy, 2.6, (250, 200, 60), outline=None)
    for _ in range(16):
        fx, fy = rng.uniform(20, WIDTH - 20), rng.uniform(180, pg.ground_y - 40)
        p.glow(fx, fy, 16, (255, 250, 150), strength=80)
        p.circle(fx, fy, 3.2, (255, 255, 200), outline=None)


def _tree(p: _Painter, x: float, base: float, s: float, rng: random.Random, door: bool) -> None:
    trunk = (132, 92, 66)
    p.polygon([(x - 34 * s, base), (x - 20 * s, base - 230 * s), (x + 20 * s, base - 230 * s), (x + 34 * s,
                                                                                                base)],
              trunk)
    if door:
        p.chord(x, base - 26 * s, 15 * s, 30 * s, 180, 360, (90, 60, 44))
        p.rect(x - 15 * s, base - 26 * s, x + 15 * s, base, (90, 60, 44))
        p.circle(x + 8 * s, base - 14 * s, 2.5 * s, (240, 200, 80), outline=None)
    greens = [(70, 150, 90), (90, 170, 96), (60, 130, 86)]
    puffs = [(-70, -250, 70), (0, -300, 84), (70, -250, 70), (-40, -200, 60), (40, -205, 62), (0, -230, 70)]
    for i, (dx, dy, rr) in enumerate(puffs):
        p.circle(x + dx * s, base + dy * s, rr * s, greens[i % 3])
    for _ in range(5):
        ax, ay = x + rng.uniform(-80, 80) * s, base + rng.uniform(-320, -200) * s
        p.circle(ax, ay, 7 * s, (236, 80, 80), width=p.ink_width * 0.6)


def _mushroom(p: _Painter, x: float, y: float, s: float, cap: RGB) -> None:
    p.rect(x - 9 * s, y - 34 * s, x + 9 * s, y, (250, 240, 224), radius=6 * s)
    p.chord(x, y - 30 * s, 30 * s, 26 * s, 180, 360, cap)
    for dx, dy, rr in ((-14, -40, 4.5), (4, -48, 5.5), (16, -38, 4)):
        p.circle(x + dx * s, y + dy * s, rr * s, (255, 255, 255), outline=None)


def _scene_dinosaurs(pg: _Page) -> None:
    p, rng = pg.p, pg.rng
    sun_x = rng.uniform(80, WIDTH - 80)
    p.glow(sun_x, 90, 110, (255, 240, 170), strength=100)
    p.circle(sun_x, 90, 42, (255, 226, 110), outline=None)
    # Volcano with a lazy smoke plume (clouds go in front of it).
    vx = rng.uniform(160, WIDTH - 160)
    vb = pg.ground_y - 160
    p.polygon([(vx - 210, vb + 40), (vx - 46, vb - 200), (vx + 46, vb - 200), (vx + 210, vb + 40)], (150, 118,
                                                                                                     130))
    p.polygon([(vx - 46, vb - 200), (vx - 30, vb - 160), (vx - 10, vb - 185), (vx + 12, vb - 150), (vx + 30,
                                                                                                    vb - 182),
               (vx + 46, vb - 200)], (250, 130, 60))
    p.blob([(vx + 10 + k * 26, vb - 232 - k * 34, 22 + k * 7) for k in range(4)], (240, 234, 240, 200))
    for _ in range(rng.randint(2, 3)):
        _cloud(p, rng.uniform(60, WIDTH - 60), rng.uniform(70, 200), rng.uniform(110, 170), (255, 255, 255))
    p.polygon(_wavy(-10, WIDTH + 10, pg.ground_y - 140, 26, rng.uniform(0, 6), 1.3, HEIGHT + 10), (132, 190,
                                                                                                   134))
    p.polygon(_wavy(-10, WIDTH + 10, pg.ground_y - 50, 16, rng.uniform(0, 6), 0.9, HEIGHT + 10), (124, 196,
                                                                                                  92))
    slots = [x for x in (70.0, 250.0, 480.0, 700.0, 890.0) if abs(x - pg.child_x) > 130]
    for fx in rng.sample(slots, min(2, len(slots))):
        _palm(p, fx + rng.uniform(-30, 30), pg.ground_y - 60 + rng.uniform(0, 20), rng.uniform(0.75, 0.95),
              rng.choice((-1.0, 1.0)))
    # Grass tufts first so the dinosaurs stand in front of them.
    for _ in range(12):
        gx = rng.uniform(0, WIDTH)
        gy = rng.uniform(pg.ground_y - 10, HEIGHT - 8)
        for k in (-1, 0, 1):
            p.line([(gx + k * 5, gy), (gx + k * 9, gy - 14)], (80, 150, 70), 2.4)
    dino_cols = [(120, 200, 150), (250, 170, 90), (150, 170, 240), (240, 140, 170)]
    rng.shuffle(dino_cols)
    if pg.props_x:
        facing = 1 if pg.props_x[0] < pg.child_x else -1
        _sauropod(p, pg.props_x[0], pg.ground_y - 10, rng.uniform(0.9, 1.05), facing, dino_cols[0])
    if len(pg.props_x) > 1 or rng.random() < 0.5:
        sx = pg.props_x[1] if len(pg.props_x) > 1 else rng.choice([80.0, WIDTH - 80.0])
        if abs(sx - pg.child_x) > 150:
            _stego(p, sx, pg.ground_y + 30, rng.uniform(0.55, 0.7), 1 if sx < pg.child_x else -1,
                   dino_cols[1])


def _palm(p: _Painter, x: float, base: float, s: float, lean: float = 1.0) -> None:
    pts = [(x + lean * 22 * s * math.sin(i / 8 * 1.3), base - i * 28 * s) for i in range(9)]
    p.stroke(pts, (160, 116, 72), 16 * s)
    for i in range(1, 8):
        p.arc(pts[i][0], pts[i][1], 8 * s, 3 * s, 0, 180, _dark((160, 116, 72), 0.3), 1.6)
    tx, ty = pts[-1]
    greens = ((64, 160, 84), (92, 184, 92))
    for k, ang in enumerate((-200, -160, -125, -90, -55, -20, 20)):
        _leaf(p, tx, ty, ang, 88 * s, 0.55, 24 * s, greens[k % 2])
    for dx in (-7, 6):
        p.circle(tx + dx * s, ty + 8 * s, 7 * s, (130, 90, 50))


def _sauropod(p: _Painter, x: float, base: float, s: float, facing: int, col: RGB) -> None:
    f = facing
    belly = _light(col, 0.35)
    p.polygon([(x - f * 90 * s, base - 100 * s), (x - f * 250 * s, base - 60 * s), (x - f * 280 * s,
                                                                                    base - 52 * s),
               (x - f * 96 * s, base - 70 * s)], col)
    for dx in (-60, -20, 30, 70):
        p.rect(x + f * dx * s - 17 * s, base - 80 * s, x + f * dx * s + 17 * s, base, _dark(col, 0.08),
               radius=10 * s)
    neck = [(x + f * 40 * s, base - 150 * s), (x + f * 104 * s, base - 240 * s), (x + f * 140 * s,
                                                                                  base - 304 * s),
            (x + f * 180 * s, base - 300 * s), (x + f * 156 * s, base - 226 * s), (x + f * 118 * s,
                                                                                   base - 100 * s)]
    p.polygon(neck, col)
    p.ellipse(x, base - 110 * s, 120 * s, 62 * s, col)
    p.chord(x, base - 104 * s, 100 * s, 50 * s, 20, 160, belly, outline=None)
    hx, hy = x + f * 170 * s, base - 312 * s
    p.ellipse(hx, hy, 40 * s, 26 * s, col)
    p.circle(hx + f * 8 * s, hy - 8 * s, 6 * s, (255, 255, 255), width=1.5)
    p.circle(hx + f * 10 * s, hy - 8 * s, 3 * s, (30, 30, 40), outline=None)
    p.arc(hx + f * 18 * s, hy + 6 * s, 14 * s, 8 * s, 10, 170, p.ink, 2)
    p.circle(hx + f * 24 * s, hy + 3 * s, 5 * s, (250, 150, 150, 150), outline=None)
    for k in range(5):
        p.circle(x + (-60 + k * 30) * s, base - 140 * s + (k % 2) * 14 * s, 9 * s, _dark(col, 0.15),
                 outline=None)


def _stego(p: _Painter, x: float, base: float, s: float, facing: int, col: RGB) -> None:
    f = facing
    plate = (250, 200, 80)
    for k in range(5):
        px = x + (-70 + k * 34) * s
        py = base - 150 * s - math.sin(k / 4 * math.pi) * 26 * s
        p.polygon([(px - 20 * s, py + 30 * s), (px, py - 20 * s), (px + 20 * s, py + 30 * s)], plate)
    p.polygon([(x - f * 90 * s, base - 80 * s), (x - f * 190 * s, base - 40 * s), (x - f * 90 * s,
                                                                                   base - 50 * s)], col)
    for dx in (-55, 45):
        p.rect(x + f * dx * s - 18 * s, base - 70 * s, x + f * dx * s + 18 * s, base, _dark(col, 0.08),
               radius=10 * s)
    p.ellipse(x, base - 95 * s, 110 * s, 60 * s, col)
    hx, hy = x + f * 120 * s, base - 80 * s
    p.ellipse(hx, hy, 38 * s, 28 * s, col)
    p.circle(hx + f * 8 * s, hy - 8 * s, 6 * s, (255, 255, 255), width=1.5)
    p.circle(hx + f * 10 * s, hy - 8 * s, 3 * s, (30, 30, 40), outline=None)
    p.arc(hx + f * 14 * s, hy + 6 * s, 14 * s, 8 * s, 10, 170, p.ink, 2)


def _scene_pirates(pg: _Page) -> None:
    p, rng = pg.p, pg.rng
    sun_x = rng.uniform(80, WIDTH - 80)
    p.glow(sun_x, 100, 110, (255, 236, 170), strength=100)
    p.circle(sun_x, 100, 40, (255, 230, 120), outline=None)
    for _ in range(rng.randint(2, 4)):
        _cloud(p, rng.uniform(60, WIDTH - 60), rng.uniform(60, 200), rng.uniform(100, 160), (255, 255, 255))
    for _ in range(rng.randint(2, 4)):
        gx, gy = rng.uniform(60, WIDTH - 60), rng.uniform(60, 220)
        p.arc(gx - 9, gy, 10, 7, 200, 340, pg.ink, 2.2)
        p.arc(gx + 9, gy, 10, 7, 200, 340, pg.ink, 2.2)
    horizon = 340 + rng.uniform(-20, 20)
    p.rect(-10, horizon, WIDTH + 10, HEIGHT, (52, 140, 196), outline=None)
    p.rect(-10, horizon, WIDTH + 10, horizon + 4, (150, 210, 236), outline=None)
    waterline = horizon + 70
    ship_x = pg.props_x[0] if pg.props_x else WIDTH * 0.75
    ship_s, ship_facing = rng.uniform(0.85, 1.05), rng.choice((-1, 1))
    for i in range(7):
        y = horizon + 30 + i * 38
        p.polygon(_wavy(-10, WIDTH + 10, y, 5, rng.uniform(0, 6) + i, 6, y + 18, harmonics=0.0, n=90),
                  _a(_mix((52, 140, 196), (20, 80, 150), i / 7), 150), outline=None)
        for _ in range(4):
            wx = rng.uniform(20, WIDTH - 20)
            if y < waterline + 10 and abs(wx - ship_x) < 200 * ship_s:
                continue  # no foam painted across the hull
            p.arc(wx, y, 16, 6, 200, 340, (220, 240, 250), 2.2)
    # Ship on the water at the free side, seated in it by one opaque wave row.
    _ship(p, ship_x, waterline, ship_s, ship_facing, pg.outfit.accent)
    # Same tone as the sea there (first wave row blended over the base), so its ends don't show.
    p.polygon(_wavy(ship_x - 175 * ship_s, ship_x + 175 * ship_s, waterline + 2, 3, rng.uniform(0, 6), 9,
                    waterline + 16, harmonics=0.0, n=40), (49, 135, 192), outline=None)
    for k in (-1, 1):
        p.arc(ship_x + k * 60 * ship_s, waterline + 4, 18, 6, 200, 340, (220, 240, 250), 2.2)
    # Island the child stands on, with a palm and the treasure.
    sand = (244, 216, 156)
    p.polygon(_wavy(-10, WIDTH + 10, pg.ground_y - 34, 10, rng.uniform(0, 6), 0.7, HEIGHT + 10), sand)
    foam = _wavy(-10, WIDTH + 10, pg.ground_y - 30, 6, rng.uniform(0, 6), 3, pg.ground_y - 22,
                 harmonics=0, n=90)
    p.polygon(foam, (255, 255, 255, 200), outline=None)
    tx = pg.props_x[-1] if len(pg.props_x) > 1 else (WIDTH - 110 if pg.child_x < WIDTH / 2 else 110)
    if abs(tx - pg.child_x) > 140:
        _palm(p, tx + 60, pg.ground_y - 16, 1.0, 1.0 if tx < WIDTH / 2 else -1.0)
        _chest(p, tx - 30, pg.ground_y + 18, 0.95)
    for _ in range(4):
        p.circle(rng.uniform(20, WIDTH - 20), rng.uniform(pg.ground_y + 10, HEIGHT - 12), 4, _dark(sand,
                                                                                                   0.18),
                 outline=None)


def _ship(p: _Painter, x: float, waterline: float, s: float, facing: int, accent: RGB) -> None:
    f = facing
    hull = (140, 90, 60)
    p.line([(x, waterline - 30 * s), (x, waterline - 270 * s)], p.ink, 9 * s)
    p.line([(x, waterline - 30 * s), (x, waterline - 270 * s)], (110, 74, 52), 6 * s)
    sail = (250, 244, 226)
    for top, bot, wd in ((-255, -170, 70), (-160, -60, 92)):
        p.polygon([(x - wd * s, waterline + top * s), (x + wd * s, waterline + top * s),
                   (x + (wd + 10) * s, waterline + (top + bot) / 2 * s + 10 * s), (x + wd * s,
                                                                                   waterline + bot * s),
                   (x - wd * s, waterline + bot * s), (x - (wd - 10) * s,
                                                       waterline + (top + bot) / 2 * s + 10 * s)],
                  sail)
    p.circle(x, waterline - 110 * s, 20 * s, (44, 40, 52), outline=None)
    p.circle(x - 7 * s, waterline - 113 * s, 5 * s, sail, outline=None)
    p.circle(x + 7 * s, waterline - 113 * s, 5 * s, sail, outline=None)
    p.polygon([(x, waterline - 270 * s), (x + f * 50 * s, waterline - 258 * s), (x, waterline - 246 * s)],
              (44, 40, 52))
    p.polygon([(x - 160 * s, waterline - 48 * s), (x + 160 * s, waterline - 48 * s), (x + 120 * s,
                                                                                      waterline + 10 * s),
               (x - 120 * s, waterline + 10 * s)], hull)
    p.polygon([(x + f * 160 * s, waterline - 48 * s), (x + f * 190 * s, waterline - 78 * s),
               (x + f * 150 * s, waterline - 48 * s)], hull)
    p.rect(x - 150 * s, waterline - 40 * s, x + 150 * s, waterline - 30 * s, accent, outline=None)
    for k in range(4):
        p.circle(x + (-75 + k * 50) * s, waterline - 14 * s, 7 * s, (60, 44, 34), width=1.5)


def _chest(p: _Painter, x: float, base: float, s: float) -> None:
    gold = (252, 206, 70)
    for k in range(6):
        p.circle(x - 60 * s + k * 22 * s, base - 2 * s + (k % 2) * 4 * s, 8 * s, gold)
    p.rect(x - 50 * s, base - 60 * s, x + 50 * s, base, (150, 96, 56), radius=6 * s)
    p.chord(x, base - 60 * s, 50 * s, 30 * s, 180, 360, (170, 110, 64))
    p.rect(x - 50 * s, base - 64 * s, x + 50 * s, base - 54 * s, gold, outline=None)
    for dx in (-36, 30):
        p.rect(x + dx * s, base - 88 * s, x + (dx + 8) * s, base, gold, outline=None)
    p.rect(x - 9 * s, base - 58 * s, x + 9 * s, base - 40 * s, gold, radius=3 * s)
    for k in range(3):
        _sparkle(p, x - 40 * s + k * 40 * s, base - 96 * s - (k % 2) * 12 * s, 9 * s, (255, 255, 220))


def _scene_superhero(pg: _Page) -> None:
    p, rng = pg.p, pg.rng
    sun_x = rng.uniform(100, WIDTH - 100)
    p.glow(sun_x, 150, 160, (255, 250, 220), strength=90)
    for _ in range(rng.randint(2, 3)):
        _cloud(p, rng.uniform(60, WIDTH - 60), rng.uniform(60, 190), rng.uniform(100, 170), (255, 255, 255))
    for _ in range(rng.randint(6, 9)):
        _sparkle(p, rng.uniform(20, WIDTH - 20), rng.uniform(20, 260), rng.uniform(6, 12), (255, 255, 240))
    sky_bot = pg.sky[2]
    towers = [(92, 108, 186), (126, 92, 176), (64, 142, 176), (170, 96, 150), (84, 160, 150)]
    for layer, (y0, hmin, hmax) in enumerate(((pg.ground_y - 130, 150, 310), (pg.ground_y - 40, 100, 250))):
        x = -20.0 + rng.uniform(0, 30)
        while x < WIDTH + 20:
            wdt = rng.uniform(64, 124)
            hgt = rng.uniform(hmin, hmax)
            top = y0 - hgt
            base_col = rng.choice(towers)
            col = _mix(base_col, sky_bot, 0.55) if layer == 0 else base_col
            if layer and rng.random() < 0.35:
                p.polygon([(x + 6, top), (x + wdt / 2 - 3, top - 34), (x + wdt - 12, top)], _dark(col, 0.1))
            p.rect(x, top, x + wdt - 6, HEIGHT, col, outline=pg.ink if layer else None, width=2)
            if rng.random() < 0.3:
                p.line([(x + wdt / 2 - 3, top), (x + wdt / 2 - 3, top - 30)], _dark(col, 0.2), 3)
                p.circle(x + wdt / 2 - 3, top - 32, 3.5, (255, 90, 90), outline=None)
            win = _a((255, 238, 160), 230) if layer else _a(_light(col, 0.45), 200)
            for wy in np.arange(top + 14, y0 + 60, 26).tolist():
                for wx in np.arange(x + 10, x + wdt - 18, 20).tolist():
                    if rng.random() < 0.6:
                        p.rect(wx, wy, wx + 9, wy + 13, win, outline=None)
            x += wdt
    # Rooftop the child stands on.
    roof = (112, 104, 146)
    p.rect(-10, pg.ground_y - 22, WIDTH + 10, HEIGHT + 10, roof)
    p.rect(-10, pg.ground_y - 34, WIDTH + 10, pg.ground_y - 18, _light(roof, 0.25))
    for _ in range(3):
        vx = rng.uniform(30, WIDTH - 90)
        if abs(vx + 30 - pg.child_x) > 120:
            p.rect(vx, pg.ground_y - 70, vx + 60, pg.ground_y - 26, (176, 176, 196), radius=6)
            p.rect(vx + 6, pg.ground_y - 60, vx + 54, pg.ground_y - 54, (120, 120, 140), outline=None)
    # Heroic light behind the child.
    head_y = pg.feet_y - 3.55 * pg.head_r
    p.glow(pg.child_x, head_y + 1.2 * pg.head_r, 3.4 * pg.head_r, (255, 246, 190), strength=85)
    if pg.flying:
        side = -1 if pg.tilt < 0 else 1
        for k in range(4):
            y = head_y + (1.4 + k * 0.45) * pg.head_r
            x0 = pg.child_x + side * (1.4 + 0.2 * k) * pg.head_r
            p.line([(x0, y), (x0 + side * (120 - 15 * k), y)], (255, 255, 255, 200), 5)


_SCENES = {
    "space_adventure": _scene_space,
    "underwater": _scene_underwater,
    "enchanted_forest": _scene_forest,
    "dinosaurs": _scene_dinosaurs,
    "pirates": _scene_pirates,
    "superhero": _scene_superhero,
}


# --- PNG I/O ----------------------------------------------------------------------------------


def _encode_png(img: Image.Image, text: dict[str, str]) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key in sorted(text):
        info.add_text(key, text[key])
    buf = io.BytesIO()
    img.save(buf, "PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def read_anchor(png: bytes) -> Anchor | None:
    """The face_anchor recorded in a PNG by draw_base, or None (absent or malformed)."""
    try:
        with Image.open(io.BytesIO(png)) as im:
            raw = im.info.get(ANCHOR_KEY) if isinstance(im.info, dict) else None
        if not raw:
            return None
        d = json.loads(raw)
        anchor = Anchor(cx=float(d["cx"]), cy=float(d["cy"]), r=float(d["r"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return anchor if anchor.r > 0 else None


# --- the illustrator --------------------------------------------------------------------------


class LocalIllustrator:
    """Illustrator that draws offline with Pillow; same request -> same PNG bytes."""

    def draw_base(self, req: PageRequest) -> bytes:
        """The page's scene with the child's head left as an empty circle (see face_anchor)."""
        theme = resolve_theme(req.story.theme)
        if theme is None:
            raise PermanentStepError(
                f"Unknown story theme {req.story.theme!r}; known themes: {', '.join(sorted(THEMES))}."
            )
        # String seeds go through SHA-512 (stable across processes and PYTHONHASHSEED), which
        # decorrelates neighbouring integer seeds' first draws.
        story_rng = random.Random(f"story-style:{req.story.seed}")
        rng = random.Random(req.story.seed * 1000 + req.page_number)
        style = _STYLE[theme.id]
        sky = story_rng.choice(style.skies)
        outfit = _outfit(story_rng)

        canvas = _gradient([(0.0, sky[0]), (0.55, sky[1]), (1.0, sky[2])])
        painter = _Painter(canvas, style.ink, ink_width=2.4)
        child_x = rng.choice((0.27, 0.5, 0.73)) * WIDTH + rng.uniform(-25, 25)
        if child_x < WIDTH * 0.4:
            props = [WIDTH * rng.uniform(0.7, 0.8), WIDTH * rng.uniform(0.52, 0.58)]
        elif child_x > WIDTH * 0.6:
            props = [WIDTH * rng.uniform(0.2, 0.3), WIDTH * rng.uniform(0.42, 0.48)]
        else:
            props = [WIDTH * rng.uniform(0.12, 0.18), WIDTH * rng.uniform(0.82, 0.88)]
            rng.shuffle(props)
        pose = rng.choice(sorted(_POSES))
        ground_y = rng.uniform(650, 675)
        feet_y, tilt, flying = ground_y, rng.choice((0.0, 0.0, -6.0, 6.0)), False
        if theme.id in ("superhero", "underwater") and rng.random() < 0.4:
            # Flying over the city / swimming above the sand: lifted, leaning into the motion.
            flying = True
            feet_y = rng.uniform(500, 560)
            tilt = rng.choice((-14.0, 14.0))
            pose = "cheer" if theme.id == "superhero" else rng.choice(("reach", "wave"))
        page = _Page(
            theme=theme.id, canvas=canvas, p=painter, rng=rng, sky=sky, outfit=outfit, ink=style.ink,
            child_x=child_x, ground_y=ground_y, head_r=round(rng.uniform(58, 66)), pose=pose,
            feet_y=feet_y, tilt=tilt, flying=flying, props_x=props,
        )
        _SCENES[theme.id](page)
        if not flying:
            # A soft shadow grounds the child.
            painter.ellipse(page.child_x, ground_y - 2, 1.2 * page.head_r, 0.22 * page.head_r, (0, 0, 0, 50),
                            outline=None)
        placement = _draw_child(page)

        img = canvas.reduce(SS)
        hands = [list(h) for h in placement.hands]
        character = {"ink": list(style.ink), "ink_width": painter.ink_width, "hands": hands}
        text = {ANCHOR_KEY: placement.anchor.to_json(), CHARACTER_KEY: json.dumps(character, sort_keys=True)}
        return _encode_png(img, text)

    def personalize(self, base: bytes, photo: bytes, face: Face, req: PageRequest) -> bytes:
        """Paste the child's face from ``photo`` into the base's head circle (PNG, base's size)."""
        try:
            with Image.open(io.BytesIO(base)) as im:
                im.load()
                info = dict(im.info)
                page = im.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
            # The base is ours, not the parent's: still permanent, a retry reads the same bytes.
            raise PermanentStepError(
                "The page illustration could not be read; it needs to be drawn again."
            ) from exc
        anchor = read_anchor(base) or default_anchor(page.width, page.height)
        character = _read_character(cast(dict[str, object], info))
        ink_rgb = character.get("ink", [40, 32, 60])
        ink: RGB = (int(ink_rgb[0]), int(ink_rgb[1]), int(ink_rgb[2]))

        face_img, skin = _face_disc(photo, face, anchor.r)
        face_img = _blend_ambient(face_img, page, anchor)
        _paste_face(page, face_img, anchor, ink)
        ink_width = float(character.get("ink_width", 2.4))
        for x, y, r in character.get("hands", []):
            _paint_disc(page, float(x), float(y), float(r), skin, ink, ring_width=ink_width)

        text = {k: v for k, v in info.items() if isinstance(v, str) and k in (ANCHOR_KEY, CHARACTER_KEY)}
        return _encode_png(page, text)


def _read_character(info: dict[str, object]) -> dict[str, Any]:
    raw = info.get(CHARACTER_KEY)
    if not isinstance(raw, str):
        return {}
    try:
        d = json.loads(raw)
        hands = [[float(v) for v in h[:3]] for h in d.get("hands", []) if len(h) >= 3]
        ink = [int(v) for v in d.get("ink", [40, 32, 60])[:3]]
        ink_width = float(d.get("ink_width", 2.4))
    except (ValueError, TypeError, AttributeError):
        return {}
    return {"hands": hands, "ink": ink, "ink_width": ink_width}


def _face_disc(photo: bytes, face: Face, radius: float) -> tuple[Image.Image, RGB]:
    """Square RGB crop (side 2*radius px) around the face with margin, and a skin tone."""
    side_px = max(2, int(round(2 * radius)))
    # Decode only the resolution the crop needs (JPEG draft scaling, no full-image resize):
    # the crop must still cover side_px pixels, with 25% to spare for the LANCZOS downscale.
    box = face.box
    frac = max(min(max(box.width, box.height), 1.0), 1e-3) * (1 + 2 * FACE_MARGIN)
    target = int(min(8192, max(256, math.ceil(side_px * 1.25 / frac))))
    decoded = decode_photo(photo, target_long_side=target, exact=False)
    img = decoded.image
    w, h = img.size

    # Clamp the face box into the photo; a box partly outside still crops what is there.
    left = min(max(box.left, 0.0), 1.0)
    top = min(max(box.top, 0.0), 1.0)
    right = min(max(box.left + box.width, left), 1.0)
    bottom = min(max(box.top + box.height, top), 1.0)
    fx0, fy0, fx1, fy1 = left * w, top * h, right * w, bottom * h
    if fx1 - fx0 < 1 or fy1 - fy0 < 1:
        raise PermanentStepError(
            "The face position for this photo lies outside the photo; please re-upload the photo."
        )
    cx, cy = (fx0 + fx1) / 2, (fy0 + fy1) / 2
    side = max(fx1 - fx0, fy1 - fy0) * (1 + 2 * FACE_MARGIN)
    side = min(side, w, h)
    # Shift the square inside the photo rather than padding with a blank border.
    x0 = min(max(cx - side / 2, 0.0), w - side)
    y0 = min(max(cy - side / 2, 0.0), h - side)
    crop = img.resize((side_px, side_px), Image.Resampling.LANCZOS, box=(x0, y0, x0 + side, y0 + side))

    # Skin tone: median of the cheeks/nose band, which avoids hair, eyes and background.
    sk = np.asarray(img.crop((int(fx0 + 0.3 * (fx1 - fx0)), int(fy0 + 0.5 * (fy1 - fy0)),
                              max(int(fx0 + 0.7 * (fx1 - fx0)), int(fx0) + 1),
                              max(int(fy0 + 0.72 * (fy1 - fy0)), int(fy0) + 1))), dtype=np.uint8).reshape(-1,
                                                                                                          3)
    skin: RGB = PLACEHOLDER_SKIN
    if len(sk):
        med = np.median(sk, axis=0)
        skin = (int(med[0]), int(med[1]), int(med[2]))
    return crop, skin


def _blend_ambient(face_img: Image.Image, page: Image.Image, anchor: Anchor) -> Image.Image:
    """Nudge the photo towards the scene's light (8% of the surrounding colour) so it sits in."""
    r = anchor.r
    x0, y0 = int(max(anchor.cx - 1.8 * r, 0)), int(max(anchor.cy - 1.8 * r, 0))
    x1, y1 = int(min(anchor.cx + 1.8 * r, page.width)), int(min(anchor.cy + 1.8 * r, page.height))
    if x1 <= x0 or y1 <= y0:
        return face_img
    ambient = np.asarray(page.crop((x0, y0, x1, y1)), dtype=np.float32).reshape(-1, 3).mean(axis=0)
    arr = np.asarray(face_img, dtype=np.float32)
    out = arr * 0.92 + ambient * 0.08
    img = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")
    return ImageEnhance.Color(img).enhance(1.08)


def _disc_alpha(size: int, radius: float, feather: float, scale: int = 1) -> Image.Image:
    """Anti-aliased disc mask with a soft edge of ``feather`` px."""
    n = size * scale
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    c = (n - 1) / 2
    d = np.sqrt((xx - c) ** 2 + (yy - c) ** 2) / scale
    a = np.clip((radius - d) / max(feather, 1e-3), 0.0, 1.0)
    return Image.fromarray(np.rint(a * 255).astype(np.uint8), "L")


def _paste_face(page: Image.Image, face_img: Image.Image, anchor: Anchor, ink: RGB) -> None:
    r = anchor.r
    size = face_img.width
    x = int(round(anchor.cx - size / 2))
    y = int(round(anchor.cy - size / 2))
    mask = _disc_alpha(size, radius=size / 2 - 0.5, feather=max(2.0, r * 0.05))
    page.paste(face_img, (x, y), mask)
    # Ring over the feathered edge: the face reads as a framed portrait, not a cut-out.
    _ring(page, anchor.cx, anchor.cy, r, ink, width=max(2.0, r * 0.07))


def _ring(page: Image.Image, cx: float, cy: float, r: float, ink: RGB, width: float) -> None:
    """A light inner band with an ink line, drawn anti-aliased on a 4x patch."""
    k = 4
    pad = width + 4
    half = r + pad
    x0, y0 = int(math.floor(cx - half)), int(math.floor(cy - half))
    n = int(math.ceil(2 * half)) + 1
    patch = Image.new("RGBA", (n * k, n * k), (0, 0, 0, 0))
    d = ImageDraw.Draw(patch)
    ccx, ccy = (cx - x0) * k, (cy - y0) * k

    def circ(rad: float, col: Color, w: float) -> None:
        d.ellipse((ccx - rad * k, ccy - rad * k, ccx + rad * k, ccy + rad * k), outline=col,
                  width=max(1, int(round(w * k))))

    circ(r + width * 0.5, _a(ink, 255), width)
    circ(r - width * 0.35, (255, 255, 255, 110), width * 0.6)
    patch = patch.resize((n, n), Image.Resampling.BOX)
    page.paste(patch, (x0, y0), patch)


def _paint_disc(page: Image.Image, cx: float, cy: float, r: float, fill: RGB, ink: RGB,
                ring_width: float) -> None:
    """Repaint a placeholder hand: filled disc with an ink outline, anti-aliased on a 4x patch."""
    k = 4
    half = r + ring_width + 2
    x0, y0 = int(math.floor(cx - half)), int(math.floor(cy - half))
    n = int(math.ceil(2 * half)) + 1
    patch = Image.new("RGBA", (n * k, n * k), (0, 0, 0, 0))
    d = ImageDraw.Draw(patch)
    ccx, ccy = (cx - x0) * k, (cy - y0) * k
    rr = (r + 0.6) * k  # a hair larger than the placeholder so none of it peeks out
    d.ellipse((ccx - rr, ccy - rr, ccx + rr, ccy + rr), fill=_a(fill, 255), outline=_a(ink, 255),
              width=max(1, int(round(ring_width * k))))
    patch = patch.resize((n, n), Image.Resampling.BOX)
    page.paste(patch, (x0, y0), patch)
