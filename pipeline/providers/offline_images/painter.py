"""Drawing primitives for the offline illustrator: colours, the Painter, shapes shared by scenes.

Pages are 960x720 pixels (``WIDTH`` x ``HEIGHT``); everything is drawn on a canvas ``SS`` times
larger (supersampled) and box-reduced at the end for anti-aliasing. All coordinates, radii and
widths taken by this module are in page pixels; the Painter multiplies by ``SS`` itself.
Colours are ``(r, g, b)`` or ``(r, g, b, a)`` tuples of 0..255.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 960, 720  # page size, pixels
SS = 2  # supersampling factor of the drawing canvas

RGB = tuple[int, int, int]
RGBA = tuple[int, int, int, int]
Color = RGB | RGBA
Point = tuple[float, float]


# --- colour helpers ---------------------------------------------------------------------------


def mix(a: Sequence[int], b: Sequence[int], t: float) -> RGB:
    """The colour a fraction ``t`` (0..1) of the way from ``a`` to ``b`` (alpha dropped)."""
    return (
        int(round(a[0] + (b[0] - a[0]) * t)),
        int(round(a[1] + (b[1] - a[1]) * t)),
        int(round(a[2] + (b[2] - a[2]) * t)),
    )


def dark(c: Sequence[int], t: float = 0.25) -> RGB:
    """``c`` mixed ``t`` of the way towards black."""
    return mix(c, (0, 0, 0), t)


def light(c: Sequence[int], t: float = 0.3) -> RGB:
    """``c`` mixed ``t`` of the way towards white."""
    return mix(c, (255, 255, 255), t)


def rgba(c: Sequence[int], alpha: int) -> RGBA:
    """``c``'s red, green and blue with opacity ``alpha`` (0..255)."""
    return (int(c[0]), int(c[1]), int(c[2]), alpha)


# --- painter ----------------------------------------------------------------------------------

INK = "ink"  # outline value meaning "the theme's ink colour"
Stroke = RGB | RGBA | str | None  # a colour, INK, or None for no outline


class Painter:
    """ImageDraw in page coordinates (960x720) on a supersampled canvas, with an ink outline.

    On an RGB canvas translucent fills blend; on an RGBA layer they replace (used for the body,
    which is opaque and may be rotated as a whole).
    """

    def __init__(self, img: Image.Image, ink: RGB, ink_width: float, origin: Point = (0.0, 0.0)) -> None:
        """Draw on ``img`` (``SS`` times the page size, or a layer whose top left is page point
        ``origin``), outlining in ``ink`` ``ink_width`` page pixels wide."""
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
        outline: Stroke = INK, width: float | None = None,
    ) -> None:
        """An ellipse centred on (cx, cy) with radii rx, ry; ``outline`` INK (default), a colour or None."""
        col, w = self._outline(outline, width)
        self.draw.ellipse(self._box(cx - rx, cy - ry, cx + rx, cy + ry), fill=fill, outline=col, width=w)

    def circle(
        self, cx: float, cy: float, r: float, fill: Color | None, outline: Stroke = INK,
        width: float | None = None,
    ) -> None:
        """A circle of radius ``r`` centred on (cx, cy); ``width`` is the outline's, pixels."""
        self.ellipse(cx, cy, r, r, fill, outline, width)

    def polygon(
        self, pts: Sequence[Point], fill: Color | None, outline: Stroke = INK, width: float | None = None
    ) -> None:
        """A filled polygon through ``pts``, outlined in ink unless ``outline`` says otherwise."""
        col, w = self._outline(outline, width)
        self.draw.polygon([self._pt(x, y) for x, y in pts], fill=fill, outline=col, width=w)

    def rect(
        self, x0: float, y0: float, x1: float, y1: float, fill: Color | None, radius: float = 0,
        outline: Stroke = INK, width: float | None = None,
    ) -> None:
        """The box (x0, y0)-(x1, y1), corners rounded by ``radius`` pixels (clamped to the box)."""
        col, w = self._outline(outline, width)
        box = self._box(x0, y0, x1, y1)
        rad = min(radius * SS, (box[2] - box[0]) / 2, (box[3] - box[1]) / 2)
        if rad > 0:
            self.draw.rounded_rectangle(box, radius=rad, fill=fill, outline=col, width=w)
        else:
            self.draw.rectangle(box, fill=fill, outline=col, width=w)

    def line(self, pts: Sequence[Point], color: Color, width: float, round_caps: bool = True) -> None:
        """A polyline ``width`` pixels wide with curved joints and, by default, round end caps."""
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
        """The outline of the ellipse between ``start`` and ``end`` degrees (clockwise from 3 o'clock)."""
        self.draw.arc(self._box(cx - rx, cy - ry, cx + rx, cy + ry), start, end, fill=color,
                      width=max(1, int(round(width * SS))))

    def pieslice(
        self, cx: float, cy: float, rx: float, ry: float, start: float, end: float, fill: Color,
        outline: Stroke = INK, width: float | None = None,
    ) -> None:
        """A filled wedge of the ellipse between ``start`` and ``end`` degrees."""
        col, w = self._outline(outline, width)
        self.draw.pieslice(self._box(cx - rx, cy - ry, cx + rx, cy + ry), start, end, fill=fill, outline=col,
                           width=w)

    def chord(
        self, cx: float, cy: float, rx: float, ry: float, start: float, end: float, fill: Color,
        outline: Stroke = INK, width: float | None = None,
    ) -> None:
        """The ellipse cut by the straight line between its ``start`` and ``end`` degree points."""
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


