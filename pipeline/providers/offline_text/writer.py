"""The offline story writer: picture-book text from the hand-written kits, no model.

How a story is made
-------------------
Every theme follows a 24-slot story arc (``data/arc.toml``: opening, call to adventure, a
companion, a quest, challenges, a low point, the child's own clever or kind solution, the way
home, good night). Each slot has a *passage* (``kits.Passage``): simple sentences (ages 0-7),
rich sentences (ages 8-14), a one-sentence gist of each, and a beat line for the
outline/illustrator.

For ``page_count`` pages we keep the ``page_count`` most important slots (in arc order, so
page 1 is always the opening and the last page always the good-night ending). Every other
slot is folded into its nearest kept page as its gist sentence, so a 3-page story still has a
call to adventure and a solution, and a 24-page story gives every slot a page of its own.
A page's text is its slot's sentences (a prefix, so it reads as written) plus the folded
gists, sized to the age band's word range.

All choices (companion, quest, order of challenges, sights, style, title, page lengths) come
from ``random.Random`` seeded with the story's seed, so a story id always gives the same
story and every page can be written alone, on any worker, from (story, outline, page number).

The child is never given a pronoun (we don't know it): the text uses the name, and the
material avoids he/she/they altogether; a test keeps it that way.
"""
from __future__ import annotations

import logging
import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from pipeline.kernel.errors import PermanentStepError
from pipeline.providers.base import Outline, PageRequest, StoryRequest
from pipeline.providers.hints import hint_colour_word
from pipeline.providers.names import capitalize_name, title_with_name
from pipeline.providers.offline_text.kits import (
    MAX_PAGES,
    PLACEHOLDER,
    SIGHT_LETTERS,
    Companion,
    Kit,
    Passage,
    Quest,
    Sight,
    Slot,
    material,
)
from pipeline.providers.themes import THEMES, resolve_theme

log = logging.getLogger(__name__)

MIN_PAGES = 1


@dataclass(frozen=True)
class AgeBand:
    """Words per page for an age range, and which register of sentences to use."""

    name: str
    min_words: int
    max_words: int
    rich: bool  # rich sentences (8+) or simple ones (0-7)


YOUNG = AgeBand("0-3", 15, 30, rich=False)
MIDDLE = AgeBand("4-7", 30, 60, rich=False)
OLDER = AgeBand("8-14", 60, 110, rich=True)


def age_band(age: int) -> AgeBand:
    """The band for an age (years); ages past 14 read the oldest band, a baby the youngest."""
    if age <= 3:
        return YOUNG
    if age <= 7:
        return MIDDLE
    return OLDER


# The child's name is data: inserted as-is and never scanned for placeholders again, so a
# name like "{comp}" or "<b>" comes out literally (escaping is the renderer's job).
_LITERAL_KEYS = frozenset({"name", "name_s"})
_KEEP_FORMAT_CHARS = frozenset("\u200c\u200d")  # ZWNJ/ZWJ shape some scripts' letters


def fill(template: str, ctx: dict[str, str]) -> str:
    """``template`` with every ``{key}`` replaced by ``ctx[key]``; KeyError for an unknown key.

    Values other than the child's name may themselves contain placeholders (a fact such as
    ``"{name}'s garden"``) and are filled in turn; the name is inserted literally.
    """

    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        value = ctx[key]
        return value if key in _LITERAL_KEYS else fill(value, ctx)

    return PLACEHOLDER.sub(sub, template)


def _words(text: str) -> int:
    return len(text.split())


def normalize_name(raw: str) -> str:
    """The name as printed: NFC, whitespace collapsed, invisible control characters dropped."""
    name = " ".join(unicodedata.normalize("NFC", raw).split())
    return "".join(
        ch for ch in name
        if unicodedata.category(ch) not in ("Cc", "Cf") or ch in _KEEP_FORMAT_CHARS
    )


@dataclass(frozen=True)
class PlannedPage:
    """One page of a planned story: its outline beat, its text and the arc slots it tells."""

    beat: str
    text: str
    own: str  # the slot this page is about, e.g. "solution"
    slots: tuple[str, ...]  # every slot told on this page (its own and folded ones), in order


@dataclass(frozen=True)
class StoryPlan:
    """A whole story: the book title (with the child's name), the visual style, every page."""

    title: str
    style: str
    pages: tuple[PlannedPage, ...]


