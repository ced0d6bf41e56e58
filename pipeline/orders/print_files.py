"""Print-ready PDFs of a finished story: an interior and a one-piece cover, as a print shop
(Lulu) takes them, and the checks a print shop runs on them.

Product: Lulu's ``pod_package_id`` says the trim size, binding and paper (``0850X0850FCPRECW080CW444GXX``
= 8.5 x 8.5 in, full colour premium, casewrap hardcover, 80# coated white paper at 444 pages
per inch, gloss). ``orders.product_type`` maps to one (``PRINT_PRODUCTS``, defaults below).

Interior, every page trim + 0.125 in (3.175 mm) bleed on each side (8.75 x 8.75 in for the
square book), fonts embedded (fpdf2 embeds TrueType subsets; without a TrueType font on the
machine the files are refused rather than printed with an unembedded core font):

- page 1 (right): title page; then each story page as a spread: its text on the left page,
  its illustration full-bleed on the right; then "The End";
- blank pages after that up to the binding's minimum (24 for casewrap, 32 for perfect bound)
  and an even count: a 4-page story is a 24-page hardcover with 14 blank pages at the end.

Illustrations are placed at 300 dpi at their printed size. The square picture pages crop the
4:3 illustrations to a square around the child's face (OpenCV, the same detector as photo
analysis; the centre when no face is found). The local illustrator draws 960 x 720 px, about
82 dpi at 8.75 in, so those are upscaled ~3.6x with Lanczos to 2625 px: the files meet the
print shop's resolution rule, but upscaling adds no detail; a production image model should
render at >= 2625 px on the short side for crisp prints.

Cover: back | spine | front in one PDF of the size the print shop gives for this product and
page count (Lulu's ``/cover-dimensions/``; offline, ``cover_size_pt`` approximates Lulu's
templates: paperback = 2 x trim + spine (pages / ppi + 0.06 in) + 0.125 in bleed around;
casewrap adds a 0.75 in board wrap + bleed around and a spine from Lulu's page-count table).
The front is the first page's illustration full-bleed with the title on a panel; the spine is
a band of the book's colour, with the title when it is at least 0.5 in wide.

Rendering is CPU work (~0.15 s per 300 dpi picture): the step runs it through pipeline.kernel.cpu.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from fpdf import FPDF
from fpdf.enums import Align
from PIL import Image, UnidentifiedImageError

from pipeline.stories.book import _draw_lines, _Fonts, _line_h, _mix, find_fonts
from pipeline.kernel.errors import PermanentStepError

Rgb = tuple[int, int, int]

MM_PER_IN = 25.4
PT_PER_IN = 72.0
BLEED_IN = 0.125
SAFETY_IN = 0.5  # text and faces stay this far inside the trim
GUTTER_IN = 0.25  # and this much further from the binding edge
DPI = 300

# product_type -> pod_package_id. Override or extend with PRINT_PRODUCTS="name=POD_ID,...".
DEFAULT_PRODUCTS = {
    "hardcover_book": "0850X0850FCPRECW080CW444GXX",
    "paperback_book": "0850X0850FCPREPB080CW444GXX",
}
_ALIASES = {"hardcover": "hardcover_book", "paperback": "paperback_book", "softcover_book": "paperback_book"}

# Binding code -> (what it is, fewest pages, most pages, hardcover).
_BINDINGS: dict[str, tuple[str, int, int, bool]] = {
    "CW": ("casewrap hardcover", 24, 800, True),
    "LW": ("linen wrap hardcover", 24, 800, True),
    "PB": ("perfect bound paperback", 32, 800, False),
    "SS": ("saddle stitch", 4, 48, False),
    "CO": ("coil bound", 3, 470, False),
}
# Casewrap spine width (in) by page count, after Lulu's casewrap templates (approximate: the
# real provider's /cover-dimensions/ is used whenever there is one).
_CASEWRAP_SPINE = ((84, 0.25), (140, 0.5), (168, 0.625), (194, 0.688), (222, 0.75), (250, 0.813),
                   (278, 0.875), (306, 0.938), (334, 1.0), (360, 1.063), (388, 1.125), (416, 1.188),
                   (444, 1.25), (500, 1.375), (556, 1.5), (610, 1.625), (666, 1.75), (722, 1.875),
                   (800, 2.063))


@dataclass(frozen=True)
class PrintSpec:
    pod_package_id: str
    trim_w_in: float
    trim_h_in: float
    binding: str
    binding_name: str
    min_pages: int
    max_pages: int
    hardcover: bool
    ppi: int  # paper bulk, pages per inch: the spine's thickness

    @property
    def page_w_mm(self) -> float:
        return (self.trim_w_in + 2 * BLEED_IN) * MM_PER_IN

    @property
    def page_h_mm(self) -> float:
        return (self.trim_h_in + 2 * BLEED_IN) * MM_PER_IN

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_pod_package(pod_package_id: str) -> PrintSpec:
    """A PrintSpec from Lulu's 27-character SKU (or its dotted form); ValueError if malformed."""
    sku = pod_package_id.replace(".", "").strip().upper()
    if len(sku) != 27:
        raise ValueError(f"a pod_package_id has 27 characters, {pod_package_id!r} has {len(sku)}")
    try:
        w, h = (int(sku[0:4]) / 100, int(sku[5:9]) / 100)
        ppi = int(sku[21:24])
    except ValueError:
        raise ValueError(f"unreadable trim size or paper in {pod_package_id!r}") from None
    if sku[4] != "X" or not (1 <= w <= 20 and 1 <= h <= 20) or ppi <= 0:
        raise ValueError(f"unreadable trim size in {pod_package_id!r}")
    binding = sku[14:16]
    if binding not in _BINDINGS:
        raise ValueError(f"binding {binding!r} is not one this shop makes ({', '.join(sorted(_BINDINGS))})")
    name, lo, hi, hard = _BINDINGS[binding]
    return PrintSpec(sku, w, h, binding, name, lo, hi, hard, ppi)


