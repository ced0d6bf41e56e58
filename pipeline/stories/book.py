"""Render a finished picture book: a PDF to print or download, and one self-contained HTML page.

PDF: 8.5 x 8.5 in square pages (a common picture-book trim). A cover (theme, illustration,
title, "A story for <name>"), then one page per story page: the illustration on top, the text
below it in a size chosen for its length, the page number at the bottom. The page's colours
come from its illustration (a pale tint behind, a deep shade for the text accents), so every
theme gets a matching book without a colour table.

Fonts (pipeline.stories.fonts): DejaVu Serif for Latin, Greek and Cyrillic, one Noto font per other
script (Arabic, Hebrew, Devanagari, Thai, CJK, ...) loaded only for a book that needs it, with
fpdf2's text shaping (HarfBuzz, ``uharfbuzz``) and bidirectional text for those books. A
character no font can draw fails the render with UnprintableTextError (a PermanentStepError):
a book never prints "?" or empty boxes. Stories with such a name are refused at their start
(pipeline.stories.steps), so this is the last line of defence. Without any TrueType font (``fonts=``
in tests) the PDF core font is used, which covers Latin-1.
"""
from __future__ import annotations

import copy
import html
import io
import logging
import re
import tempfile
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import cast

from fpdf import FPDF
from fpdf.enums import Align
from fpdf.fonts import TTFFont
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)


