"""What an order's print step records when it cannot go on: its failure or its release (the
recorder the step kernel's error policy, pipeline.kernel.step.guarded, reports to), and the
refusal of an order whose story is not its user's."""
from __future__ import annotations

import logging
from typing import Any

from db import order_steps as steps_db
from db import orders as orders_db
from db.claims import poison_message
from db.engine import autocommit
from pipeline.config import settings
from pipeline.kernel.step import Attempt, ClaimLost, Outcome, StepResult, Timer

log = logging.getLogger("pipeline.orders.records")


class StepRecorder:
    """Records one run of an order's print step (``step``: print_files or print_job).

    ``fail(msg)``: the order paid -> failed, the step failed, the reason ``"<prefix>: <msg>"`` in
    its history (with the attempt number and task id). ``release(msg)``: the step back to pending
    after a transient error (``msg`` recorded) or a quota wait (``msg`` None: nothing recorded).
    Both only under the claim's fencing token ``token`` (None: no claim to fence, e.g. a refusal
    before any claim); :class:`ClaimLost` when another worker took the step over (nothing written).
    Each opens its own autocommit connection; no connection is held across the provider call."""

    def __init__(self, order_id: str, step: orders_db.Step, prefix: str, attempt: Attempt,
                 token: int | None = None) -> None:
        self.order_id, self.step, self.prefix, self.attempt, self.token = order_id, step, prefix, attempt, token

    def fail(self, msg: str) -> None:
        """Record the step's permanent failure (the order fails, if still paid)."""
        with autocommit() as c:
            failed = orders_db.fail_order(c, self.order_id, f"{self.prefix}: {msg}", from_statuses=("paid",),
                                          step=self.step, token=self.token,
                                          detail={"attempt": self.attempt.number, "task_id": self.attempt.task_id})
        if not failed and self.token is not None and self._taken_over():
            raise ClaimLost(f"order {self.order_id} {self.step}: not failed ({msg[:120]})")

    def release(self, msg: str | None) -> None:
        """Free the step's claim for a later try (``msg``: the transient error, or None)."""
        assert self.token is not None, "a release needs the claim's token"
        with autocommit() as c:
            released = steps_db.release_step(c, self.order_id, self.step, msg, self.attempt.number,
                                             self.attempt.task_id, self.token)
        if not released:
            raise ClaimLost(f"order {self.order_id} {self.step}: not released")

    def poisoned(self, takeovers: int, what: str, timer: Timer, ctx: dict[str, Any]) -> StepResult | None:
        """A step just claimed after ``takeovers`` takeovers in a row: at STEP_MAX_TAKEOVERS it is
        failed ("<what> crashed its worker N times", the order failed; an operator's retry runs it
        again) instead of being run once more: FAILED. None: run it."""
        s = settings()
        if takeovers < s.max_takeovers:
            return None
        msg = poison_message(what, takeovers, s.step_lease_seconds)
        self.fail(msg)
        return StepResult(Outcome.FAILED, f"{self.prefix}: {msg}", timer.timings, context=ctx)

    def _taken_over(self) -> bool:
        with autocommit() as c:
            return steps_db.claim_moved_on(c, self.order_id, self.step, self.token)


def not_printable(order_id: str, state: Any, timer: Timer, ctx: dict[str, Any]) -> StepResult | None:
    """A paid order whose story is not its user's (or is gone) failed with the reason (the
    guarded statement decides), as a StepResult; None when the story is the order's own.
    ``state``: db.order_steps.print_state's row."""
    if state["status"] != "paid" or (state["story_status"] is not None
                                     and state["story_user_id"] == state["user_id"]):
        return None
    with autocommit() as c:
        refused = orders_db.refuse_not_printable(c, order_id, ("paid",))
    if refused is None:  # corrected meanwhile, or no longer paid: the caller's next look decides
        return None
    log.warning("order %s: not printable (story %s): failed, needs a refund decision", order_id, state["story_id"])
    return StepResult(Outcome.FAILED, refused, timer.timings, context=ctx)
