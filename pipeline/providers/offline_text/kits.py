"""The offline story kits: typed dataclasses, and the loader that reads them from ``data/*.toml``.

The material is data, not code: ``data/arc.toml`` holds the 24-slot story arc, the passages
every theme shares and the good-night pages; ``data/<theme id>.toml`` holds one theme's kit
(styles, facts, sights, companions, quests, its own passages and challenges). ``load_material``
reads them with ``tomllib`` (stdlib) and checks everything a story will need, so a typo in a
file fails at load time with the file and field, not in the middle of a story:

- every field present, of the right type, and no unknown field (a misspelt key is an error);
- every theme of ``pipeline.stories.themes.THEMES`` has a kit, and no kit lacks a theme;
- the arc has ``MAX_PAGES`` slots whose ranks are 1..``MAX_PAGES`` (every page count
  1..``MAX_PAGES`` picks distinct slots), and every slot has a passage (shared or per theme);
- every ``{placeholder}`` in any text is one the writer fills (``CONTEXT_KEYS``);
- sequence lengths the writer relies on: 6 sights (``{sightA_s}``..``{sightF_r}``),
  4 challenges (``challenge_1``..``challenge_4``), at least one style, companion, quest, title.

Order in the files matters: the writer draws companions, quests, challenges, sights, styles,
titles and good-night pages by index from a seeded ``random.Random``, so reordering a list
changes the stories of existing seeds (as editing the text does).
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from pipeline.stories.themes import THEMES

DATA_DIR = Path(__file__).with_name("data")
ARC_FILE = "arc.toml"
MAX_PAGES = 24  # slots in the arc: one page each in the longest book
SIGHT_LETTERS = "ABCDEF"
CHALLENGES = 4
PLACEHOLDER = re.compile(r"\{(\w+)\}")


class KitError(ValueError):
    """A kit file is missing, malformed or inconsistent; the message names the file and field."""


@dataclass(frozen=True)
class Passage:
    """The text of one story slot, in both registers.

    ``simple``/``rich`` are sentences in reading order (``simple`` for ages 0-7, ``rich`` for
    8-14); a page uses a prefix of them, so each sentence may rely on the ones before it but
    never on the ones after. ``gist_*`` is the one-sentence summary used when the slot is
    folded into a neighbouring page; ``beat`` is the outline/illustrator line. ``ending_*`` is
    a line always kept at the end (only the good-night pages have one; empty otherwise).
    """

    beat: str
    gist_simple: str
    gist_rich: str
    simple: tuple[str, ...]
    rich: tuple[str, ...]
    ending_simple: str = ""
    ending_rich: str = ""


@dataclass(frozen=True)
class Companion:
    """The child's friend on the adventure; each field is one ``{comp*}`` placeholder."""

    name: str  # "Pip"
    a: str  # "a little silver robot"
    look: str  # simple register: "with blue lights for eyes"
    look_rich: str
    arrive_rich: str  # "came rolling over the moon dust"
    sound: str  # what the companion says first, without quotes

    def facts(self) -> dict[str, str]:
        """The placeholder values this companion fills: ``{"comp": name, "comp_a": a, ...}``."""
        return {
            "comp": self.name,
            "comp_a": self.a,
            "comp_look": self.look,
            "comp_look_r": self.look_rich,
            "comp_arrive_r": self.arrive_rich,
            "comp_sound": self.sound,
        }


@dataclass(frozen=True)
class Facts:
    """A theme's noun phrases, each filling the placeholder of the same name.

    ``_s`` fields are for the simple register, ``_r`` for the rich one. A fact may itself
    contain placeholders (``{name}``), filled in turn.
    """

    world_s: str
    world_r: str
    pack_s: str
    pack_r: str
    snack_s: str
    snack_r: str
    rest_s: str
    rest_r: str
    party_s: str
    party_r: str
    gift_s: str
    gift_r: str
    night_s: str
    night_r: str

    def as_context(self) -> dict[str, str]:
        """``{"world_s": ..., "world_r": ..., ...}`` in field order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Sight(NamedTuple):
    """Something to marvel at on the way, in both registers (``{sightA_s}``/``{sightA_r}``...)."""

    simple: str
    rich: str


@dataclass(frozen=True)
class Quest:
    """What the adventure is for: titles, the problem, the low point and the child's solution."""

    titles: tuple[str, ...]  # book titles, e.g. "{name} and the Moon Lantern"
    fixed_simple: str  # a sentence: what is put right ("The Moon Lantern shone again")
    fixed_rich: str  # a clause: the happy consequence, used after "Then ..."
    quest: Passage
    low: Passage
    solution: Passage  # its last sentence (the problem solved) is never cut from a page


