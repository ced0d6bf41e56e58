"""Render a finished picture book: a PDF to print or download, and one self-contained HTML page.

PDF: 8.5 x 8.5 in square pages (a common picture-book trim). A cover (theme, illustration,
title, "A story for <name>"), then one page per story page: the illustration on top, the text
below it in a size chosen for its length, the page number at the bottom. The page's colours
come from its illustration (a pale tint behind, a deep shade for the text accents), so every
theme gets a matching book without a colour table.

Fonts: DejaVu (Debian's ``fonts-dejavu-core``, on every machine of this project, or any folder
in ``STORYBOOK_FONT_DIR``) for Latin, Greek, Cyrillic and more; a CJK font is used as a fallback
when one is installed (``fonts-droid-fallback``, ``fonts-wqy-microhei`` or ``fonts-noto-cjk``).
A character no font can draw never fails the render: it becomes "?" (letters) or is dropped
(emoji, marks), with a warning in the log. Without any TrueType font the PDF core font is used,
which covers Latin-1.
"""
from __future__ import annotations

import copy
import html
import importlib.util
import io
import logging
import os
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
class FontSet:
    """TrueType files for the book. ``regular=None`` means: use the PDF core font (Latin-1)."""

    regular: Path | None
    bold: Path | None
    fallbacks: tuple[Path, ...] = ()  # tried in order for characters ``regular`` lacks


def _font_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("STORYBOOK_FONT_DIR", "").split(os.pathsep) if p]
    dirs += [
        Path("/usr/share/fonts/truetype/dejavu"),  # Debian/Ubuntu: fonts-dejavu-core
        Path("/usr/share/fonts/dejavu"),  # Fedora, Alpine
        Path("/usr/share/fonts/TTF"),  # Arch
        Path("/usr/local/share/fonts"),
        Path("/Library/Fonts"),
    ]
    # Python packages that ship DejaVu, if one happens to be installed (never imported:
    # find_spec only locates them, so this costs nothing and pulls in nothing).
    for package, sub in (("matplotlib", "mpl-data/fonts/ttf"), ("rinoh_typeface_dejavusans", "")):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        if spec and spec.submodule_search_locations:
            dirs.append(Path(list(spec.submodule_search_locations)[0]) / sub)
    return dirs


_CJK_FONTS = (
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",  # fonts-droid-fallback
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",  # fonts-wqy-microhei
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",  # fonts-wqy-zenhei
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # fonts-noto-cjk
)


@lru_cache(maxsize=1)
def find_fonts() -> FontSet:
    """The best fonts on this machine: DejaVu Serif for the story (DejaVu Sans if absent)."""

    def first(*names: str) -> Path | None:
        for d in _font_dirs():
            for n in names:
                if (d / n).is_file():
                    return d / n
        return None

    regular = first("DejaVuSerif.ttf", "DejaVuSans.ttf")
    bold = first("DejaVuSerif-Bold.ttf", "DejaVuSans-Bold.ttf") or regular
    fallbacks: list[Path] = []
    sans = first("DejaVuSans.ttf")  # covers scripts DejaVu Serif lacks (Arabic, Hebrew, ...)
    if sans and sans != regular:
        fallbacks.append(sans)
    fallbacks += [Path(p) for p in _CJK_FONTS if Path(p).is_file()][:1]
    if regular is None:
        log.warning("no DejaVu font found (install fonts-dejavu-core); the PDF will use the "
                    "Latin-1 core font")
    return FontSet(regular=regular, bold=bold, fallbacks=tuple(fallbacks))


@lru_cache(maxsize=16)
def _cmap(path: Path) -> frozenset[int]:
    """The code points a font file can draw (read once per process; only the cmap table)."""
    from fontTools.ttLib import TTFont  # fpdf2's own dependency

    try:
        with TTFont(path, lazy=True, fontNumber=0) as font:
            return frozenset(font.getBestCmap() or {})
    except Exception:
        log.warning("cannot read font %s", path, exc_info=True)
        return frozenset()


_ASCII_PUNCT = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-",
                              "…": "...", "\u00a0": " "})
# Characters without a glyph: symbols and invisible marks are dropped, anything else is "?".
_DROP_CATEGORIES = {"So", "Sk", "Mn", "Me", "Cf", "Co", "Cs", "Cn"}


# Tables fpdf2 drops from every embedded subset anyway (fpdf/output.py). Removing them once
# per process saves fontTools from decompiling them (GSUB/GPOS) again for every book.
_UNUSED_TABLES = ("FFTM", "GDEF", "GPOS", "GSUB", "MATH", "hdmx", "meta", "sbix", "CBDT", "CBLC",
                  "EBDT", "EBLC", "EBSC", "SVG ", "CPAL", "COLR")


