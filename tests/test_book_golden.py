"""The reading book and the print files keep their layout: digests of known books, stored as data.

``tests/golden/books.json`` was made from ``pipeline/stories/book.py`` and
``pipeline/orders/print_files.py`` as they were before their split (issue 11: the typesetting in
pipeline.stories.typeset, the book in pipeline.stories.book, the print files in the
pipeline.orders.print_files package). Before the split was committed, ``build(exact=True)`` ran on
both trees and gave the same sha256 of every PDF's bytes (creation date fixed) and HTML page.

The stored digests are of each PDF's layout as pypdfium2 reads it back: page sizes, every text
and image object's bounds (0.01 pt), each text object's font (without the subset tag) and the
page's text, images by their pixel size (not their JPEG bytes, which a libjpeg build may change).
The books cover Latin, Arabic, Hebrew, CJK, Devanagari and Thai names, a page long enough to
shrink its picture and type, and pictures of several sizes and modes. A deliberate change of the
layout, or a font package with other metrics, fails here: look at a few pages, then rewrite the
file with ``.venv/bin/python -m tests.test_book_golden --write`` and say why in the commit.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.orders.print_files import PrintBook, PrintPage, cover_size_pt, parse_pod_package, render_print_files
from pipeline.stories.book import Book, BookPage, render_html, render_pdf

pytestmark = [pytest.mark.unit, pytest.mark.slow]

GOLDEN = Path(__file__).with_name("golden") / "books.json"
CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
HARDCOVER = "0850X0850FCPRECW080CW444GXX"
PAPERBACK = "0850X0850FCPREPB080CW444GXX"

LONG = " ".join(["Under the silver moon the little boat drifted past sleeping whales, humming reefs and a "
                 "lighthouse that blinked hello to every wave, while {name} counted the stars one by one."] * 4)
# (child's name, title, pages' texts): one book per script, and one long page
BOOKS: list[tuple[str, str, list[str]]] = [
    ("Zoë", "Zoë and the Singing Shell", ["Zoë found a shell that sang.", "“Hello!” said Zoë — and it sang back…"]),
    ("محمد", "محمد and the Desert Star",
     ["محمد looked up. The star said: “محمد, follow me!”", "said محمد. محمد counted"]),
    ("שירה", "The Garden of שירה", ["שירה planted a seed, and שירה waited."]),
    ("李小龙", "李小龙 Climbs the Mountain", ["李小龙 climbed higher, and higher.", "At the top, 李小龙 smiled."]),
    ("서연", "서연 and the Moon Rabbit", ["서연 met a rabbit on the moon."]),
    ("अनन्या", "अनन्या's Kite", ["अनन्या flew her kite over the river; अनन्या laughed."]),
    ("สมชาย", "สมชาย and the Elephant", ["สมชาย rode the gentle elephant home."]),
    ("Maximilian-Alexander Wolfeschlegelsteinhausen", "A Very Long Journey for Maximilian-Alexander",
     [LONG.format(name="Maximilian-Alexander"), "Short.", LONG.format(name="Max") + " " + LONG]),
]


def picture(i: int) -> bytes:
    """A deterministic illustration; its size and mode vary with ``i`` (PNG RGB 4:3, RGBA with
    transparency, JPEG, a picture wider than the book's 1600 px, a palette PNG)."""
    kind = i % 5
    w, h = [(960, 720), (480, 360), (800, 600), (2000, 1500), (640, 480)][kind]
    img = Image.new("RGB", (w, h))
    px = img.load()
    assert px is not None
    for y in range(0, h, 4):
        for x in range(0, w, 4):
            c = ((x * 255 // w + 40 * i) % 256, (y * 255 // h + 70 * i) % 256, (x + y + 30 * i) % 256)
            for dy in range(4):
                for dx in range(4):
                    if x + dx < w and y + dy < h:
                        px[x + dx, y + dy] = c
    out = io.BytesIO()
    if kind == 1:
        rgba = img.convert("RGBA")
        rgba.putalpha(Image.linear_gradient("L").resize((w, h)))
        rgba.save(out, "PNG")
    elif kind == 2:
        img.save(out, "JPEG", quality=85)
    elif kind == 4:
        img.convert("P", palette=Image.Palette.ADAPTIVE).save(out, "PNG")
    else:
        img.save(out, "PNG")
    return out.getvalue()


def reading_book(n: int) -> Book:
    name, title, texts = BOOKS[n]
    pages = [BookPage(i, t, picture(n + i)) for i, t in enumerate(texts, start=1)]
    cover = picture(n + 7) if n % 3 == 0 else None
    return Book(title=title, child_name=name, theme_title="Under the Sea", pages=pages, cover_image=cover)


def print_book(n: int) -> PrintBook:
    b = reading_book(n)
    return PrintBook(b.title, b.child_name, b.theme_title, [PrintPage(p.number, p.text, p.image) for p in b.pages],
                     CREATED)


def layout(pdf: bytes) -> dict[str, Any]:
    """The PDF as pypdfium2 reads it: pages, their objects' bounds, fonts and text; and a digest."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    doc = pdfium.PdfDocument(pdf)
    pages = []
    try:
        for i in range(len(doc)):
            page = doc[i]
            objs = []
            for obj in page.get_objects():
                item: list[Any] = [obj.type, [round(v, 2) for v in obj.get_bounds()]]
                if obj.type == pdfium_c.FPDF_PAGEOBJ_TEXT:
                    font = pdfium_c.FPDFTextObj_GetFont(obj.raw)
                    buf = (pdfium_c.c_char * 256)()
                    n = pdfium_c.FPDFFont_GetBaseFontName(font, buf, 256)
                    item.append(re.sub(r"^[A-Z]{6}\+", "", bytes(buf[:max(0, n - 1)]).decode("latin-1")))
                elif obj.type == pdfium_c.FPDF_PAGEOBJ_IMAGE:
                    item.append(list(obj.get_px_size()))
                objs.append(item)
            text = page.get_textpage()
            pages.append({"size": [round(v, 2) for v in page.get_size()], "objects": objs,
                          "text": text.get_text_range()})
            text.close()
            page.close()
    finally:
        doc.close()
    blob = json.dumps(pages, sort_keys=True, ensure_ascii=False).encode()
    return {"pages": len(pages), "layout": hashlib.sha256(blob).hexdigest()}


def _fixed_date(monkeypatch: Any) -> None:
    """Every FPDF document made while rendering gets CREATED as its creation date (the reading
    book takes the render's time), so the exact bytes can be compared."""
    from fpdf import FPDF

    init = FPDF.__init__

    def fixed(self: FPDF, *a: Any, **k: Any) -> None:
        init(self, *a, **k)
        self.creation_date = CREATED

    monkeypatch.setattr(FPDF, "__init__", fixed)


def build(exact: bool = False) -> dict[str, Any]:
    """The golden file's content; with ``exact``, also sha256 of the PDF bytes (creation date
    fixed) and of the HTML: the before/after comparison of the split, on one machine."""
    out: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as mp:
        _fixed_date(mp)
        for n in range(len(BOOKS)):
            book = reading_book(n)
            pdf = render_pdf(book)
            html = render_html(book, [f"p{i}.png" for i in range(len(book.pages))], "cover.png")
            entry: dict[str, Any] = {"book": layout(pdf), "html": hashlib.sha256(html.encode()).hexdigest()}
            if exact:
                entry["book_bytes"] = hashlib.sha256(pdf).hexdigest()
            if n in (0, 1, 3, 5, 7):  # print files are slower (300 dpi): one book per kind of script
                sku = PAPERBACK if n == 7 else HARDCOVER
                spec = parse_pod_package(sku)
                pages = max(24 if spec.hardcover else 32, 2 + 2 * len(book.pages))
                pages += pages % 2
                interior, cover, info = render_print_files(print_book(n), spec, cover_size_pt(spec, pages))
                entry["interior"] = layout(interior)
                entry["cover"] = layout(cover)
                entry["facts"] = {k: v for k, v in info.items() if not k.endswith(("_md5", "_bytes"))}
                if exact:
                    entry["interior_bytes"] = hashlib.sha256(interior).hexdigest()
                    entry["cover_bytes"] = hashlib.sha256(cover).hexdigest()
            out[f"{n}:{BOOKS[n][0]}"] = entry
    return out


def test_books_and_print_files_keep_their_layout() -> None:
    # given the layouts recorded from the renderer before its split
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    # when the same books are rendered now, then every PDF has the same pages, objects and text
    got = build()
    assert sorted(got) == sorted(golden)
    for k in golden:
        assert got[k] == golden[k], k


def test_a_reading_book_renders_byte_identical_twice() -> None:
    # given a fixed creation date, when a mixed-script book is rendered twice, the bytes are equal
    # (the per-process font caches change nothing in the output)
    with pytest.MonkeyPatch.context() as mp:
        _fixed_date(mp)
        assert render_pdf(reading_book(1)) == render_pdf(reading_book(1))
        assert render_pdf(reading_book(3)) == render_pdf(reading_book(3))


if __name__ == "__main__":
    if "--write" in sys.argv:
        GOLDEN.write_text(json.dumps(build(), indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {GOLDEN}")
    else:  # the exact digests, to compare two trees on one machine
        print(json.dumps(build(exact=True), indent=1, sort_keys=True, ensure_ascii=False))