@dataclass(frozen=True)
class Kit:
    """Everything hand-written for one theme."""

    styles: tuple[str, ...]  # visual style notes for the illustrator
    facts: Facts
    sights: tuple[Sight, ...]  # exactly six
    companions: tuple[Companion, ...]
    quests: tuple[Quest, ...]
    opening: Passage
    call: Passage
    journey: Passage
    arrival: Passage
    challenges: tuple[Passage, ...]  # exactly four, shuffled per story
    home: Passage  # the way back (the ``return`` slot)


@dataclass(frozen=True)
class Slot:
    """One place in the story arc."""

    key: str  # "opening", "challenge_1", ...
    label: str  # shown at the start of the outline beat
    rank: int  # 1 = kept first when pages are few
    foldable: bool  # False: scenery only, dropped (not summarised) in short books


@dataclass(frozen=True)
class Material:
    """All the offline writer's material: the arc, the shared passages and the theme kits."""

    slots: tuple[Slot, ...]  # in reading order
    generic: dict[str, Passage]  # slot key -> the passage every theme shares
    closings: tuple[Passage, ...]  # the good-night page's versions
    kits: dict[str, Kit]  # theme id -> kit


# Slots whose passage comes from the theme's kit (or its chosen quest/challenges/closing);
# every other slot of the arc must have a passage in arc.toml's [generic].
THEME_SLOTS = frozenset(
    {"opening", "call", "journey", "arrival", "return", "quest", "low_point", "solution",
     "closing", *(f"challenge_{i}" for i in range(1, CHALLENGES + 1))}
)
# Every key the writer puts in a story's fill context (pipeline.providers.offline_text.writer
# builds exactly these; a test keeps the two in step).
CONTEXT_KEYS = frozenset(
    {"name", "name_s", "q_fixed_s", "q_fixed_r",
     *(f.name for f in fields(Facts)),
     *Companion("", "", "", "", "", "").facts(),
     *(f"sight{letter}_{reg}" for letter in SIGHT_LETTERS for reg in "sr")}
)

# --------------------------------------------------------------------------------------
# Loader
# --------------------------------------------------------------------------------------

T = TypeVar("T")


