"""The offline story writer (pipeline.providers.offline_text) and the book renderer (pipeline.stories.book).

No services needed: these are pure functions over hand-written material, Pillow and fpdf2.
"""
from __future__ import annotations

import io
import re
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from pipeline.kernel.errors import PermanentStepError
from pipeline.providers.base import Outline, PageRequest, StoryRequest
from pipeline.providers.offline_text import (
    MAX_PAGES,
    LocalStoryWriter,
    age_band,
    material,
    normalize_name,
    plan_story,
)
from pipeline.providers.offline_text.kits import Passage
from pipeline.providers.offline_text.writer import fill
from pipeline.stories.book import Book, BookPage, render_html, render_pdf
from pipeline.stories.fonts import UnprintableTextError
from pipeline.stories.themes import THEMES, Theme, resolve_theme
from pipeline.stories.typeset import FontSet, find_fonts

AGES = (2, 6, 11)
PAGE_COUNTS = (1, 3, 12, 24)
SEEDS = (1, 2, 3)
# The child's pronoun is unknown, so the material must never use one (nor "they").
PRONOUNS = re.compile(
    r"\b(he|she|him|his|her|hers|himself|herself|they|them|their|theirs|themselves|themself)\b",
    re.IGNORECASE,
)


def write_story(
    name: str, age: int, theme: str, pages: int, seed: int
) -> tuple[Outline, list[str]]:
    writer = LocalStoryWriter()
    req = StoryRequest(child_name=name, child_age=age, theme=theme, page_count=pages, seed=seed)
    outline = writer.write_outline(req)
    texts = [writer.write_page(PageRequest(req, outline, i)) for i in range(1, pages + 1)]
    return outline, texts


def words(text: str) -> int:
    return len(text.split())


# ---------------------------------------------------------------------------------------------
# The hand-written material itself
# ---------------------------------------------------------------------------------------------


def filled_passages() -> list[tuple[str, Passage, dict[str, str]]]:
    """(where, passage, context) for every passage of every theme x companion x quest."""
    out = []
    for theme_id, kit in material().kits.items():
        for comp in kit.companions:
            for qi, quest in enumerate(kit.quests):
                ctx = {"name": "Mia", "name_s": "Mia’s", **kit.facts.as_context(), **comp.facts(),
                       "q_fixed_s": quest.fixed_simple, "q_fixed_r": quest.fixed_rich}
                for letter, (simple, rich) in zip("ABCDEF", kit.sights, strict=True):
                    ctx[f"sight{letter}_s"], ctx[f"sight{letter}_r"] = simple, rich
                passages = {
                    **material().generic, "opening": kit.opening, "call": kit.call,
                    "journey": kit.journey, "arrival": kit.arrival, "home": kit.home,
                    "quest": quest.quest, "low": quest.low, "solution": quest.solution,
                    **{f"challenge{i}": c for i, c in enumerate(kit.challenges)},
                    **{f"closing{i}": c for i, c in enumerate(material().closings)},
                }
                for key, p in passages.items():
                    out.append((f"{theme_id}/{comp.name}/quest{qi}/{key}", p, ctx))
    return out


def all_filled_material() -> list[tuple[str, str]]:
    """(where, text) for every template of every theme x companion x quest, filled."""
    out: list[tuple[str, str]] = []
    for where, p, ctx in filled_passages():
        for field in ("beat", "gist_simple", "gist_rich", "ending_simple", "ending_rich"):
            out.append((f"{where}.{field}", fill(getattr(p, field), ctx)))
        for i, s in enumerate(p.simple):
            out.append((f"{where}.simple[{i}]", fill(s, ctx)))
        for i, s in enumerate(p.rich):
            out.append((f"{where}.rich[{i}]", fill(s, ctx)))
    for theme_id, kit in material().kits.items():
        for quest in kit.quests:
            for title in quest.titles:
                out.append((f"{theme_id}/title", fill(title, {"name": "Mia"})))
    return out


def test_material_fills_cleanly_and_never_uses_a_pronoun_for_anyone() -> None:
    # Given every template of every theme, companion and quest, filled for "Mia"
    material = all_filled_material()
    # Then no placeholder is left over (a KeyError would have failed already) ...
    leftovers = [(w, t) for w, t in material if "{" in t or "}" in t]
    assert leftovers == []
    # ... and no text uses he/she/they: we don't know the child's gender
    with_pronouns = [(w, t) for w, t in material if PRONOUNS.search(t)]
    assert with_pronouns == []


