"""Typesetting for the reading book and the print files: which fonts a book gets, how wide its
text is, where its lines break, and drawing them (pipeline.stories.book and
pipeline.orders.print_files both lay out their pages with this).

Fonts (pipeline.stories.fonts says which exist): DejaVu Serif for Latin, Greek and Cyrillic, one
Noto font per other script (Arabic, Hebrew, Devanagari, Thai, CJK, ...) loaded only for a book
that needs it (pipeline.stories.font_files loads them, each file parsed once per process), with
fpdf2's text shaping (HarfBuzz, ``uharfbuzz``) and bidirectional text for those books. A
character no font can draw fails the render with UnprintableTextError (a PermanentStepError):
a book never prints "?" or empty boxes. Stories with such a name are refused at their start
(pipeline.stories.steps), so this is the last line of defence. Without any TrueType font
(``FontSet(None, None)`` in tests) the PDF core font is used, which covers Latin-1.

Units: lengths in mm, font sizes in pt (``PT`` mm per pt), colours as 0..255 RGB triples.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import cast

from fpdf import FPDF
from fpdf.enums import Align
from fpdf.fonts import TTFFont

from pipeline.stories.font_files import COMMON, add_font

log = logging.getLogger(__name__)

Rgb = tuple[int, int, int]
PT = 0.3528  # mm per point

# ---------------------------------------------------------------------------------------------
# Fonts
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fallback:
    """A font for the characters the body font lacks (one script's, see pipeline.stories.fonts)."""

    regular: Path
    bold: Path | None = None
    collection: bool = False  # a CJK .ttc: its face is chosen by the text, cut per book


@dataclass(frozen=True)
class FontSet:
    """TrueType files for the book. ``regular=None`` means: use the PDF core font (Latin-1)."""

    regular: Path | None
    bold: Path | None
    fallbacks: tuple[Fallback, ...] = ()  # tried in order for characters ``regular`` lacks


@lru_cache(maxsize=1)
def find_fonts() -> FontSet:
    """The fonts on this machine (pipeline.stories.fonts): DejaVu Serif for the story, then one Noto font
    per script for what it lacks. Raises FontConfigError when the body font is missing."""
    from pipeline.stories import fonts as f

    regular = f.locate(*f.BASE.regular)
    if regular is None:
        f.check_fonts()  # raises, naming the package to install
    bold = f.locate(*f.BASE.bold) or regular
    fallbacks = tuple(Fallback(i.regular, i.bold, i.script.collection)
                      for i in f.installed() if i.regular != regular)
    return FontSet(regular=regular, bold=bold, fallbacks=fallbacks)


_ASCII_PUNCT = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-",
                              "…": "...", "\u00a0": " "})