def products(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """product_type -> pod_package_id, from the defaults and ``PRINT_PRODUCTS``."""
    out = dict(DEFAULT_PRODUCTS)
    raw = (os.environ if env is None else env).get("PRINT_PRODUCTS", "")
    for item in raw.split(","):
        name, sep, sku = item.partition("=")
        if sep and name.strip() and sku.strip():
            out[name.strip().lower()] = sku.strip()
    return out


def check_products(env: Mapping[str, str] | None = None) -> None:
    """PRINT_PRODUCTS as a worker's boot checks it (products() skips what it cannot read):
    comma-separated ``product_type=pod_package_id`` items, each SKU one this shop can make;
    SystemExit("configuration error: PRINT_PRODUCTS ...") otherwise."""
    raw = (os.environ if env is None else env).get("PRINT_PRODUCTS", "")
    for item in (i.strip() for i in raw.split(",")):
        name, sep, sku = item.partition("=")
        if not item:
            continue
        if not sep or not name.strip() or not sku.strip():
            raise SystemExit(f"configuration error: PRINT_PRODUCTS item {item[:60]!r} is not "
                             "product_type=pod_package_id")
        try:
            parse_pod_package(sku.strip())
        except ValueError as e:
            raise SystemExit(f"configuration error: PRINT_PRODUCTS {name.strip()[:40]}: {e}") from None


def product_spec(product_type: str) -> PrintSpec:
    """The spec of an order's product; PermanentStepError naming the products on offer."""
    catalog = products()
    key = (product_type or "").strip().lower().replace(" ", "_").replace("-", "_")
    sku = catalog.get(key) or catalog.get(_ALIASES.get(key, ""))
    if sku is None:
        raise PermanentStepError(f"Unknown product type {product_type[:60]!r}; this shop prints: "
                                 f"{', '.join(sorted(catalog))}.")
    try:
        return parse_pod_package(sku)
    except ValueError as e:
        raise PermanentStepError(f"The product {product_type!r} is misconfigured ({e}).") from None


@dataclass(frozen=True)
class InteriorPlan:
    total: int  # pages in the interior PDF
    content: int  # title + story spreads + end page
    blank: int  # added to reach the binding's minimum and an even count


def interior_plan(story_pages: int, spec: PrintSpec) -> InteriorPlan:
    content = 1 + 2 * story_pages + 1
    total = max(content, spec.min_pages)
    total += total % (4 if spec.binding == "SS" else 2)
    if total > spec.max_pages:
        raise PermanentStepError(f"The book would have {total} pages; a {spec.binding_name} has at most "
                                 f"{spec.max_pages}.")
    return InteriorPlan(total, content, total - content)


def cover_size_pt(spec: PrintSpec, page_count: int) -> tuple[float, float]:
    """The one-piece cover's size in points, offline (see the module doc)."""
    if spec.hardcover:
        margin = 0.75 + BLEED_IN
        spine = next((w for n, w in _CASEWRAP_SPINE if page_count <= n), _CASEWRAP_SPINE[-1][1])
    elif spec.binding in ("SS", "CO"):
        margin, spine = BLEED_IN, 0.0
    else:
        margin, spine = BLEED_IN, page_count / spec.ppi + 0.06
    w = 2 * spec.trim_w_in + spine + 2 * margin
    h = spec.trim_h_in + 2 * margin
    return round(w * PT_PER_IN, 3), round(h * PT_PER_IN, 3)


def print_file_key(order_id: str, kind: str) -> str:
    """Deterministic: a re-run overwrites its own files."""
    assert kind in ("interior", "cover"), kind
    return f"orders/{order_id}/print/{kind}.pdf"


# ---------------------------------------------------------------------------------------------
# Pictures at print resolution
# ---------------------------------------------------------------------------------------------

@dataclass
class _Art:
    image: Image.Image  # RGB, as drawn
    focus_x: float | None  # the face's centre (0..1 of the width), for square crops
    tint: Rgb  # pale page colour from the picture
    shade: Rgb  # deep text colour from the picture


def _open(data: bytes, what: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError):
        raise PermanentStepError(f"{what}: the illustration is not a readable image.") from None
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))  # transparent areas print as paper
        return flat
    return img.convert("RGB") if img.mode != "RGB" else img


