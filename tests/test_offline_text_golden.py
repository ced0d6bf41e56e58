"""The offline story writer keeps writing the same stories: digests of known outputs, stored as data.

``tests/golden/offline_text.json`` was made from ``pipeline.providers.local_text`` (the code the
kits were converted from, issue 11) and checked equal to ``offline_text``'s output for every theme
x name x age x page count before that module was deleted. A change to the kits' text, to the order
of a list in them, or to the writer changes stories of existing seeds and fails here; if the change
is meant, rewrite the file with ``.venv/bin/python -m tests.test_offline_text_golden --write`` and
say so in the commit (stories in flight during such a deploy mix old and new pages).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.providers.base import PageRequest, StoryRequest
from pipeline.providers.offline_text import LocalStoryWriter
from pipeline.stories.themes import THEMES

GOLDEN = Path(__file__).with_name("golden") / "offline_text.json"
NAMES = ("Mia", "Pip", "Zoe\u0308", "李明", "{comp}")  # Pip: a companion's name; {comp}: not a template
AGES = (2, 6, 11)
PAGE_COUNTS = (1, 2, 3, 5, 12, 17, 24)
SEEDS = (1, 987654321)
# Stories stored in full, so a failure shows what changed and a reader sees what is pinned.
FULL = [(theme, "Mia", 6, 3, 7) for theme in sorted(THEMES)] + [("pirates", "Zoë", 11, 4, 42)]


def story(writer: Any, theme: str, name: str, age: int, pages: int, seed: int) -> dict[str, Any]:
    """``{"title", "style", "beats", "pages"}`` of one story, as ``writer`` writes it."""
    req = StoryRequest(name, age, theme, pages, seed)
    outline = writer.write_outline(req)
    texts = [writer.write_page(PageRequest(req, outline, i)) for i in range(1, pages + 1)]
    return {"title": outline.title, "style": outline.style, "beats": list(outline.beats), "pages": texts}


def digest(s: dict[str, Any]) -> str:
    """sha256 of the story's canonical JSON (UTF-8, sorted keys)."""
    return hashlib.sha256(json.dumps(s, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def key(*case: str | int) -> str:
    return "|".join(map(str, case))


def groups() -> list[tuple[str, str, int]]:
    """(theme, name, age): each stored digest covers every page count x seed of one group."""
    return list(itertools.product(sorted(THEMES), NAMES, AGES))


def group_digest(writer: Any, theme: str, name: str, age: int) -> str:
    return digest({key(pages, seed): story(writer, theme, name, age, pages, seed)
                   for pages, seed in itertools.product(PAGE_COUNTS, SEEDS)})


def build(writer: Any) -> dict[str, Any]:
    """The golden file's content for ``writer``."""
    return {
        "digests": {key(*g): group_digest(writer, *g) for g in groups()},
        "full": {key(*c): story(writer, *c) for c in FULL},
    }


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDEN.read_text(encoding="utf-8"))
    return data


def test_golden_file_covers_every_case(golden: dict[str, Any]) -> None:
    # The stored cases are exactly the ones checked (a theme added without regenerating fails)
    assert sorted(golden["digests"]) == sorted(key(*g) for g in groups())
    assert sorted(golden["full"]) == sorted(key(*c) for c in FULL)


def test_stories_stored_in_full_are_written_the_same(golden: dict[str, Any]) -> None:
    writer = LocalStoryWriter()
    for c in FULL:
        assert story(writer, *c) == golden["full"][key(*c)], c


@pytest.mark.parametrize("theme", sorted(THEMES))
def test_every_theme_name_age_and_length_gives_the_stored_story(theme: str, golden: dict[str, Any]) -> None:
    writer = LocalStoryWriter()
    # Given every name x age (each digest covers all PAGE_COUNTS x SEEDS) of the theme
    changed = [key(*g) for g in groups() if g[0] == theme
               and group_digest(writer, *g) != golden["digests"][key(*g)]]
    # Then every story is the stored one
    assert changed == []


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.test_offline_text_golden --write")
    GOLDEN.write_text(json.dumps(build(LocalStoryWriter()), indent=1, ensure_ascii=False, sort_keys=True) + "\n",
                      encoding="utf-8")
    print(f"wrote {GOLDEN}")