class _NoText(logging.Filter):
    """fpdf2 quotes the text it draws in some log lines (missing glyphs: the child's name).
    Logs carry ids, never names: every string argument of an fpdf2 record is withheld."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) for a in record.args):
            record.args = tuple("[text withheld]" if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: "[text withheld]" if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def _quiet_text_logs() -> None:
    names = {n for n in logging.root.manager.loggerDict if n == "fpdf" or n.startswith("fpdf.")}
    names |= {f"fpdf.{m}" for m in ("output", "fonts", "fpdf", "html", "encryption", "bidi", "svg",
                                     "font_type_3", "image_parsing", "line_break", "text_region")}
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoText) for f in logger.filters):
            logger.addFilter(_NoText())
    # fontTools' subsetter lists the glyphs it keeps (a name's letters) at DEBUG and INFO.
    logging.getLogger("fontTools").setLevel(logging.WARNING)


_quiet_text_logs()

Rgb = tuple[int, int, int]


@dataclass
class BookPage:
    number: int
    text: str
    image: bytes  # PNG or JPEG of the personalized illustration (960x720)


@dataclass
class Book:
    title: str
    child_name: str
    theme_title: str
    pages: list[BookPage]
    cover_image: bytes | None = None  # None: the first page's illustration


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

# Tables fpdf2 drops from every embedded subset anyway (fpdf/output.py). Removing them once
# per process saves fontTools from decompiling them (GSUB/GPOS) again for every book (text
# shaping reads them from the font's own file).
_UNUSED_TABLES = ("FFTM", "GDEF", "GPOS", "GSUB", "MATH", "hdmx", "meta", "sbix", "CBDT", "CBLC",
                  "EBDT", "EBLC", "EBSC", "SVG ", "CPAL", "COLR")


# Latin (with accents), general punctuation and currency: what nearly every book needs. A book
# whose text stays inside it is drawn without text shaping, from cut-down fonts (fastest).
_COMMON = frozenset(range(0x20, 0x250)) | frozenset(range(0x2000, 0x2070)) | frozenset(range(0x20A0, 0x20C1))


def _template_from(data: bytes, style: str) -> TTFFont:
    with tempfile.NamedTemporaryFile(suffix=".ttf") as tmp:  # add_font reads a file by name
        tmp.write(data)
        tmp.flush()
        scratch = FPDF()
        scratch.add_font("template", style=style, fname=tmp.name)
    return cast(TTFFont, scratch.fonts[f"template{style}"])


@lru_cache(maxsize=32)
def _font_template(path: Path, style: str, common_only: bool, face: int = 0) -> tuple[TTFFont, bytes]:
    """A font parsed once per process (cmap, widths: ~0.1 s for DejaVu), and its file bytes
    without the tables the embedded subset never keeps.

    ``common_only``: the font cut down to _COMMON's glyphs first. fpdf2 subsets the font again
    for every book, decompiling every glyph and glyph name; from ~600 glyphs instead of ~3,000
    that is several times faster. The template is parsed from the cut-down file itself, so its
    glyph ids and names match the bytes each book gets. Without ``common_only`` the glyph order
    is the original file's (only tables are removed), so HarfBuzz can shape from the original
    file (its layout tables) and fpdf2 embed the glyphs it names. (Cutting a font with its
    layout tables kept costs seconds per font: fontTools' GSUB/GPOS closure.)"""
    from fontTools import subset as ftsubset
    from fontTools.ttLib import TTFont as FtFont

    with FtFont(path, recalcTimestamp=False, fontNumber=face) as ft:
        for tag in _UNUSED_TABLES:
            if tag in ft:
                del ft[tag]
        if common_only:
            cmap = ft.getBestCmap() or {}
            sub = ftsubset.Subsetter(ftsubset.Options(glyph_names=True, notdef_outline=True,
                                                      recommended_glyphs=True, layout_features=[],
                                                      name_IDs=["*"]))
            sub.populate(unicodes=[c for c in _COMMON if c in cmap])
            sub.subset(ft)
        buf = io.BytesIO()
        ft.save(buf)
    data = buf.getvalue()
    return _template_from(data, style), data


@lru_cache(maxsize=8)
def _cut_template(path: Path, style: str, face: int, chars: frozenset[int]) -> tuple[TTFFont, bytes]:
    """A big font (CJK: 20 MB, 65,000 glyphs) cut to ``chars`` for one book (instead of fpdf2
    parsing and subsetting the whole file per book). Cached: a story's book and its print files
    need the same cut."""
    from fontTools import subset as ftsubset
    from fontTools.ttLib import TTFont as FtFont

    with FtFont(path, recalcTimestamp=False, fontNumber=face, lazy=True) as ft:
        for tag in (*_UNUSED_TABLES, "vhea", "vmtx", "VORG", "BASE"):  # never read: not decompiled
            if tag in ft:
                del ft[tag]
        # Without layout features: CJK letters need no shaping (Hangul syllables are precomposed),
        # and the closure over a CJK font's GSUB costs seconds.
        sub = ftsubset.Subsetter(ftsubset.Options(glyph_names=True, notdef_outline=True,
                                                  recommended_glyphs=True, layout_features=[],
                                                  name_IDs=["*"]))
        sub.populate(unicodes=sorted(chars))
        sub.subset(ft)
        buf = io.BytesIO()
        ft.save(buf)
    data = buf.getvalue()
    return _template_from(data, style), data


@lru_cache(maxsize=32)
def _hb_face(path: Path | None, face: int, data: bytes | None = None) -> object:
    """A HarfBuzz face (read-only, shared by every book of this process): a font file's own,
    with its layout tables, or a cut font's bytes."""
    import uharfbuzz as hb

    blob = hb.Blob(data) if data is not None else hb.Blob.from_file_path(str(path))
    return hb.Face(blob, face)


def _add_font(pdf: FPDF, family: str, path: Path, style: str = "", *, shaping: bool = False,
              face: int = 0, chars: frozenset[int] | None = None) -> None:
    """pdf.add_font, without parsing the font file again for every book.

    fpdf2 parses the whole file per document, which dominated a book's render time. The parsed
    tables are read-only, so each document gets a shallow copy of a per-process template with
    its own per-document state: a fresh lazily-loaded fontTools font (fpdf2 subsets it in place
    when writing the PDF), a fresh subset map, and for text shaping a HarfBuzz font on the same
    glyph order (``shaping``: the text has characters outside _COMMON). ``chars``: cut the
    font to exactly these code points instead (big CJK fonts).
    Tied to fpdf2 2.8's TTFFont attributes (pinned in pyproject.toml); anything unexpected falls
    back to a plain add_font.
    """
    try:
        from fontTools.ttLib import TTFont as FtFont
        from fpdf.fonts import SubsetMap

        if chars is not None:
            template, data = _cut_template(Path(path), style, face, chars)
        else:
            template, data = _font_template(Path(path), style, not shaping, face)
        font = copy.copy(template)
        font.i = len(pdf.fonts) + 1
        font.fontkey = f"{family.lower()}{style}"
        font.ttfont = FtFont(io.BytesIO(data), recalcTimestamp=False, lazy=True)
        font.ttffile = Path(path)
        font.collection_font_number = face
        font.missing_glyphs = []
        font.biggest_size_pt = 0
        font._hbfont = None
        if shaping:
            from fpdf.fonts import HarfBuzzFont

            # Same glyph ids as the template: the cut font's own bytes, else the original file.
            hb_face = _hb_face(None, 0, data) if chars is not None else _hb_face(Path(path), face)
            font._hbfont = HarfBuzzFont(hb_face)
        font.subset = SubsetMap(font)
        pdf.fonts[font.fontkey] = font
    except Exception:  # noqa: BLE001 - the slow path is always correct
        log.warning("font template unusable; parsing %s for this book", path, exc_info=True)
        if chars is not None or face:
            pdf.add_font(family, style=style, fname=path, collection_font_number=face)
        else:
            pdf.add_font(family, style=style, fname=path)


class _Fonts:
    """The fonts added to one FPDF document: what they can draw, and how wide it is.

    Text outside _COMMON (other scripts, combining marks) turns on fpdf2's text shaping
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
        self.shaping = any(ord(c) not in _COMMON for c in text if c not in "\n\r")
        if fonts.regular is not None:
            try:
                _add_font(pdf, "body", fonts.regular, "", shaping=self.shaping)
                _add_font(pdf, "body", fonts.bold or fonts.regular, "B", shaping=self.shaping)
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
                _add_font(pdf, name, fb.regular, "", shaping=self.shaping, face=face, chars=chars)
                if fb.bold is not None:
                    _add_font(pdf, name, fb.bold, "B", shaping=self.shaping, face=face, chars=chars)
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
        A run with characters outside _COMMON is measured shaped (joined Arabic letters and
        Indic conjuncts are narrower than their letters one by one).
        """
        if self.shaping and any(ord(ch) not in _COMMON for ch in text):
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
            _set_shaping(pdf, True)
            w = self._shaped[key] = pdf.get_string_width(word) / 100
            _set_shaping(pdf, was_shaping)
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
# Images
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Picture:
    jpeg: bytes
    width: int
    height: int
    tint: Rgb  # pale page background drawn from the picture
    shade: Rgb  # deep text colour drawn from the picture


_MAX_PIXELS_WIDE = 1600  # 8.5 in at ~190 dpi: sharper than needed, bigger files for nothing


def _picture(data: bytes, what: str) -> _Picture:
    """JPEG bytes (quality 88) and colours for one illustration; ValueError if unreadable."""
    try:
        img: Image.Image = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"{what}: the illustration is not a readable image") from exc
    passthrough = img.format == "JPEG" and img.mode == "RGB" and img.width <= _MAX_PIXELS_WIDE
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.new("RGB", rgba.size, (255, 255, 255))
        img.paste(rgba, mask=rgba.getchannel("A"))  # transparent areas print as paper
    elif img.mode != "RGB":
        img = img.convert("RGB")
    if img.width > _MAX_PIXELS_WIDE:
        img = img.resize((_MAX_PIXELS_WIDE, round(img.height * _MAX_PIXELS_WIDE / img.width)),
                         Image.Resampling.LANCZOS)
    if passthrough:
        jpeg = data  # already a JPEG: re-encoding would only lose quality and time
    else:
        out = io.BytesIO()
        img.save(out, "JPEG", quality=88)
        jpeg = out.getvalue()
    average = cast(tuple[int, int, int], img.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0)))
    tint = _mix(average, (255, 255, 255), 0.88)
    # A deep shade of the picture's own colour: dark enough for text on the tint.
    shade = cast(Rgb, tuple(round(c * 0.35 + 10) for c in average))
    return _Picture(jpeg, img.width, img.height, tint, shade)