def _focus_x(data: bytes) -> float | None:
    """Where the child's face is, across the picture (0..1), or None."""
    try:
        from pipeline.providers.local_vision import LocalPhotoAnalyzer

        face = LocalPhotoAnalyzer(detect_long_side=480).analyze_photo(data).primary_face
    except Exception:  # noqa: BLE001 - a crop guide only: the centre is a fine answer
        return None
    return face.box.left + face.box.width / 2 if face else None


def _art(data: bytes, what: str) -> _Art:
    img = _open(data, what)
    average = cast(Rgb, img.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0)))
    shade = cast(Rgb, tuple(round(c * 0.35 + 10) for c in average))
    return _Art(img, _focus_x(data), _mix(average, (255, 255, 255), 0.86), shade)


def _crop(img: Image.Image, aspect: float, focus_x: float | None) -> Image.Image:
    """The largest region of ``aspect`` (w/h), around the face horizontally, else centred."""
    w, h = img.size
    if w / h > aspect:
        cw = max(1, round(h * aspect))
        cx = (0.5 if focus_x is None else focus_x) * w
        x0 = int(min(max(cx - cw / 2, 0), w - cw))
        return img.crop((x0, 0, x0 + cw, h))
    ch = max(1, round(w / aspect))
    y0 = (h - ch) // 2
    return img.crop((0, y0, w, y0 + ch))


