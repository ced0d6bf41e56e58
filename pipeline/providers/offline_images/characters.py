"""The child: body, clothes, arms in a pose, and the empty head circle the face goes into.

The child is drawn from ``Page`` (position, head radius, pose, tilt, outfit); ``draw_child``
returns where the head circle and the bare hands are (``Placement``, page pixels), which the
illustrator records in the PNG for ``personalize``.
"""
from __future__ import annotations

from PIL import Image

from pipeline.providers.offline_images.anchor import PLACEHOLDER_FACE, PLACEHOLDER_SKIN, Anchor
from pipeline.providers.offline_images.hair import draw_glasses, draw_hair
from pipeline.providers.offline_images.page import Page, Placement
from pipeline.providers.offline_images.painter import (
    SS,
    WIDTH,
    Painter,
    Point,
    dark,
    light,
    rgba,
    rotate_point,
    star_points,
)

# Hand and elbow targets for the arm on the image's right, in head radii from the head centre.
_ARMS: dict[str, tuple[Point, Point]] = {
    "down": ((0.84, 1.62), (0.96, 2.22)),
    "up": ((1.08, 0.62), (1.3, -0.12)),
    "wave": ((1.2, 0.78), (1.42, 0.1)),
    "out": ((1.1, 1.18), (1.66, 1.02)),
    "hip": ((1.08, 1.6), (0.7, 2.02)),
}
POSES: dict[str, tuple[str, str]] = {  # (image-left arm, image-right arm)
    "wave": ("down", "wave"),
    "cheer": ("up", "up"),
    "point": ("hip", "out"),
    "relaxed": ("down", "down"),
    "hero": ("hip", "hip"),
    "reach": ("out", "down"),
}


def draw_child(pg: Page) -> Placement:
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
    b = Painter(layer, pg.ink, pg.p.ink_width, origin=(lx0, ly0))

    suit = {"space_adventure": (236, 240, 248), "underwater": o.accent, "superhero": o.shirt}.get(theme,
                                                                                                  o.shirt)
    pants = {"space_adventure": (236, 240, 248), "underwater": o.accent, "superhero": o.shirt,
             "pirates": (60, 56, 80), "dinosaurs": (150, 120, 80)}.get(theme, o.pants)
    if theme == "dinosaurs":
        suit = (214, 186, 124)
    elif theme == "pirates":
        suit = (248, 246, 238)
    sleeve = suit
    # Gloves for astronauts and heroes; everyone else gets the profile's skin, or placeholder
    # skin repainted by personalize when there is no profile.
    skin = pg.character.skin_rgb if pg.character is not None else PLACEHOLDER_SKIN
    hand_col = {"space_adventure": (250, 250, 250), "superhero": (252, 208, 64)}.get(theme, skin)

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
        b.polygon(star_points(hx, hy + 1.45 * r, 0.36 * r, 0.15 * r), (252, 208, 64))
        b.rect(hx - 0.64 * r, hy + 1.98 * r, hx + 0.64 * r, hy + 2.14 * r, (252, 208, 64), outline=None)
    elif theme == "dinosaurs":
        for side in (-1, 1):
            b.rect(hx + side * 0.34 * r - 0.15 * r, hy + 1.3 * r, hx + side * 0.34 * r + 0.15 * r,
                   hy + 1.55 * r,
                   dark(suit, 0.12), radius=0.04 * r, width=pg.p.ink_width * 0.6)
        b.polygon([(hx - 0.4 * r, hy + 0.9 * r), (hx + 0.4 * r, hy + 0.9 * r), (hx, hy + 1.35 * r)], o.accent)
    elif theme == "enchanted_forest":
        b.rect(hx - 0.64 * r, hy + 1.9 * r, hx + 0.64 * r, hy + 2.05 * r, (120, 80, 50), outline=None)
        b.rect(hx - 0.1 * r, hy + 1.86 * r, hx + 0.1 * r, hy + 2.09 * r, (240, 200, 80), radius=0.03 * r)
    elif theme == "underwater":
        b.rect(hx - 0.64 * r, hy + 1.6 * r, hx + 0.64 * r, hy + 1.72 * r, light(suit, 0.5), outline=None)
    else:
        b.rect(hx - 0.2 * r, hy + 0.86 * r, hx + 0.2 * r, hy + 1.1 * r, light(suit, 0.4), radius=0.08 * r)

    # Arms, then hands on top so a repaint of a hand never covers anything else.
    left_pose, right_pose = POSES[pg.pose]
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
        hands_local = [(*rotate_point(x, y, pivot[0], pivot[1], pg.tilt), hr) for x, y, hr in hands_local]

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
    draw_hair(pg, hx, hy, r, pg.character)  # behind the head, under raised arms and shoulders
    pg.canvas.paste(layer, (int(round(lx0 * SS)), int(round(ly0 * SS))), layer)

    # The placeholder head, then headwear kept outside the face circle (the photo covers it).
    p.circle(hx, hy, r, PLACEHOLDER_FACE)
    p.circle(hx, hy, r * 0.55, rgba(dark(PLACEHOLDER_FACE, 0.06), 255), outline=None)
    draw_glasses(pg, hx, hy, r, pg.character)
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
    return Placement(anchor=Anchor(cx=float(hx), cy=float(hy), r=float(round(r))), hands=hands)


