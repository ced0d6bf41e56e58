"""Print-ready PDFs of a finished story: an interior and a one-piece cover, as a print shop
(Lulu) takes them, and the checks a print shop runs on them. The order domain's; the reading book
(pipeline.stories.book) shares its typesetting (pipeline.stories.typeset).

- ``products``: what the shop makes (``pod_package_id``, ``PRINT_PRODUCTS``), page plan, cover size;
- ``art``: the illustrations at 300 dpi, cropped around the child's face;
- ``interior`` and ``cover``: the two PDFs' layouts;
- ``render``: both files for an order, rendered and stored (``make_print_files``, a CPU process);
- ``checks``: what a print shop's file normalization would reject.

The names below are this package's public interface.
"""
from pipeline.orders.print_files.checks import PdfInfo, check_print_files, inspect_pdf
from pipeline.orders.print_files.interior import PrintBook, PrintPage
from pipeline.orders.print_files.products import (
    BLEED_IN,
    DEFAULT_PRODUCTS,
    DPI,
    MM_PER_IN,
    PT_PER_IN,
    InteriorPlan,
    PrintSpec,
    check_products,
    cover_size_pt,
    interior_plan,
    parse_pod_package,
    print_file_key,
    product_spec,
    products,
)
from pipeline.orders.print_files.render import make_print_files, render_print_files

__all__ = [
    "BLEED_IN", "DEFAULT_PRODUCTS", "DPI", "MM_PER_IN", "PT_PER_IN", "InteriorPlan", "PdfInfo", "PrintBook",
    "PrintPage", "PrintSpec", "check_print_files", "check_products", "cover_size_pt", "inspect_pdf",
    "interior_plan", "make_print_files", "parse_pod_package", "print_file_key", "product_spec", "products",
    "render_print_files",
]