def _at_dpi(img: Image.Image, w_mm: float, h_mm: float) -> tuple[bytes, int]:
    """JPEG of ``img`` resampled to DPI at w_mm x h_mm (Lanczos); returns (jpeg, effective dpi)."""
    px_w = math.ceil(w_mm / MM_PER_IN * DPI)
    px_h = math.ceil(h_mm / MM_PER_IN * DPI)
    out = io.BytesIO()
    img.resize((px_w, px_h), Image.Resampling.LANCZOS).save(out, "JPEG", quality=90, optimize=True, dpi=(DPI, DPI))
    return out.getvalue(), math.floor(min(px_w / (w_mm / MM_PER_IN), px_h / (h_mm / MM_PER_IN)))


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrintPage:
    number: int
    text: str
    image: bytes


@dataclass(frozen=True)
class PrintBook:
    title: str
    child_name: str
    theme_title: str
    pages: list[PrintPage]
    created: datetime  # PDF creation date: fixed per order, so re-renders are byte-identical


def _pdf(w_mm: float, h_mm: float, book: PrintBook, fonts_text: str) -> tuple[FPDF, _Fonts]:
    pdf = FPDF(unit="mm", format=(w_mm, h_mm))
    pdf.set_auto_page_break(False)
    pdf.set_margins(0, 0, 0)
    pdf.set_creator("AI Story Creator")
    pdf.set_title(" ".join(book.title.split()))
    pdf.set_creation_date(book.created)
    fonts = _Fonts(pdf, find_fonts(), fonts_text)
    if fonts.family == "helvetica":
        # The core font is not embedded, and print shops refuse unembedded fonts.
        raise PermanentStepError("No TrueType font is installed, and print files need embedded fonts "
                                 "(install fonts-dejavu-core fonts-noto-core fonts-noto-cjk or set "
                                 "STORYBOOK_FONT_DIR).")
    return pdf, fonts


def _fit(fonts: _Fonts, text: str, width: float, height: float, sizes: range,
         style: str = "") -> tuple[float, list[str]]:
    """The largest size in ``sizes`` at which ``text`` fits the box, and its lines."""
    size, lines = float(sizes[-1]), fonts.wrap(text, width, sizes[-1], style)
    for s in sizes:
        cand = fonts.wrap(text, width, s, style)
        if len(cand) * _line_h(s) <= height:
            return float(s), cand
    return size, lines


