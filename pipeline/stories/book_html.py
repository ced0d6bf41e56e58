"""The picture book as one self-contained, mobile-friendly HTML page (``render_html``).

Every piece of text is HTML-escaped; the child's name and every right-to-left run are isolated
in ``<bdi>`` so an Arabic or Hebrew name never moves the punctuation around it.
"""
from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pipeline.stories.typeset import RTL_RUN

if TYPE_CHECKING:
    from pipeline.stories.book import Book

log = logging.getLogger(__name__)

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
    alternatives = [RTL_RUN.pattern]
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
    return "".join(f"{FSI}{piece}{PDI}" if iso and RTL_RUN.search(piece) else piece
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