class Typesetter:
    """The fonts added to one FPDF document: what they can draw, and how wide it is.

    ``Typesetter(pdf, fonts, text)`` adds to ``pdf`` the body fonts of ``fonts`` and the
    fallbacks that draw some character of ``text`` (all the text the document will hold);
    ``family`` is the font family to ``pdf.set_font`` ("helvetica": the core font, Latin-1).

    Text outside COMMON (other scripts, combining marks) turns on fpdf2's text shaping
    (HarfBuzz: joined Arabic letters, Indic conjuncts, marks placed on their letters) and its
    bidirectional algorithm (Arabic and Hebrew drawn right to left inside a line)."""

    def __init__(self, pdf: FPDF, fonts: FontSet, text: str) -> None:
        from pipeline.stories import fonts as script_fonts

        self.pdf = pdf
        self.family = "helvetica"
        self.covered: set[int] | None = None  # None: the core font, Latin-1
        self._fallbacks: list[str] = []
        self._widths: dict[tuple[str, str], float] = {}
        self._shaped: dict[tuple[str, str], float] = {}
        text = unicodedata.normalize("NFC", text)
        self.shaping = any(ord(c) not in COMMON for c in text if c not in "\n\r")
        if fonts.regular is not None:
            try:
                # A book without shaping embeds all of ASCII from its body fonts: most books then
                # reuse one subset per font (pipeline.stories.font_embed). A shaped book's subsets
                # differ by its name anyway: they embed only what it draws, as fpdf2 would.
                shared = not self.shaping
                add_font(pdf, "body", fonts.regular, "", shaping=self.shaping, shared=shared)
                add_font(pdf, "body", fonts.bold or fonts.regular, "B", shaping=self.shaping, shared=shared)
                self.family = "body"
                body = pdf.fonts["body"]
                self.covered = set(body.cmap) if isinstance(body, TTFFont) else None
            except Exception:  # a broken font file must not fail the book
                log.exception("font %s unusable; using the core font", fonts.regular)
        if self.covered is None:
            self.shaping = False
            return
        # Fallback fonts are loaded only when they draw something the book needs: fpdf2
        # parses a whole font per document (DejaVu Sans ~0.1 s, a CJK font ~0.5 s).
        wanted = {ord(c) for c in set(text)} - {10, 13}
        missing = wanted - self.covered
        used: list[str] = []
        for i, fb in enumerate(fonts.fallbacks):
            if not missing:
                break
            face = script_fonts.cjk_face(text) if fb.collection else 0
            try:
                cmap = script_fonts.cmap(fb.regular, face)
            except Exception:  # noqa: BLE001 - an unreadable fallback is skipped, the check below decides
                log.warning("cannot read font %s", fb.regular, exc_info=True)
                continue
            if not missing & cmap:
                continue
            name = f"fallback{i}"
            # Only what it will draw: the same cut for a story's book and its print files.
            chars = frozenset(missing & cmap) if fb.collection else None
            try:
                add_font(pdf, name, fb.regular, "", shaping=self.shaping, face=face, chars=chars)
                if fb.bold is not None:
                    add_font(pdf, name, fb.bold, "B", shaping=self.shaping, face=face, chars=chars)
            except Exception:  # noqa: BLE001
                log.warning("fallback font %s unusable", fb.regular, exc_info=True)
                continue
            used.append(name)
            self.covered |= cmap
            missing -= cmap
        if used:
            pdf.set_fallback_fonts(used, exact_match=False)
        self._fallbacks = used

    def width(self, text: str, size: float, style: str = "") -> float:
        """Width in mm of ``text`` at ``size`` pt (no kerning, as fpdf2 draws it).

        Glyph widths are read once per character from the font tables, so wrapping a page
        is linear; fpdf2's own multi_cell re-measures every fragment (most of the render time).
        A run with characters outside COMMON is measured shaped (joined Arabic letters and
        Indic conjuncts are narrower than their letters one by one).
        """
        if self.shaping and any(ord(ch) not in COMMON for ch in text):
            return sum(self._shaped_width(word, style) for word in text.split(" ")) * size + \
                text.count(" ") * self.width(" ", size, style)
        total = 0.0
        for ch in text:
            key = (ch, style)
            w = self._widths.get(key)
            if w is None:
                w = self._widths[key] = self._glyph_width(ch, style)
            total += w
        return total * size

    def _shaped_width(self, word: str, style: str) -> float:
        """mm per pt of font size for ``word`` as HarfBuzz shapes it, with fallback fonts."""
        key = (word, style)
        w = self._shaped.get(key)
        if w is None:
            pdf = self.pdf
            current = (pdf.font_family, pdf.font_style, pdf.font_size_pt)
            was_shaping = bool(pdf.text_shaping)
            pdf.set_font(self.family, style=style, size=100)
            set_shaping(pdf, True)
            w = self._shaped[key] = pdf.get_string_width(word) / 100
            set_shaping(pdf, was_shaping)
            if current[0]:
                pdf.set_font(*current)
        return w

    def _glyph_width(self, ch: str, style: str) -> float:
        """mm per pt of font size for one character, from whichever font will draw it."""
        if self.covered is None:  # core font: ask fpdf2, then put the caller's font back
            pdf = self.pdf
            current = (pdf.font_family, pdf.font_style, pdf.font_size_pt)
            pdf.set_font(self.family, style=style, size=100)
            width = pdf.get_string_width(ch) / 100
            if current[0]:
                pdf.set_font(*current)
            return width
        code = ord(ch)
        style = style.upper()
        names = [f"{self.family}{style}"]  # fpdf2 keys: "bodyB"
        for fb in self._fallbacks:
            names += [f"{fb}{style}", fb] if style else [fb]
        for name in names:
            font = self.pdf.fonts.get(name)
            if isinstance(font, TTFFont) and code in font.cmap:
                widths = cast(dict[int, int], font.cw)  # 1/1000 em, keyed by code point
                return widths.get(code, 0) * 0.001 * PT
        return 0.5 * PT  # never drawn (clean() refused it); a neutral guess

    def wrap(self, text: str, width: float, size: float, style: str = "") -> list[str]:
        """Greedy line breaks at spaces; a word wider than a line is split by characters."""
        space = self.width(" ", size, style)
        lines: list[str] = []
        line, line_w = "", 0.0
        for word in text.split():
            word_w = self.width(word, size, style)
            if line and line_w + space + word_w <= width:
                line, line_w = f"{line} {word}", line_w + space + word_w
                continue
            if line:
                lines.append(line)
            while word_w > width and len(word) > 1:  # e.g. a very long name without spaces
                cut = len(word) - 1
                while cut > 1 and self.width(word[:cut], size, style) > width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
                word_w = self.width(word, size, style)
            line, line_w = word, word_w
        if line:
            lines.append(line)
        return lines

    def balanced(self, text: str, width: float, size: float, style: str = "") -> list[str]:
        """Lines as even as possible (no lonely last word), for titles."""
        lines = self.wrap(text, width, size, style)
        if len(lines) < 2:
            return lines
        lo, hi = width / 2, width
        for _ in range(12):  # binary search the narrowest width giving as few lines
            mid = (lo + hi) / 2
            if len(self.wrap(text, mid, size, style)) <= len(lines):
                hi = mid
            else:
                lo = mid
        return self.wrap(text, hi, size, style)

    def clean(self, text: str, what: str = "The book's text") -> str:
        """``text`` (NFC) if every character of it has a glyph in one of the book's fonts; else
        UnprintableTextError saying where (``what``: "Page 3's text") and which kinds of
        characters, never the text (never "?" in a printed book)."""
        from pipeline.stories.fonts import JOINERS, UnprintableTextError, unprintable_message

        text = unicodedata.normalize("NFC", text)
        if self.covered is None:
            text = text.translate(_ASCII_PUNCT)
            bad = [ch for ch in text if ord(ch) >= 256 and ch != "\n"]
        else:
            covered = self.covered
            bad = [ch for ch in text if ord(ch) not in covered and ch != "\n" and ch not in JOINERS]
        if bad:
            raise UnprintableTextError(unprintable_message(list(dict.fromkeys(bad)), what))
        return text

    def check_drawn(self, what: str = "The book's text") -> None:
        """After drawing, before output: UnprintableTextError if fpdf2 met a character no font
        had (it would draw an empty box). Clears fpdf2's list, so its warning, which quotes
        the text, is never logged."""
        from pipeline.stories.fonts import UnprintableTextError, unprintable_message

        lost: list[str] = []
        for font in self.pdf.fonts.values():
            if isinstance(font, TTFFont) and font.missing_glyphs:
                lost += [chr(c) for c in font.missing_glyphs if chr(c) not in lost]
                font.missing_glyphs = []
        if lost:
            raise UnprintableTextError(unprintable_message(lost, what))


