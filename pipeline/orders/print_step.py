"""The print files step: interior and cover PDFs for a paid order whose story is completed
(claim -> render with pipeline.orders.print_files in a CPU process -> record).

Only the order's own user's story is printed: the claim (db.order_steps.claim_print_files)
refuses another's, and the order is failed saying it needs a refund decision. A paid order waits
for a story in progress (up to ORDER_STORY_WAIT_SECONDS after payment: the step asks to come
back, StepResult.again_in) and fails, saying why, if the story failed.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from db import order_steps as steps_db
from db import orders as orders_db
from db.engine import autocommit
from pipeline.config import settings
from pipeline.kernel import cpu
from pipeline.kernel.errors import PermanentStepError
from pipeline.kernel.step import (
    FIRST_TRY,
    Attempt,
    ClaimLost,
    Outcome,
    StepFailed,
    StepResult,
    Timer,
    guarded,
    held_elsewhere,
)
from pipeline.orders.lulu_address import lulu_address
from pipeline.orders.print_files import interior_plan, product_spec
from pipeline.orders.print_files import make_print_files as render
from pipeline.orders.records import StepRecorder, not_printable
from pipeline.orders.settings import order_settings, print_provider
from pipeline.providers.themes import resolve_theme


def make_print_files(order_id: str, attempt: Attempt = FIRST_TRY) -> StepResult:
    """Print-ready interior and cover PDFs at orders/<order_id>/print/, for a paid order whose
    story is completed."""
    s = settings()
    timer = Timer()
    with timer.phase("claim"), autocommit() as c:
        claim = steps_db.claim_print_files(c, order_id, s.step_lease_seconds)
        state = steps_db.print_state(c, order_id)
        pages = [dict(p) for p in steps_db.book_pages(c, str(state["story_id"]))] if claim and state else []
    if state is None:
        return StepResult(Outcome.STOPPED, "order not found", timer.timings)
    ctx = {"order": order_id, "story": str(state["story_id"])}
    if claim is None:
        if refused := not_printable(order_id, state, timer, ctx):
            return refused
        if state["status"] != "paid":
            return StepResult(Outcome.STOPPED, f"order is {state['status']}", timer.timings, context=ctx)
        if state["files_status"] == "completed":
            return StepResult(Outcome.ALREADY_DONE, "print files exist", timer.timings, context=ctx)
        if state["story_status"] == "failed":
            msg = (f"The story of this order failed ({(state['story_error'] or 'no reason recorded')[:200]}); "
                   "retry the story, then the order.")
            with autocommit() as c:
                orders_db.fail_order(c, order_id, msg, from_statuses=("paid",), kind="story_failed")
            return StepResult(Outcome.FAILED, msg, timer.timings, context=ctx)
        if state["story_status"] != "completed":
            o = order_settings()
            waited = state["paid_for"] or timedelta(0)
            if waited.total_seconds() > o.story_wait:
                msg = (f"The story did not complete within {o.story_wait / 3600:g} h of the payment "
                       f"(it is {state['story_status']}); nothing was printed.")
                with autocommit() as c:
                    orders_db.fail_order(c, order_id, msg, from_statuses=("paid",), kind="story_timeout")
                return StepResult(Outcome.FAILED, msg, timer.timings, context=ctx)
            # Never a half book: come back when the story may be done (not a failure).
            return StepResult(Outcome.STOPPED, f"waiting for the story ({state['story_status']})", timer.timings,
                              context=ctx, again_in=o.story_wait_poll)
        if state["files_status"] == "processing":
            return held_elsewhere("print files in progress", state["files_age"], attempt, timer)
        return StepResult(Outcome.STOPPED, f"print files are {state['files_status']}", timer.timings, context=ctx)
    try:
        # An address the print shop cannot ship to is the operator's to correct: say so now,
        # before the print files are made (submit_print_job checks it again, it may change).
        lulu_address(state["shipping_address"], email=state["email"], default_phone=order_settings().default_phone)
    except PermanentStepError as e:
        msg = f"Print job: {e}"
        StepRecorder(order_id, "print_files", "Print job", attempt, int(claim["claim_token"])).fail(str(e))
        return StepResult(Outcome.FAILED, msg, timer.timings, context=ctx)

    def work() -> dict[str, Any]:
        spec = product_spec(state["product_type"])
        missing = [p["page_number"] for p in pages if not p["personalized_image_key"]]
        if not pages or missing:
            raise PermanentStepError(f"The story has no personalized picture for page(s) {missing or 'all'}.")
        plan = interior_plan(len(pages), spec)
        with timer.phase("provider"):
            cover_pt = print_provider().cover_dimensions(spec.pod_package_id, plan.total)
        theme = resolve_theme(state["story_theme"] or "")
        with timer.phase("render"):
            return cpu.run(render, order_id, state["title"] or "", state["child_name"],
                           theme.title if theme else state["story_theme"], pages, spec.pod_package_id,
                           cover_pt, state["created_at"].isoformat(), timeout=300)

    recorder = StepRecorder(order_id, "print_files", "Print files", attempt, int(claim["claim_token"]))
    if crashed := recorder.poisoned(int(claim["takeovers"]), "Making the print files", timer, ctx):
        return crashed
    try:
        info = guarded(work, attempt=attempt, record=recorder,
                       what="Making the print files")
    except StepFailed as e:
        return StepResult(Outcome.FAILED, str(e), timer.timings, context=ctx)
    timer.timings.update({k: info.pop(k) for k in ("render_ms", "store_ms") if k in info})
    with timer.phase("record"), autocommit() as c:
        done = steps_db.complete_step(c, order_id, "print_files", info, int(claim["claim_token"]))
    if not done:  # fenced: another worker took the step over while this run was away
        raise ClaimLost(f"order {order_id} print_files: result not recorded")
    return StepResult(Outcome.DONE,
                      f"{info['interior_pages']} interior pages ({info['blank_pages']} blank), cover "
                      f"{info['cover_pt'][0]:g}x{info['cover_pt'][1]:g} pt", timer.timings, context=ctx)

