"""Scenery of the sea themes: underwater (reef, fish, jellyfish) and pirates (ship, island, chest).

Each ``scene_*`` paints everything but the child onto ``pg.canvas`` from ``pg.rng``, keeping
big props at ``pg.props_x``; coordinates are page pixels.
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.providers.offline_images.page import Page
from pipeline.providers.offline_images.painter import (
    HEIGHT,
    RGB,
    WIDTH,
    Painter,
    cloud,
    dark,
    mix,
    palm,
    rgba,
    sparkle,
    star_points,
    wavy,
)


def scene_underwater(pg: Page) -> None:
    """Paint the sea floor behind the child onto ``pg.canvas`` (page pixels, randomness from ``pg.rng``)."""
    p, rng = pg.p, pg.rng
    for _ in range(5):
        x = rng.uniform(-100, WIDTH)
        wdt = rng.uniform(40, 90)
        p.polygon([(x, -5), (x + wdt, -5), (x + wdt + 220, HEIGHT * 0.8), (x + 120, HEIGHT * 0.8)],
                  (255, 255, 255, 18), outline=None)
    far = mix(pg.sky[2], (20, 90, 110), 0.35)
    p.polygon(wavy(-10, WIDTH + 10, pg.ground_y - 120, 40, rng.uniform(0, 6), 1.6, HEIGHT), rgba(far, 170),
              outline=None)
    sand = (240, 214, 156)
    p.polygon(wavy(-10, WIDTH + 10, pg.ground_y - 24, 12, rng.uniform(0, 6), 1.4, HEIGHT + 10), sand)
    for _ in range(10):
        x, y = rng.uniform(0, WIDTH), rng.uniform(pg.ground_y, HEIGHT - 10)
        p.arc(x, y, 18, 5, 200, 340, dark(sand, 0.15), 2)

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
    p.polygon(star_points(sx, pg.ground_y + 34, 26, 11), (250, 140, 90))
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


def _fish(p: Painter, x: float, y: float, s: float, facing: int, col: RGB) -> None:
    L, Hh = 62 * s, 36 * s
    tail_x = x - facing * L * 0.5
    fin = dark(col, 0.1)
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


def _jellyfish(p: Painter, x: float, y: float, col: RGB) -> None:
    for k in range(5):
        tx = x - 28 + k * 14
        pts = [(tx + 6 * math.sin(i * 0.9 + k), y + 8 + i * 11) for i in range(8)]
        p.line(pts, rgba(dark(col, 0.1), 220), 4)
    p.chord(x, y + 10, 44, 48, 180, 360, rgba(col, 235))
    p.circle(x - 14, y - 10, 5, (40, 30, 50), outline=None)
    p.circle(x + 14, y - 10, 5, (40, 30, 50), outline=None)
    p.arc(x, y - 4, 8, 6, 20, 160, (40, 30, 50), 2)


def scene_pirates(pg: Page) -> None:
    """Paint the pirate sea behind the child onto ``pg.canvas`` (page pixels, randomness from ``pg.rng``)."""
    p, rng = pg.p, pg.rng
    sun_x = rng.uniform(80, WIDTH - 80)
    p.glow(sun_x, 100, 110, (255, 236, 170), strength=100)
    p.circle(sun_x, 100, 40, (255, 230, 120), outline=None)
    for _ in range(rng.randint(2, 4)):
        cloud(p, rng.uniform(60, WIDTH - 60), rng.uniform(60, 200), rng.uniform(100, 160), (255, 255, 255))
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
        p.polygon(wavy(-10, WIDTH + 10, y, 5, rng.uniform(0, 6) + i, 6, y + 18, harmonics=0.0, n=90),
                  rgba(mix((52, 140, 196), (20, 80, 150), i / 7), 150), outline=None)
        for _ in range(4):
            wx = rng.uniform(20, WIDTH - 20)
            if y < waterline + 10 and abs(wx - ship_x) < 200 * ship_s:
                continue  # no foam painted across the hull
            p.arc(wx, y, 16, 6, 200, 340, (220, 240, 250), 2.2)
    # Ship on the water at the free side, seated in it by one opaque wave row.
    _ship(p, ship_x, waterline, ship_s, ship_facing, pg.outfit.accent)
    # Same tone as the sea there (first wave row blended over the base), so its ends don't show.
    p.polygon(wavy(ship_x - 175 * ship_s, ship_x + 175 * ship_s, waterline + 2, 3, rng.uniform(0, 6), 9,
                    waterline + 16, harmonics=0.0, n=40), (49, 135, 192), outline=None)
    for k in (-1, 1):
        p.arc(ship_x + k * 60 * ship_s, waterline + 4, 18, 6, 200, 340, (220, 240, 250), 2.2)
    # Island the child stands on, with a palm and the treasure.
    sand = (244, 216, 156)
    p.polygon(wavy(-10, WIDTH + 10, pg.ground_y - 34, 10, rng.uniform(0, 6), 0.7, HEIGHT + 10), sand)
    foam = wavy(-10, WIDTH + 10, pg.ground_y - 30, 6, rng.uniform(0, 6), 3, pg.ground_y - 22,
                 harmonics=0, n=90)
    p.polygon(foam, (255, 255, 255, 200), outline=None)
    tx = pg.props_x[-1] if len(pg.props_x) > 1 else (WIDTH - 110 if pg.child_x < WIDTH / 2 else 110)
    if abs(tx - pg.child_x) > 140:
        palm(p, tx + 60, pg.ground_y - 16, 1.0, 1.0 if tx < WIDTH / 2 else -1.0)
        _chest(p, tx - 30, pg.ground_y + 18, 0.95)
    for _ in range(4):
        p.circle(rng.uniform(20, WIDTH - 20), rng.uniform(pg.ground_y + 10, HEIGHT - 12), 4, dark(sand,
                                                                                                   0.18),
                 outline=None)


def _ship(p: Painter, x: float, waterline: float, s: float, facing: int, accent: RGB) -> None:
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


def _chest(p: Painter, x: float, base: float, s: float) -> None:
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
        sparkle(p, x - 40 * s + k * 40 * s, base - 96 * s - (k % 2) * 12 * s, 9 * s, (255, 255, 220))