# ---------------------------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------------------------

PAGE_MM = 215.9  # 8.5 in square
MARGIN = 14.0
FOOTER = 16.0  # space kept at the bottom for the page number
GAP = 8.0  # between the illustration and the text
PT = 0.3528  # mm per point
_TEXT_SIZES = ((35, 21.0), (65, 17.0), (10_000, 14.0))  # (up to N words, font size pt)
_MIN_IMAGE_H = 95.0  # below this, shrink the text instead of the picture


def _line_h(size: float) -> float:
    return size * PT * 1.45


_RTL = "\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufeff"  # Hebrew, Arabic, Syriac, Thaana, NKo, presentation forms
_RTL_RUN = re.compile(f"[{_RTL}][{_RTL}\u200c\u200d]*(?:\\s+[{_RTL}][{_RTL}\u200c\u200d]*)*")
LRM = "\u200e"


def _set_shaping(pdf: FPDF, on: bool) -> None:
    """fpdf2's text shaping on or off. The book's sentences are English: each line's base
    direction is left to right, and a right-to-left name inside it (Arabic, Hebrew) is
    reordered as a run of its own (Unicode bidirectional algorithm, UAX #9). _draw_lines ends
    each such run with a LEFT-TO-RIGHT MARK, so the punctuation after a name stays after it
    ("said محمد. محمد counted", not "said محمد .محمد counted"), as <bdi> does in the HTML book."""
    if on:
        pdf.set_text_shaping(True, direction="ltr")
    else:
        pdf.set_text_shaping(False)


