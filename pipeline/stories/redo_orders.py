"""Orders after a redo ended (README "Redoing a page"): a paid order whose print job was not sent
when the redo started had its print files set to be made again (db/redo.py start_redo); once the
story is completed again (the new version, or the previous one after a failed redo) its
``orders.prepare_print`` is sent, by name (the order flow is a layer above the story flow).
"""
from __future__ import annotations

from db import redo as redo_db
from db.engine import autocommit
from pipeline.kernel import publish

# The order flow's print-files task (pipeline/orders/stages.py ORDER_FLOW["print_files"]): named
# here, not imported, since the story flow sits below the order flow (pyproject's layers).
PREPARE_PRINT_TASK = "orders.prepare_print"


def reprint_orders(story_id: str) -> list[str]:
    """Send ``orders.prepare_print`` for each order of ``story_id`` waiting for new print files
    (db.redo.orders_to_print_again); returns their ids. Safe to repeat: the print-files step's
    own claim decides (a duplicate is a no-op)."""
    with autocommit() as c:
        orders = redo_db.orders_to_print_again(c, story_id)
    for order_id in orders:
        publish.send(PREPARE_PRINT_TASK, {"order_id": order_id})
    return orders