def test_every_passage_names_the_child_first_and_fills_a_page_of_its_own() -> None:
    # Given every passage of every theme x companion x quest, filled for "Mia"
    for where, p, ctx in filled_passages():
        simple = [fill(s, ctx) for s in (*p.simple, p.ending_simple)]
        rich = [fill(s, ctx) for s in (*p.rich, p.ending_rich)]
        # Then its first sentence (always printed) names the child in both registers
        assert "Mia" in simple[0] and "Mia" in rich[0], where
        # And it has enough text for a page of its own in a 24-page book, with a margin
        # over the band minimums (30 words for ages 4-7, 60 for 8-14)
        assert sum(map(words, simple)) >= 36, (where, sum(map(words, simple)))
        assert sum(map(words, rich)) >= 66, (where, sum(map(words, rich)))
        # And no sentence is empty (a stray "|" in the material)
        assert all(s.strip() for s in (*p.simple, *p.rich)), where


# ---------------------------------------------------------------------------------------------
# Stories: page counts, names, age bands, determinism
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("theme", sorted(THEMES))
@pytest.mark.parametrize("age", AGES)
@pytest.mark.parametrize("pages", PAGE_COUNTS)
def test_every_theme_age_and_length_gives_the_right_pages_in_the_age_band(
    theme: str, age: int, pages: int
) -> None:
    band = age_band(age)
    for seed in SEEDS:
        # Given a story request for Mia
        # When the outline and every page are written
        outline, texts = write_story("Mia", age, theme, pages, seed)
        # Then there is exactly one beat and one text per page
        assert len(outline.beats) == pages and len(texts) == pages
        # And the title and every page name the child
        assert "Mia" in outline.title
        for i, text in enumerate(texts, start=1):
            assert "Mia" in text, (seed, i, text)
            # And each page's length fits the age band
            assert band.min_words <= words(text) <= band.max_words, (seed, i, words(text), text)
            assert not PRONOUNS.search(text), text
        # And page 1 opens the story and the last page says good night
        assert outline.beats[0].startswith("Opening:")
        assert "good night" in texts[-1].lower()
        if pages > 1:
            assert outline.beats[-1].startswith("Good night:")
        # And the visual style note is set
        assert outline.style


def test_age_bands_cover_every_age() -> None:
    # Given the brief's bands: 0-3 (15-30 words), 4-7 (30-60), 8-14 (60-110)
    assert [(age_band(a).min_words, age_band(a).max_words) for a in (0, 3)] == [(15, 30)] * 2
    assert [(age_band(a).min_words, age_band(a).max_words) for a in (4, 7)] == [(30, 60)] * 2
    assert [(age_band(a).min_words, age_band(a).max_words) for a in (8, 14)] == [(60, 110)] * 2
    # And older children (15+) read the oldest band rather than failing
    assert age_band(16).rich


def test_same_seed_same_story_and_pages_can_be_written_alone_in_any_order() -> None:
    # Given a story written page by page in order
    outline, texts = write_story("Mia", 6, "pirates", 12, seed=77)
    req = StoryRequest("Mia", 6, "pirates", 12, 77)
    # When the cache is cleared (as on another worker) and pages are written by fresh
    # writers, in parallel and in reverse order
    plan_story.cache_clear()
    assert LocalStoryWriter().write_outline(req) == outline
    plan_story.cache_clear()

    def page(i: int) -> str:
        return LocalStoryWriter().write_page(PageRequest(req, outline, i))

    with ThreadPoolExecutor(4) as pool:
        again = list(pool.map(page, range(12, 0, -1)))[::-1]
    # Then every page is identical
    assert again == texts


def test_different_seeds_give_different_stories() -> None:
    for theme in THEMES:
        # Given ten seeds for the same child and theme
        stories = [write_story("Mia", 6, theme, 12, seed) for seed in range(10)]
        # Then the texts differ: companions, quests, challenges and sights vary by seed
        assert len({tuple(texts) for _, texts in stories}) >= 8, theme
        # And so do the outlines (what the illustrator sees)
        assert len({outline.beats for outline, _ in stories}) >= 8, theme
    # And two specific neighbouring seeds differ
    assert write_story("Mia", 6, "space", 12, 1)[1] != write_story("Mia", 6, "space", 12, 2)[1]


