"""An order's print files, rendered and stored: the interior and the cover with the facts the
order keeps about them (page counts, spine, lowest dpi, md5 checksums for the print shop).

Rendering is CPU work (~0.15 s per 300 dpi picture): the step runs it through pipeline.kernel.cpu.
"""
from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from pipeline.kernel.errors import PermanentStepError
from pipeline.orders.print_files.art import art
from pipeline.orders.print_files.cover import render_cover
from pipeline.orders.print_files.interior import Interior, PrintBook, PrintPage
from pipeline.orders.print_files.products import (
    BLEED_IN,
    PrintSpec,
    interior_plan,
    parse_pod_package,
    print_file_key,
)


def render_print_files(book: PrintBook, spec: PrintSpec, cover_pt: tuple[float, float]
                       ) -> tuple[bytes, bytes, dict[str, Any]]:
    """(interior PDF, cover PDF, facts about them) for ``book`` as ``spec``."""
    if not book.pages:
        raise PermanentStepError("The story has no pages to print.")
    plan = interior_plan(len(book.pages), spec)
    arts = [art(p.image, f"page {p.number}") for p in book.pages]
    interior = Interior(book, spec, plan, arts)
    interior_pdf = interior.render()
    cover_pdf, cover_dpi, spine = render_cover(book, spec, cover_pt, arts[0], arts[1] if len(arts) > 1 else arts[0])
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
