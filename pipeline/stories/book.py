"""Render a finished picture book: a PDF to print or download (here), and one self-contained HTML
page (pipeline.stories.book_html, which imports this module: never the reverse).

PDF: 8.5 x 8.5 in square pages (a common picture-book trim). A cover (theme, illustration,
title, "A story for <name>"), then one page per story page: the illustration on top, the text
below it in a size chosen for its length, the page number at the bottom. The page's colours
come from its illustration (a pale tint behind, a deep shade for the text accents), so every
theme gets a matching book without a colour table.

The text is set by pipeline.stories.typeset: one font per script, shaped and bidirectional where
needed, and UnprintableTextError for a character no font draws (never "?" in a book).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import cast

from fpdf import FPDF
from fpdf.enums import Align
from PIL import Image, UnidentifiedImageError

from pipeline.stories.font_embed import embed_cached
from pipeline.stories.typeset import (
    FontSet,
    Rgb,
    Typesetter,
    draw_lines,
    find_fonts,
    line_height,
    mix,
)


@dataclass
class BookPage:
    """One story page: its number (1-based), its text, its illustration."""

    number: int
    text: str
    image: bytes  # PNG or JPEG of the personalized illustration (960x720)


@dataclass
class Book:
    """What a book shows: its title, the child's name, the theme's title, the pages in order."""

    title: str
    child_name: str
    theme_title: str
    pages: list[BookPage]
    cover_image: bytes | None = None  # None: the first page's illustration


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Picture:
    jpeg: bytes
    width: int
    height: int
    tint: Rgb  # pale page background drawn from the picture
    shade: Rgb  # deep text colour drawn from the picture


_MAX_PIXELS_WIDE = 1600  # 8.5 in at ~190 dpi: sharper than needed, bigger files for nothing


def _picture(data: bytes, what: str) -> _Picture:
    """JPEG bytes (quality 88) and colours for one illustration; ValueError if unreadable."""
    try:
        img: Image.Image = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"{what}: the illustration is not a readable image") from exc
    passthrough = img.format == "JPEG" and img.mode == "RGB" and img.width <= _MAX_PIXELS_WIDE
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.new("RGB", rgba.size, (255, 255, 255))
        img.paste(rgba, mask=rgba.getchannel("A"))  # transparent areas print as paper
    elif img.mode != "RGB":
        img = img.convert("RGB")
    if img.width > _MAX_PIXELS_WIDE:
        img = img.resize((_MAX_PIXELS_WIDE, round(img.height * _MAX_PIXELS_WIDE / img.width)),
                         Image.Resampling.LANCZOS)
    if passthrough:
        jpeg = data  # already a JPEG: re-encoding would only lose quality and time
    else:
        out = io.BytesIO()
        img.save(out, "JPEG", quality=88)
        jpeg = out.getvalue()
    average = cast(tuple[int, int, int], img.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0)))
    tint = mix(average, (255, 255, 255), 0.88)
    # A deep shade of the picture's own colour: dark enough for text on the tint.
    shade = cast(Rgb, tuple(round(c * 0.35 + 10) for c in average))
    return _Picture(jpeg, img.width, img.height, tint, shade)


# ---------------------------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------------------------

PAGE_MM = 215.9  # 8.5 in square
MARGIN = 14.0
FOOTER = 16.0  # space kept at the bottom for the page number
GAP = 8.0  # between the illustration and the text
_TEXT_SIZES = ((35, 21.0), (65, 17.0), (10_000, 14.0))  # (up to N words, font size pt)
_MIN_IMAGE_H = 95.0  # below this, shrink the text instead of the picture


def _cover(pdf: FPDF, fonts: Typesetter, book: Book, pic: _Picture | None) -> None:
    pdf.add_page()
    tint, shade = (pic.tint, pic.shade) if pic else ((250, 245, 236), (70, 52, 38))
    pdf.set_fill_color(*tint)
    pdf.rect(0, 0, PAGE_MM, PAGE_MM, style="F")
    y = MARGIN + 2
    pdf.set_font(fonts.family, style="B", size=11)
    pdf.set_char_spacing(2.2)  # small spaced capitals, like a series name on a real cover
    draw_lines(pdf, [fonts.clean(book.theme_title.upper(), "The theme's title")], MARGIN, y, PAGE_MM - 2 * MARGIN,
                6, Align.C, shade)
    pdf.set_char_spacing(0)
    y += 12
    # The title's size: the largest that fits in three lines, with even line lengths.
    width = PAGE_MM - 2 * MARGIN - 10
    title = fonts.clean(book.title, "The book's title")
    size = 30.0
    while size > 16 and len(fonts.wrap(title, width, size, "B")) > 3:
        size -= 2
    title_lines = fonts.balanced(title, width, size, "B")
    title_h = len(title_lines) * line_height(size) * 0.92
    sub_size = 15.0
    below = GAP + title_h + 4 + line_height(sub_size)
    if pic:
        img_w = PAGE_MM - 2 * MARGIN - 8
        img_h = min(img_w * pic.height / pic.width, PAGE_MM - y - MARGIN - below - 6)
        img_w = img_h * pic.width / pic.height
        x = (PAGE_MM - img_w) / 2
        _framed_image(pdf, pic, x, y, img_w, img_h)
        y += img_h
    y += GAP
    pdf.set_font(fonts.family, style="B", size=size)
    y = draw_lines(pdf, title_lines, (PAGE_MM - width) / 2, y, width, line_height(size) * 0.92,
                    Align.C, shade)
    pdf.set_font(fonts.family, size=sub_size)
    dedication = fonts.clean(f"A story for {' '.join(book.child_name.split())}", "The child's name")
    draw_lines(pdf, fonts.wrap(dedication, PAGE_MM - 2 * MARGIN, sub_size), MARGIN, y + 4,
                PAGE_MM - 2 * MARGIN, line_height(sub_size), Align.C, mix(shade, tint, 0.25))


def _framed_image(pdf: FPDF, pic: _Picture, x: float, y: float, w: float, h: float) -> None:
    """The picture on a white mat with a soft shadow, like a print pasted on the page."""
    pdf.set_fill_color(*mix(pic.shade, pic.tint, 0.82))
    pdf.rect(x - 1.6 + 1.2, y - 1.6 + 1.6, w + 3.2, h + 3.2, style="F", round_corners=True,
             corner_radius=3)
    pdf.set_fill_color(255, 255, 255)
    pdf.rect(x - 1.6, y - 1.6, w + 3.2, h + 3.2, style="F", round_corners=True, corner_radius=3)
    pdf.image(io.BytesIO(pic.jpeg), x=x, y=y, w=w, h=h)


def _story_page(pdf: FPDF, fonts: Typesetter, page: BookPage, pic: _Picture) -> None:
    pdf.add_page()
    pdf.set_fill_color(*pic.tint)
    pdf.rect(0, 0, PAGE_MM, PAGE_MM, style="F")
    text = fonts.clean(" ".join(page.text.split()), f"Page {page.number}'s text")
    width = PAGE_MM - 2 * MARGIN - 8
    n_words = len(text.split())
    size = next(s for limit, s in _TEXT_SIZES if n_words <= limit)
    max_img_w = PAGE_MM - 2 * MARGIN
    full_h = max_img_w * pic.height / pic.width
    # Long text shrinks the picture first (down to _MIN_IMAGE_H), then the type.
    while True:
        lines = fonts.wrap(text, width, size)
        text_h = len(lines) * line_height(size)
        img_h = min(full_h, PAGE_MM - MARGIN - GAP - text_h - FOOTER - 4)
        if img_h >= _MIN_IMAGE_H or size <= 10:
            break
        size -= 1
    img_h = max(img_h, 40.0)
    img_w = img_h * pic.width / pic.height
    _framed_image(pdf, pic, (PAGE_MM - img_w) / 2, MARGIN, img_w, img_h)
    # The text sits in the middle of the space between picture and page number.
    top = MARGIN + img_h + GAP
    room = PAGE_MM - FOOTER - top
    pdf.set_font(fonts.family, size=size)
    # Short text centred, like a picture book; long text left-aligned, easier to read.
    align = Align.C if n_words <= 65 else Align.L
    draw_lines(pdf, lines, (PAGE_MM - width) / 2, top + max(0.0, (room - text_h) / 2), width,
                line_height(size), align, pic.shade)
    pdf.set_font(size=10)
    draw_lines(pdf, [str(page.number)], 0, PAGE_MM - FOOTER + 3, PAGE_MM, 6, Align.C,
                mix(pic.shade, pic.tint, 0.45))


def render_pdf(book: Book, *, fonts: FontSet | None = None) -> bytes:
    """The book as PDF bytes: a cover, then one page per story page.

    Raises ValueError if an illustration is not a readable image, UnprintableTextError (a
    ValueError and PermanentStepError) if a character of the text has no glyph in any font,
    FontConfigError if the body font is not installed. ``fonts`` overrides the fonts found on
    this machine (tests; a deployment with its own font folder).
    """
    pdf = FPDF(unit="mm", format=(PAGE_MM, PAGE_MM))
    pdf.set_auto_page_break(False)
    pdf.set_margins(0, 0, 0)
    pdf.set_creator("AI Story Creator")
    text = "".join([book.title, book.child_name, book.theme_title.upper(), "A story for ",
                    *(p.text for p in book.pages), "0123456789?"])
    font = Typesetter(pdf, fonts or find_fonts(), text)
    pdf.set_title(" ".join(book.title.split()))  # metadata: any Unicode, no glyphs needed
    pdf.set_font(font.family, size=12)

    cache: dict[bytes, _Picture] = {}  # the cover is usually page 1's picture: convert once

    def picture(data: bytes, what: str) -> _Picture:
        if data not in cache:
            cache[data] = _picture(data, what)
        return cache[data]

    pages = [(p, picture(p.image, f"page {p.number}")) for p in book.pages]
    cover_data = book.cover_image or (book.pages[0].image if book.pages else None)
    _cover(pdf, font, book, picture(cover_data, "cover") if cover_data else None)
    font.check_drawn("The cover's text")
    for page, pic in pages:
        _story_page(pdf, font, page, pic)
        font.check_drawn(f"Page {page.number}'s text")
    embed_cached(pdf)  # the fonts' subsets from this process's cache (pipeline.stories.font_embed)
    return bytes(pdf.output())

__all__ = ["Book", "BookPage", "FontSet", "find_fonts", "render_pdf"]
