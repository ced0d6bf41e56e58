"""A child's name in the scripts parents write it in: drawn with real glyphs (never "?" or empty
boxes), shaped (joined Arabic letters, Indic conjuncts, combining marks) and in the right
direction, in the story book (PDF + HTML) and in the print files; refused at the story's start
when no font can draw it; capitalized where a sentence starts; never written to a log.

The PDFs are read back with pypdfium2: the text (through each glyph's ToUnicode entry), the font
each character is drawn with, where each glyph sits (visual order), and the rendered ink."""
from __future__ import annotations

import ctypes
import io
import json
import logging
import os
import re
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from PIL import Image

from pipeline.orders.print_files import (
    PrintBook,
    PrintPage,
    check_print_files,
    cover_size_pt,
    parse_pod_package,
    render_print_files,
)
from pipeline.providers.base import Outline, PageRequest, StoryRequest
from pipeline.providers.offline_text import LocalStoryWriter
from pipeline.stories.book import Book, BookPage, render_html, render_pdf
from pipeline.stories.fonts import UnprintableTextError, check_fonts, unprintable
from pipeline.stories.names import capitalize_name, title_with_name
from tests.support import Db, WorkerProcess, astronaut_png, external_send

BROKER = os.environ["CELERY_BROKER_URL"]

# name, the font family its letters must be drawn with, right-to-left
SCRIPTS = [
    ("李小龙", "NotoSansCJK", False),  # the example: "???" in a printed, shipped book
    ("さくら", "NotoSansCJK", False),  # Japanese kana
    ("서연", "NotoSansCJK", False),  # Korean Hangul
    ("محمد", "NotoNaskhArabic", True),
    ("שירה", "NotoSerifHebrew", True),
    ("अनन्या", "NotoSerifDevanagari", False),
    ("สมชาย", "NotoSerifThai", False),
    ("Ашот", "DejaVuSerif", False),
    ("Ελένη", "DejaVuSerif", False),
    ("Nguyễn", "DejaVuSerif", False),
    ("Zoe\u0308", "DejaVuSerif", False),  # decomposed: drawn as one ë
    ("Ọ̀ṣun", "DejaVuSerif", False),  # a dot below and a grave: no precomposed letter exists
]
UNPRINTABLE = ["ᏣᎳᎩ", "Mia 🦖", "Ann\u0378", "\U00012000"]  # Cherokee, emoji, unassigned, cuneiform


def png(w: int = 192, h: int = 144, color: tuple[int, int, int] = (120, 170, 220)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (w, h), color).save(out, "PNG")
    return out.getvalue()


def book(name: str, pages: int = 1) -> Book:
    req = StoryRequest(child_name=name, child_age=6, theme="space_adventure", page_count=pages, seed=7)
    writer = LocalStoryWriter()
    outline = writer.write_outline(req)
    texts = [writer.write_page(PageRequest(req, outline, i)) for i in range(1, pages + 1)]
    return Book(title=outline.title, child_name=name, theme_title="Space Adventure",
                pages=[BookPage(i, t, png()) for i, t in enumerate(texts, start=1)])


def print_book(b: Book, name: str) -> PrintBook:
    return PrintBook(b.title, name, b.theme_title, [PrintPage(1, b.pages[0].text, png())],
                     datetime(2026, 1, 1, tzinfo=UTC))


def page_chars(pdf: bytes, page: int) -> list[tuple[str, str, tuple[float, float, float, float]]]:
    """(character, font name, loose box) for every character of a page, in content order."""
    doc = pdfium.PdfDocument(pdf)
    tp = doc[page].get_textpage()
    out = []
    buf = ctypes.create_string_buffer(256)
    flags = ctypes.c_int()
    for i in range(tp.count_chars()):
        ch = tp.get_text_range(i, 1)
        pdfium_c.FPDFText_GetFontInfo(tp.raw, i, buf, 256, ctypes.byref(flags))
        out.append((ch, buf.value.decode(errors="replace"), tp.get_charbox(i, loose=True)))
    return out