def _draw_lines(pdf: FPDF, lines: list[str], x: float, y: float, width: float,
                line_h: float, align: Align, color: Rgb) -> float:
    """Draw pre-wrapped lines from (x, y) in ``color``; returns the y below the last line."""
    pdf.set_text_color(*color)
    # Same fill colour as text: otherwise fpdf2 (2.8) wraps each cell in q/Q, and a font
    # switch for fallback glyphs (CJK) inside it is undone by Q while fpdf2 still believes it
    # is current, so the next line comes out in the wrong size.
    pdf.set_fill_color(*color)
    for line in lines:
        # Shaping (and the bidirectional algorithm) only for lines that need it: the rest of a
        # book is drawn as fast as a Latin book's (see _Fonts).
        shaped = any(ord(c) not in _COMMON for c in line)
        if shaped != bool(pdf.text_shaping):
            _set_shaping(pdf, shaped)
        if shaped:
            line = _RTL_RUN.sub(lambda m: m.group(0) + LRM, line)
        pdf.set_xy(x, y)
        pdf.cell(width, line_h, line, align=align)
        y += line_h
    return y


def _cover(pdf: FPDF, fonts: _Fonts, book: Book, pic: _Picture | None) -> None:
    pdf.add_page()
    tint, shade = (pic.tint, pic.shade) if pic else ((250, 245, 236), (70, 52, 38))
    pdf.set_fill_color(*tint)
    pdf.rect(0, 0, PAGE_MM, PAGE_MM, style="F")
    y = MARGIN + 2
    pdf.set_font(fonts.family, style="B", size=11)
    pdf.set_char_spacing(2.2)  # small spaced capitals, like a series name on a real cover
    _draw_lines(pdf, [fonts.clean(book.theme_title.upper(), "The theme's title")], MARGIN, y, PAGE_MM - 2 * MARGIN,
                6, Align.C, shade)
    pdf.set_char_spacing(0)
    y += 12
    # The title's size: the largest that fits in three lines, with even line lengths.
    width = PAGE_MM - 2 * MARGIN - 10
    title = fonts.clean(book.title, "The book's title")
    size = 30.0
    while size > 16 and len(fonts.wrap(title, width, size, "B")) > 3:
        size -= 2
    title_lines = fonts.balanced(title, width, size, "B")
    title_h = len(title_lines) * _line_h(size) * 0.92
    sub_size = 15.0
    below = GAP + title_h + 4 + _line_h(sub_size)
    if pic:
        img_w = PAGE_MM - 2 * MARGIN - 8
        img_h = min(img_w * pic.height / pic.width, PAGE_MM - y - MARGIN - below - 6)
        img_w = img_h * pic.width / pic.height
        x = (PAGE_MM - img_w) / 2
        _framed_image(pdf, pic, x, y, img_w, img_h)
        y += img_h
    y += GAP
    pdf.set_font(fonts.family, style="B", size=size)
    y = _draw_lines(pdf, title_lines, (PAGE_MM - width) / 2, y, width, _line_h(size) * 0.92,
                    Align.C, shade)
    pdf.set_font(fonts.family, size=sub_size)
    dedication = fonts.clean(f"A story for {' '.join(book.child_name.split())}", "The child's name")
    _draw_lines(pdf, fonts.wrap(dedication, PAGE_MM - 2 * MARGIN, sub_size), MARGIN, y + 4,
                PAGE_MM - 2 * MARGIN, _line_h(sub_size), Align.C, _mix(shade, tint, 0.25))