class _Interior:
    def __init__(self, book: PrintBook, spec: PrintSpec, plan: InteriorPlan, arts: list[_Art]) -> None:
        self.book, self.spec, self.plan, self.arts = book, spec, plan, arts
        self.w, self.h = spec.page_w_mm, spec.page_h_mm
        self.b = BLEED_IN * MM_PER_IN
        self.safe = SAFETY_IN * MM_PER_IN
        self.gutter = GUTTER_IN * MM_PER_IN
        text = "".join([book.title, book.child_name, "A story for The End Made for ", "0123456789",
                        *(p.text for p in book.pages)])
        self.pdf, self.fonts = _pdf(self.w, self.h, book, text)
        self.min_dpi = 10_000

    def _box(self, recto: bool) -> tuple[float, float, float, float]:
        """The safe area (x0, y0, x1, y1): inside trim and safety, away from the binding."""
        inner = self.safe + self.gutter
        left, right = (inner, self.safe) if recto else (self.safe, inner)
        return self.b + left, self.b + self.safe, self.w - self.b - right, self.h - self.b - self.safe

    def _fill(self, color: Rgb) -> None:
        self.pdf.set_fill_color(*color)
        self.pdf.rect(0, 0, self.w, self.h, style="F")

    def _image(self, img: Image.Image, x: float, y: float, w: float, h: float) -> None:
        jpeg, dpi = _at_dpi(img, w, h)
        self.min_dpi = min(self.min_dpi, dpi)
        self.pdf.image(io.BytesIO(jpeg), x=x, y=y, w=w, h=h)

    def title_page(self) -> None:
        pdf, fonts, art = self.pdf, self.fonts, self.arts[0]
        pdf.add_page()
        self._fill(art.tint)
        x0, y0, x1, y1 = self._box(recto=True)
        width = x1 - x0
        img_w = width * 0.86
        img_h = img_w * art.image.height / art.image.width
        ix, iy = x0 + (width - img_w) / 2, y0 + 6
        pdf.set_fill_color(255, 255, 255)
        pdf.rect(ix - 2, iy - 2, img_w + 4, img_h + 4, style="F", round_corners=True, corner_radius=3)
        self._image(art.image, ix, iy, img_w, img_h)
        title = fonts.clean(self.book.title, "The book's title")
        size, lines = _fit(fonts, title, width - 8, 3 * _line_h(30), range(30, 15, -2), "B")
        lines = fonts.balanced(title, width - 8, size, "B")
        y = iy + img_h + 12
        pdf.set_font(fonts.family, style="B", size=size)
        y = _draw_lines(pdf, lines, x0, y, width, _line_h(size) * 0.95, Align.C, art.shade)
        pdf.set_font(fonts.family, size=15)
        dedication = fonts.clean(f"A story for {' '.join(self.book.child_name.split())}", "The child's name")
        _draw_lines(pdf, fonts.wrap(dedication, width, 15), x0, y + 5, width, _line_h(15), Align.C,
                    _mix(art.shade, art.tint, 0.25))

    def text_page(self, page: PrintPage, art: _Art, number: int) -> None:
        pdf, fonts = self.pdf, self.fonts
        pdf.add_page()
        self._fill(art.tint)
        x0, y0, x1, y1 = self._box(recto=False)
        footer = 12.0
        text = fonts.clean(" ".join(page.text.split()), f"Page {page.number}'s text")
        size, lines = _fit(fonts, text, x1 - x0, y1 - y0 - footer, range(24, 10, -1))
        pdf.set_font(fonts.family, size=size)
        text_h = len(lines) * _line_h(size)
        top = y0 + max(0.0, (y1 - y0 - footer - text_h) / 2)
        align = Align.C if len(text.split()) <= 60 else Align.L
        _draw_lines(pdf, lines, x0, top, x1 - x0, _line_h(size), align, art.shade)
        pdf.set_font(fonts.family, size=10)
        _draw_lines(pdf, [str(number)], x0, y1 - 6, x1 - x0, 6, Align.C, _mix(art.shade, art.tint, 0.45))

    def picture_page(self, art: _Art) -> None:
        self.pdf.add_page()
        # Full bleed: the picture covers the page to its bleed edges; the trim cuts inside it.
        self._image(_crop(art.image, self.w / self.h, art.focus_x), 0, 0, self.w, self.h)

    def end_page(self, art: _Art) -> None:
        pdf, fonts = self.pdf, self.fonts
        pdf.add_page()
        self._fill(art.tint)
        x0, y0, x1, y1 = self._box(recto=False)
        pdf.set_font(fonts.family, style="B", size=34)
        mid = (y0 + y1) / 2
        _draw_lines(pdf, ["The End"], x0, mid - 16, x1 - x0, 16, Align.C, art.shade)
        pdf.set_font(fonts.family, size=14)
        made = fonts.clean(f"Made for {' '.join(self.book.child_name.split())}", "The child's name")
        _draw_lines(pdf, fonts.wrap(made, x1 - x0, 14), x0, mid + 4, x1 - x0, _line_h(14), Align.C,
                    _mix(art.shade, art.tint, 0.3))

    def render(self) -> bytes:
        self.title_page()
        self.fonts.check_drawn("The title page's text")
        for i, (page, art) in enumerate(zip(self.book.pages, self.arts, strict=True)):
            self.text_page(page, art, 2 * (i + 1))
            self.fonts.check_drawn(f"Page {page.number}'s text")
            self.picture_page(art)
        self.end_page(self.arts[-1])
        for _ in range(self.plan.blank):
            self.pdf.add_page()  # blank, white: padding to the binding's minimum (module doc)
        assert self.pdf.page == self.plan.total, (self.pdf.page, self.plan)
        self.fonts.check_drawn()  # a missing glyph fails the files: never "?" in a printed book
        return bytes(self.pdf.output())


