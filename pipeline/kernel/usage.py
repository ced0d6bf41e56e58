"""What each book costs: the provider adapters record each call's usage here, and hold its
estimated cost against the story's budget before a paid call (README "What each book costs").

A step says whose calls these are with :func:`metered` (a context variable: the story or order,
page, stage and a key for the step's try); an adapter then calls :func:`record` with the units its
provider reported (OpenAI tokens, Replicate predict_time, Rekognition calls, Lulu's print job
cost) and a call key (the provider's id for the call, or None: the step's try and a count, for
providers without ids). Outside a metered step (tools, tests of an adapter) nothing is recorded.

Before a paid call, :func:`hold` takes the call's estimate under the story's budget lock
(db/usage.py lock_budget): when spent + live holds + this estimate would pass the story's budget,
it raises :class:`BudgetReached`, a PermanentStepError: the step's recorder stores the message on
the page and story, nothing is retried until an operator lifts the budget (``storycreator budget``)
and retries. The hold is settled when the call's usage is recorded (or dropped when the call
failed before costing anything).
"""
from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.exc import OperationalError

from db import usage as usage_db
from db.engine import autocommit, lock_not_available, transaction
from pipeline.config import CostSettings, cost_settings, settings
from pipeline.kernel.errors import PermanentStepError
from pipeline.kernel.quota import QuotaWait

log = logging.getLogger("pipeline.kernel.usage")

MICRO = 1_000_000  # micro-cents per cent


class BudgetReached(PermanentStepError):
    """A paid call would pass its story's budget: the step stops with this message (for people:
    what was spent, the budget, and the commands that lift it)."""


@dataclass
class Meter:
    """Whose calls the adapters are making now: ``story_id`` and/or ``order_id``, the page (None:
    the story's or order's own step), the ``stage`` and ``key``, a string unique to this try of this
    step (e.g. "<page id>:text:r1:a0"); ``count`` numbers the calls without ids."""

    stage: str
    key: str
    story_id: str | None = None
    order_id: str | None = None
    page_number: int | None = None
    budgeted: bool = True  # holds apply (False: a photo's analysis, which is not one story's)
    count: int = 0


_meter: ContextVar[Meter | None] = ContextVar("usage_meter", default=None)


@contextmanager
def metered(stage: str, key: str, *, story_id: str | None = None, order_id: str | None = None,
            page_number: int | None = None, budgeted: bool = True) -> Iterator[Meter]:
    """Calls made inside are recorded against this story/order, page and stage (see :class:`Meter`).
    Without a story or order, an enclosing meter's are used (the start analysing its photo inline:
    the analysis is the story's, at stage "analysis")."""
    outer = _meter.get()
    if outer is not None and story_id is None and order_id is None:
        story_id, order_id = outer.story_id, outer.order_id
    meter = Meter(stage, key, story_id, order_id, page_number, budgeted)
    token = _meter.set(meter)
    try:
        yield meter
    finally:
        _meter.reset(token)


def digest(text: str) -> str:
    """A call or hold key as stored: SHA-256 hex (keys built from ids never name them)."""
    return hashlib.sha256(text.encode()).hexdigest()


def cost_microcents(provider: str, *, input_tokens: int = 0, output_tokens: int = 0, seconds: float = 0.0,
                    calls: int = 1, prices: CostSettings | None = None) -> int:
    """The cost of one call's units at the configured prices, in micro-cents (an integer, rounded
    half up at the end): OpenAI per 1M input / output tokens, Replicate per second of predict_time
    plus per prediction, Rekognition per call; every other provider 0 (offline ones, and Lulu,
    whose cost comes from its own reply: :func:`money_microcents`)."""
    p = prices or cost_settings()
    if provider == "openai":
        cents = input_tokens * p.openai_input_per_m / 1e6 + output_tokens * p.openai_output_per_m / 1e6
    elif provider == "replicate":
        cents = seconds * p.replicate_second + calls * p.replicate_prediction
    elif provider == "rekognition":
        cents = calls * p.rekognition_call
    else:
        return 0
    return int(math.floor(cents * MICRO + 0.5))


def money_microcents(amount: Any) -> int | None:
    """A provider's money amount in the currency's main unit ("12.34" dollars, Lulu's strings) as
    micro-cents; None when it is not a non-negative finite number."""
    try:
        value = Decimal(str(amount))
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite() or value < 0:
        return None
    return int(value * 100 * MICRO)


