"""The offline story kits as data: the loader reads every kit, and rejects a broken one by name.

No services needed. ``pipeline/providers/offline_text/data/*.toml`` are read by
``offline_text.kits.load_material``; these tests check the shipped files (every theme, every field
present and well-typed, every placeholder one the writer fills, every page count the pipeline may
ask for) and that the loader refuses files that break those rules, naming the file and field.
"""
from __future__ import annotations

import shutil
import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from pipeline.kernel import config
from pipeline.providers.base import StoryRequest
from pipeline.providers.offline_text import kits, writer
from pipeline.providers.offline_text.kits import (
    CONTEXT_KEYS,
    DATA_DIR,
    MAX_PAGES,
    PLACEHOLDER,
    KitError,
    Material,
    Sight,
    load_material,
    material,
    texts,
)
from pipeline.stories.themes import THEMES

# ---------------------------------------------------------------------------------------------
# The shipped kits
# ---------------------------------------------------------------------------------------------


def _check_types(value: object, hint: object, where: str) -> list[str]:
    """Where ``value`` does not match the type ``hint`` (dataclasses checked field by field)."""
    origin = typing.get_origin(hint)
    if hint is str:
        return [] if isinstance(value, str) else [f"{where}: {value!r} is not a str"]
    if hint is int:
        return [] if type(value) is int else [f"{where}: {value!r} is not an int"]
    if hint is bool:
        return [] if isinstance(value, bool) else [f"{where}: {value!r} is not a bool"]
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, tuple) or not value:
            return [f"{where}: {value!r} is not a non-empty tuple"]
        return [e for i, v in enumerate(value) for e in _check_types(v, item, f"{where}[{i}]")]
    if origin is dict:
        k_hint, v_hint = typing.get_args(hint)
        if not isinstance(value, dict) or not value:
            return [f"{where}: {value!r} is not a non-empty dict"]
        return [e for k, v in value.items()
                for e in (*_check_types(k, k_hint, f"{where} key"), *_check_types(v, v_hint, f"{where}[{k}]"))]
    if isinstance(hint, type) and (is_dataclass(hint) or issubclass(hint, tuple)):
        if type(value) is not hint:
            return [f"{where}: {type(value).__name__} is not {hint.__name__}"]
        hints = typing.get_type_hints(hint)
        names = [f.name for f in fields(hint)] if is_dataclass(hint) else list(hints)
        return [e for n in names for e in _check_types(getattr(value, n), hints[n], f"{where}.{n}")]
    raise AssertionError(f"{where}: no check for {hint!r}")


def _blank_fields(value: object, where: str) -> list[str]:
    """Where a string of ``value`` is blank, except the optional ``ending_*`` fields."""
    if isinstance(value, str):
        return [] if value.strip() else [where]
    if isinstance(value, tuple) and not isinstance(value, Sight):
        return [e for i, v in enumerate(value) for e in _blank_fields(v, f"{where}[{i}]")]
    if isinstance(value, Sight):
        return [e for n in value._fields for e in _blank_fields(getattr(value, n), f"{where}.{n}")]
    if is_dataclass(value) and not isinstance(value, type):
        return [e for f in fields(value) if not f.name.startswith("ending_")
                for e in _blank_fields(getattr(value, f.name), f"{where}.{f.name}")]
    raise AssertionError(f"{where}: unexpected {value!r}")


def test_every_theme_has_a_kit_and_no_kit_lacks_a_theme() -> None:
    # Given the packaged material
    m = material()
    # Then it has one kit per theme, in THEMES' order, and a file per kit
    assert list(m.kits) == list(THEMES)
    assert sorted(p.stem for p in DATA_DIR.glob("*.toml")) == sorted([*THEMES, "arc"])


def test_every_field_of_every_kit_is_present_and_well_typed() -> None:
    # Given the packaged material, checked against the dataclasses' own annotations
    problems = _check_types(material(), Material, "material")
    # Then nothing is missing or of the wrong type
    assert problems == []
    m = material()
    for theme, kit in m.kits.items():
        # And the lists the writer indexes have the sizes it relies on
        assert len(kit.sights) == 6 and all(isinstance(s, Sight) for s in kit.sights), theme
        assert len(kit.challenges) == kits.CHALLENGES, theme
        # And no sentence or fact is blank (endings are the one optional field)
        assert _blank_fields(kit, theme) == []
    assert all(p.ending_simple and p.ending_rich for p in m.closings)


def test_every_placeholder_is_one_the_writer_fills() -> None:
    m = material()
    for theme, kit in m.kits.items():
        # Given the context the writer builds for a story of this theme
        ctx = writer.story_context("Mia", kit, kit.companions[0], kit.quests[0], kit.sights)
        # Then it has exactly the keys the loader allows in the text
        assert set(ctx) == CONTEXT_KEYS, theme
        # And every placeholder of the theme's kit, the shared passages and the closings is one
        used = {k for s in texts((kit, m.generic, m.closings)) for k in PLACEHOLDER.findall(s)}
        assert used <= CONTEXT_KEYS, (theme, sorted(used - CONTEXT_KEYS))
        # And every template fills without a KeyError and leaves no brace behind
        for s in texts((kit, m.generic, m.closings)):
            assert "{" not in writer.fill(s, ctx) and "}" not in writer.fill(s, ctx), (theme, s)
    # And every context key is used somewhere (no dead placeholder kept alive by the writer)
    everywhere = {k for s in texts(m) for k in PLACEHOLDER.findall(s)}
    assert everywhere == CONTEXT_KEYS