def _render_cover(book: PrintBook, spec: PrintSpec, size_pt: tuple[float, float], front: _Art,
                  back: _Art) -> tuple[bytes, int, float]:
    """The one-piece cover; returns (pdf, lowest image dpi, spine width mm)."""
    w = size_pt[0] / PT_PER_IN * MM_PER_IN
    h = size_pt[1] / PT_PER_IN * MM_PER_IN
    trim_w, trim_h = spec.trim_w_in * MM_PER_IN, spec.trim_h_in * MM_PER_IN
    margin = (h - trim_h) / 2  # bleed (paperback) or board wrap + bleed (hardcover), per edge
    spine = w - 2 * trim_w - 2 * margin
    if margin < 0 or spine < -0.5:
        raise PermanentStepError(f"The print shop's cover size {size_pt[0]:.0f} x {size_pt[1]:.0f} pt does not fit "
                                 f"a {spec.trim_w_in:g} x {spec.trim_h_in:g} in book.")
    spine = max(spine, 0.0)
    text = "".join([book.title, book.child_name, book.theme_title.upper(), "A story for A personalized story"])
    pdf, fonts = _pdf(w, h, book, text)
    pdf.add_page()
    safe = SAFETY_IN * MM_PER_IN
    back_x1 = margin + trim_w  # the back panel, with its outer margin
    front_x0 = back_x1 + spine
    min_dpi = 10_000

    def image(img: Image.Image, x: float, y: float, iw: float, ih: float) -> None:
        nonlocal min_dpi
        jpeg, dpi = _at_dpi(img, iw, ih)
        min_dpi = min(min_dpi, dpi)
        pdf.image(io.BytesIO(jpeg), x=x, y=y, w=iw, h=ih)

    # Back: the book's colour, a small picture and a line about the book.
    pdf.set_fill_color(*back.tint)
    pdf.rect(0, 0, back_x1, h, style="F")
    bx0, bx1 = margin + safe, back_x1 - safe
    pic_w = (bx1 - bx0) * 0.6
    pic_h = pic_w * back.image.height / back.image.width
    px, py = bx0 + (bx1 - bx0 - pic_w) / 2, margin + safe + 10
    pdf.set_fill_color(255, 255, 255)
    pdf.rect(px - 2, py - 2, pic_w + 4, pic_h + 4, style="F", round_corners=True, corner_radius=3)
    image(back.image, px, py, pic_w, pic_h)
    pdf.set_font(fonts.family, size=14)
    blurb = fonts.clean(f"A personalized story for {' '.join(book.child_name.split())}", "The child's name")
    _draw_lines(pdf, fonts.wrap(blurb, bx1 - bx0, 14), bx0, py + pic_h + 12, bx1 - bx0, _line_h(14),
                Align.C, back.shade)
    # Spine: a band of the front's deep colour; the title only where there is room for it.
    pdf.set_fill_color(*front.shade)
    pdf.rect(back_x1, 0, spine + 0.01, h, style="F")
    if spine >= 12.7:
        size = min(14.0, (spine - 4) / 0.3528 / 1.2)
        pdf.set_font(fonts.family, style="B", size=size)
        cx, cy = back_x1 + spine / 2, h / 2
        with pdf.rotation(-90, x=cx, y=cy):  # reads top to bottom, as on a shelf
            line = fonts.clean(book.title, "The book's title")
            _draw_lines(pdf, [line], cx - (trim_h - 2 * safe) / 2, cy - size * 0.3528 * 0.6, trim_h - 2 * safe,
                        size * 0.3528 * 1.2, Align.C, front.tint)
    # Front: the first illustration, full bleed over the panel and its outer margins.
    fw = w - front_x0
    image(_crop(front.image, fw / h, front.focus_x), front_x0, 0, fw, h)
    fx0, fx1 = front_x0 + safe, front_x0 + trim_w - safe
    title = fonts.clean(book.title, "The book's title")
    size, _ = _fit(fonts, title, fx1 - fx0 - 12, 3 * _line_h(30), range(30, 15, -2), "B")
    lines = fonts.balanced(title, fx1 - fx0 - 12, size, "B")
    panel_h = len(lines) * _line_h(size) * 0.95 + _line_h(15) + 16
    top = margin + safe
    with pdf.local_context(fill_opacity=0.84):
        pdf.set_fill_color(*front.tint)
        pdf.rect(fx0, top, fx1 - fx0, panel_h, style="F", round_corners=True, corner_radius=4)
    pdf.set_font(fonts.family, style="B", size=size)
    y = _draw_lines(pdf, lines, fx0 + 6, top + 6, fx1 - fx0 - 12, _line_h(size) * 0.95, Align.C, front.shade)
    pdf.set_font(fonts.family, size=15)
    dedication = fonts.clean(f"A story for {' '.join(book.child_name.split())}", "The child's name")
    _draw_lines(pdf, [dedication], fx0 + 6, y + 2, fx1 - fx0 - 12, _line_h(15), Align.C,
                _mix(front.shade, front.tint, 0.25))
    fonts.check_drawn("The cover's text")
    return bytes(pdf.output()), min_dpi, spine


