"""The order flow, declared once: payment -> print files -> print job -> following the print job.

Each stage's task name (what messages carry), queue, label for people and the row it moves
(schema.sql: ``orders.status`` for the payment, an ``order_steps`` row per print step, whose
``step`` is the stage's name). The task layer routes and names its tasks from it; the operators'
stuck-order queries (db/order_repair.py, given each stage's name, column and prerequisite), the sweep and
``retry --order`` publish by its task names. The two entry points that are not stages of the
flow (Lulu's webhook, the periodic sweep) share its queue.
"""
from __future__ import annotations

from pipeline.kernel.stages import Flow, Stage

QUEUE = "orders"

ORDER_FLOW = Flow("orders", [
    # From the external API (Stripe's webhook): pending_payment -> paid (or failed).
    Stage("payment", "orders.confirm_payment", QUEUE, "payment", "orders", "status", "order_id"),
    Stage("print_files", "orders.prepare_print", QUEUE, "print files", "order_steps", "status", "order_id",
          prerequisite="payment"),
    Stage("print_job", "orders.submit_print", QUEUE, "print job", "order_steps", "status", "order_id",
          prerequisite="print_files"),
    # Sent again every ORDER_POLL_INTERVAL while the job prints; checked_at says when it last asked.
    Stage("print_status", "orders.poll_print", QUEUE, "following the print job", "order_steps", "checked_at",
          "order_id", prerequisite="print_job"),
])

# Tasks on the orders queue that are not stages of the flow.
LULU_WEBHOOK_TASK = "orders.lulu_webhook"  # the provider's status pushes (the same moves as a poll)
SWEEP_TASK = "orders.sweep"  # celery beat: stuck orders re-enqueued

# The stages whose stuck orders the sweep re-enqueues (the payment is Stripe's to resend; held
# payment events are confirmed separately).
SWEPT = ("print_files", "print_job", "print_status")