def test_the_arc_has_a_passage_for_every_slot() -> None:
    m = material()
    # Given the arc: MAX_PAGES slots ranked 1..MAX_PAGES, starting with the opening and
    # ending with good night
    assert len(m.slots) == MAX_PAGES
    assert sorted(s.rank for s in m.slots) == list(range(1, MAX_PAGES + 1))
    assert (m.slots[0].key, m.slots[-1].key) == ("opening", "closing")
    # Then every slot has a passage: shared ones in arc.toml, the others from the theme
    assert set(m.generic) | kits.THEME_SLOTS == {s.key for s in m.slots}
    assert not set(m.generic) & kits.THEME_SLOTS


@pytest.mark.parametrize("theme", sorted(THEMES))
def test_every_page_count_the_pipeline_may_ask_for_is_covered(theme: str) -> None:
    for pages in range(writer.MIN_PAGES, MAX_PAGES + 1):
        # When a story of every length is planned
        plan = writer.plan_story(StoryRequest("Mia", 6, theme, pages, 5))
        # Then it has that many pages, each about a different slot, opening first, good night last
        assert len(plan.pages) == pages
        assert len({p.own for p in plan.pages}) == pages
        assert plan.pages[0].own == "opening"
        if pages > 1:
            assert plan.pages[-1].own == "closing"


def test_the_pipelines_page_count_setting_stays_inside_what_the_kits_cover(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given STORY_PAGE_COUNT at the writer's bounds, Then the settings accept it
    for pages in (writer.MIN_PAGES, MAX_PAGES):
        monkeypatch.setenv("STORY_PAGE_COUNT", str(pages))
        config.settings.cache_clear()
        assert config.settings().page_count == pages
    # And just outside them, Then the settings refuse it (a story is never asked for more)
    for pages in (writer.MIN_PAGES - 1, MAX_PAGES + 1):
        monkeypatch.setenv("STORY_PAGE_COUNT", str(pages))
        config.settings.cache_clear()
        with pytest.raises(SystemExit):
            config.settings()
    monkeypatch.undo()
    config.settings.cache_clear()


# ---------------------------------------------------------------------------------------------
# Broken files are refused, by file and field
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A writable copy of the shipped data directory."""
    return Path(shutil.copytree(DATA_DIR, tmp_path / "data"))


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_a_copy_of_the_shipped_files_loads_to_the_same_material(data: Path) -> None:
    assert load_material(data) == material()


@pytest.mark.parametrize(
    "file, old, new, message",
    [
        ("space_adventure.toml", 'world_s = "space"\n', "", "space_adventure.toml.facts.world_s: missing"),
        ("space_adventure.toml", 'world_s = "space"', 'world_s = 3', "space_adventure.toml.facts.world_s: expected"),
        ("space_adventure.toml", 'world_s = "space"', 'world_s = "space"\nwrold_s = "x"',
         "space_adventure.toml.facts: unknown field(s) wrold_s"),
        ("space_adventure.toml", "Click went the seat belt.", "Click went {name_seat} belt.",
         "space_adventure.toml: unknown placeholder(s) ['name_seat']"),
        ("pirates.toml", "[[challenges]]\n", "[[ignored]]\n", "pirates.toml.challenges: expected 4 entries, got 3"),
        ("pirates.toml", "[[sights]]\n", "[[ignored]]\n", "pirates.toml.sights: expected 6 entries, got 5"),
        ("underwater.toml", "[[quests]]\ntitles = [", "[[quests]]\ntitles = 7\nx = [",
         "underwater.toml.quests[0].titles: expected a non-empty list"),
        ("arc.toml", "rank = 24", "rank = 23", "arc.toml: slots: expected 24 slots ranked 1..24"),
        ("arc.toml", "\nfoldable = false", '\nfoldable = "no"', "arc.toml.slots[2].foldable: expected true or false"),
        ("arc.toml", "[generic.rest]", "[generic.nap]", "arc.toml: generic: expected passages for exactly"),
        ("dinosaurs.toml", "[opening]", "[opening", "dinosaurs.toml: not valid TOML"),
    ],
)
def test_a_broken_file_is_refused_naming_the_file_and_field(
    data: Path, file: str, old: str, new: str, message: str
) -> None:
    # Given one mistake in one file
    _edit(data / file, old, new)
    # When the material is loaded, Then it fails naming where
    with pytest.raises(KitError) as err:
        load_material(data)
    assert message in str(err.value)


def test_a_missing_theme_file_and_a_file_for_no_theme_are_refused(data: Path) -> None:
    (data / "superhero.toml").rename(data / "wild_west.toml")
    with pytest.raises(KitError, match="wild_west: kit file.s. for no theme"):
        load_material(data)
    (data / "wild_west.toml").unlink()
    with pytest.raises(KitError, match=r"superhero.toml: missing"):
        load_material(data)


def test_texts_walks_every_string_in_order() -> None:
    # Given a nested value, Then every string comes out once, in field order
    value = types.SimpleNamespace()  # not a dataclass: ignored
    assert texts(("a", {"k": ("b", Sight("c", "d"))}, value, 3)) == ["a", "b", "c", "d"]
