"""CPU per 12-page reading book (pipeline.stories.book.render_pdf), warm, in one process.

Each book is written by the offline writer (the shipped ``local`` text provider) for a child's
name in one script (Latin, Cyrillic, Arabic, Devanagari, CJK), with the illustrations either the
``instant`` provider's 8x6 PNG (as in bench_orchestration) or a 960x720 PNG (the size the
illustrators deliver). Per kind: one warm-up render, then ``--repeats`` renders, CPU time of this
process (``time.process_time``, ms) per render; the median is printed, one JSON line per kind.
``--new-names``: every repeat is another child's story (another name of that script, theme and
seed: the font caches see new names and new text, as on a worker; with 10 names per script the
later repeats of a long run meet names again). Prints the font subset cache's hits and misses
when this tree has one (pipeline.stories.font_embed).

    .venv/bin/python -m bench.bench_book [--repeats 8] [--images tiny|full] [--new-names]

To compare two trees side by side, run this module in each, alternating (see README "Benchmarks").
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import time

from PIL import Image

from pipeline.providers.base import StoryRequest
from pipeline.providers.offline_text.writer import plan_story
from pipeline.providers.themes import THEMES
from pipeline.stories.book import Book, BookPage, render_pdf

# Per script: names for the story (the first one unless --new-names).
NAMES: dict[str, list[str]] = {
    "latin": ["Zoë", "Liam", "Amélie", "Noah", "Björn", "Chloé", "Mateo", "Ines", "Oskar", "Léa"],
    "cyrillic": ["Анна", "Иван", "Мария", "Дмитрий", "Ольга", "Пётр", "Софья", "Алексей", "Юлия", "Егор"],
    "arabic": ["محمد", "فاطمة", "علي", "مريم", "يوسف", "ليلى", "عمر", "زينب", "خالد", "نور"],
    "devanagari": ["अनन्या", "आरव", "प्रिया", "विवान", "दिया", "अर्जुन", "सान्वी", "रोहन", "ईशा", "कबीर"],
    "cjk": ["李小龙", "王芳", "张伟", "刘洋", "陈静", "杨明", "赵丽", "黄磊", "周杰", "吴敏"],
}


def picture(full: bool, i: int) -> bytes:
    """A PNG illustration: 960x720 with a gradient (``full``), else the instant provider's 8x6."""
    if not full:
        img = Image.new("RGB", (8, 6), (120, 160, 220))
    else:
        img = Image.linear_gradient("L").resize((960, 720)).convert("RGB")
        img = Image.merge("RGB", (img.getchannel(0), img.getchannel(0).rotate(90 * (i % 4)),
                                  Image.new("L", (960, 720), 40 * i % 256)))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def book(name: str, pictures: list[bytes], seed: int = 7, theme: str = "space_adventure") -> Book:
    """A 12-page book as the offline writer would write it for ``name``."""
    plan = plan_story(StoryRequest(child_name=name, child_age=5, theme=theme, page_count=12, seed=seed))
    pages = [BookPage(i, p.text, pictures[(i - 1) % len(pictures)]) for i, p in enumerate(plan.pages, start=1)]
    return Book(title=plan.title, child_name=name, theme_title=theme.replace("_", " ").title(), pages=pages)


def cpu_ms(b: Book) -> float:
    t = time.process_time()
    render_pdf(b)
    return (time.process_time() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--images", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--new-names", action="store_true")
    ap.add_argument("--scripts", default=",".join(NAMES))
    a = ap.parse_args()
    pictures = [picture(a.images == "full", i) for i in range(12 if a.images == "full" else 1)]
    for script in a.scripts.split(","):
        names = NAMES[script]
        cpu_ms(book(names[0], pictures))  # warm: fonts parsed, caches filled
        before = _cache_info()
        runs = [cpu_ms(book(names[(1 + i) % len(names)], pictures, seed=100 + i, theme=list(THEMES)[i % len(THEMES)])
                       if a.new_names else book(names[0], pictures)) for i in range(a.repeats)]
        after = _cache_info()
        print(json.dumps({"script": script, "images": a.images, "new_names": a.new_names,
                          "median_ms": round(statistics.median(runs), 1),
                          "runs_ms": [round(r, 1) for r in runs],
                          **({k: after[k] - before.get(k, 0) for k in ("hits", "misses")} if after else {})}),
              flush=True)


def _cache_info() -> dict[str, int]:
    try:
        from pipeline.stories.font_embed import cache_info
    except ImportError:  # a tree without the cache (a baseline)
        return {}
    return cache_info()


if __name__ == "__main__":
    main()
