"""The fonts a book is printed with, which scripts they draw, and the checks that a text can be
drawn before any work is done (a story's start) and when a PDF is built.

Fonts are system packages, installed by ``./run`` and ``.ci/run`` (Debian: ``fonts-dejavu-core``,
``fonts-noto-core``, ``fonts-noto-cjk``), or in the folders of ``STORYBOOK_FONT_DIR`` (a path
list) instead when it is set. Files are found by name anywhere under the font folders, so other
distributions' layouts work too. What each script is drawn with:

| script | font (regular / bold) |
|---|---|
| Latin (diacritics, combining marks), Greek, Cyrillic | DejaVu Serif |
| Arabic | Noto Naskh Arabic |
| Hebrew | Noto Serif Hebrew |
| Devanagari | Noto Serif Devanagari |
| Thai | Noto Serif Thai |
| Chinese, Japanese kana, Korean Hangul | Noto Sans CJK (the SC, JP or KR face, by the text) |
| also, when installed: Bengali, Tamil, Armenian, Georgian, Ethiopic, Khmer, ... | Noto |

``check_fonts()`` (run at worker boot) raises FontConfigError naming the package to install when
a required font is missing. ``unprintable(text)`` lists the characters no font can draw
(Cherokee, emoji, unassigned code points, ...); ``unprintable_message`` says so for a parent.
``printable_text(text, name, what)`` makes a provider's text printable where it enters the
pipeline (emoji dropped, symbols mapped to drawable equivalents, the name never touched).
"""
from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pipeline.kernel.errors import PermanentStepError


class FontConfigError(RuntimeError):
    """A required font file is missing on this machine (a deployment error, not the parent's)."""


@dataclass(frozen=True)
class ScriptFont:
    """One script's font files, by file name (the first one found wins)."""

    script: str  # as named to parents: "Arabic"
    regular: tuple[str, ...]
    bold: tuple[str, ...]
    package: str  # the Debian package that ships it
    required: bool = True
    collection: bool = False  # a .ttc whose face is chosen by the text (CJK)


BASE = ScriptFont("Latin, Greek, Cyrillic", ("DejaVuSerif.ttf", "DejaVuSans.ttf"),
                  ("DejaVuSerif-Bold.ttf", "DejaVuSans-Bold.ttf"), "fonts-dejavu-core")
# Covers scripts and symbols DejaVu Serif lacks; drawn only when no script font below has them.
GENERIC = ScriptFont("symbols", ("DejaVuSans.ttf",), ("DejaVuSans-Bold.ttf",), "fonts-dejavu-core")

SCRIPTS: tuple[ScriptFont, ...] = (
    ScriptFont("Arabic", ("NotoNaskhArabic-Regular.ttf", "NotoSansArabic-Regular.ttf"),
               ("NotoNaskhArabic-Bold.ttf", "NotoSansArabic-Bold.ttf"), "fonts-noto-core"),
    ScriptFont("Hebrew", ("NotoSerifHebrew-Regular.ttf", "NotoSansHebrew-Regular.ttf"),
               ("NotoSerifHebrew-Bold.ttf", "NotoSansHebrew-Bold.ttf"), "fonts-noto-core"),
    ScriptFont("Devanagari", ("NotoSerifDevanagari-Regular.ttf", "NotoSansDevanagari-Regular.ttf"),
               ("NotoSerifDevanagari-Bold.ttf", "NotoSansDevanagari-Bold.ttf"), "fonts-noto-core"),
    ScriptFont("Thai", ("NotoSerifThai-Regular.ttf", "NotoSansThai-Regular.ttf"),
               ("NotoSerifThai-Bold.ttf", "NotoSansThai-Bold.ttf"), "fonts-noto-core"),
    ScriptFont("Chinese, Japanese, Korean", ("NotoSansCJK-Regular.ttc", "NotoSerifCJK-Regular.ttc"),
               ("NotoSansCJK-Bold.ttc", "NotoSerifCJK-Bold.ttc"), "fonts-noto-cjk", collection=True),
    *(ScriptFont(s, (f"NotoSerif{s}-Regular.ttf", f"NotoSans{s}-Regular.ttf"),
                 (f"NotoSerif{s}-Bold.ttf", f"NotoSans{s}-Bold.ttf"), "fonts-noto-core", required=False)
      for s in ("Bengali", "Tamil", "Telugu", "Kannada", "Malayalam", "Gujarati", "Gurmukhi", "Sinhala",
                "Armenian", "Georgian", "Ethiopic", "Khmer", "Lao", "Myanmar")),
)