def visual_lines(pdf: bytes, page: int) -> list[str]:
    """Each line's characters sorted left to right as drawn (spaces dropped)."""
    lines: dict[int, list[tuple[float, str]]] = {}
    for ch, _font, (left, bottom, right, top) in page_chars(pdf, page):
        if ch.strip():
            lines.setdefault(round(-(bottom + top) / 12), []).append(((left + right) / 2, ch))
    return ["".join(c for _, c in sorted(v)) for _, v in sorted(lines.items())]


def text_of(pdf: bytes) -> str:
    doc = pdfium.PdfDocument(pdf)
    return "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))


def expect_drawn(pdf: bytes, page: int, name: str, family: str, rtl: bool, before: str) -> None:
    """The page shows ``before`` + the name, in the name's direction, each letter in ``family``."""
    nfc = unicodedata.normalize("NFC", name)
    letters = [c for c in nfc if not unicodedata.category(c).startswith("M")]
    seen = "".join(visual_lines(pdf, page))
    assert "?" not in seen and "\ufffd" not in seen, seen
    # Direction: right-to-left names are drawn with their first letter rightmost
    shown = "".join(reversed(letters)) if rtl else "".join(letters)
    bare = "".join(c for c in unicodedata.normalize("NFD", seen) if not unicodedata.category(c).startswith("M"))
    want = "".join(c for c in unicodedata.normalize("NFD", before.replace(" ", "") + shown)
                   if not unicodedata.category(c).startswith("M"))
    assert want in bare, (want, seen)
    # Glyphs: every letter of the name comes from a font that has it (no tofu, no "?")
    fonts = {font for ch, font, _ in page_chars(pdf, page) if ch in letters}
    assert fonts and all(family in f for f in fonts), fonts


@pytest.mark.parametrize("name, family, rtl", SCRIPTS, ids=[s[0] for s in SCRIPTS])
def test_a_book_prints_the_name_in_its_own_script(name: str, family: str, rtl: bool) -> None:
    # Given a story for a child whose name is written in this script
    b = book(name)
    # When its book is rendered
    pdf = render_pdf(b)
    # Then the cover shows the title and "A story for <name>" with the name's own glyphs, in
    # its direction, and the story page too; the text layer reads back the name (searchable)
    expect_drawn(pdf, 0, name, family, rtl, "A story for ")
    nfc = unicodedata.normalize("NFC", name)
    assert nfc in text_of(pdf) or rtl
    assert "?" not in text_of(pdf)
    # And the HTML names the child as typed, isolated from the English around it, in UTF-8
    html = render_html(b, ["p1.png"], "p1.png")
    assert f"A story for <bdi>{name}</bdi>" in html and '<meta charset="utf-8">' in html


def ink_gaps(pdf: bytes, page: int, letters: str) -> int:
    """Blank pixel columns splitting the ink of the first run of ``letters`` on a page (rendered at
    8 px/pt). Joined Arabic is one stroke (0 gaps); letters in their isolated forms stand apart."""
    chars = page_chars(pdf, page)
    run: list[tuple[float, float, float, float]] = []
    for ch, _font, box in chars:
        if ch in letters:
            run.append(box)
        elif run:
            break
    assert run, "the name is not on the page"
    left, right = min(b[0] for b in run), max(b[2] for b in run)
    bottom, top = min(b[1] for b in run), max(b[3] for b in run)
    doc = pdfium.PdfDocument(pdf)
    scale = 8
    height = doc[page].get_height()
    img = np.asarray(doc[page].render(scale=scale).to_pil().convert("L"), dtype=int)
    crop = img[int((height - top) * scale):int((height - bottom) * scale), int(left * scale):int(right * scale)]
    ink = np.abs(crop - np.median(crop)) > 60
    cols = np.flatnonzero(ink.any(axis=0))
    assert cols.size, "no ink where the name is"
    inked = ink.any(axis=0)[cols[0]:cols[-1] + 1]
    return int(np.count_nonzero(inked[1:] & ~inked[:-1]) and np.count_nonzero(~inked[1:] & inked[:-1]))


