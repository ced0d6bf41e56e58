"""The font subsets a book's PDF embeds, made once per process instead of once per document.

fpdf2 (2.8) subsets every font of every document when it writes the PDF (``OutputProducer._add_fonts``:
fontTools' ``Subsetter`` on the document's ``TTFFont.ttfont``, then ``getGlyphID`` for each glyph
it drew, then ``ttfont.save``). That was ~70 % of a book's PDF build (py-spy, bench_orchestration),
the same work for every book with the same letters. Here, just before ``pdf.output()``,
``embed_cached(pdf)`` gives each font a subset from a per-process cache:

- a font added by pipeline.stories.font_files has a ``SourceFont`` as its ``ttfont``: its bytes,
  their sha256 (the font's identity) and the glyph names every book embeds from it (``shared``:
  printable ASCII and the common quotes and dashes, for the cut-down body fonts of a book without
  text shaping; none for other fonts);
- the subset embeds ``shared`` plus the glyphs the document drew, made with fpdf2's own options
  (the same tables, hinting, glyph closure); cached on (sha256, drawn glyphs not in ``shared``).
  English text with a Latin name has nothing outside ``shared`` except the name's accented
  letters, so nearly every such book reuses one subset per font (88 % hits over 150 offline-writer
  stories with 40 Latin names, the first of each included); a shaped book (another script) embeds
  exactly what fpdf2 would and reuses it for the same name (its book and print files, a redo);
- fpdf2 then finds an ``EmbeddedFont`` as ``ttfont``: no tables (its own Subsetter pass costs
  ~0.2 ms), the subset's glyph order, frozen (so ``getGlyphID`` gives the subset's glyph ids for
  the CIDToGIDMap), and ``save`` writing the subset's bytes. The widths and ToUnicode map come
  from the document's own SubsetMap, as before: only the embedded glyph program is shared.

The cache is per process (the book's CPU processes, pipeline.kernel.cpu), guarded by a lock,
bounded to ``MAX_ENTRIES`` subsets and ``MAX_BYTES`` of font bytes (least recently used dropped).
A font that is not a ``SourceFont`` (fpdf2's own ``add_font``, the fallback path) is left to fpdf2.
"""
from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.fonts import TTFFont

# Tables fpdf2 2.8.9 drops from every subset it embeds (fpdf/output.py, _add_fonts), with its
# Options(notdef_outline=True, recommended_glyphs=True): the subsets made here are the same.
FPDF2_DROPPED_TABLES = ("FFTM", "GDEF", "GPOS", "GSUB", "MATH", "hdmx", "meta", "sbix", "CBDT", "CBLC",
                        "EBDT", "EBLC", "EBSC", "SVG ", "CPAL", "COLR")

# Characters whose glyphs a body font always embeds (the rest of a book's English text): ASCII,
# curly quotes, dashes, ellipsis.
SHARED_CHARS = frozenset(range(0x20, 0x7F)) | frozenset(map(ord, "‘’“”–—…"))

MAX_ENTRIES = 64
MAX_BYTES = 24 * 1024 * 1024  # bytes of embedded font programs kept per process
_MAX_ENTRY_BYTES = 4 * 1024 * 1024  # a bigger subset (a whole CJK font) is made per document


class SourceFont(TTFont):
    """A document's fontTools font (``TTFFont.ttfont``) read lazily from ``data``, with the
    identity of those bytes (sha256 hex) and the glyph names its subsets always embed."""

    def __init__(self, data: bytes, digest: str, shared: frozenset[str] = frozenset()) -> None:
        super().__init__(io.BytesIO(data), recalcTimestamp=False, lazy=True)
        self.digest = digest
        self.shared = shared