# Faces of Noto Sans/Serif CJK .ttc files (fonts-noto-cjk): JP, KR, SC, TC, HK.
CJK_FACE = {"ja": 0, "ko": 1, "zh": 2}
# Invisible joiners that spell some scripts' names (Persian ZWNJ, Devanagari half forms): the
# shaper consumes them, no glyph is drawn.
JOINERS = frozenset("\u200c\u200d")


def _font_roots() -> list[Path]:
    """``STORYBOOK_FONT_DIR`` (a path list) when set, else the system's font folders."""
    roots = [Path(p) for p in os.environ.get("STORYBOOK_FONT_DIR", "").split(os.pathsep) if p]
    return roots or [Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path("/Library/Fonts")]


@lru_cache(maxsize=1)
def _index() -> dict[str, Path]:
    """File name -> path, for every font file under the font folders (first root wins)."""
    found: dict[str, Path] = {}
    for root in _font_roots():
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                if name.lower().endswith((".ttf", ".otf", ".ttc")):
                    found.setdefault(name, Path(dirpath) / name)
    return found


def locate(*names: str) -> Path | None:
    """The first of ``names`` installed, or None."""
    index = _index()
    return next((index[n] for n in names if n in index), None)


@dataclass(frozen=True)
class Installed:
    """A script font found on this machine."""

    script: ScriptFont
    regular: Path
    bold: Path | None


@lru_cache(maxsize=1)
def installed() -> tuple[Installed, ...]:
    """The script fonts on this machine, in fallback order (GENERIC last)."""
    out = []
    for s in (*SCRIPTS, GENERIC):
        regular = locate(*s.regular)
        if regular is not None:
            out.append(Installed(s, regular, locate(*s.bold)))
    return tuple(out)


def check_fonts() -> None:
    """Raise FontConfigError naming what to install when a required font is missing; also reads
    every font's character map once, so the first story pays nothing for it."""
    missing = [s for s in (BASE, *SCRIPTS) if s.required and locate(*s.regular) is None]
    if missing:
        packages = sorted({s.package for s in missing})
        raise FontConfigError(
            f"configuration error: fonts for {', '.join(s.script for s in missing)} are not installed "
            f"(apt-get install {' '.join(packages)}, or put {', '.join(s.regular[0] for s in missing)} "
            "in a folder listed in STORYBOOK_FONT_DIR)")
    coverage()


@lru_cache(maxsize=64)
def cmap(path: Path, face: int = 0) -> frozenset[int]:
    """The code points a font file can draw (only its cmap table is read, once per process)."""
    from fontTools.ttLib import TTFont  # fpdf2's own dependency

    with TTFont(path, lazy=True, fontNumber=face) as font:
        return frozenset(font.getBestCmap() or {})


@lru_cache(maxsize=1)
def coverage() -> frozenset[int]:
    """Every code point some installed book font draws."""
    covered: set[int] = set()
    base = locate(*BASE.regular)
    if base is not None:
        covered |= cmap(base)
    for f in installed():
        covered |= cmap(f.regular)
    return frozenset(covered)


def drawable(ch: str) -> bool:
    return ch.isspace() or ch in JOINERS or ord(ch) in coverage()


def unprintable(text: str) -> list[str]:
    """The distinct characters of ``text`` (after NFC) no installed font can draw, in order."""
    seen: list[str] = []
    for ch in unicodedata.normalize("NFC", text):
        if ch not in seen and not drawable(ch):
            seen.append(ch)
    return seen


_SCRIPT_WORDS = {"CJK": "Chinese (Han)", "HIRAGANA": "Japanese kana", "KATAKANA": "Japanese kana",
                 "HANGUL": "Korean Hangul", "LATIN": "Latin", "UNKNOWN": "unknown"}


