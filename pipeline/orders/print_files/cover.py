"""The one-piece cover: back | spine | front, of the size the print shop gives for this product
and page count (pipeline.orders.print_files.products.cover_size_pt offline).

The front is the first page's illustration full-bleed with the title on a panel; the spine is a
band of the book's colour, with the title when it is at least 0.5 in wide; the back has the second
page's picture and a line about the book.
"""
from __future__ import annotations

import io

from fpdf.enums import Align
from PIL import Image

from pipeline.kernel.errors import PermanentStepError
from pipeline.orders.print_files.art import Art, at_dpi, crop
from pipeline.orders.print_files.interior import PrintBook, fit, print_pdf
from pipeline.orders.print_files.products import MM_PER_IN, PT_PER_IN, SAFETY_IN, PrintSpec
from pipeline.stories.font_embed import embed_cached
from pipeline.stories.typeset import draw_lines, line_height, mix


def render_cover(book: PrintBook, spec: PrintSpec, size_pt: tuple[float, float], front: Art,
                  back: Art) -> tuple[bytes, int, float]:
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
    pdf, fonts = print_pdf(w, h, book, text)
    pdf.add_page()
    safe = SAFETY_IN * MM_PER_IN
    back_x1 = margin + trim_w  # the back panel, with its outer margin
    front_x0 = back_x1 + spine
    min_dpi = 10_000

    def image(img: Image.Image, x: float, y: float, iw: float, ih: float) -> None:
        nonlocal min_dpi
        jpeg, dpi = at_dpi(img, iw, ih)
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
    draw_lines(pdf, fonts.wrap(blurb, bx1 - bx0, 14), bx0, py + pic_h + 12, bx1 - bx0, line_height(14),
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
            draw_lines(pdf, [line], cx - (trim_h - 2 * safe) / 2, cy - size * 0.3528 * 0.6, trim_h - 2 * safe,
                        size * 0.3528 * 1.2, Align.C, front.tint)
    # Front: the first illustration, full bleed over the panel and its outer margins.
    fw = w - front_x0
    image(crop(front.image, fw / h, front.focus_x), front_x0, 0, fw, h)
    fx0, fx1 = front_x0 + safe, front_x0 + trim_w - safe
    title = fonts.clean(book.title, "The book's title")
    size, _ = fit(fonts, title, fx1 - fx0 - 12, 3 * line_height(30), range(30, 15, -2), "B")
    lines = fonts.balanced(title, fx1 - fx0 - 12, size, "B")
    panel_h = len(lines) * line_height(size) * 0.95 + line_height(15) + 16
    top = margin + safe
    with pdf.local_context(fill_opacity=0.84):
        pdf.set_fill_color(*front.tint)
        pdf.rect(fx0, top, fx1 - fx0, panel_h, style="F", round_corners=True, corner_radius=4)
    pdf.set_font(fonts.family, style="B", size=size)
    y = draw_lines(pdf, lines, fx0 + 6, top + 6, fx1 - fx0 - 12, line_height(size) * 0.95, Align.C, front.shade)
    pdf.set_font(fonts.family, size=15)
    dedication = fonts.clean(f"A story for {' '.join(book.child_name.split())}", "The child's name")
    draw_lines(pdf, [dedication], fx0 + 6, y + 2, fx1 - fx0 - 12, line_height(15), Align.C,
                mix(front.shade, front.tint, 0.25))
    fonts.check_drawn("The cover's text")
    embed_cached(pdf)  # the fonts' subsets from this process's cache
    return bytes(pdf.output()), min_dpi, spine