class _Table:
    """A TOML table read field by field, each error naming ``file: path.to.field``."""

    def __init__(self, raw: object, where: str) -> None:
        if not isinstance(raw, dict):
            raise KitError(f"{where}: expected a table, got {type(raw).__name__}")
        self.raw: dict[str, Any] = raw
        self.where = where
        self.seen: set[str] = set()

    def _get(self, key: str, default: object = None, required: bool = True) -> object:
        self.seen.add(key)
        if key not in self.raw:
            if required:
                raise KitError(f"{self.where}.{key}: missing")
            return default
        return self.raw[key]

    def string(self, key: str, required: bool = True) -> str:
        """The string at ``key``; non-empty unless not ``required`` (then ``""`` if absent)."""
        value = self._get(key, "", required)
        if not isinstance(value, str) or (required and not value.strip()):
            raise KitError(f"{self.where}.{key}: expected a non-empty string, got {value!r}")
        return value

    def integer(self, key: str) -> int:
        """The integer at ``key`` (a bool is not one)."""
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise KitError(f"{self.where}.{key}: expected an integer, got {value!r}")
        return value

    def boolean(self, key: str) -> bool:
        """The ``true``/``false`` at ``key``."""
        value = self._get(key)
        if not isinstance(value, bool):
            raise KitError(f"{self.where}.{key}: expected true or false, got {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        """The non-empty list of non-empty strings at ``key``, as a tuple."""
        value = self._get(key)
        if (not isinstance(value, list) or not value
                or not all(isinstance(s, str) and s.strip() for s in value)):
            raise KitError(f"{self.where}.{key}: expected a non-empty list of non-empty strings")
        return tuple(value)

    def table(self, key: str) -> _Table:
        """The sub-table at ``key``."""
        return _Table(self._get(key), f"{self.where}.{key}")

    def tables(self, key: str, count: int | None = None) -> list[_Table]:
        """The array of tables at ``key``, of exactly ``count`` entries if given."""
        value = self._get(key)
        if not isinstance(value, list) or not value:
            raise KitError(f"{self.where}.{key}: expected a non-empty array of tables")
        if count is not None and len(value) != count:
            raise KitError(f"{self.where}.{key}: expected {count} entries, got {len(value)}")
        return [_Table(v, f"{self.where}.{key}[{i}]") for i, v in enumerate(value)]

    def done(self, value: T) -> T:
        """``value``, after checking that every key of the table was read (no typos)."""
        unknown = sorted(set(self.raw) - self.seen)
        if unknown:
            raise KitError(f"{self.where}: unknown field(s) {', '.join(unknown)}")
        return value


def _passage(t: _Table) -> Passage:
    return t.done(Passage(
        beat=t.string("beat"), gist_simple=t.string("gist_simple"), gist_rich=t.string("gist_rich"),
        simple=t.strings("simple"), rich=t.strings("rich"),
        ending_simple=t.string("ending_simple", required=False),
        ending_rich=t.string("ending_rich", required=False),
    ))


def _quest(t: _Table) -> Quest:
    return t.done(Quest(
        titles=t.strings("titles"), fixed_simple=t.string("fixed_simple"), fixed_rich=t.string("fixed_rich"),
        quest=_passage(t.table("quest")), low=_passage(t.table("low")),
        solution=_passage(t.table("solution")),
    ))


def _kit(t: _Table) -> Kit:
    facts = t.table("facts")
    return t.done(Kit(
        styles=t.strings("styles"),
        facts=facts.done(Facts(**{f.name: facts.string(f.name) for f in fields(Facts)})),
        sights=tuple(s.done(Sight(s.string("simple"), s.string("rich")))
                     for s in t.tables("sights", len(SIGHT_LETTERS))),
        companions=tuple(c.done(Companion(**{f.name: c.string(f.name) for f in fields(Companion)}))
                         for c in t.tables("companions")),
        quests=tuple(_quest(q) for q in t.tables("quests")),
        opening=_passage(t.table("opening")), call=_passage(t.table("call")),
        journey=_passage(t.table("journey")), arrival=_passage(t.table("arrival")),
        challenges=tuple(_passage(c) for c in t.tables("challenges", CHALLENGES)),
        home=_passage(t.table("home")),
    ))


def _read(path: Path) -> _Table:
    try:
        with path.open("rb") as f:
            return _Table(tomllib.load(f), path.name)
    except FileNotFoundError:
        raise KitError(f"{path.name}: missing (looked in {path.parent})") from None
    except tomllib.TOMLDecodeError as e:
        raise KitError(f"{path.name}: not valid TOML: {e}") from None


def texts(value: object) -> list[str]:
    """Every string inside a kit value (dataclasses, tuples, dicts), in a stable order."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in texts(v)]
    if isinstance(value, tuple):
        return [s for v in value for s in texts(v)]
    if is_dataclass(value) and not isinstance(value, type):
        return [s for f in fields(value) for s in texts(getattr(value, f.name))]
    return []


def _check(m: Material) -> None:
    ranks = sorted(s.rank for s in m.slots)
    if len(m.slots) != MAX_PAGES or ranks != list(range(1, MAX_PAGES + 1)):
        raise KitError(f"{ARC_FILE}: slots: expected {MAX_PAGES} slots ranked 1..{MAX_PAGES}, "
                       f"got ranks {ranks}")
    keys = [s.key for s in m.slots]
    if len(set(keys)) != len(keys):
        raise KitError(f"{ARC_FILE}: slots: duplicate keys in {keys}")
    shared = set(keys) - THEME_SLOTS
    if set(m.generic) != shared:
        raise KitError(f"{ARC_FILE}: generic: expected passages for exactly {sorted(shared)}, "
                       f"got {sorted(m.generic)}")
    for where, value in [(ARC_FILE, (m.generic, m.closings)),
                         *((f"{theme}.toml", kit) for theme, kit in m.kits.items())]:
        unknown = {k for s in texts(value) for k in PLACEHOLDER.findall(s)} - CONTEXT_KEYS
        if unknown:
            raise KitError(f"{where}: unknown placeholder(s) {sorted(unknown)}")


def load_material(data_dir: Path = DATA_DIR) -> Material:
    """Read and check ``arc.toml`` and one ``<theme id>.toml`` per theme of ``THEMES``.

    Raises ``KitError`` (a ``ValueError``) naming the file and field of the first problem;
    a ``.toml`` file in ``data_dir`` for a theme that does not exist is an error too.
    """
    arc = _read(data_dir / ARC_FILE)
    slots = tuple(s.done(Slot(key=s.string("key"), label=s.string("label"), rank=s.integer("rank"),
                              foldable=s.boolean("foldable")))
                  for s in arc.tables("slots"))
    generic_t = arc.table("generic")
    generic = {key: _passage(generic_t.table(key)) for key in generic_t.raw}
    generic_t.done(None)
    closings = tuple(_passage(c) for c in arc.tables("closings"))
    arc.done(None)
    extra = sorted(p.stem for p in data_dir.glob("*.toml")
                   if p.name != ARC_FILE and p.stem not in THEMES)
    if extra:
        raise KitError(f"{', '.join(extra)}: kit file(s) for no theme of pipeline.stories.themes.THEMES")
    kits = {}
    for theme in THEMES:
        t = _read(data_dir / f"{theme}.toml")
        kits[theme] = _kit(t)
    material = Material(slots=slots, generic=generic, closings=closings, kits=kits)
    _check(material)
    return material


@lru_cache(maxsize=1)
def material() -> Material:
    """The packaged material, loaded and checked once per process."""
    return load_material()
