"""What a print shop makes: products, their trim, binding and paper, the interior's page count
and the one-piece cover's size.

Product: Lulu's ``pod_package_id`` says the trim size, binding and paper (``0850X0850FCPRECW080CW444GXX``
= 8.5 x 8.5 in, full colour premium, casewrap hardcover, 80# coated white paper at 444 pages
per inch, gloss). ``orders.product_type`` maps to one (``PRINT_PRODUCTS``, defaults below).

Interior pages are trim + 0.125 in (3.175 mm) bleed on each side (8.75 x 8.75 in for the square
book). Blank pages follow the story up to the binding's minimum (24 for casewrap, 32 for perfect
bound) and an even count: a 4-page story is a 24-page hardcover with 14 blank pages at the end.

Cover size, offline (``cover_size_pt``; the real print shop's ``/cover-dimensions/`` is used
whenever there is one): paperback = 2 x trim + spine (pages / ppi + 0.06 in) + 0.125 in bleed
around; casewrap adds a 0.75 in board wrap + bleed around and a spine from Lulu's page-count table.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.kernel.errors import PermanentStepError

MM_PER_IN = 25.4
PT_PER_IN = 72.0
BLEED_IN = 0.125
SAFETY_IN = 0.5  # text and faces stay this far inside the trim
GUTTER_IN = 0.25  # and this much further from the binding edge
DPI = 300

# product_type -> pod_package_id. Override or extend with PRINT_PRODUCTS="name=POD_ID,...".
DEFAULT_PRODUCTS = {
    "hardcover_book": "0850X0850FCPRECW080CW444GXX",
    "paperback_book": "0850X0850FCPREPB080CW444GXX",
}
_ALIASES = {"hardcover": "hardcover_book", "paperback": "paperback_book", "softcover_book": "paperback_book"}

# Binding code -> (what it is, fewest pages, most pages, hardcover).
_BINDINGS: dict[str, tuple[str, int, int, bool]] = {
    "CW": ("casewrap hardcover", 24, 800, True),
    "LW": ("linen wrap hardcover", 24, 800, True),
    "PB": ("perfect bound paperback", 32, 800, False),
    "SS": ("saddle stitch", 4, 48, False),
    "CO": ("coil bound", 3, 470, False),
}
# Casewrap spine width (in) by page count, after Lulu's casewrap templates (approximate: the
# real provider's /cover-dimensions/ is used whenever there is one).
_CASEWRAP_SPINE = ((84, 0.25), (140, 0.5), (168, 0.625), (194, 0.688), (222, 0.75), (250, 0.813),
                   (278, 0.875), (306, 0.938), (334, 1.0), (360, 1.063), (388, 1.125), (416, 1.188),
                   (444, 1.25), (500, 1.375), (556, 1.5), (610, 1.625), (666, 1.75), (722, 1.875),
                   (800, 2.063))


@dataclass(frozen=True)
class PrintSpec:
    """One product as parse_pod_package reads its SKU: trim in inches, binding, page limits, paper bulk."""

    pod_package_id: str
    trim_w_in: float
    trim_h_in: float
    binding: str
    binding_name: str
    min_pages: int
    max_pages: int
    hardcover: bool
    ppi: int  # paper bulk, pages per inch: the spine's thickness

    @property
    def page_w_mm(self) -> float:
        """An interior page's width with bleed, mm."""
        return (self.trim_w_in + 2 * BLEED_IN) * MM_PER_IN

    @property
    def page_h_mm(self) -> float:
        """An interior page's height with bleed, mm."""
        return (self.trim_h_in + 2 * BLEED_IN) * MM_PER_IN

    def to_json(self) -> dict[str, Any]:
        """The fields as a dict of JSON values."""
        return dict(self.__dict__)


def parse_pod_package(pod_package_id: str) -> PrintSpec:
    """A PrintSpec from Lulu's 27-character SKU (or its dotted form); ValueError if malformed."""
    sku = pod_package_id.replace(".", "").strip().upper()
    if len(sku) != 27:
        raise ValueError(f"a pod_package_id has 27 characters, {pod_package_id!r} has {len(sku)}")
    try:
        w, h = (int(sku[0:4]) / 100, int(sku[5:9]) / 100)
        ppi = int(sku[21:24])
    except ValueError:
        raise ValueError(f"unreadable trim size or paper in {pod_package_id!r}") from None
    if sku[4] != "X" or not (1 <= w <= 20 and 1 <= h <= 20) or ppi <= 0:
        raise ValueError(f"unreadable trim size in {pod_package_id!r}")
    binding = sku[14:16]
    if binding not in _BINDINGS:
        raise ValueError(f"binding {binding!r} is not one this shop makes ({', '.join(sorted(_BINDINGS))})")
    name, lo, hi, hard = _BINDINGS[binding]
    return PrintSpec(sku, w, h, binding, name, lo, hi, hard, ppi)