def record(provider: str, operation: str, *, call_id: str | None = None, input_tokens: int = 0,
           output_tokens: int = 0, seconds: float = 0.0, calls: int = 1, cost: int | None = None,
           currency: str | None = None, settle: bool = True) -> bool:
    """Record one provider call of the running step (nothing outside a :func:`metered` step).
    ``call_id``: the provider's id for the call (a response or prediction id): a re-run that sees
    the same call records nothing; None: the step's try and a count make the key. ``cost``:
    micro-cents when the provider said (Lulu), else priced by :func:`cost_microcents`.
    ``settle``: drop this call's hold (:func:`hold`). True when a row was inserted (metrics counted)."""
    m = _meter.get()
    if m is None:
        return False
    if call_id is None:
        m.count += 1
        key = f"{m.key}:{provider}:{operation}:{m.count}"
    else:  # the provider's id (unique at the provider), within this story/order's calls
        key = f"{m.story_id or ''}:{m.order_id or ''}:{provider}:{call_id}"
    prices = cost_settings()
    micro = cost if cost is not None else cost_microcents(provider, input_tokens=input_tokens,
                                                          output_tokens=output_tokens, seconds=seconds,
                                                          calls=calls, prices=prices)
    row = usage_db.UsageRow(digest(key), m.stage, provider, operation, m.story_id, m.order_id, m.page_number,
                            max(0, int(input_tokens)), max(0, int(output_tokens)), max(0.0, float(seconds)),
                            max(0, int(calls)), max(0, int(micro)), (currency or prices.currency).lower()[:3])
    settling = settle and m.story_id is not None
    # One statement in autocommit when there is no hold to settle (every offline call: the hot path).
    with (transaction() if settling else autocommit()) as c:
        inserted = usage_db.insert_usage(c, row)
        if settling:
            usage_db.drop_hold(c, str(m.story_id), _hold_key(m, provider))
    if inserted:
        from pipeline.kernel import metrics

        metrics.usage(provider, m.stage, row.cost_microcents, calls=row.calls, input_tokens=row.input_tokens,
                      output_tokens=row.output_tokens, seconds=row.seconds)
    return inserted


def _hold_key(m: Meter, provider: str) -> str:
    # One hold per call site of a step (page, stage, provider): a re-run replaces it.
    return digest(f"{m.page_number}:{m.stage}:{provider}")


def hold(provider: str, estimate: int, *, seconds: float | None = None) -> None:
    """Before a paid call of the running story step: hold ``estimate`` micro-cents under the story's
    budget lock for ``seconds`` (default: the step lease). Raises :class:`BudgetReached` (nothing
    held) when spent + live holds + estimate would pass the budget; an unlimited budget never stops.
    Raises QuotaWait (provider "budget": the step is given back and re-sent, no try used) when the
    budget lock is not free within :func:`budget_lock_wait`. Nothing outside a story step (photo
    analysis before a story, orders)."""
    m = _meter.get()
    if m is None or m.story_id is None or not m.budgeted:
        return
    s = settings()
    prices = cost_settings()
    key = _hold_key(m, provider)
    try:
        _hold(m, provider, estimate, key, seconds or s.step_lease_seconds, prices)
    except OperationalError as e:
        if not lock_not_available(e):
            raise
        # Another run holds the story's budget lock past the wait: a stopped worker inside its own
        # hold (PostgreSQL ends its session after the lease). Give the step back now, without a
        # try used or an error recorded, rather than park this thread (or its claim past its lease).
        raise QuotaWait("budget", f"story {m.story_id}: its budget is being decided by another run",
                        1.0) from None


def budget_lock_wait() -> float:
    """Seconds a paid call waits for its story's budget lock before its step is given back and
    re-sent (:func:`hold`): a quarter of the step lease, at most 2 s. Holds take milliseconds; a
    longer wait means a stopped holder."""
    return min(2.0, settings().step_lease_seconds / 4)


def _hold(m: Meter, provider: str, estimate: int, key: str, seconds: float, prices: CostSettings) -> None:
    assert m.story_id is not None
    with transaction() as c:
        budget = usage_db.lock_budget(c, m.story_id, prices.story_budget_cents, key, wait=budget_lock_wait())
        if budget is None:
            return
        if budget.limit_microcents is not None and budget.spent + budget.held + estimate > budget.limit_microcents:
            from pipeline.kernel import metrics

            metrics.BUDGET_STOPS.labels(m.stage).inc()
            log.warning("story %s: budget reached at %s (spent %d, held %d, estimate %d, budget %d micro-cents)",
                        m.story_id, m.stage, budget.spent, budget.held, estimate, budget.limit_microcents)
            raise BudgetReached(budget_message(m.story_id, budget, estimate, prices.currency))
        usage_db.put_hold(c, m.story_id, key, provider, estimate, seconds)


def release(provider: str) -> None:
    """The running step's paid call failed before it cost anything: drop its hold."""
    m = _meter.get()
    if m is None or m.story_id is None:
        return
    with autocommit() as c:
        usage_db.drop_hold(c, m.story_id, _hold_key(m, provider))


def cents_text(microcents: int) -> str:
    """Micro-cents as cents for people: "123.46¢" (two decimals)."""
    return f"{microcents / MICRO:,.2f}¢"


def budget_message(story_id: str, budget: usage_db.Budget, estimate: int, currency: str) -> str:
    """The words a stopped story shows (stories.error_message, step_errors), with the commands."""
    assert budget.limit_microcents is not None
    held = f" (+{cents_text(budget.held)} held for calls in flight)" if budget.held else ""
    return (f"Budget reached: this story has spent {cents_text(budget.spent)}{held} of its "
            f"{cents_text(budget.limit_microcents)} budget ({currency.upper()}), and the next call is estimated at "
            f"{cents_text(estimate)}. Nothing more was spent. An operator can lift it: storycreator budget "
            f"--story {story_id} --cents N (or --unlimited), then storycreator retry --story {story_id}")