def render_print_files(book: PrintBook, spec: PrintSpec, cover_pt: tuple[float, float]
                       ) -> tuple[bytes, bytes, dict[str, Any]]:
    """(interior PDF, cover PDF, facts about them) for ``book`` as ``spec``."""
    if not book.pages:
        raise PermanentStepError("The story has no pages to print.")
    plan = interior_plan(len(book.pages), spec)
    arts = [_art(p.image, f"page {p.number}") for p in book.pages]
    interior = _Interior(book, spec, plan, arts)
    interior_pdf = interior.render()
    cover_pdf, cover_dpi, spine = _render_cover(book, spec, cover_pt, arts[0], arts[1] if len(arts) > 1 else arts[0])
    info = {
        "pod_package_id": spec.pod_package_id,
        "trim_in": [spec.trim_w_in, spec.trim_h_in],
        "bleed_in": BLEED_IN,
        "interior_pages": plan.total,
        "story_pages": len(book.pages),
        "blank_pages": plan.blank,
        "cover_pt": list(cover_pt),
        "spine_mm": round(spine, 2),
        "min_image_dpi": min(interior.min_dpi, cover_dpi),
        "interior_md5": hashlib.md5(interior_pdf).hexdigest(),  # noqa: S324 - the print shop's checksum
        "cover_md5": hashlib.md5(cover_pdf).hexdigest(),  # noqa: S324
        "interior_bytes": len(interior_pdf),
        "cover_bytes": len(cover_pdf),
    }
    return interior_pdf, cover_pdf, info


def make_print_files(order_id: str, title: str, child_name: str, theme_title: str, pages: list[dict[str, Any]],
                     pod_package_id: str, cover_pt: tuple[float, float], created_iso: str) -> dict[str, Any]:
    """Render and store an order's print files (runs in a CPU process: plain arguments, its own
    storage client); returns their facts, keys included."""
    import time

    from pipeline.providers.registry import output_storage

    t0 = time.perf_counter()
    storage = output_storage()
    images = [storage.get(p["personalized_image_key"]) for p in pages]
    book = PrintBook(title=title, child_name=" ".join(child_name.split()), theme_title=theme_title,
                     pages=[PrintPage(p["page_number"], p["text"] or "", img)
                            for p, img in zip(pages, images, strict=True)],
                     created=datetime.fromisoformat(created_iso).astimezone(UTC))
    interior, cover, info = render_print_files(book, parse_pod_package(pod_package_id), cover_pt)
    t1 = time.perf_counter()
    keys = {"interior_key": print_file_key(order_id, "interior"), "cover_key": print_file_key(order_id, "cover")}
    storage.put(keys["interior_key"], interior, "application/pdf")
    storage.put(keys["cover_key"], cover, "application/pdf")
    return {**info, **keys, "render_ms": round((t1 - t0) * 1000, 1),
            "store_ms": round((time.perf_counter() - t1) * 1000, 1)}