def products(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """product_type -> pod_package_id, from the defaults and ``PRINT_PRODUCTS``."""
    out = dict(DEFAULT_PRODUCTS)
    raw = (os.environ if env is None else env).get("PRINT_PRODUCTS", "")
    for item in raw.split(","):
        name, sep, sku = item.partition("=")
        if sep and name.strip() and sku.strip():
            out[name.strip().lower()] = sku.strip()
    return out


def check_products(env: Mapping[str, str] | None = None) -> None:
    """PRINT_PRODUCTS as a worker's boot checks it (products() skips what it cannot read):
    comma-separated ``product_type=pod_package_id`` items, each SKU one this shop can make;
    SystemExit("configuration error: PRINT_PRODUCTS ...") otherwise."""
    raw = (os.environ if env is None else env).get("PRINT_PRODUCTS", "")
    for item in (i.strip() for i in raw.split(",")):
        name, sep, sku = item.partition("=")
        if not item:
            continue
        if not sep or not name.strip() or not sku.strip():
            raise SystemExit(f"configuration error: PRINT_PRODUCTS item {item[:60]!r} is not "
                             "product_type=pod_package_id")
        try:
            parse_pod_package(sku.strip())
        except ValueError as e:
            raise SystemExit(f"configuration error: PRINT_PRODUCTS {name.strip()[:40]}: {e}") from None


def product_spec(product_type: str) -> PrintSpec:
    """The spec of an order's product; PermanentStepError naming the products on offer."""
    catalog = products()
    key = (product_type or "").strip().lower().replace(" ", "_").replace("-", "_")
    sku = catalog.get(key) or catalog.get(_ALIASES.get(key, ""))
    if sku is None:
        raise PermanentStepError(f"Unknown product type {product_type[:60]!r}; this shop prints: "
                                 f"{', '.join(sorted(catalog))}.")
    try:
        return parse_pod_package(sku)
    except ValueError as e:
        raise PermanentStepError(f"The product {product_type!r} is misconfigured ({e}).") from None


@dataclass(frozen=True)
class InteriorPlan:
    """How many pages the interior PDF has, and why (see interior_plan)."""

    total: int  # pages in the interior PDF
    content: int  # title + story spreads + end page
    blank: int  # added to reach the binding's minimum and an even count


def interior_plan(story_pages: int, spec: PrintSpec) -> InteriorPlan:
    """The interior's pages for ``story_pages`` story pages: title, a spread per page, "The End",
    then blanks to the binding's minimum and an even count (a multiple of 4 for saddle stitch).
    PermanentStepError when the book would exceed the binding's maximum."""
    content = 1 + 2 * story_pages + 1
    total = max(content, spec.min_pages)
    total += total % (4 if spec.binding == "SS" else 2)
    if total > spec.max_pages:
        raise PermanentStepError(f"The book would have {total} pages; a {spec.binding_name} has at most "
                                 f"{spec.max_pages}.")
    return InteriorPlan(total, content, total - content)


def cover_size_pt(spec: PrintSpec, page_count: int) -> tuple[float, float]:
    """The one-piece cover's size in points, offline (see the module doc)."""
    if spec.hardcover:
        margin = 0.75 + BLEED_IN
        spine = next((w for n, w in _CASEWRAP_SPINE if page_count <= n), _CASEWRAP_SPINE[-1][1])
    elif spec.binding in ("SS", "CO"):
        margin, spine = BLEED_IN, 0.0
    else:
        margin, spine = BLEED_IN, page_count / spec.ppi + 0.06
    w = 2 * spec.trim_w_in + spine + 2 * margin
    h = spec.trim_h_in + 2 * margin
    return round(w * PT_PER_IN, 3), round(h * PT_PER_IN, 3)


def print_file_key(order_id: str, kind: str) -> str:
    """Deterministic: a re-run overwrites its own files."""
    assert kind in ("interior", "cover"), kind
    return f"orders/{order_id}/print/{kind}.pdf"