# Latin (with accents), general punctuation and currency: what nearly every book needs.
_COMMON = frozenset(range(0x20, 0x250)) | frozenset(range(0x2000, 0x2070)) | frozenset(range(0x20A0, 0x20C1))


@lru_cache(maxsize=32)
def _font_template(path: Path, style: str, common_only: bool) -> tuple[TTFFont, bytes]:
    """A font parsed once per process (cmap, widths: ~0.1 s for DejaVu), and its file bytes
    without the tables the embedded subset never keeps.

    ``common_only``: the font cut down to _COMMON's glyphs first. fpdf2 subsets the font again
    for every book, decompiling every glyph and glyph name; from ~600 glyphs instead of ~3,000
    that is several times faster. The template is parsed from the cut-down file itself, so its
    glyph ids and names match the bytes each book gets."""
    from fontTools import subset as ftsubset
    from fontTools.ttLib import TTFont as FtFont

    with FtFont(path, recalcTimestamp=False, fontNumber=0) as ft:
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
    with tempfile.NamedTemporaryFile(suffix=".ttf") as tmp:  # add_font reads a file by name
        tmp.write(data)
        tmp.flush()
        scratch = FPDF()
        scratch.add_font("template", style=style, fname=tmp.name)
    return cast(TTFFont, scratch.fonts[f"template{style}"]), data


def _add_font(pdf: FPDF, family: str, path: Path, style: str = "", text: str = "") -> None:
    """pdf.add_font, without parsing the font file again for every book.

    fpdf2 parses the whole file per document, which dominated a book's render time. The parsed
    tables are read-only, so each document gets a shallow copy of a per-process template with
    its own per-document state: a fresh lazily-loaded fontTools font (fpdf2 subsets it in place
    when writing the PDF) and a fresh subset map. Tied to fpdf2 2.8's TTFFont attributes
    (pinned in pyproject.toml); anything unexpected falls back to a plain add_font.
    """
    try:
        from fontTools.ttLib import TTFont as FtFont
        from fpdf.fonts import SubsetMap

        common_only = all(ord(c) in _COMMON or c in "\n\r" for c in text)
        template, data = _font_template(Path(path), style, common_only)
        font = copy.copy(template)
        font.i = len(pdf.fonts) + 1
        font.fontkey = f"{family.lower()}{style}"
        font.ttfont = FtFont(io.BytesIO(data), recalcTimestamp=False, lazy=True)
        font.missing_glyphs = []
        font.biggest_size_pt = 0
        font._hbfont = None
        font.subset = SubsetMap(font)
        pdf.fonts[font.fontkey] = font
    except Exception:  # noqa: BLE001 - the slow path is always correct
        log.warning("font template unusable; parsing %s for this book", path, exc_info=True)
        pdf.add_font(family, style=style, fname=path)


