"""Scenery of the land themes: enchanted forest (trees, mushrooms) and dinosaurs (palms, dinosaurs).

Each ``scene_*`` paints everything but the child onto ``pg.canvas`` from ``pg.rng``, keeping
big props at ``pg.props_x``; coordinates are page pixels.
"""
from __future__ import annotations

import math
import random

from pipeline.providers.offline_images.page import Page
from pipeline.providers.offline_images.painter import HEIGHT, RGB, WIDTH, Painter, cloud, dark, light, palm, wavy


def scene_forest(pg: Page) -> None:
    """Paint the enchanted forest behind the child onto ``pg.canvas`` (page pixels, randomness from ``pg.rng``)."""
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
                      light(col, 0.06), outline=None)
            x += wdt * rng.uniform(0.45, 0.8)
        p.rect(-10, base + 8, WIDTH + 10, HEIGHT, col, outline=None)
    grass = (92, 150, 84)
    p.polygon(wavy(-10, WIDTH + 10, pg.ground_y - 60, 18, rng.uniform(0, 6), 1.1, HEIGHT + 10), grass)
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


def _tree(p: Painter, x: float, base: float, s: float, rng: random.Random, door: bool) -> None:
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


def _mushroom(p: Painter, x: float, y: float, s: float, cap: RGB) -> None:
    p.rect(x - 9 * s, y - 34 * s, x + 9 * s, y, (250, 240, 224), radius=6 * s)
    p.chord(x, y - 30 * s, 30 * s, 26 * s, 180, 360, cap)
    for dx, dy, rr in ((-14, -40, 4.5), (4, -48, 5.5), (16, -38, 4)):
        p.circle(x + dx * s, y + dy * s, rr * s, (255, 255, 255), outline=None)


def scene_dinosaurs(pg: Page) -> None:
    """Paint the dinosaur valley behind the child onto ``pg.canvas`` (page pixels, randomness from ``pg.rng``)."""
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
        cloud(p, rng.uniform(60, WIDTH - 60), rng.uniform(70, 200), rng.uniform(110, 170), (255, 255, 255))
    p.polygon(wavy(-10, WIDTH + 10, pg.ground_y - 140, 26, rng.uniform(0, 6), 1.3, HEIGHT + 10), (132, 190,
                                                                                                   134))
    p.polygon(wavy(-10, WIDTH + 10, pg.ground_y - 50, 16, rng.uniform(0, 6), 0.9, HEIGHT + 10), (124, 196,
                                                                                                  92))
    slots = [x for x in (70.0, 250.0, 480.0, 700.0, 890.0) if abs(x - pg.child_x) > 130]
    for fx in rng.sample(slots, min(2, len(slots))):
        palm(p, fx + rng.uniform(-30, 30), pg.ground_y - 60 + rng.uniform(0, 20), rng.uniform(0.75, 0.95),
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


def _sauropod(p: Painter, x: float, base: float, s: float, facing: int, col: RGB) -> None:
    f = facing
    belly = light(col, 0.35)
    p.polygon([(x - f * 90 * s, base - 100 * s), (x - f * 250 * s, base - 60 * s), (x - f * 280 * s,
                                                                                    base - 52 * s),
               (x - f * 96 * s, base - 70 * s)], col)
    for dx in (-60, -20, 30, 70):
        p.rect(x + f * dx * s - 17 * s, base - 80 * s, x + f * dx * s + 17 * s, base, dark(col, 0.08),
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
        p.circle(x + (-60 + k * 30) * s, base - 140 * s + (k % 2) * 14 * s, 9 * s, dark(col, 0.15),
                 outline=None)


def _stego(p: Painter, x: float, base: float, s: float, facing: int, col: RGB) -> None:
    f = facing
    plate = (250, 200, 80)
    for k in range(5):
        px = x + (-70 + k * 34) * s
        py = base - 150 * s - math.sin(k / 4 * math.pi) * 26 * s
        p.polygon([(px - 20 * s, py + 30 * s), (px, py - 20 * s), (px + 20 * s, py + 30 * s)], plate)
    p.polygon([(x - f * 90 * s, base - 80 * s), (x - f * 190 * s, base - 40 * s), (x - f * 90 * s,
                                                                                   base - 50 * s)], col)
    for dx in (-55, 45):
        p.rect(x + f * dx * s - 18 * s, base - 70 * s, x + f * dx * s + 18 * s, base, dark(col, 0.08),
               radius=10 * s)
    p.ellipse(x, base - 95 * s, 110 * s, 60 * s, col)
    hx, hy = x + f * 120 * s, base - 80 * s
    p.ellipse(hx, hy, 38 * s, 28 * s, col)
    p.circle(hx + f * 8 * s, hy - 8 * s, 6 * s, (255, 255, 255), width=1.5)
    p.circle(hx + f * 10 * s, hy - 8 * s, 3 * s, (30, 30, 40), outline=None)
    p.arc(hx + f * 14 * s, hy + 6 * s, 14 * s, 8 * s, 10, 170, p.ink, 2)