def describe(chars: list[str]) -> str:
    """What kinds of characters these are, without the characters themselves (for logs and
    messages that must not carry a name): "Cherokee letters, emoji or symbols"."""
    kinds: list[str] = []
    for ch in chars:
        cat = unicodedata.category(ch)
        if cat in ("Cn", "Co", "Cs"):
            kind = "characters that are not assigned in Unicode"
        elif cat.startswith("S"):
            kind = "emoji or symbols"
        elif cat.startswith("M"):
            kind = "combining marks"
        else:
            word = unicodedata.name(ch, "UNKNOWN").split()[0]
            kind = f"{_SCRIPT_WORDS.get(word, word.title())} characters"
        if kind not in kinds:
            kinds.append(kind)
    return ", ".join(kinds)


def supported_scripts() -> str:
    names = [BASE.script] + [f.script.script for f in installed() if f.script is not GENERIC]
    return ", ".join(names)


def unprintable_message(chars: list[str], what: str = "The child's name") -> str:
    """A parent-facing refusal that names the kinds of characters, never the name itself."""
    if what != "The child's name":
        return (f"{what} uses {describe(chars)}, which no installed font can print (fonts for: "
                f"{supported_scripts()}).")
    return (f"{what} uses {describe(chars)}, which our books cannot print yet. Please enter the name "
            f"in one of these scripts: {supported_scripts()}.")


def cjk_face(text: str) -> int:
    """Which face of a Noto CJK collection suits ``text``: Korean if it has Hangul, Japanese if
    it has kana, else Simplified Chinese (Noto CJK's faces differ only in regional glyph forms)."""
    for ch in text:
        o = ord(ch)
        if 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F:
            return CJK_FACE["ko"]
    for ch in text:
        if 0x3040 <= ord(ch) <= 0x30FF or 0x31F0 <= ord(ch) <= 0x31FF:
            return CJK_FACE["ja"]
    return CJK_FACE["zh"]


class UnprintableTextError(PermanentStepError, ValueError):
    """A PDF was about to draw characters no font has (it would print "?" or empty boxes).
    The message names the kinds of characters only (it may reach logs)."""


# ---------------------------------------------------------------------------------------------
# Provider text: made printable where it enters (the outline and text steps), not at the end
# ---------------------------------------------------------------------------------------------

# Typographic symbols a model may write that no book font draws, and what is printed instead
# (after these, Unicode's compatibility mapping, NFKC, is tried: fullwidth letters, ligatures,
# circled digits, ...). Each value must be drawable by the base font.
EQUIVALENTS: dict[str, str] = {
    "\u2e3a": "\u2014\u2014", "\u2e3b": "\u2014\u2014\u2014",  # two- and three-em dashes
    "\u2053": "~", "\u301c": "~", "\u2e17": "-", "\u2010": "-", "\u2011": "-",  # swung dash, hyphens
    "\u203d": "?!", "\u2e18": "!?",  # interrobang, inverted interrobang
    "\u2047": "??", "\u2048": "?!", "\u2049": "!?",
    "\u2027": "\u00b7", "\u2e31": "\u00b7",  # hyphenation point, word separator middle dot
    "\u275b": "\u2018", "\u275c": "\u2019", "\u275d": "\u201c", "\u275e": "\u201d",  # ornamental quotes
    "\u2760": ",", "\u2762": "!", "\u2763": "!",
}
# Invisible characters of emoji sequences: variation selectors, the keycap, tags (flags).
_EMOJI_PARTS = re.compile("[\ufe00-\ufe0f\u20e3\U000e0020-\U000e007f\U000e0100-\U000e01ef]")
_OPENERS = "([{“‘«‹¿¡\"'"
_CLOSERS = ".,;:!?…)]}”’»›\"'"
_DROPPED = "\x00"


@dataclass(frozen=True)
class Printable:
    """Provider text made printable (``printable_text``), and how much was changed. The counts
    (characters) are safe for logs; the text is not."""

    text: str
    dropped: int = 0  # emoji, pictographs and their invisible parts, removed
    replaced: int = 0  # symbols printed as a drawable equivalent

    def counts(self, prefix: str = "") -> dict[str, int]:
        """The nonzero counts, for a step's log line: ``{"chars_dropped": 3}``."""
        out = {f"{prefix}chars_dropped": self.dropped, f"{prefix}chars_replaced": self.replaced}
        return {k: v for k, v in out.items() if v}


