"""The interior PDF: every page trim + bleed, fonts embedded, pictures at 300 dpi.

Page 1 (right) is the title page; then each story page as a spread: its text on the left page,
its illustration full-bleed on the right; then "The End"; then blank pages up to the binding's
minimum (pipeline.orders.print_files.products.interior_plan). Without a TrueType font on the
machine the files are refused rather than printed with an unembedded core font.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime

from fpdf import FPDF
from fpdf.enums import Align
from PIL import Image

from pipeline.kernel.errors import PermanentStepError
from pipeline.orders.print_files.art import Art, at_dpi, crop
from pipeline.orders.print_files.products import (
    BLEED_IN,
    GUTTER_IN,
    MM_PER_IN,
    SAFETY_IN,
    InteriorPlan,
    PrintSpec,
)
from pipeline.stories.font_embed import embed_cached
from pipeline.stories.typeset import Rgb, Typesetter, draw_lines, find_fonts, line_height, mix


@dataclass(frozen=True)
class PrintPage:
    """One story page to print: its number, text and illustration (PNG or JPEG)."""

    number: int
    text: str
    image: bytes


@dataclass(frozen=True)
class PrintBook:
    """What the print files show; ``created`` fixes the PDFs' creation date."""

    title: str
    child_name: str
    theme_title: str
    pages: list[PrintPage]
    created: datetime  # PDF creation date: fixed per order, so re-renders are byte-identical


def print_pdf(w_mm: float, h_mm: float, book: PrintBook, fonts_text: str) -> tuple[FPDF, Typesetter]:
    """A new PDF of one page size with the fonts for ``fonts_text``; PermanentStepError when only
    the (unembedded) core font is available."""
    pdf = FPDF(unit="mm", format=(w_mm, h_mm))
    pdf.set_auto_page_break(False)
    pdf.set_margins(0, 0, 0)
    pdf.set_creator("AI Story Creator")
    pdf.set_title(" ".join(book.title.split()))
    pdf.set_creation_date(book.created)
    fonts = Typesetter(pdf, find_fonts(), fonts_text)
    if fonts.family == "helvetica":
        # The core font is not embedded, and print shops refuse unembedded fonts.
        raise PermanentStepError("No TrueType font is installed, and print files need embedded fonts "
                                 "(install fonts-dejavu-core fonts-noto-core fonts-noto-cjk or set "
                                 "STORYBOOK_FONT_DIR).")
    return pdf, fonts


def fit(fonts: Typesetter, text: str, width: float, height: float, sizes: range,
         style: str = "") -> tuple[float, list[str]]:
    """The largest size in ``sizes`` at which ``text`` fits the box, and its lines."""
    size, lines = float(sizes[-1]), fonts.wrap(text, width, sizes[-1], style)
    for s in sizes:
        cand = fonts.wrap(text, width, s, style)
        if len(cand) * line_height(s) <= height:
            return float(s), cand
    return size, lines


class Interior:
    """The interior of one book: ``Interior(book, spec, plan, arts).render()`` -> PDF bytes;
    ``min_dpi`` is then the lowest resolution of its pictures."""

    def __init__(self, book: PrintBook, spec: PrintSpec, plan: InteriorPlan, arts: list[Art]) -> None:
        self.book, self.spec, self.plan, self.arts = book, spec, plan, arts
        self.w, self.h = spec.page_w_mm, spec.page_h_mm
        self.b = BLEED_IN * MM_PER_IN
        self.safe = SAFETY_IN * MM_PER_IN
        self.gutter = GUTTER_IN * MM_PER_IN
        text = "".join([book.title, book.child_name, "A story for The End Made for ", "0123456789",
                        *(p.text for p in book.pages)])
        self.pdf, self.fonts = print_pdf(self.w, self.h, book, text)
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
        jpeg, dpi = at_dpi(img, w, h)
        self.min_dpi = min(self.min_dpi, dpi)
        self.pdf.image(io.BytesIO(jpeg), x=x, y=y, w=w, h=h)

    def title_page(self) -> None:
        """Page 1 (recto): the first picture framed, the title balanced, "A story for <name>"."""
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
        size, lines = fit(fonts, title, width - 8, 3 * line_height(30), range(30, 15, -2), "B")
        lines = fonts.balanced(title, width - 8, size, "B")
        y = iy + img_h + 12
        pdf.set_font(fonts.family, style="B", size=size)
        y = draw_lines(pdf, lines, x0, y, width, line_height(size) * 0.95, Align.C, art.shade)
        pdf.set_font(fonts.family, size=15)
        dedication = fonts.clean(f"A story for {' '.join(self.book.child_name.split())}", "The child's name")
        draw_lines(pdf, fonts.wrap(dedication, width, 15), x0, y + 5, width, line_height(15), Align.C,
                    mix(art.shade, art.tint, 0.25))

    def text_page(self, page: PrintPage, art: Art, number: int) -> None:
        """A verso: the page's text at the largest size that fits the safe area, and its number."""
        pdf, fonts = self.pdf, self.fonts
        pdf.add_page()
        self._fill(art.tint)
        x0, y0, x1, y1 = self._box(recto=False)
        footer = 12.0
        text = fonts.clean(" ".join(page.text.split()), f"Page {page.number}'s text")
        size, lines = fit(fonts, text, x1 - x0, y1 - y0 - footer, range(24, 10, -1))
        pdf.set_font(fonts.family, size=size)
        text_h = len(lines) * line_height(size)
        top = y0 + max(0.0, (y1 - y0 - footer - text_h) / 2)
        align = Align.C if len(text.split()) <= 60 else Align.L
        draw_lines(pdf, lines, x0, top, x1 - x0, line_height(size), align, art.shade)
        pdf.set_font(fonts.family, size=10)
        draw_lines(pdf, [str(number)], x0, y1 - 6, x1 - x0, 6, Align.C, mix(art.shade, art.tint, 0.45))

    def picture_page(self, art: Art) -> None:
        """A recto: the picture full bleed, cropped to the page around the child's face."""
        self.pdf.add_page()
        # Full bleed: the picture covers the page to its bleed edges; the trim cuts inside it.
        self._image(crop(art.image, self.w / self.h, art.focus_x), 0, 0, self.w, self.h)

    def end_page(self, art: Art) -> None:
        """"The End" and "Made for <name>", in the last picture's colours."""
        pdf, fonts = self.pdf, self.fonts
        pdf.add_page()
        self._fill(art.tint)
        x0, y0, x1, y1 = self._box(recto=False)
        pdf.set_font(fonts.family, style="B", size=34)
        mid = (y0 + y1) / 2
        draw_lines(pdf, ["The End"], x0, mid - 16, x1 - x0, 16, Align.C, art.shade)
        pdf.set_font(fonts.family, size=14)
        made = fonts.clean(f"Made for {' '.join(self.book.child_name.split())}", "The child's name")
        draw_lines(pdf, fonts.wrap(made, x1 - x0, 14), x0, mid + 4, x1 - x0, line_height(14), Align.C,
                    mix(art.shade, art.tint, 0.3))

    def render(self) -> bytes:
        """All pages, blanks included, as PDF bytes; UnprintableTextError for a glyph no font has."""
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
        embed_cached(self.pdf)  # the fonts' subsets from this process's cache
        return bytes(self.pdf.output())
