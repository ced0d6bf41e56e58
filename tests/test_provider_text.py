"""Text from a story provider is made printable where it enters (the outline and text steps),
not found unprintable at the very end after every paid step; a book that still meets a
character no font draws says which page and which kind of character; the HTML book isolates
names and right-to-left runs (<bdi>); no log line or step error carries the child's name.

Through a real worker with the OpenAI adapter in front of the fake OpenAI server."""
from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.stories.book import Book, BookPage, render_pdf
from pipeline.stories.book_html import render_html
from pipeline.stories.fonts import UnprintableTextError, printable_text, unprintable
from tests.fakes.openai_server import DEFAULT_KEY, FakeOpenAI
from tests.support import Db, WorkerProcess, astronaut_png, external_send, flush_redis

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
# not the session worker's: it would take these stories with its local writer
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 1}"
NAME = "Zephyrine-Quillon"  # distinctive: any occurrence in a log is this test's name
EMOJI = "🦖🌟🚀✨🎉🧸🌈🦄"  # none drawn by any shipped font
FAMILY = "👩\u200d👧"  # a ZWJ sequence


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (192, 144), (120, 170, 220)).save(out, "PNG")
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# The policy (pipeline.stories.fonts.printable_text)
# ---------------------------------------------------------------------------------------------


def test_emoji_are_dropped_and_the_spaces_around_them_tidied() -> None:
    assert all(unprintable(ch) for ch in EMOJI)
    got = printable_text(f"🚀 Mia waved at a star 🌟. It waved back ✨✨, and Mia laughed! {FAMILY}\u200d🦖",
                         "Mia", "Page 1's text")
    assert got.text == "Mia waved at a star. It waved back, and Mia laughed!"
    assert got.dropped == 9 and got.replaced == 0  # 🚀 🌟 ✨ ✨ 👩 ZWJ 👧 ZWJ 🦖
    assert got.counts() == {"chars_dropped": 9} and got.counts("title_") == {"title_chars_dropped": 9}


def test_symbols_without_a_glyph_are_printed_as_their_equivalent() -> None:
    # Mathematical bold letters (models use them for emphasis): Unicode's compatibility form
    got = printable_text("Mia found a \U0001d401\U0001d428\U0001d425\U0001d41d map.", "Mia", "x")
    assert got.text == "Mia found a Bold map." and got.replaced == 4 and got.dropped == 0
    assert not unprintable(got.text)


@pytest.mark.parametrize("name", ["mia", "محمد", "李小龙", "Zoë"])
def test_the_name_is_never_touched(name: str) -> None:
    text = f"{name.title()} 🌟 smiled, and {name} said 🦖 “hi”."
    got = printable_text(text, name, "x")
    assert got.text == f"{name.title()} smiled, and {name} said “hi”."
    assert got.text.count(name.title()) >= 1 and name in got.text


def test_letters_no_font_draws_are_refused_naming_the_kind_not_the_text() -> None:
    with pytest.raises(UnprintableTextError) as e:
        printable_text("Mia met ᏣᎳᎩ by the sea.", "Mia", "Page 3's text")
    assert "Page 3's text" in str(e.value) and "Cherokee characters" in str(e.value)
    assert "ᏣᎳᎩ" not in str(e.value) and "Mia" not in str(e.value)


def test_a_book_that_still_meets_an_undrawable_character_says_which_page_and_kind() -> None:
    pages = [BookPage(1, "Mia looked up.", png()), BookPage(2, "Mia waved 🦖.", png())]
    with pytest.raises(UnprintableTextError) as e:
        render_pdf(Book("Mia and the Moon", "Mia", "Space Adventure", pages))
    assert str(e.value).startswith("Page 2's text uses emoji or symbols"), str(e.value)
    assert "🦖" not in str(e.value) and "waved" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# The HTML book: names and right-to-left runs isolated
# ---------------------------------------------------------------------------------------------


