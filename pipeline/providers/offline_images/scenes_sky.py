"""Scenery of the sky themes: space (stars, planets, a rocket) and superhero (a city skyline).

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
    Point,
    cloud,
    dark,
    light,
    mix,
    rgba,
    rotate_point,
    sparkle,
    wavy,
)


def scene_space(pg: Page) -> None:
    """Paint space behind the child onto ``pg.canvas`` (page pixels, randomness from ``pg.rng``)."""
    p, rng = pg.p, pg.rng
    for _ in range(3):
        p.glow(rng.uniform(0, WIDTH), rng.uniform(60, 420), rng.uniform(160, 260),
               rng.choice([(255, 120, 200), (120, 200, 255), (180, 140, 255)]), strength=70)
    for _ in range(150):
        p.circle(rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT * 0.78), rng.choice((0.8, 1.1, 1.5, 2.0)),
                 (255, 255, 235, rng.randint(140, 255)), outline=None)
    for _ in range(rng.randint(6, 10)):
        sparkle(p, rng.uniform(20, WIDTH - 20), rng.uniform(20, 420), rng.uniform(6, 13), (255, 244, 200))

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
            p.arc(cx, cy, pr * 1.75, pr * 0.42, 180, 360, light(col, 0.45), pr * 0.12)
        p.circle(cx, cy, pr, col)
        for k in range(3):
            yy = cy - pr * 0.5 + k * pr * 0.42
            half = math.sqrt(max(pr * pr - (yy - cy) ** 2, 0))
            p.rect(cx - half * 0.92, yy, cx + half * 0.92, yy + pr * 0.1, rgba(dark(col, 0.15), 160),
                   radius=pr * 0.05, outline=None)
        p.circle(cx - pr * 0.28, cy - pr * 0.28, pr * 0.45, rgba(light(col, 0.5), 110), outline=None)
        if ringed:
            p.arc(cx, cy, pr * 1.75, pr * 0.42, 0, 180, light(col, 0.45), pr * 0.12)
            p.arc(cx, cy, pr * 1.75 + pr * 0.07, pr * 0.42 + pr * 0.07, 5, 175, pg.ink, 2)

    # Moon ground with craters.
    ground = (176, 170, 204)
    p.polygon(wavy(-10, WIDTH + 10, pg.ground_y - 30, 14, rng.uniform(0, 6), 1.2, HEIGHT + 10), ground)
    p.polygon(wavy(-10, WIDTH + 10, pg.ground_y + 10, 8, rng.uniform(0, 6), 2.0, HEIGHT + 10),
              dark(ground, 0.12), outline=None)
    for _ in range(6):
        cx = rng.uniform(30, WIDTH - 30)
        if abs(cx - pg.child_x) < 90:
            continue
        cy = rng.uniform(pg.ground_y - 5, HEIGHT - 25)
        cr = rng.uniform(16, 34)
        p.ellipse(cx, cy, cr, cr * 0.36, dark(ground, 0.22), width=pg.p.ink_width * 0.7)
        p.ellipse(cx, cy + cr * 0.06, cr * 0.8, cr * 0.24, dark(ground, 0.3), outline=None)

    # Rocket: landed beside the child, or flying past.
    rx = rocket_x
    flying = rng.random() < 0.4
    s = rng.uniform(0.85, 1.05)
    base_y = rng.uniform(260, 360) if flying else pg.ground_y - 8
    tilt = rng.uniform(-18, 18) if flying else 0.0
    _rocket(p, rx, base_y, s, tilt, pg.outfit.accent, flame=flying)


def _rocket(p: Painter, x: float, base_y: float, s: float, tilt: float, accent: RGB, flame: bool) -> None:
    h = 230 * s
    w = 74 * s

    def T(dx: float, dy: float) -> Point:
        return rotate_point(x + dx, base_y + dy, x, base_y - h / 2, tilt)

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


def scene_superhero(pg: Page) -> None:
    """Paint the hero city behind the child onto ``pg.canvas`` (page pixels, randomness from ``pg.rng``)."""
    p, rng = pg.p, pg.rng
    sun_x = rng.uniform(100, WIDTH - 100)
    p.glow(sun_x, 150, 160, (255, 250, 220), strength=90)
    for _ in range(rng.randint(2, 3)):
        cloud(p, rng.uniform(60, WIDTH - 60), rng.uniform(60, 190), rng.uniform(100, 170), (255, 255, 255))
    for _ in range(rng.randint(6, 9)):
        sparkle(p, rng.uniform(20, WIDTH - 20), rng.uniform(20, 260), rng.uniform(6, 12), (255, 255, 240))
    sky_bot = pg.sky[2]
    towers = [(92, 108, 186), (126, 92, 176), (64, 142, 176), (170, 96, 150), (84, 160, 150)]
    for layer, (y0, hmin, hmax) in enumerate(((pg.ground_y - 130, 150, 310), (pg.ground_y - 40, 100, 250))):
        x = -20.0 + rng.uniform(0, 30)
        while x < WIDTH + 20:
            wdt = rng.uniform(64, 124)
            hgt = rng.uniform(hmin, hmax)
            top = y0 - hgt
            base_col = rng.choice(towers)
            col = mix(base_col, sky_bot, 0.55) if layer == 0 else base_col
            if layer and rng.random() < 0.35:
                p.polygon([(x + 6, top), (x + wdt / 2 - 3, top - 34), (x + wdt - 12, top)], dark(col, 0.1))
            p.rect(x, top, x + wdt - 6, HEIGHT, col, outline=pg.ink if layer else None, width=2)
            if rng.random() < 0.3:
                p.line([(x + wdt / 2 - 3, top), (x + wdt / 2 - 3, top - 30)], dark(col, 0.2), 3)
                p.circle(x + wdt / 2 - 3, top - 32, 3.5, (255, 90, 90), outline=None)
            win = rgba((255, 238, 160), 230) if layer else rgba(light(col, 0.45), 200)
            for wy in np.arange(top + 14, y0 + 60, 26).tolist():
                for wx in np.arange(x + 10, x + wdt - 18, 20).tolist():
                    if rng.random() < 0.6:
                        p.rect(wx, wy, wx + 9, wy + 13, win, outline=None)
            x += wdt
    # Rooftop the child stands on.
    roof = (112, 104, 146)
    p.rect(-10, pg.ground_y - 22, WIDTH + 10, HEIGHT + 10, roof)
    p.rect(-10, pg.ground_y - 34, WIDTH + 10, pg.ground_y - 18, light(roof, 0.25))
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