class _Fonts:
    """The fonts added to one FPDF document: what they can draw, and how wide it is."""

    def __init__(self, pdf: FPDF, fonts: FontSet, text: str) -> None:
        self.pdf = pdf
        self.family = "helvetica"
        self.covered: set[int] | None = None  # None: the core font, Latin-1
        self._fallbacks: list[str] = []
        self._widths: dict[tuple[str, str], float] = {}
        self.lost: set[str] = set()  # characters no font could draw, logged once per book
        if fonts.regular is not None:
            try:
                _add_font(pdf, "body", fonts.regular, "", text)
                _add_font(pdf, "body", fonts.bold or fonts.regular, "B", text)
                self.family = "body"
                body = pdf.fonts["body"]
                self.covered = set(body.cmap) if isinstance(body, TTFFont) else None
            except Exception:  # a broken font file must not fail the book
                log.exception("font %s unusable; using the core font", fonts.regular)
        if self.covered is None:
            return
        # Fallback fonts are loaded only when they draw something the book needs: fpdf2
        # parses a whole font per document (DejaVu Sans ~0.1 s, a CJK font ~0.5 s).
        missing = {ord(c) for c in set(text)} - self.covered - {10, 13}
        used: list[str] = []
        for i, path in enumerate(fonts.fallbacks):
            if not missing:
                break
            if not missing & _cmap(path):
                continue
            name = f"fallback{i}"
            try:
                _add_font(pdf, name, path, "", text)
            except Exception:
                log.warning("fallback font %s unusable", path, exc_info=True)
                continue
            added = pdf.fonts[name]
            cmap = set(added.cmap) if isinstance(added, TTFFont) else set()
            if missing & cmap:
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
        """
        total = 0.0
        for ch in text:
            key = (ch, style)
            w = self._widths.get(key)
            if w is None:
                w = self._widths[key] = self._glyph_width(ch, style)
            total += w
        return total * size

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
        names = [f"{self.family}{style.upper()}", *self._fallbacks]  # fpdf2 keys: "bodyB"
        for name in names:
            font = self.pdf.fonts.get(name)
            if isinstance(font, TTFFont) and code in font.cmap:
                widths = cast(dict[int, int], font.cw)  # 1/1000 em, keyed by code point
                return widths.get(code, 0) * 0.001 * PT
        return 0.5 * PT  # never drawn (clean() removed it); a neutral guess

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

    def clean(self, text: str) -> str:
        """Text every character of which a font can draw (see the module doc)."""
        text = unicodedata.normalize("NFC", text)
        if self.covered is None:
            text = text.translate(_ASCII_PUNCT)
            ok = (lambda ch: ord(ch) < 256)  # noqa: E731
        else:
            covered = self.covered
            ok = (lambda ch: ord(ch) in covered or ch in "\n")  # noqa: E731
        out: list[str] = []
        for ch in text:
            if ok(ch):
                out.append(ch)
                continue
            self.lost.add(ch)
            if unicodedata.category(ch) not in _DROP_CATEGORIES:
                out.append("?")
        return "".join(out)


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


def _draw_lines(pdf: FPDF, lines: list[str], x: float, y: float, width: float,
                line_h: float, align: Align, color: Rgb) -> float:
    """Draw pre-wrapped lines from (x, y) in ``color``; returns the y below the last line."""
    pdf.set_text_color(*color)
    # Same fill colour as text: otherwise fpdf2 (2.8) wraps each cell in q/Q, and a font
    # switch for fallback glyphs (CJK) inside it is undone by Q while fpdf2 still believes it
    # is current, so the next line comes out in the wrong size.
    pdf.set_fill_color(*color)
    for line in lines:
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
    _draw_lines(pdf, [fonts.clean(book.theme_title.upper())], MARGIN, y, PAGE_MM - 2 * MARGIN,
                6, Align.C, shade)
    pdf.set_char_spacing(0)
    y += 12
    # The title's size: the largest that fits in three lines, with even line lengths.
    width = PAGE_MM - 2 * MARGIN - 10
    title = fonts.clean(book.title)
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
    dedication = fonts.clean(f"A story for {' '.join(book.child_name.split())}")
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
    text = fonts.clean(" ".join(page.text.split()))
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

    Raises ValueError if an illustration is not a readable image. ``fonts`` overrides the
    fonts found on this machine (tests; a deployment with its own font folder).
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
    for page, pic in pages:
        _story_page(pdf, font, page, pic)
    if font.lost:
        log.warning("book %r: no installed font can draw %s; replaced by '?' or dropped",
                    book.title, ", ".join(f"U+{ord(c):04X}" for c in sorted(font.lost)))
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


def _paragraphs(text: str) -> Iterable[str]:
    for para in re.split(r"\n\s*\n", text.strip()):
        if para.strip():
            yield html.escape(" ".join(para.split()), quote=True)


def render_html(book: Book, image_urls: list[str], cover_url: str | None) -> str:
    """One self-contained, mobile-friendly HTML page; images by the given relative URLs.

    Every piece of text is HTML-escaped (a name can be anything, "<script>" included).
    """
    if len(image_urls) != len(book.pages):
        raise ValueError(f"{len(image_urls)} image URLs for {len(book.pages)} pages")
    e = html.escape
    name = e(" ".join(book.child_name.split()), quote=True)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(book.title, quote=True)}</title>",
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
        f"<h1>{e(book.title, quote=True)}</h1>",
        f'<p class="dedication">A story for {name}</p>',
        "</header>",
    ]
    for page, url in zip(book.pages, image_urls, strict=True):
        out.append(f'<section class="page" id="page-{page.number}">')
        src = _url(url)
        if src:
            out.append(f'<img src="{src}" alt="Illustration for page {page.number}" '
                       'width="960" height="720" loading="lazy">')
        out += [f'<p class="text">{p}</p>' for p in _paragraphs(page.text)]
        out += [f'<p class="num">{page.number}</p>', "</section>"]
    out += ["</main>", "</body>", "</html>", ""]
    return "\n".join(out)