def test_each_page_follows_its_beat() -> None:
    # Given a 12-page story
    outline, texts = write_story("Mia", 9, "underwater", 12, seed=5)
    plan = plan_story(StoryRequest("Mia", 9, "underwater", 12, 5))
    # Then the default arc is: opening, call, friend, quest, three challenges, low point,
    # solution, celebration, return, good night
    assert [p.own for p in plan.pages] == [
        "opening", "call", "companion", "quest", "challenge_1", "challenge_2", "challenge_3",
        "low_point", "solution", "celebration", "return", "closing"]
    own = [b.split(":")[0] for b in outline.beats]
    assert own == ["Opening", "Call to adventure", "A new friend", "The quest",
                   "First challenge", "Second challenge", "Third challenge", "Low point",
                   "The solution", "Celebration", "Return home", "Good night"]
    # And the companion named in the outline is the one in the text
    met = re.search(r"meets (\w+)", outline.beats[2])
    assert met is not None
    assert met.group(1) in texts[2]


@pytest.mark.parametrize("age", AGES)
def test_short_books_still_solve_the_problem_on_the_solution_page(age: int) -> None:
    rich = age_band(age).rich
    for theme_id, kit in material().kits.items():
        # Given the line of each quest where the child solves the problem, for any companion
        resolutions = {
            fill((q.solution.rich if rich else q.solution.simple)[-1],
                             {"name": "Mia", "name_s": "Mia’s", **c.facts()})
            for q in kit.quests for c in kit.companions
        }
        for pages in (3, 5, 12):
            for seed in SEEDS:
                # When a short book is planned
                plan = plan_story(StoryRequest("Mia", age, theme_id, pages, seed))
                solution = next(p for p in plan.pages if p.own == "solution")
                # Then its solution page still tells how the problem was solved
                assert any(line in solution.text for line in resolutions), solution.text


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_unknown_theme_is_a_permanent_error_listing_the_themes() -> None:
    # Given a theme this backend does not know
    req = StoryRequest("Mia", 6, "wild_west", 12, 1)
    # When the outline is written, Then it fails permanently with the list of themes
    with pytest.raises(PermanentStepError) as err:
        LocalStoryWriter().write_outline(req)
    message = str(err.value)
    assert message.startswith("Unknown story theme 'wild_west'. Choose one of: ")
    for theme_id in THEMES:
        assert theme_id in message


def test_theme_aliases_and_spellings_are_accepted() -> None:
    # Given the spellings the external API has been seen to send
    for raw in ("space", "Space Adventure", "under-the-sea", "DINOSAUR"):
        # Then a story is written
        assert LocalStoryWriter().write_outline(StoryRequest("Mia", 6, raw, 3, 1)).beats


@pytest.mark.parametrize("bad", [0, 13, -1])
def test_page_number_out_of_range_is_a_value_error(bad: int) -> None:
    # Given a 12-page outline
    req = StoryRequest("Mia", 6, "space", 12, 1)
    outline = LocalStoryWriter().write_outline(req)
    # When a page outside 1..12 is asked for, Then it is a programming error
    with pytest.raises(ValueError):
        LocalStoryWriter().write_page(PageRequest(req, outline, bad))


@pytest.mark.parametrize("pages", [0, MAX_PAGES + 1])
def test_page_count_out_of_range_is_a_permanent_error(pages: int) -> None:
    with pytest.raises(PermanentStepError):
        LocalStoryWriter().write_outline(StoryRequest("Mia", 6, "space", pages, 1))


@pytest.mark.parametrize("name", ["", "   ", "\u200b\n"])
def test_empty_name_is_a_permanent_error(name: str) -> None:
    with pytest.raises(PermanentStepError):
        LocalStoryWriter().write_outline(StoryRequest(name, 6, "space", 3, 1))