class _Tree(HTMLParser):
    """Each element's attributes, and the text of each <p>/<h1> with its <bdi> runs marked."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: dict[str, dict[str, str | None]] = {}
        self.blocks: list[str] = []
        self.title = ""
        self._stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attrs.setdefault(tag, dict(attrs))
        self._stack.append(tag)
        if tag in ("p", "h1"):
            self.blocks.append("")
        elif tag == "bdi":
            self.blocks[-1] += "["

    def handle_endtag(self, tag: str) -> None:
        if tag == "bdi":
            self.blocks[-1] += "]"
        self._stack.pop()

    def handle_data(self, data: str) -> None:
        if self._stack and self._stack[-1] == "title":
            self.title += data
        elif "p" in self._stack or "h1" in self._stack:
            self.blocks[-1] += data


@pytest.mark.parametrize("name", ["محمد", "שירה", "Mia"])
def test_html_isolates_the_name_so_punctuation_stays_after_it(name: str) -> None:
    book = Book(f"{name} and the Moon", name, "Space Adventure",
                [BookPage(1, f"The moon said hello to {name}. {name} waved, and laughed.", png())])
    tree = _Tree()
    tree.feed(render_html(book, ["p1.png"], "p1.png"))
    assert tree.attrs["html"] == {"lang": "en", "dir": "ltr"}
    # The name is its own isolated run; the full stop and comma stay outside it, in the English
    assert f"[{name}] and the Moon" in tree.blocks
    assert f"A story for [{name}]" in tree.blocks
    assert f"The moon said hello to [{name}]. [{name}] waved, and laughed." in tree.blocks
    if name != "Mia":  # the document title cannot hold markup: Unicode isolates instead
        assert tree.title == f"\u2068{name}\u2069 and the Moon"


def test_html_isolates_right_to_left_words_that_are_not_the_name() -> None:
    book = Book("Mia's Trip", "Mia", "Space", [BookPage(1, "Mia said مرحبا بك, then sat.", png())])
    tree = _Tree()
    tree.feed(render_html(book, ["p1.png"], None))
    assert "[Mia] said [مرحبا بك], then sat." in tree.blocks


# ---------------------------------------------------------------------------------------------
# Through a real worker, with the OpenAI adapter and a model that loves emoji
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def openai_worker(db: Db, fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    flush_redis(BROKER)
    w = WorkerProcess(tmp_path_factory.mktemp("provider-text") / "worker.log", env={
        "CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "TEXT_PROVIDER": "openai",
        "OPENAI_API_KEY": DEFAULT_KEY, "OPENAI_BASE_URL": fake.base_url,
        "VISION_PROVIDER": "instant", "IMAGE_PROVIDER": "instant"})
    w.start()
    yield w
    w.stop()


def _step_lines(log: Path, stage: str) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if "storycreator.step: step " in line:
            entry = json.loads(line.split("storycreator.step: step ", 1)[1])
            if entry.get("stage") == stage:
                out.append(entry)
    return out


def _emoji_everywhere(field: str, value: str) -> str:
    if field == "title":
        return f"🚀 {value} ✨"
    if field == "text":
        return f"{value.replace('.', ' 🌟.', 1)} 🦖🎉 {FAMILY}"
    return value


def test_emoji_from_the_model_are_dropped_at_the_text_step_and_the_book_completes(
        clean_db: Db, fake: FakeOpenAI, openai_worker: WorkerProcess) -> None:
    # Given a model that sprinkles emoji no font draws into the title and every page
    fake.decorate = _emoji_everywhere
    try:
        story = clean_db.story(clean_db.photo(astronaut_png()), name=NAME)
        external_send(BROKER, "stories.generate", {"story_id": story})
        row = clean_db.wait_story(story, timeout=90)
    finally:
        fake.decorate = None
    # Then the book completes (it used to fail at the very end, after every paid step)
    assert row["status"] == "completed", row["error_message"]
    # and what was stored has none of those characters, the name intact
    assert row["title"].startswith(NAME) and not unprintable(row["title"]), row["title"]
    pages = clean_db.pages(story)
    assert pages and all(not unprintable(p["text"]) for p in pages)
    assert all(NAME in p["text"] and "\u200d" not in p["text"] and " ." not in p["text"] for p in pages)
    html = (clean_db.storage / f"stories/{story}/book.html").read_text()
    assert not any(ch in html for ch in EMOJI) and f"<bdi>{NAME}</bdi>" in html
    # And the steps' log lines count what was dropped (counts only, no text)
    texts = [e for e in _step_lines(openai_worker.log, "text") if e.get("story") == story and e["outcome"] == "done"]
    assert len(texts) == len(pages) and all(e["chars_dropped"] == 6 for e in texts), texts
    starts = [e for e in _step_lines(openai_worker.log, "outline") if e.get("story") == story]
    assert any(e.get("title_chars_dropped") == 2 for e in starts), starts
    log = openai_worker.log.read_text(errors="replace")
    assert NAME not in log and "Zephyrine" not in log and not any(ch in log for ch in EMOJI)


def test_a_book_meeting_an_undrawable_character_records_which_page_not_a_generic_error(
        clean_db: Db, openai_worker: WorkerProcess) -> None:
    from pipeline.stories.steps import finish_story

    # Given a finished story whose page 2 text holds an emoji (stored before this check existed)
    story = clean_db.story(clean_db.photo(astronaut_png()), name=NAME)
    external_send(BROKER, "stories.generate", {"story_id": story})
    assert clean_db.wait_story(story, timeout=90)["status"] == "completed"
    clean_db.exec("UPDATE story_pages SET text = text || ' 🦖' WHERE story_id = :s AND page_number = 2", s=story)
    clean_db.exec("UPDATE stories SET status = 'processing' WHERE id = :s", s=story)
    # When the book is assembled again
    result = finish_story(story)
    # Then the story fails with where and what, for an operator: not "(UnprintableTextError)"
    row = clean_db.story_row(story)
    assert row["status"] == "failed" and result.outcome.value == "failed"
    msg = row["error_message"]
    assert msg.startswith("The book could not be assembled: Page 2's text uses emoji or symbols"), msg
    assert "UnprintableTextError" not in msg and NAME not in msg and "🦖" not in msg
    errors = clean_db.all("SELECT message FROM step_errors WHERE story_id = :s AND stage = 'finish'", s=story)
    assert [e["message"] for e in errors] == [msg]


def test_a_refusal_quoting_the_name_reaches_no_log_and_no_step_error(
        clean_db: Db, fake: FakeOpenAI, openai_worker: WorkerProcess) -> None:
    # Given a model whose refusal quotes the child's name (they often do)
    fake.script([("refusal", f"I'm sorry, I can't write a story about {NAME} (zephyrine-quillon).")])
    story = clean_db.story(clean_db.photo(astronaut_png()), name=NAME)
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story, timeout=60)
    # Then the story fails with the provider's reason, the name replaced
    assert row["status"] == "failed"
    assert "OpenAI declined to write this story" in row["error_message"]
    assert "[the child's name]" in row["error_message"]
    errors = clean_db.all("SELECT message FROM step_errors WHERE story_id = :s", s=story)
    assert errors and all("Zephyrine" not in e["message"].title() for e in errors)
    # And the worker's log (step lines, Celery's task lines) never carries it
    log = openai_worker.log.read_text(errors="replace")
    assert "zephyrine" not in log.lower(), [ln for ln in log.splitlines() if "zephyrine" in ln.lower()]