# ---------------------------------------------------------------------------------------------
# What a print shop checks (the local print shop and the test's fake Lulu use this)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PdfInfo:
    pages: int
    sizes_pt: list[tuple[float, float]]
    unembedded_fonts: int  # text objects whose font is not embedded
    min_image_dpi: float | None
    full_bleed_pages: int  # pages with an image covering the whole page


def inspect_pdf(data: bytes) -> PdfInfo:
    """Facts about a PDF (pypdfium2); ValueError if it is not a readable PDF."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        raise ValueError(f"not a readable PDF ({e})") from None
    try:
        sizes: list[tuple[float, float]] = []
        unembedded, full = 0, 0
        dpis: list[float] = []
        for i in range(len(doc)):
            page = doc[i]
            pw, ph = page.get_size()
            sizes.append((round(pw, 2), round(ph, 2)))
            covered = False
            for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_TEXT, pdfium_c.FPDF_PAGEOBJ_IMAGE]):
                if obj.type == pdfium_c.FPDF_PAGEOBJ_TEXT:
                    font = pdfium_c.FPDFTextObj_GetFont(obj.raw)
                    if not font or not pdfium_c.FPDFFont_GetIsEmbedded(font):
                        unembedded += 1
                    continue
                left, bottom, right, top = obj.get_bounds()
                px_w, px_h = cast(Any, obj).get_px_size()
                if right > left and top > bottom:
                    dpis.append(min(px_w / ((right - left) / PT_PER_IN), px_h / ((top - bottom) / PT_PER_IN)))
                covered = covered or (left <= 0.5 and bottom <= 0.5 and right >= pw - 0.5 and top >= ph - 0.5)
            full += covered
            page.close()
        return PdfInfo(len(doc), sizes, unembedded, min(dpis) if dpis else None, full)
    finally:
        doc.close()


def check_print_files(interior: bytes, cover: bytes, pod_package_id: str,
                      cover_pt: tuple[float, float], *, tolerance_pt: float = 1.5) -> list[str]:
    """What a print shop's file normalization would reject, in its words; [] when printable."""
    try:
        spec = parse_pod_package(pod_package_id)
    except ValueError as e:
        return [f"pod_package_id: {e}"]
    errors: list[str] = []
    want = (round(spec.page_w_mm / MM_PER_IN * PT_PER_IN, 2), round(spec.page_h_mm / MM_PER_IN * PT_PER_IN, 2))
    try:
        info = inspect_pdf(interior)
    except ValueError as e:
        errors.append(f"interior: {e}")
    else:
        if not spec.min_pages <= info.pages <= spec.max_pages:
            errors.append(f"interior: {info.pages} pages; a {spec.binding_name} needs "
                          f"{spec.min_pages} to {spec.max_pages}")
        wrong = [i + 1 for i, (pw, ph) in enumerate(info.sizes_pt)
                 if abs(pw - want[0]) > tolerance_pt or abs(ph - want[1]) > tolerance_pt]
        if wrong:
            pw, ph = info.sizes_pt[wrong[0] - 1]
            errors.append(f"interior: page {wrong[0]} is {pw:g} x {ph:g} pt; this product needs "
                          f"{want[0]:g} x {want[1]:g} pt (trim + 0.125 in bleed) on every page")
        if info.unembedded_fonts:
            errors.append("interior: fonts not embedded")
    try:
        cinfo = inspect_pdf(cover)
    except ValueError as e:
        errors.append(f"cover: {e}")
    else:
        if cinfo.pages != 1:
            errors.append(f"cover: {cinfo.pages} pages; a cover is one page")
        elif (abs(cinfo.sizes_pt[0][0] - cover_pt[0]) > tolerance_pt
              or abs(cinfo.sizes_pt[0][1] - cover_pt[1]) > tolerance_pt):
            errors.append(f"cover: {cinfo.sizes_pt[0][0]:g} x {cinfo.sizes_pt[0][1]:g} pt; this book's cover "
                          f"must be {cover_pt[0]:g} x {cover_pt[1]:g} pt")
        if cinfo.unembedded_fonts:
            errors.append("cover: fonts not embedded")
    return errors