def _mix(a: Rgb, b: Rgb, t: float) -> Rgb:
    """The colour ``t`` of the way from ``a`` to ``b``."""
    return cast(Rgb, tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True)))


def _framed_image(pdf: FPDF, pic: _Picture, x: float, y: float, w: float, h: float) -> None:
    """The picture on a white mat with a soft shadow, like a print pasted on the page."""
    pdf.set_fill_color(*_mix(pic.shade, pic.tint, 0.82))
    pdf.rect(x - 1.6 + 1.2, y - 1.6 + 1.6, w + 3.2, h + 3.2, style="F", round_corners=True,
             corner_radius=3)
    pdf.set_fill_color(255, 255, 255)
    pdf.rect(x - 1.6, y - 1.6, w + 3.2, h + 3.2, style="F", round_corners=True, corner_radius=3)
    pdf.image(io.BytesIO(pic.jpeg), x=x, y=y, w=w, h=h)


def _story_page(pdf: FPDF, fonts: _Fonts, page: BookPage, pic: _Picture) -> None:
    pdf.add_page()
    pdf.set_fill_color(*pic.tint)
    pdf.rect(0, 0, PAGE_MM, PAGE_MM, style="F")
    text = fonts.clean(" ".join(page.text.split()), f"Page {page.number}'s text")
    width = PAGE_MM - 2 * MARGIN - 8
    n_words = len(text.split())
    size = next(s for limit, s in _TEXT_SIZES if n_words <= limit)
    max_img_w = PAGE_MM - 2 * MARGIN
    full_h = max_img_w * pic.height / pic.width
    # Long text shrinks the picture first (down to _MIN_IMAGE_H), then the type.
    while True:
        lines = fonts.wrap(text, width, size)
        text_h = len(lines) * _line_h(size)
        img_h = min(full_h, PAGE_MM - MARGIN - GAP - text_h - FOOTER - 4)
        if img_h >= _MIN_IMAGE_H or size <= 10:
            break
        size -= 1
    img_h = max(img_h, 40.0)
    img_w = img_h * pic.width / pic.height
    _framed_image(pdf, pic, (PAGE_MM - img_w) / 2, MARGIN, img_w, img_h)
    # The text sits in the middle of the space between picture and page number.
    top = MARGIN + img_h + GAP
    room = PAGE_MM - FOOTER - top
    pdf.set_font(fonts.family, size=size)
    # Short text centred, like a picture book; long text left-aligned, easier to read.
    align = Align.C if n_words <= 65 else Align.L
    _draw_lines(pdf, lines, (PAGE_MM - width) / 2, top + max(0.0, (room - text_h) / 2), width,
                _line_h(size), align, pic.shade)
    pdf.set_font(size=10)
    _draw_lines(pdf, [str(page.number)], 0, PAGE_MM - FOOTER + 3, PAGE_MM, 6, Align.C,
                _mix(pic.shade, pic.tint, 0.45))