class EmbeddedFont(TTFont):
    """What fpdf2 subsets and saves at output once the subset exists: no tables, the subset's
    glyph order (frozen: fpdf2's Subsetter pass may not renumber it), its bytes for ``save``."""

    def __init__(self, glyph_order: tuple[str, ...], payload: bytes) -> None:
        super().__init__()
        super().setGlyphOrder(list(glyph_order))
        self.payload = payload

    def setGlyphOrder(self, glyphOrder: list[str]) -> None:  # noqa: N802, N803 - fontTools' names
        """Ignored: the glyph ids are the embedded subset's (fpdf2 writes them in the CIDToGIDMap)."""

    def save(self, file: Any, reorderTables: bool | None = True) -> None:  # noqa: N803
        """Write the embedded subset's bytes (fpdf2 passes a BytesIO)."""
        if isinstance(file, (str, bytes)) or hasattr(file, "__fspath__"):
            with open(file, "wb") as f:
                f.write(self.payload)
        else:
            file.write(self.payload)


@dataclass(frozen=True)
class _Subset:
    glyph_order: tuple[str, ...]
    payload: bytes  # the sfnt file, or the bare CFF table for a CID-keyed CFF font (as fpdf2 embeds)


_lock = threading.Lock()
_cache: OrderedDict[tuple[str, bool, frozenset[str]], _Subset] = OrderedDict()
_stats = {"hits": 0, "misses": 0}


def digest(data: bytes) -> str:
    """The identity of a font's bytes: sha256 hex."""
    return hashlib.sha256(data).hexdigest()


def shared_glyphs(cmap: dict[int, str]) -> frozenset[str]:
    """The glyph names of SHARED_CHARS in a font's ``cmap`` (code point -> glyph name)."""
    return frozenset(cmap[c] for c in SHARED_CHARS if c in cmap)


def _make(source: SourceFont, glyphs: Iterable[str], cff_cid: bool) -> _Subset:
    """The subset fpdf2 2.8.9 would embed for ``glyphs`` (its options and dropped tables).
    Subsets ``source`` in place, as fpdf2 does (it is the document's own copy, and tables the
    drawing already read, such as a shaped font's glyph names, are not read again)."""
    from fontTools import subset as ftsubset

    options = ftsubset.Options(notdef_outline=True, recommended_glyphs=True)
    options.drop_tables += list(FPDF2_DROPPED_TABLES)
    subsetter = ftsubset.Subsetter(options)
    subsetter.populate(glyphs=sorted(glyphs))
    subsetter.subset(source)
    out = io.BytesIO()
    source.save(out)
    payload = out.getvalue()
    if cff_cid and "CFF " in source:
        payload = source["CFF "].compile(source)
    return _Subset(tuple(source.getGlyphOrder()), payload)


def _subset_for(source: SourceFont, drawn: frozenset[str], cff_cid: bool) -> _Subset:
    key = (source.digest, cff_cid, drawn - source.shared)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            _stats["hits"] += 1
            return hit
        _stats["misses"] += 1
    made = _make(source, source.shared | drawn, cff_cid)  # outside the lock: ~10-100 ms
    if len(made.payload) <= _MAX_ENTRY_BYTES:
        with _lock:
            _cache[key] = made
            _cache.move_to_end(key)
            while len(_cache) > MAX_ENTRIES or sum(len(s.payload) for s in _cache.values()) > MAX_BYTES:
                _cache.popitem(last=False)
    return made


def embed_cached(pdf: FPDF) -> None:
    """Give each font of ``pdf`` added by pipeline.stories.font_files its embedded subset from
    the per-process cache (made now if new). Call after drawing, just before ``pdf.output()``;
    fonts of any other kind are left to fpdf2."""
    for font in pdf.fonts.values():
        if not isinstance(font, TTFFont) or not isinstance(font.ttfont, SourceFont) or font.color_font:
            continue
        drawn = frozenset(font.subset.get_all_glyph_names())
        made = _subset_for(font.ttfont, drawn, bool(font.is_cff and font.is_cid_keyed))
        font.ttfont.close()
        font.ttfont = EmbeddedFont(made.glyph_order, made.payload)


def cache_info() -> dict[str, int]:
    """Hits, misses, entries and bytes of this process's subset cache (tests, benchmarks)."""
    with _lock:
        return {**_stats, "entries": len(_cache), "bytes": sum(len(s.payload) for s in _cache.values())}


def cache_clear() -> None:
    with _lock:
        _cache.clear()
        _stats.update(hits=0, misses=0)
