"""The per-process cache of embedded font subsets (pipeline.stories.font_embed) never gives a book
another book's glyphs: books of several names and scripts rendered in one process, in both
orders, render pixel-identical to fpdf2's own subsets and extract the same text, and the cache
stays bounded."""
from __future__ import annotations

import hashlib
import io
from typing import Any

import pypdfium2 as pdfium
import pytest
from fpdf import FPDF
from PIL import Image

from pipeline.stories import book as book_module
from pipeline.stories import font_embed
from pipeline.stories.book import Book, BookPage, render_pdf
from pipeline.stories.typeset import FontSet

pytestmark = [pytest.mark.unit, pytest.mark.slow]

# Latin (ASCII, Latin-1 and Latin Extended-A letters), Cyrillic, Arabic, Devanagari, Chinese, Korean
NAMES = ["Liam", "Zoë", "Łukasz Żółć", "Анна", "محمد", "अनन्या", "李小龙", "서연"]


def _png(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (96, 72), (shade, 160, 220)).save(out, "PNG")
    return out.getvalue()


def _book(name: str) -> Book:
    pages = [BookPage(1, f"{name} found a shell that sang: “Hello!” — and {name} sang back…", _png(40)),
             BookPage(2, f"At 7 o'clock {name} counted 12 stars, then 3 more.", _png(90))]
    return Book(title=f"{name} and the Singing Shell", child_name=name, theme_title="Under the Sea", pages=pages)


def _seen(pdf: bytes) -> list[tuple[str, str]]:
    """Per page: the extracted text, and sha256 of its pixels at 1.5x (108 dpi)."""
    doc = pdfium.PdfDocument(pdf)
    out = []
    try:
        for i in range(len(doc)):
            page = doc[i]
            text = page.get_textpage()
            pixels = page.render(scale=1.5).to_pil().tobytes()
            out.append((text.get_text_range(), hashlib.sha256(pixels).hexdigest()))
            text.close()
            page.close()
    finally:
        doc.close()
    return out


def _fpdf2_own(name: str, monkeypatch: Any) -> list[tuple[str, str]]:
    """The book as fpdf2 embeds it without the cache (its own subset of each font)."""
    with monkeypatch.context() as mp:
        mp.setattr(book_module, "embed_cached", lambda pdf: None)
        return _seen(render_pdf(_book(name)))


def test_books_of_many_scripts_in_one_process_get_their_own_glyphs(monkeypatch: pytest.MonkeyPatch) -> None:
    # given what each book looks like with fpdf2's own font subsets
    expected = {n: _fpdf2_own(n, monkeypatch) for n in NAMES}
    font_embed.cache_clear()
    # when the books are rendered in one process, twice, in both orders (the second round from the cache)
    for name in [*NAMES, *reversed(NAMES)]:
        got = _seen(render_pdf(_book(name)))
        # then each looks exactly the same and its text extracts the same, with its name
        assert got == expected[name], name
        if name != "محمد":  # right to left: extracted in visual order (tests/test_names.py)
            assert f"A story for {name}" in got[0][0] and name in got[1][0]
    info = font_embed.cache_info()
    assert info["hits"] >= 2 * len(NAMES) and info["misses"] >= len(NAMES)


def test_books_of_one_script_share_a_subset_and_differ_where_their_letters_do() -> None:
    # given an empty cache
    font_embed.cache_clear()
    # when three ASCII-only books with other names and a name with an accent are rendered
    for name in ("Liam", "Noah", "Oskar"):
        render_pdf(_book(name))
    after_ascii = font_embed.cache_info()
    render_pdf(_book("Amélie"))
    after_accent = font_embed.cache_info()
    # then the ASCII books made one subset per body font (regular, bold) and reused them
    assert (after_ascii["misses"], after_ascii["hits"]) == (2, 4)
    # and the accented name made its own subset of the regular font (its bold, the title, too)
    assert after_accent["misses"] == 4


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # given room for two subsets
    monkeypatch.setattr(font_embed, "MAX_ENTRIES", 2)
    font_embed.cache_clear()
    # when books needing many subsets are rendered
    for name in ("Zoë", "Анна", "अनन्या", "李小龙"):
        render_pdf(_book(name))
    # then only the two most recent are kept
    assert font_embed.cache_info()["entries"] == 2
    monkeypatch.setattr(font_embed, "MAX_ENTRIES", 64)
    monkeypatch.setattr(font_embed, "MAX_BYTES", 1)  # and a byte bound keeps none bigger
    render_pdf(_book("Liam"))
    assert font_embed.cache_info()["entries"] == 0


def test_other_fonts_are_left_to_fpdf2() -> None:
    # given a book with the PDF core font and a document with a font fpdf2 loaded itself
    pdf = render_pdf(_book("Liam"), fonts=FontSet(None, None))
    assert "A story for Liam" in _seen(pdf)[0][0]
    from pipeline.stories.typeset import find_fonts

    doc = FPDF()
    doc.add_font("plain", fname=str(find_fonts().regular))
    doc.add_page()
    doc.set_font("plain", size=12)
    doc.cell(text="Zoë")
    font_embed.embed_cached(doc)  # a no-op for it
    assert "Zoë" in _seen(bytes(doc.output()))[0][0]


def test_an_embedded_font_keeps_its_glyph_ids_through_fpdf2s_subsetter() -> None:
    # given an embedded subset's glyph order
    from fontTools import subset as ftsubset

    font = font_embed.EmbeddedFont((".notdef", "space", "A", "B", "Aacute"), b"subset bytes")
    # when fpdf2's Subsetter pass asks for fewer glyphs (as it does at output)
    sub = ftsubset.Subsetter(ftsubset.Options(notdef_outline=True, recommended_glyphs=True))
    sub.populate(glyphs=["B", "Aacute"])
    sub.subset(font)
    # then the glyph ids are still the subset's, and save writes its bytes
    assert [font.getGlyphID(g) for g in ("B", "Aacute")] == [3, 4]
    out = io.BytesIO()
    font.save(out)
    assert out.getvalue() == b"subset bytes"
