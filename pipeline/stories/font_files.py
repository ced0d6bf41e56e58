"""Font files made ready for fpdf2 documents, fast: each file parsed once per process.

fpdf2 parses a whole font file for every document, which dominated a book's render time (DejaVu
~0.1 s, a CJK font ~0.5 s, per book). ``add_font`` gives each document a shallow copy of a
per-process template instead (pipeline.stories.typeset chooses the fonts; this module loads them):

- ``COMMON`` text (Latin with accents, punctuation, currency) is drawn from fonts cut down to
  those glyphs, without text shaping (the fastest path, most books);
- a book with other scripts gets the whole font, its glyph order kept so that HarfBuzz
  (``uharfbuzz``) shapes from the original file's layout tables;
- a big CJK collection is cut to the characters of the book (cached: a story's book and its
  print files need the same cut).

Tied to fpdf2 2.8's TTFFont attributes (pinned in pyproject.toml); anything unexpected falls back
to fpdf2's own ``add_font``. Importing this module also keeps the text of fpdf2's log records (a
child's name) out of the logs (``quiet_text_logs``).
"""
from __future__ import annotations

import copy
import io
import logging
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import cast

from fpdf import FPDF
from fpdf.fonts import TTFFont

from pipeline.stories.font_embed import SourceFont, digest, shared_glyphs

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


def quiet_text_logs() -> None:
    """Withhold the text of every fpdf2 log record (child names) and silence fontTools' glyph lists.
    Idempotent; runs when this module is imported."""
    names = {n for n in logging.root.manager.loggerDict if n == "fpdf" or n.startswith("fpdf.")}
    names |= {f"fpdf.{m}" for m in ("output", "fonts", "fpdf", "html", "encryption", "bidi", "svg",
                                     "font_type_3", "image_parsing", "line_break", "text_region")}
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoText) for f in logger.filters):
            logger.addFilter(_NoText())
    # fontTools' subsetter lists the glyphs it keeps (a name's letters) at DEBUG and INFO.
    logging.getLogger("fontTools").setLevel(logging.WARNING)


quiet_text_logs()

# Tables fpdf2 drops from every embedded subset anyway (fpdf/output.py). Removing them once
# per process saves fontTools from decompiling them (GSUB/GPOS) again for every book (text
# shaping reads them from the font's own file).
_UNUSED_TABLES = ("FFTM", "GDEF", "GPOS", "GSUB", "MATH", "hdmx", "meta", "sbix", "CBDT", "CBLC",
                  "EBDT", "EBLC", "EBSC", "SVG ", "CPAL", "COLR")


# Latin (with accents), general punctuation and currency: what nearly every book needs. A book
# whose text stays inside it is drawn without text shaping, from cut-down fonts (fastest).
COMMON = frozenset(range(0x20, 0x250)) | frozenset(range(0x2000, 0x2070)) | frozenset(range(0x20A0, 0x20C1))


def _template_from(data: bytes, style: str) -> TTFFont:
    with tempfile.NamedTemporaryFile(suffix=".ttf") as tmp:  # add_font reads a file by name
        tmp.write(data)
        tmp.flush()
        scratch = FPDF()
        scratch.add_font("template", style=style, fname=tmp.name)
    return cast(TTFFont, scratch.fonts[f"template{style}"])


@lru_cache(maxsize=32)
def _font_template(path: Path, style: str, common_only: bool, face: int = 0) -> tuple[TTFFont, bytes, str]:
    """A font parsed once per process (cmap, widths: ~0.1 s for DejaVu), and its file bytes
    without the tables the embedded subset never keeps.

    ``common_only``: the font cut down to COMMON's glyphs first. fpdf2 subsets the font again
    for every book, decompiling every glyph and glyph name; from ~600 glyphs instead of ~3,000
    that is several times faster. The template is parsed from the cut-down file itself, so its
    glyph ids and names match the bytes each book gets. Without ``common_only`` the glyph order
    is the original file's (only tables are removed), so HarfBuzz can shape from the original
    file (its layout tables) and fpdf2 embed the glyphs it names. (Cutting a font with its
    layout tables kept costs seconds per font: fontTools' GSUB/GPOS closure.) Also returns the
    bytes' sha256 (pipeline.stories.font_embed caches the embedded subsets by it)."""
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
            sub.populate(unicodes=[c for c in COMMON if c in cmap])
            sub.subset(ft)
        buf = io.BytesIO()
        ft.save(buf)
    data = buf.getvalue()
    return _template_from(data, style), data, digest(data)


@lru_cache(maxsize=8)
def _cut_template(path: Path, style: str, face: int, chars: frozenset[int]) -> tuple[TTFFont, bytes, str]:
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
    return _template_from(data, style), data, digest(data)


@lru_cache(maxsize=32)
def _hb_face(path: Path | None, face: int, data: bytes | None = None) -> object:
    """A HarfBuzz face (read-only, shared by every book of this process): a font file's own,
    with its layout tables, or a cut font's bytes."""
    import uharfbuzz as hb

    blob = hb.Blob(data) if data is not None else hb.Blob.from_file_path(str(path))
    return hb.Face(blob, face)


def add_font(pdf: FPDF, family: str, path: Path, style: str = "", *, shaping: bool = False,
             face: int = 0, chars: frozenset[int] | None = None, shared: bool = False) -> None:
    """pdf.add_font, without parsing the font file again for every book.

    fpdf2 parses the whole file per document, which dominated a book's render time. The parsed
    tables are read-only, so each document gets a shallow copy of a per-process template with
    its own per-document state: a fresh lazily-loaded fontTools font (fpdf2 subsets it in place
    when writing the PDF), a fresh subset map, and for text shaping a HarfBuzz font on the same
    glyph order (``shaping``: the text has characters outside COMMON). ``chars``: cut the
    font to exactly these code points instead (big CJK fonts). ``shared``: the PDF embeds this
    font's glyphs of ASCII and common punctuation in every book, so most books embed the same
    subset (the body fonts; pipeline.stories.font_embed caches the subsets per process).
    Tied to fpdf2 2.8's TTFFont attributes (pinned in pyproject.toml); anything unexpected falls
    back to a plain add_font.
    """
    try:
        from fpdf.fonts import SubsetMap

        if chars is not None:
            template, data, sha = _cut_template(Path(path), style, face, chars)
        else:
            template, data, sha = _font_template(Path(path), style, not shaping, face)
        font = copy.copy(template)
        font.i = len(pdf.fonts) + 1
        font.fontkey = f"{family.lower()}{style}"
        # Read lazily from the same bytes; at output it is swapped for the cached subset
        # (pipeline.stories.font_embed.embed_cached), else fpdf2 subsets it itself.
        font.ttfont = SourceFont(data, sha, shared_glyphs(template.cmap) if shared else frozenset())
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