def test_arabic_letters_are_joined_not_isolated() -> None:
    # Given an Arabic name whose four letters all join (meem, hah, meem, dal)
    pdf = render_pdf(book("محمد"))
    # Then its cover title is one connected stroke: shaped into its joined forms
    assert ink_gaps(pdf, 0, "محمد") == 0


def test_rtl_punctuation_stays_after_the_name() -> None:
    # Given "… felt sad. محمد polished …" on a page (English sentences around an Arabic name)
    pdf = render_pdf(book("محمد"))
    lines = visual_lines(pdf, 1)
    # Then each line reads left to right with the name in place, and the full stop before a
    # name stays with its own sentence (not drawn after the name, as a bare bidi run would)
    assert any("andدمحمfeltsad.دمحمpolished" in line for line in lines), lines
    assert lines[0].startswith("دمحمlovedthestars."), lines
    # And a two-word name keeps its words in right-to-left order
    lines = visual_lines(render_pdf(book("محمد علي")), 0)
    assert any("Astoryforيلعدمحم" in line for line in lines), lines


PRINT_SCRIPTS = [s for s in SCRIPTS if s[0] in ("李小龙", "محمد", "अनन्या", "Ọ̀ṣun")]


@pytest.mark.parametrize("name, family, rtl", PRINT_SCRIPTS, ids=[s[0] for s in PRINT_SCRIPTS])
def test_print_files_print_the_name_in_its_own_script(name: str, family: str, rtl: bool) -> None:
    # Given a one-page story in this script, as an order's print files render it
    b = book(name)
    spec = parse_pod_package("0850X0850FCPRECW080CW444GXX")
    cover_pt = cover_size_pt(spec, 24)
    pb = print_book(b, name)
    interior, cover, _info = render_print_files(pb, spec, cover_pt)
    # Then a print shop accepts them (fonts embedded, sizes) ...
    assert check_print_files(interior, cover, spec.pod_package_id, cover_pt) == []
    # ... and the title page, the story page and the cover show the name with its own glyphs
    expect_drawn(interior, 0, name, family, rtl, "A story for ")
    expect_drawn(interior, 1, name, family, rtl, "")
    expect_drawn(cover, 0, name, family, rtl, "A personalized story for ")
    assert "?" not in text_of(interior) + text_of(cover)


@pytest.mark.parametrize("name", UNPRINTABLE)
def test_a_name_no_font_can_draw_is_unprintable_and_fails_the_render_not_with_question_marks(
        name: str, caplog: pytest.LogCaptureFixture) -> None:
    # Given a name with characters no installed font has
    assert unprintable(name)
    caplog.set_level(logging.DEBUG)
    b = book("Sam")
    b.child_name = name  # as if it had slipped past the story's start
    # When its book or print files are built, Then they fail loudly (never "?" or boxes)
    with pytest.raises(UnprintableTextError) as e:
        render_pdf(b)
    spec = parse_pod_package("0850X0850FCPRECW080CW444GXX")
    pb = print_book(b, name)
    with pytest.raises(UnprintableTextError) as e2:
        render_print_files(pb, spec, cover_size_pt(spec, 24))
    # And neither the error nor any log line carries the name
    for text in (str(e.value), str(e2.value), *(r.getMessage() for r in caplog.records)):
        assert name not in text and name.split()[-1] not in text


