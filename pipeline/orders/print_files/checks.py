"""What a print shop checks in print files (the local print shop and the tests' fake Lulu use
this): page count for the binding, every page's size (trim + bleed), fonts embedded, and the
cover's size for this book.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from pipeline.orders.print_files.products import MM_PER_IN, PT_PER_IN, parse_pod_package


@dataclass(frozen=True)
class PdfInfo:
    """Facts about a PDF, as inspect_pdf reads them (sizes in pt)."""

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
