"""Orders: from a confirmed payment to a printed, shipped book. The public index of the order
steps: plain functions of ids returning a pipeline.kernel.step.StepResult, like
pipeline.stories.steps (the task layer, workers/order_tasks.py, maps results to successors; the
flow itself is declared once in pipeline.orders.stages).

    confirm_payment(order_id, event | payload+signature | event_id)   pending_payment -> paid
        -> make_print_files(order_id)   print files (interior + cover PDFs) for the story
        -> submit_print_job(order_id)   the print job, created once; pod_order_id
        -> poll_print_job(order_id)     again every ORDER_POLL_INTERVAL (again_in) until
                                        IN_PRODUCTION -> fulfilled, SHIPPED -> shipped
    handle_lulu_webhook(payload, headers)   the same status moves, pushed by the provider

Where each concern lives: settings (OrderSettings, the Stripe mode, the print provider),
payment (Stripe's events), print_step (the print files step), print_job (the job and its
lifecycle), lulu_address (Lulu's address schema), records (a step's failure and release);
the operators' side (stuck orders, sweep, retry, status) is pipeline.operations.orders.
"""
from __future__ import annotations

from pipeline.orders.lulu_address import lulu_address
from pipeline.orders.payment import NEEDS_CONFIRMATION, confirm_payment
from pipeline.orders.print_job import file_url, handle_lulu_webhook, line_item_id, poll_print_job, submit_print_job
from pipeline.orders.print_step import make_print_files
from pipeline.orders.settings import (
    PROVIDER_LABEL,
    OrderSettings,
    order_settings,
    print_provider,
    stripe_mode,
)

__all__ = [
    "NEEDS_CONFIRMATION",
    "PROVIDER_LABEL",
    "OrderSettings",
    "confirm_payment",
    "file_url",
    "handle_lulu_webhook",
    "line_item_id",
    "lulu_address",
    "make_print_files",
    "order_settings",
    "poll_print_job",
    "print_provider",
    "stripe_mode",
    "submit_print_job",
]