# ---------------------------------------------------------------------------------------------
# Names are data
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, printed",
    [
        ("Zoë", "Zoë"),
        ("Zoe\u0308", "Zoë"),  # decomposed input comes out composed (one glyph in the PDF)
        ("José", "José"),
        ("李明", "李明"),
        ("O'Brien", "O'Brien"),
        ("Mary-Kate", "Mary-Kate"),
        ("  Anna  Lena \t", "Anna Lena"),
        ('<script>alert("x")</script>', '<script>alert("x")</script>'),
        ("{comp} {name}", "{comp} {name}"),  # not a template: printed literally
    ],
)
def test_any_name_is_printed_as_given_stripped(raw: str, printed: str) -> None:
    # Given a child's name with Unicode, quotes, markup or braces
    assert normalize_name(raw) == printed
    for theme in ("space", "pirates"):
        # When a story is written
        outline, texts = write_story(raw, 6, theme, 12, seed=3)
        # Then the title and every page contain the name exactly as printed
        assert printed in outline.title
        for text in texts:
            assert printed in text
        # And the story is otherwise the same as for any other name of one word
        assert not PRONOUNS.search(" ".join(texts).replace(printed, "X"))


def test_a_child_named_like_a_companion_gets_another_companion() -> None:
    # Given children named like every space companion
    for name in ("Pip", "Nova", "Zib"):
        for seed in range(6):
            outline, _ = write_story(name, 6, "space", 12, seed)
            # Then the child never meets a companion with the same name
            assert f"meets {name}," not in outline.beats[2]


# ---------------------------------------------------------------------------------------------
# The book: PDF and HTML
# ---------------------------------------------------------------------------------------------


def gradient_png(w: int = 960, h: int = 720, hue: int = 0) -> bytes:
    """A soft two-colour gradient, like an illustration without the drawing."""
    top = np.array([255, 214 - hue, 170 + hue], dtype=float)
    bottom = np.array([120 + hue, 170, 230 - hue], dtype=float)
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    rows = (top + (bottom - top) * t).astype(np.uint8)  # h x 1 x 3
    out = io.BytesIO()
    Image.fromarray(np.repeat(rows, w, axis=1), "RGB").save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return [gradient_png(hue=i * 6) for i in range(4)]


def resolved_theme(raw: str) -> Theme:
    theme = resolve_theme(raw)
    assert theme is not None
    return theme


def make_book(name: str, pages: int, images: list[bytes], theme: str = "space",
              age: int = 6) -> Book:
    outline, texts = write_story(name, age, theme, pages, seed=11)
    return Book(
        title=outline.title,
        child_name=name,
        theme_title=resolved_theme(theme).title,
        pages=[BookPage(i, t, images[i % len(images)]) for i, t in enumerate(texts, start=1)],
        cover_image=None,
    )


def pdf_page_count(pdf: bytes) -> int:
    """Pages in a PDF, by pypdfium2 when installed, else by counting /Type /Page objects."""
    try:
        import pypdfium2 as pdfium
    except ImportError:
        return len(re.findall(rb"/Type\s*/Page\b", pdf))
    return len(pdfium.PdfDocument(pdf))


def pdf_text(pdf: bytes) -> str:
    pdfium = pytest.importorskip("pypdfium2")
    doc = pdfium.PdfDocument(pdf)
    return "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))


def test_pdf_has_a_cover_and_one_page_per_story_page(images: list[bytes]) -> None:
    # Given a 12-page book
    book = make_book("Mia", 12, images)
    # When it is rendered
    started = time.perf_counter()
    pdf = render_pdf(book)
    elapsed = time.perf_counter() - started
    # Then it is a PDF with the cover plus 12 pages
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert pdf_page_count(pdf) == 13
    # And the title is its document title (readable without a PDF library)
    assert b"/Title (Mia and the" in pdf
    # And it is quick and small: JPEG images, subset fonts (generous bound for slow CI)
    assert elapsed < 3.0
    assert len(pdf) < 2_500_000


def test_pdf_text_has_the_title_the_dedication_and_the_story(images: list[bytes]) -> None:
    # Given a 3-page book
    book = make_book("Mia", 3, images)
    # When it is rendered and its text extracted
    text = pdf_text(render_pdf(book))
    flat = " ".join(text.split())
    # Then the cover shows the title and "A story for Mia", and the pages show the story
    assert book.title in flat
    assert "A story for Mia" in flat
    assert " ".join(book.pages[0].text.split()[:4]) in flat