def _equivalent(ch: str) -> str | None:
    """A drawable stand-in for an undrawable symbol, or None."""
    for candidate in (EQUIVALENTS.get(ch), unicodedata.normalize("NFKC", ch)):
        if candidate and candidate != ch and all(drawable(c) for c in candidate):
            return candidate
    return None


def _invisible(ch: str) -> bool:
    """Parts of emoji sequences (variation selectors, the keycap, tags), format and control
    characters: dropped without leaving a gap."""
    return bool(_EMOJI_PARTS.match(ch)) or ch in JOINERS or unicodedata.category(ch) in ("Cf", "Cc")


def _droppable(ch: str) -> bool:
    """Emoji, pictographs, dingbats and the like: symbols (Unicode category S*), unassigned or
    private-use code points, and invisible characters."""
    return unicodedata.category(ch)[0] == "S" or unicodedata.category(ch) in ("Cn", "Co") or _invisible(ch)


def printable_text(text: str, name: str, what: str) -> Printable:
    """``text`` (NFC) from a story provider with every character some book font draws, so the
    book cannot fail at its very end (or print "?") because of it. The policy:

    - the child's name is never changed (each occurrence, any case, is kept as it is; it was
      checked at the story's start);
    - a typographic symbol no font draws is printed as its equivalent (EQUIVALENTS, then its
      Unicode compatibility form, NFKC: "⸺" -> "——", "‽" -> "?!", fullwidth "Ａ" -> "A");
    - emoji, pictographs and other symbols (category S*), unassigned and private-use code
      points, and the joiners, variation selectors and modifiers that build emoji sequences are
      dropped, with the spaces around them tidied ("waved 🌟." -> "waved.");
    - letters, digits or marks of a script no installed font draws cannot be dropped without
      mangling words: UnprintableTextError (a PermanentStepError) saying ``what`` uses which
      kind of characters (never the characters themselves).

    Returns the text and the number of characters dropped and replaced. With no fonts found at
    all (nothing to judge by) the text is returned unchanged.
    """
    text = unicodedata.normalize("NFC", text)
    if not coverage():
        return Printable(text)
    keep = [False] * len(text)
    clean_name = " ".join(name.split())
    if clean_name:
        for m in re.finditer(re.escape(unicodedata.normalize("NFC", clean_name)), text, re.IGNORECASE):
            keep[m.start():m.end()] = [True] * (m.end() - m.start())
    # What happens to each character: kept (None), replaced (its equivalent), or dropped ("").
    fate: list[str | None] = [None] * len(text)
    refused: list[str] = []
    for i, ch in enumerate(text):
        if keep[i] or ch in JOINERS or drawable(ch):
            continue
        if (eq := _equivalent(ch)) is not None:
            fate[i] = eq
        elif _droppable(ch):
            fate[i] = ""
        else:
            refused.append(ch)
    if refused:
        raise UnprintableTextError(unprintable_message(list(dict.fromkeys(refused)), what))
    for i, ch in enumerate(text):  # a joiner beside a dropped emoji was part of its sequence
        if ch in JOINERS and not keep[i] and (
                (i > 0 and fate[i - 1] == "") or (i + 1 < len(text) and fate[i + 1] == "")):
            fate[i] = ""
    out: list[str] = []
    dropped = replaced = 0
    for ch, f in zip(text, fate, strict=True):
        if f is None:
            out.append(ch)
        elif f:
            out.append(f)
            replaced += 1
        else:
            dropped += 1
            if not _invisible(ch):
                out.append(_DROPPED)
    return Printable(re.sub(f"[ \t]*{_DROPPED}+[ \t]*", _tidy, "".join(out)), dropped, replaced)


def _tidy(m: re.Match[str]) -> str:
    """What a run of dropped characters (with the spaces around it) becomes: nothing at the
    text's or a line's ends, before closing punctuation or after opening punctuation, else one
    space between the words it separated."""
    s, start, end = m.string, m.start(), m.end()
    before = s[start - 1] if start > 0 else "\n"
    after = s[end] if end < len(s) else "\n"
    if before == "\n" or after == "\n" or after in _CLOSERS or before in _OPENERS or after == _DROPPED:
        return ""
    return " "