# ---------------------------------------------------------------------------------------------
# Lines
# ---------------------------------------------------------------------------------------------

def line_height(size: float) -> float:
    """The distance in mm between the lines of text set at ``size`` pt."""
    return size * PT * 1.45


def mix(a: Rgb, b: Rgb, t: float) -> Rgb:
    """The colour ``t`` of the way from ``a`` to ``b``."""
    return cast(Rgb, tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True)))


_RTL = "\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufeff"  # Hebrew, Arabic, Syriac, Thaana, NKo, presentation forms
RTL_RUN = re.compile(f"[{_RTL}][{_RTL}\u200c\u200d]*(?:\\s+[{_RTL}][{_RTL}\u200c\u200d]*)*")
LRM = "\u200e"


def set_shaping(pdf: FPDF, on: bool) -> None:
    """fpdf2's text shaping on or off. The book's sentences are English: each line's base
    direction is left to right, and a right-to-left name inside it (Arabic, Hebrew) is
    reordered as a run of its own (Unicode bidirectional algorithm, UAX #9). draw_lines ends
    each such run with a LEFT-TO-RIGHT MARK, so the punctuation after a name stays after it
    ("said محمد. محمد counted", not "said محمد .محمد counted"), as <bdi> does in the HTML book."""
    if on:
        pdf.set_text_shaping(True, direction="ltr")
    else:
        pdf.set_text_shaping(False)


def draw_lines(pdf: FPDF, lines: list[str], x: float, y: float, width: float,
               line_h: float, align: Align, color: Rgb) -> float:
    """Draw pre-wrapped lines from (x, y) in ``color``; returns the y below the last line."""
    pdf.set_text_color(*color)
    # Same fill colour as text: otherwise fpdf2 (2.8) wraps each cell in q/Q, and a font
    # switch for fallback glyphs (CJK) inside it is undone by Q while fpdf2 still believes it
    # is current, so the next line comes out in the wrong size.
    pdf.set_fill_color(*color)
    for line in lines:
        # Shaping (and the bidirectional algorithm) only for lines that need it: the rest of a
        # book is drawn as fast as a Latin book's (see Typesetter).
        shaped = any(ord(c) not in COMMON for c in line)
        if shaped != bool(pdf.text_shaping):
            set_shaping(pdf, shaped)
        if shaped:
            line = RTL_RUN.sub(lambda m: m.group(0) + LRM, line)
        pdf.set_xy(x, y)
        pdf.cell(width, line_h, line, align=align)
        y += line_h
    return y