@pytest.mark.parametrize("name", ["Zoë", "José", "李明", "O'Brien", "Ашот", "محمد"])
def test_pdf_renders_any_name_without_crashing(name: str, images: list[bytes]) -> None:
    # Given a book for a child whose name the body font may not cover
    book = make_book(name, 3, images)
    # When it is rendered, Then it is a valid PDF with all pages
    pdf = render_pdf(book)
    assert pdf_page_count(pdf) == 4


def test_pdf_latin_names_keep_their_accents(images: list[bytes]) -> None:
    # Given a name with accents
    text = pdf_text(render_pdf(make_book("Zoë", 1, images)))
    # Then the PDF text has the accented name, not a replacement
    assert "A story for Zoë" in " ".join(text.split())


def test_pdf_without_any_ttf_font_still_renders(images: list[bytes]) -> None:
    # Given no TrueType font at all (a bare machine): the PDF core font is used
    book = make_book("Zoë", 2, images)
    pdf = render_pdf(book, fonts=FontSet(regular=None, bold=None, fallbacks=()))
    # Then a Latin-1 book still renders, accents intact
    assert pdf_page_count(pdf) == 3
    text = " ".join(pdf_text(pdf).split())
    assert "A story for Zoë" in text
    # But a name the core font cannot draw fails the render: never "?" in a book
    with pytest.raises(UnprintableTextError, match=r"Chinese \(Han\) characters"):
        render_pdf(make_book("Zoë 李明", 2, images), fonts=FontSet(regular=None, bold=None, fallbacks=()))


def test_pdf_uses_cover_image_and_accepts_jpeg_and_rgba(images: list[bytes]) -> None:
    # Given a book with an RGBA PNG page, a JPEG page and a separate cover image
    rgba = io.BytesIO()
    Image.new("RGBA", (960, 720), (255, 0, 0, 128)).save(rgba, "PNG")
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(images[1])).save(jpeg, "JPEG")
    book = make_book("Mia", 2, images)
    book.pages[0].image, book.pages[1].image = rgba.getvalue(), jpeg.getvalue()
    book.cover_image = images[3]
    # When it is rendered, Then all three images are embedded as JPEG
    pdf = render_pdf(book)
    assert pdf_page_count(pdf) == 3
    assert len(re.findall(rb"/Filter\s*/DCTDecode", pdf)) == 3


def test_pdf_rejects_an_unreadable_image(images: list[bytes]) -> None:
    book = make_book("Mia", 2, images)
    book.pages[1].image = b"not an image"
    with pytest.raises(ValueError, match="page 2"):
        render_pdf(book)


def test_fonts_are_found_on_this_machine() -> None:
    # Given this machine (Debian with fonts-dejavu-core, as the project's machines have)
    fonts = find_fonts()
    # Then a Unicode TrueType font is used, not the Latin-1 core font
    assert fonts.regular is not None and fonts.regular.exists()


def test_html_escapes_the_name_title_and_text() -> None:
    # Given a book for a child whose name is markup
    name = '<script>alert("x")</script>'
    book = make_book(name, 3, [b""])
    # When it is rendered as HTML
    html = render_html(book, [f"page-{i}.jpg" for i in (1, 2, 3)], "cover.jpg")
    # Then the name never appears as markup, only escaped
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    # And the images are referenced by the given URLs, with the cover first
    assert html.index('src="cover.jpg"') < html.index('src="page-1.jpg"')
    assert 'src="page-3.jpg"' in html
    # And it is a complete, mobile-friendly page in UTF-8
    assert html.startswith("<!DOCTYPE html>")
    assert '<meta name="viewport"' in html and '<meta charset="utf-8">' in html


def test_html_escapes_urls_and_refuses_script_urls() -> None:
    book = make_book("Mia", 2, [b""])
    # Given URLs that try to break out of the attribute or run script
    html = render_html(book, ['a.jpg" onerror="alert(1)', "javascript:alert(1)"], None)
    # Then the quote is escaped and the script URL is not used
    assert 'onerror="alert(1)"' not in html
    assert "javascript:" not in html


def test_html_needs_one_url_per_page() -> None:
    book = make_book("Mia", 3, [b""])
    with pytest.raises(ValueError):
        render_html(book, ["a.jpg"], None)