def _validate(req: StoryRequest) -> tuple[Kit, str]:
    theme = resolve_theme(req.theme or "")
    if theme is None:
        raise PermanentStepError(
            f"Unknown story theme '{req.theme}'. Choose one of: {', '.join(THEMES)}."
        )
    name = normalize_name(req.child_name or "")
    if not name:
        raise PermanentStepError("The child's name is empty. Please enter the child's name.")
    if not MIN_PAGES <= req.page_count <= MAX_PAGES:
        raise PermanentStepError(
            f"A story has {MIN_PAGES} to {MAX_PAGES} pages; {req.page_count} were asked for."
        )
    if req.child_age < 0:
        raise PermanentStepError(f"The child's age can't be negative ({req.child_age}).")
    return material().kits[theme.id], name


def story_context(name: str, kit: Kit, companion: Companion, quest: Quest,
                  sights: Sequence[Sight]) -> dict[str, str]:
    """The fill context of one story: a value for every key of ``kits.CONTEXT_KEYS``.

    ``sights`` are the kit's six sights in this story's order (A..F).
    """
    ctx: dict[str, str] = {"name": name, "name_s": f"{name}’s"}
    ctx.update(kit.facts.as_context())
    ctx.update(companion.facts())
    ctx["q_fixed_s"] = quest.fixed_simple
    ctx["q_fixed_r"] = quest.fixed_rich
    for letter, (simple, rich) in zip(SIGHT_LETTERS, sights, strict=True):
        ctx[f"sight{letter}_s"] = simple
        ctx[f"sight{letter}_r"] = rich
    return ctx


@lru_cache(maxsize=256)
def plan_story(req: StoryRequest) -> StoryPlan:
    """The whole story for a request: deterministic in the request (the seed drives choices).

    Cached because ``write_outline`` and every ``write_page`` on a worker rebuild the same plan.
    """
    kit, name = _validate(req)
    rng = random.Random(req.seed)
    # Every choice comes from the seed, drawn in a fixed order, so a story id gives the same
    # story on every worker. Editing a theme's material changes that theme's stories for the
    # same seeds: let in-flight stories finish before deploying such an edit.
    companions = [c for c in kit.companions if c.name.casefold() != name.casefold()]
    companion = rng.choice(companions or list(kit.companions))  # a child called Pip gets Nova
    quest = rng.choice(kit.quests)
    challenges = rng.sample(kit.challenges, len(kit.challenges))
    sights = rng.sample(kit.sights, len(kit.sights))
    style = rng.choice(kit.styles)
    title_template = rng.choice(quest.titles)
    m = material()
    closing = rng.choice(m.closings)

    ctx = story_context(name, kit, companion, quest, sights)
    passages: dict[str, Passage] = dict(m.generic)
    passages.update(
        opening=kit.opening, call=kit.call, journey=kit.journey, arrival=kit.arrival,
        quest=quest.quest, low_point=quest.low, solution=quest.solution,
        challenge_1=challenges[0], challenge_2=challenges[1], challenge_3=challenges[2],
        challenge_4=challenges[3], closing=closing,
    )
    passages["return"] = kit.home

    band = age_band(req.child_age)
    n = req.page_count
    slots = m.slots
    by_rank = sorted(range(len(slots)), key=lambda i: slots[i].rank)
    kept = sorted(by_rank[:n])
    folded: dict[int, list[int]] = {k: [] for k in kept}
    for i in range(len(slots)):
        if i not in folded:
            # Nearest kept page; a tie goes to the earlier page (the story has moved on less).
            folded[min(kept, key=lambda k: (abs(k - i), k))].append(i)

    pages = tuple(
        _compose_page(page_no, k, folded[k], slots, passages, band, ctx,
                      random.Random(f"{req.seed}:{n}:{page_no}"))
        for page_no, k in enumerate(kept, start=1)
    )
    return StoryPlan(title=title_with_name(fill(title_template, ctx), name), style=style, pages=pages)