def gradient(stops: Sequence[tuple[float, RGB]]) -> Image.Image:
    """Vertical gradient for the supersampled canvas (one column, stretched: cheap)."""
    h = HEIGHT * SS
    y = np.linspace(0.0, 1.0, h)
    pos = np.array([s[0] for s in stops])
    cols = np.array([s[1] for s in stops], dtype=np.float64)
    col = np.stack([np.interp(y, pos, cols[:, c]) for c in range(3)], axis=1)
    column = np.clip(np.rint(col), 0, 255).astype(np.uint8)[:, None, :]
    return Image.fromarray(column, "RGB").resize((WIDTH * SS, h), Image.Resampling.NEAREST)


def wavy(x0: float, x1: float, y: float, amp: float, phase: float, freq: float, bottom: float,
          harmonics: float = 0.35, n: int = 48) -> list[Point]:
    """Polygon of a softly wavy band from y down to ``bottom`` (hills, sea, sand)."""
    pts: list[Point] = []
    for i in range(n + 1):
        x = x0 + (x1 - x0) * i / n
        t = x / WIDTH * math.tau * freq + phase
        pts.append((x, y + amp * math.sin(t) + amp * harmonics * math.sin(2.3 * t + 1.7)))
    return pts + [(x1, bottom), (x0, bottom)]


def star_points(cx: float, cy: float, r_out: float, r_in: float, n: int = 5,
                 rot: float = -90.0) -> list[Point]:
    """The 2n corners of an n-pointed star (outer radius ``r_out``, inner ``r_in``), rotated ``rot`` degrees."""
    pts = []
    for i in range(2 * n):
        r = r_out if i % 2 == 0 else r_in
        ang = math.radians(rot + i * 180.0 / n)
        pts.append((cx + r * math.cos(ang), cy + r * math.sin(ang)))
    return pts


def sparkle(p: Painter, cx: float, cy: float, r: float, color: Color) -> None:
    """A small four-pointed twinkle of radius ``r``, without outline."""
    p.polygon(star_points(cx, cy, r, r * 0.28, n=4, rot=-90), color, outline=None)


def cloud(p: Painter, cx: float, cy: float, w: float, color: Color, outline: Stroke = None) -> None:
    """A puffy cloud about ``w`` pixels wide centred on (cx, cy), drawn as one blob."""
    puffs = [(-0.32, 0.05, 0.2), (-0.1, -0.12, 0.27), (0.17, -0.06, 0.23), (0.36, 0.07, 0.16), (0.02, 0.1,
                                                                                                0.2),
             (-0.42, 0.12, 0.12), (0.22, 0.12, 0.16)]
    p.blob([(cx + dx * w, cy + dy * w, rr * w) for dx, dy, rr in puffs], color, outline=outline)


def leaf(p: Painter, x: float, y: float, angle: float, length: float, droop: float, width: float,
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
            right[-1]], dark(color, 0.25), 1.4)


def palm(p: Painter, x: float, base: float, s: float, lean: float = 1.0) -> None:
    """A palm tree whose trunk, 224*s pixels tall, stands at (x, base), leaning
    right (``lean`` 1) or left (-1)."""
    pts = [(x + lean * 22 * s * math.sin(i / 8 * 1.3), base - i * 28 * s) for i in range(9)]
    p.stroke(pts, (160, 116, 72), 16 * s)
    for i in range(1, 8):
        p.arc(pts[i][0], pts[i][1], 8 * s, 3 * s, 0, 180, dark((160, 116, 72), 0.3), 1.6)
    tx, ty = pts[-1]
    greens = ((64, 160, 84), (92, 184, 92))
    for k, ang in enumerate((-200, -160, -125, -90, -55, -20, 20)):
        leaf(p, tx, ty, ang, 88 * s, 0.55, 24 * s, greens[k % 2])
    for dx in (-7, 6):
        p.circle(tx + dx * s, ty + 8 * s, 7 * s, (130, 90, 50))


def rotate_point(x: float, y: float, px: float, py: float, deg: float) -> Point:
    """Where Image.rotate(deg, center=(px, py)) moves (x, y) (counter-clockwise on screen)."""
    a = math.radians(deg)
    dx, dy = x - px, y - py
    return (px + dx * math.cos(a) + dy * math.sin(a), py - dx * math.sin(a) + dy * math.cos(a))