@pytest.mark.parametrize("name", ["李小龙", "محمد", "Zoë"])
def test_no_log_line_carries_the_name_while_a_book_is_made(name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    render_pdf(book(name))
    # fpdf2's own missing-glyph warning quotes the text: its text arguments are withheld
    logging.getLogger("fpdf.output").warning("Font %s is missing the following glyphs: %s", "X", name)
    assert caplog.records
    assert not [r.getMessage() for r in caplog.records if name in r.getMessage()]


# ---------------------------------------------------------------------------------------------
# Capitals
# ---------------------------------------------------------------------------------------------


def test_a_lower_case_name_starts_sentences_and_the_title_in_capitals() -> None:
    # Given a name typed "mia"
    b = book("mia", pages=4)
    # Then the title and every sentence that starts with the name start with "Mia"
    assert b.title.startswith("Mia ")
    text = " ".join(p.text for p in b.pages)
    assert text.startswith("Mia") or "Mia" in text
    for end in (". ", "! ", "? ", "” ", "“"):
        assert f"{end}mia" not in text
    # And mid-sentence it stays as typed
    assert "said mia" in text or " mia" in text


@pytest.mark.parametrize("name", ["McKenzie", "de la Cruz", "DeShawn", "محمد", "李小龙", "ǆemal"])
def test_capitals_do_not_mangle_names_mid_sentence(name: str) -> None:
    b = book(name, pages=4)
    text = " ".join(p.text for p in b.pages)
    first = name[:1].title() + name[1:]
    # Mid-sentence the name is exactly as typed; at a sentence start only its first letter changes
    assert f"said {name}" in text or f" {name} " in text or f" {name}." in text
    assert b.title.startswith(first)
    assert capitalize_name(f"{name} ran. Then {name} sat.", name) == f"{first} ran. Then {name} sat."


def test_capitalize_name_rules() -> None:
    assert capitalize_name("mia ran. “mia!” said Mom. Hello, mia! mia?", "mia") == \
        "Mia ran. “Mia!” said Mom. Hello, mia! Mia?"
    assert capitalize_name("the miami sun. mia’s hat", "mia") == "the miami sun. Mia’s hat"
    assert title_with_name("a gift for zoë", "zoë") == "A gift for Zoë"


def test_the_openai_writer_capitalizes_the_name_too() -> None:
    from pipeline.providers.openai_text import OpenAIStoryWriter
    from tests.fakes.openai_server import DEFAULT_KEY, FakeOpenAI

    fake = FakeOpenAI(api_key=DEFAULT_KEY).start()
    try:
        writer = OpenAIStoryWriter(DEFAULT_KEY, base_url=fake.base_url, timeout=5.0)
        story = StoryRequest(child_name="mia", child_age=5, theme="space_adventure", page_count=2, seed=1)
        # Given a model that echoes the name as typed
        fake.script([("content", json.dumps({"title": "mia and the Moon", "style": "ink",
                                             "beats": ["mia looks up", "mia sleeps"]}))])
        outline = writer.write_outline(story)
        fake.script([("content", json.dumps({"text": "mia looked up. The moon smiled at mia."}))])
        text = writer.write_page(PageRequest(story, Outline(outline.title, outline.beats, outline.style), 1))
    finally:
        fake.stop()
    # Then the title and the sentence start are capitalized, the rest left as typed
    assert outline.title == "Mia and the Moon"
    assert text == "Mia looked up. The moon smiled at mia."


# ---------------------------------------------------------------------------------------------
# Through a real worker
# ---------------------------------------------------------------------------------------------


def test_an_unprintable_name_fails_the_story_up_front(clean_db: Db, worker: WorkerProcess) -> None:
    # Given stories for names no font can draw (Cherokee, emoji), sent as the external API does
    stories = {name: clean_db.story(clean_db.photo(astronaut_png()), name=name) for name in ("ᏣᎳᎩ", "Mia 🦖")}
    for story in stories.values():
        external_send(BROKER, "stories.generate", {"story_id": story})
    for name, story in stories.items():
        row = clean_db.wait_story(story, timeout=30)
        # Then each fails with a message for the parent naming the kind of characters
        assert row["status"] == "failed"
        kind = "Cherokee characters" if name == "ᏣᎳᎩ" else "emoji"
        assert kind in row["error_message"] and "cannot print" in row["error_message"], row["error_message"]
        assert "Arabic" in row["error_message"] and "Chinese" in row["error_message"]
        # before any provider work: no outline, no pages, the photo not even analysed
        assert row["title"] is None and clean_db.pages(story) == []
        ph = clean_db.one("SELECT p.* FROM photos p JOIN stories s ON s.protagonist_photo_id = p.id "
                          "WHERE s.id = :s", s=story)
        assert ph["ai_processing_status"] == "pending"
    # And the worker's log never carries the names
    log = worker.log.read_text(errors="replace")
    assert "ᏣᎳᎩ" not in log and "🦖" not in log


def test_a_chinese_and_an_arabic_name_complete_with_real_glyphs(clean_db: Db, worker: WorkerProcess) -> None:
    # Given the stories: "李小龙" (was "???") and "محمد" (was reversed and unjoined)
    stories = {name: clean_db.story(clean_db.photo(astronaut_png()), name=name) for name in ("李小龙", "محمد")}
    for story in stories.values():
        external_send(BROKER, "stories.generate", {"story_id": story})
    for name, story in stories.items():
        row = clean_db.wait_story(story, timeout=90)
        assert row["status"] == "completed", row["error_message"]
        # Then the book shows the name with its own glyphs, in its direction, joined
        pdf = (clean_db.storage / f"stories/{story}/book.pdf").read_bytes()
        family, rtl = ("NotoSansCJK", False) if name == "李小龙" else ("NotoNaskhArabic", True)
        expect_drawn(pdf, 0, name, family, rtl, "A story for ")
        assert "?" not in text_of(pdf)
        if rtl:
            assert ink_gaps(pdf, 0, name) == 0
    log = worker.log.read_text(errors="replace")
    assert "李小龙" not in log and "محمد" not in log


def test_a_worker_without_the_fonts_refuses_to_start(tmp_path: Path) -> None:
    check_fonts()  # this machine has them (./run installs them)
    # Given a worker pointed at a font folder without them
    empty = tmp_path / "fonts"
    empty.mkdir()
    w = WorkerProcess(tmp_path / "worker.log", env={"STORYBOOK_FONT_DIR": str(empty)})
    # Then it exits at boot, non-zero, with one line saying what to install
    with pytest.raises(RuntimeError, match="exited with"):
        w.start(timeout=60)
    assert "configuration error: fonts for" in w.log.read_text() and "fonts-noto-core" in w.log.read_text()


@pytest.mark.parametrize("name", ["محمد", "אריאל", "عبد الله"])
def test_html_book_isolates_a_right_to_left_name_in_the_english_sentences(name: str) -> None:
    """HTML does not isolate a run of text by itself: in "said محمد. محمد followed" the period
    and space between two right-to-left names take their direction, and a browser shows
    "said محمد .محمد followed". The PDF ends each such run with an LRM (_draw_lines); the HTML
    book must isolate each one (<bdi>, https://html.spec.whatwg.org/#the-bdi-element)."""
    b = book(name, pages=12)
    texts = " ".join(p.text for p in b.pages)
    html = render_html(b, [f"p{i}.png" for i in range(1, 13)], None)
    body = html.split("</header>", 1)[1]
    paragraphs = re.findall(r'<p class="text">(.*?)</p>', body, re.S)
    assert paragraphs and name in texts
    for p in paragraphs:
        outside = re.sub(r"<bdi>[^<]*</bdi>", "", p)
        assert not re.search("[\u0590-\u08ff]", outside), p  # every right-to-left letter is isolated
        for run in re.findall(r"<bdi>([^<]*)</bdi>", p):
            assert run.strip() == run and not re.search(r"[.,!?;:\"“”]", run), p  # only the name's own text
    # the text reads the same once the isolation is taken away (nothing added, nothing lost)
    plain = " ".join(re.sub(r"</?bdi>", "", p) for p in paragraphs)
    assert plain.replace("&#x27;", "'").replace("&quot;", '"') == " ".join(
        " ".join(t.split()) for t in (p.text for p in b.pages)).replace("&", "&amp;").replace(
        "<", "&lt;").replace(">", "&gt;")