def render_pdf(book: Book, *, fonts: FontSet | None = None) -> bytes:
    """The book as PDF bytes: a cover, then one page per story page.

    Raises ValueError if an illustration is not a readable image, UnprintableTextError (a
    ValueError and PermanentStepError) if a character of the text has no glyph in any font,
    FontConfigError if the body font is not installed. ``fonts`` overrides the fonts found on
    this machine (tests; a deployment with its own font folder).
    """
    pdf = FPDF(unit="mm", format=(PAGE_MM, PAGE_MM))
    pdf.set_auto_page_break(False)
    pdf.set_margins(0, 0, 0)
    pdf.set_creator("AI Story Creator")
    text = "".join([book.title, book.child_name, book.theme_title.upper(), "A story for ",
                    *(p.text for p in book.pages), "0123456789?"])
    font = _Fonts(pdf, fonts or find_fonts(), text)
    pdf.set_title(" ".join(book.title.split()))  # metadata: any Unicode, no glyphs needed
    pdf.set_font(font.family, size=12)

    cache: dict[bytes, _Picture] = {}  # the cover is usually page 1's picture: convert once

    def picture(data: bytes, what: str) -> _Picture:
        if data not in cache:
            cache[data] = _picture(data, what)
        return cache[data]

    pages = [(p, picture(p.image, f"page {p.number}")) for p in book.pages]
    cover_data = book.cover_image or (book.pages[0].image if book.pages else None)
    _cover(pdf, font, book, picture(cover_data, "cover") if cover_data else None)
    font.check_drawn("The cover's text")
    for page, pic in pages:
        _story_page(pdf, font, page, pic)
        font.check_drawn(f"Page {page.number}'s text")
    return bytes(pdf.output())


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

_SCHEME = re.compile(r"^\s*([a-zA-Z][a-zA-Z0-9+.-]*):")
_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f7f1e8; color: #3a2f26;
  font-family: Georgia, "Iowan Old Style", "Palatino Linotype", "Noto Serif", serif; }
main { max-width: 760px; margin: 0 auto; padding: 20px 14px 40px; }
.cover, .page { background: #fffdf9; border-radius: 20px; overflow: hidden; margin: 0 0 28px;
  box-shadow: 0 8px 28px rgba(80, 55, 30, .13); }