def _compose_page(page_no: int, own: int, folded: list[int], slots: tuple[Slot, ...],
                  passages: dict[str, Passage], band: AgeBand, ctx: dict[str, str],
                  rng: random.Random) -> PlannedPage:
    """One page: its slot's sentences plus the gists of the slots folded into it, sized to
    the age band (a target drawn inside the band, so pages vary in length like a real book)."""
    own_passage = passages[slots[own].key]
    sentences = [fill(s, ctx) for s in (own_passage.rich if band.rich else own_passage.simple)]
    ending_tpl = own_passage.ending_rich if band.rich else own_passage.ending_simple
    ending = fill(ending_tpl, ctx) if ending_tpl else ""
    is_climax = slots[own].key == "solution"
    if is_climax and not ending:
        ending = sentences.pop()  # the line where the problem is solved is never cut
    lo, hi = band.min_words, band.max_words
    target = rng.randint(lo + (hi - lo) * 2 // 5, hi - (hi - lo) // 10)

    # The page's own passage goes first: the whole target for the climax (the child's own
    # solution is the heart of the book), a third of the band's minimum for other pages, so
    # a crowded page (a short book) still shows its own scene, not just summaries.
    own_min = target if is_climax else lo // 3
    total, used = _words(ending), 0
    while used < len(sentences) and (
        used == 0 or (total < own_min and total + _words(sentences[used]) <= hi)
    ):
        total += _words(sentences[used])
        used += 1
    # Folded slots carry the plot (a 3-page story still needs its call and its solution), so
    # their gists go in next, most important first, as long as the page stays in the band.
    gists: dict[int, str] = {}
    for i in sorted((i for i in folded if slots[i].foldable), key=lambda i: slots[i].rank):
        passage = passages[slots[i].key]
        gist = fill(passage.gist_rich if band.rich else passage.gist_simple, ctx)
        if total + _words(gist) <= hi:
            gists[i] = gist
            total += _words(gist)
    # Then more of the page's own passage, in order, up to the target.
    while used < len(sentences) and total < target:
        if total + _words(sentences[used]) > hi:
            break
        total += _words(sentences[used])
        used += 1

    parts: list[str] = []
    beats: list[str] = []
    for i in sorted([own, *gists]):
        if i == own:
            parts.append(" ".join([*sentences[:used], *([ending] if ending else [])]))
        else:
            parts.append(gists[i])
            beats.append(fill(passages[slots[i].key].beat, ctx))
    text = capitalize_name(" ".join(parts), ctx["name"])  # "mia" starts a sentence as "Mia"
    if total < lo or total > hi:
        # Material is tested against every band; this only fires for extreme names
        # (e.g. a name of many words), where a slightly long or short page is fine.
        log.info("page %d has %d words, outside %d-%d", page_no, total, lo, hi)
    beat = f"{slots[own].label}: {fill(own_passage.beat, ctx)}"
    if beats:
        beat += f" (also: {'; '.join(beats)})"
    told = tuple(slots[i].key for i in sorted([own, *gists]))
    return PlannedPage(beat=beat, text=text, own=slots[own].key, slots=told)


# --------------------------------------------------------------------------------------
# The StoryWriter
# --------------------------------------------------------------------------------------


# The closing lines a redone page may get from the offline writer (see write_page).
REDO_ENDINGS = (
    "This time, it felt even more wonderful.",
    "This time, every detail seemed brighter and bolder.",
    "This time, the whole adventure sparkled a little more.",
)


class LocalStoryWriter:
    """StoryWriter that writes from hand-written material: offline, instant, deterministic."""

    def write_outline(self, req: StoryRequest) -> Outline:
        """Title, one beat per page and a visual style note, all from the story's seed."""
        plan = plan_story(req)
        return Outline(title=plan.title, beats=tuple(p.beat for p in plan.pages),
                       style=plan.style)

    def write_page(self, req: PageRequest) -> str:
        """The text of one page. Depends only on the request: pages are written in parallel."""
        n = len(req.outline.beats)
        if not 1 <= req.page_number <= n:
            raise ValueError(f"page_number {req.page_number} is outside 1..{n}")
        if n != req.story.page_count:
            raise ValueError(
                f"the outline has {n} beats but the story asks for {req.story.page_count} pages"
            )
        page = plan_story(req.story).pages[req.page_number - 1]
        if req.outline.beats[req.page_number - 1] != page.beat:
            # An outline from another writer or an older version of this material: the page
            # still fits the story (same seed, same choices), but say so for whoever debugs it.
            log.warning("page %d: outline beat differs from this writer's plan",
                        req.page_number)
        if req.hint:
            # A redo's wish from the parent is data: the offline kit has no model to rewrite the
            # page, and never prints the parent's words (they may hold anything, a name or an
            # address). It takes a colour word from them (pipeline/providers/hints.py), else a
            # closing line chosen by the wish, so the redone page differs from the first one.
            colour = hint_colour_word(req.hint)
            if colour:
                return f"{page.text} This time, everything around them shimmered {colour}."
            endings = REDO_ENDINGS
            return f"{page.text} {endings[sum(req.hint.encode()) % len(endings)]}"
        return page.text