.cover { text-align: center; padding-bottom: 26px; }
.theme { margin: 0; padding: 18px 16px 14px; font: 700 .8rem/1.2 system-ui, sans-serif;
  letter-spacing: .22em; text-transform: uppercase; color: #9b6b43; }
img { display: block; width: 100%; height: auto; background: #efe6da; }
h1 { margin: 22px 20px 8px; font-size: clamp(1.7rem, 6vw, 2.6rem); line-height: 1.15;
  color: #3b2a1d; }
.dedication { margin: 0 20px; font-size: clamp(1.05rem, 3.6vw, 1.3rem); color: #8a6d55;
  font-style: italic; }
.text { margin: 0; padding: 22px clamp(18px, 5vw, 40px) 6px; font-size: clamp(1.15rem, 3.8vw,
  1.45rem); line-height: 1.65; }
.num { margin: 0; padding: 6px 0 16px; text-align: center; font: .85rem system-ui, sans-serif;
  color: #b09a86; }
@media print {
  body { background: none; }
  main { max-width: none; padding: 0; }
  .cover, .page { box-shadow: none; border-radius: 0; break-after: page; break-inside: avoid; }
}
"""


def _url(url: str | None) -> str | None:
    """An attribute-safe URL, or None for a script-running one (javascript:, data:text/...)."""
    if not url:
        return None
    m = _SCHEME.match(url)
    if m and m.group(1).lower() not in ("http", "https") and not url.strip().lower().startswith(
        "data:image/"
    ):
        log.warning("refusing image URL with scheme %r", m.group(1))
        return None
    return html.escape(url.strip(), quote=True)


def _paragraphs(text: str, name: str) -> Iterable[str]:
    for para in re.split(r"\n\s*\n", text.strip()):
        if para.strip():
            yield _bidi_html(" ".join(para.split()), name)


FSI, PDI = "\u2068", "\u2069"  # FIRST STRONG ISOLATE, POP DIRECTIONAL ISOLATE (UAX #9, 2.7)


def _runs(text: str, name: str) -> Iterable[tuple[str, bool]]:
    """``text`` cut into (piece, isolate) runs: each occurrence of the name (any case) and every
    right-to-left run (Arabic, Hebrew, ...) is one to isolate from the English around it."""
    alternatives = [_RTL_RUN.pattern]
    if name.strip():
        alternatives.insert(0, re.escape(name))
    pos = 0
    for m in re.finditer("|".join(alternatives), text, re.IGNORECASE):
        if m.start() > pos:
            yield text[pos:m.start()], False
        yield m.group(0), True
        pos = m.end()
    if pos < len(text):
        yield text[pos:], False


def _bidi_html(text: str, name: str) -> str:
    """Escaped ``text`` with the name and right-to-left runs in ``<bdi>`` (HTML's bidi isolation):
    "said <bdi>محمد</bdi>." keeps its full stop after the name in a browser, where an unisolated
    Arabic name would pull the punctuation to its left."""
    e = html.escape
    return "".join(f"<bdi>{e(piece, quote=True)}</bdi>" if iso else e(piece, quote=True)
                   for piece, iso in _runs(text, name))


def _bidi_plain(text: str, name: str) -> str:
    """Plain text (a document ``<title>``: no markup) with the same runs isolated by FSI ... PDI."""
    return "".join(f"{FSI}{piece}{PDI}" if iso and _RTL_RUN.search(piece) else piece
                   for piece, iso in _runs(text, name))


def render_html(book: Book, image_urls: list[str], cover_url: str | None) -> str:
    """One self-contained, mobile-friendly HTML page; images by the given relative URLs.

    Every piece of text is HTML-escaped (a name can be anything, "<script>" included). The page
    is English, left to right (``<html lang="en" dir="ltr">``); the child's name and any
    right-to-left run (an Arabic or Hebrew name) are isolated in ``<bdi>`` wherever they appear
    (title, dedication, every page), so their direction never moves the punctuation around them
    (HTML Living Standard, the bdi element; Unicode UAX #9 isolates).
    """
    if len(image_urls) != len(book.pages):
        raise ValueError(f"{len(image_urls)} image URLs for {len(book.pages)} pages")
    e = html.escape
    name = " ".join(book.child_name.split())
    out = [
        "<!DOCTYPE html>",
        '<html lang="en" dir="ltr">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(_bidi_plain(book.title, name), quote=True)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        '<header class="cover">',
        f'<p class="theme">{e(book.theme_title, quote=True)}</p>',
    ]
    cover = _url(cover_url)
    if cover:
        out.append(f'<img src="{cover}" alt="Cover illustration" width="960" height="720">')
    out += [
        f"<h1>{_bidi_html(book.title, name)}</h1>",
        f'<p class="dedication">A story for <bdi>{e(name, quote=True)}</bdi></p>',
        "</header>",
    ]
    for page, url in zip(book.pages, image_urls, strict=True):
        out.append(f'<section class="page" id="page-{page.number}">')
        src = _url(url)
        if src:
            out.append(f'<img src="{src}" alt="Illustration for page {page.number}" '
                       'width="960" height="720" loading="lazy">')
        out += [f'<p class="text">{p}</p>' for p in _paragraphs(page.text, name)]
        out += [f'<p class="num">{page.number}</p>', "</section>"]
    out += ["</main>", "</body>", "</html>", ""]
    return "\n".join(out)
