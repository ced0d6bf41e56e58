"""What each book costs: provider calls' usage rows, budget holds and the per-story budget
(schema.sql's "What each book costs" section; README "What each book costs").

Money is an integer of micro-cents (1e-6 of the currency's smallest unit); the callers convert
(pipeline/kernel/usage.py). Each function runs on the connection it is given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from db.engine import first_row, lock_wait


@dataclass(frozen=True)
class UsageRow:
    """One provider call to record (see provider_usage's columns). ``call_key`` is already a digest."""

    call_key: str
    stage: str
    provider: str
    operation: str = ""
    story_id: str | None = None
    order_id: str | None = None
    page_number: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    calls: int = 1
    cost_microcents: int = 0
    currency: str = "usd"


def insert_usage(c: Connection, row: UsageRow) -> bool:
    """Insert the call's row unless its ``call_key`` is recorded already (a re-run of an
    at-least-once step). True when inserted (the caller counts it once, in metrics too). A story
    or order deleted meanwhile is recorded without the link (the money stays). Sent on the
    connection's psycopg2 cursor (db.engine.first_row): every offline provider call of the page
    steps records one row."""
    values = {k: getattr(row, k) for k in UsageRow.__dataclass_fields__}
    return first_row(c, """
        INSERT INTO provider_usage (call_key, stage, provider, operation, story_id, order_id, page_number,
                                    input_tokens, output_tokens, seconds, calls, cost_microcents, currency)
        SELECT :call_key, :stage, :provider, :operation,
               (SELECT id FROM stories WHERE id = CAST(:story_id AS uuid)),
               (SELECT id FROM orders WHERE id = CAST(:order_id AS uuid)), :page_number,
               :input_tokens, :output_tokens, round(CAST(:seconds AS numeric), 3), :calls, :cost_microcents, :currency
        ON CONFLICT (call_key) DO NOTHING RETURNING 1 AS inserted""", values) is not None


@dataclass(frozen=True)
class Budget:
    """A story's budget as the hold saw it: ``limit_microcents`` None when unlimited; ``spent``
    (recorded calls) and ``held`` (live holds of other calls), both micro-cents."""

    limit_microcents: int | None
    spent: int
    held: int


def lock_budget(c: Connection, story_id: str, default_cents: int, hold_key: str = "",
                wait: float | None = None) -> Budget | None:
    """Take the story's budget lock (a transaction-level advisory lock on the story id: holds of one
    story are decided one at a time, on every worker) and read its budget, spending and live holds,
    without call site ``hold_key``'s own (a re-run's hold replaces it: :func:`put_hold`). None
    when the story does not exist. Must run inside a transaction. ``wait``: the most seconds to
    wait for the lock (db.engine.lock_wait; a worker stopped inside its hold keeps the lock until
    PostgreSQL ends its session); past it the driver's LockNotAvailable is raised
    (db.engine.lock_not_available)."""
    if wait is not None:
        lock_wait(c, wait)
    c.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('budget:' || :s, 0))"), {"s": story_id})
    row = c.execute(text("""
        SELECT s.budget_cents, s.budget_unlimited,
               COALESCE((SELECT sum(cost_microcents) FROM provider_usage WHERE story_id = s.id), 0) AS spent,
               COALESCE((SELECT sum(cost_microcents) FROM budget_holds
                          WHERE story_id = s.id AND expires_at > now() AND hold_key <> :k), 0) AS held
          FROM stories s WHERE s.id = CAST(:s AS uuid)"""), {"s": story_id, "k": hold_key}).mappings().first()
    if row is None:
        return None
    cents = row["budget_cents"] if row["budget_cents"] is not None else default_cents
    return Budget(None if row["budget_unlimited"] else int(cents) * 1_000_000, int(row["spent"]), int(row["held"]))


def put_hold(c: Connection, story_id: str, hold_key: str, provider: str, microcents: int, seconds: float) -> None:
    """Hold ``microcents`` for call site ``hold_key`` of the story for ``seconds`` (replacing that
    site's earlier hold: a re-run holds once). Under :func:`lock_budget`'s lock."""
    c.execute(text("""
        INSERT INTO budget_holds (story_id, hold_key, provider, cost_microcents, expires_at)
        VALUES (CAST(:s AS uuid), :k, :p, :m, now() + make_interval(secs => :secs))
        ON CONFLICT (story_id, hold_key) DO UPDATE
           SET cost_microcents = EXCLUDED.cost_microcents, expires_at = EXCLUDED.expires_at,
               created_at = now()"""),
        {"s": story_id, "k": hold_key, "p": provider, "m": microcents, "secs": seconds})


def drop_hold(c: Connection, story_id: str, hold_key: str) -> None:
    """The hold of call site ``hold_key`` settled (its actual cost is recorded, or nothing was spent)."""
    c.execute(text("DELETE FROM budget_holds WHERE story_id = CAST(:s AS uuid) AND hold_key = :k"),
              {"s": story_id, "k": hold_key})


def set_budget(c: Connection, story_id: str, cents: int | None, unlimited: bool) -> dict[str, Any] | None:
    """Set the story's budget: ``cents`` (None: the default) or ``unlimited``. Returns the story's
    budget columns after, or None when there is no such story."""
    row = c.execute(text("""
        UPDATE stories SET budget_cents = :c, budget_unlimited = :u WHERE id = CAST(:s AS uuid)
        RETURNING id, status, budget_cents, budget_unlimited"""),
        {"s": story_id, "c": cents, "u": unlimited}).mappings().first()
    return dict(row) if row is not None else None


_PARTS = """
    SELECT provider, stage, currency, count(*) AS rows, sum(calls) AS calls, sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens, sum(seconds) AS seconds, sum(cost_microcents) AS cost_microcents
      FROM provider_usage WHERE {where}
     GROUP BY provider, stage, currency ORDER BY provider, stage, currency"""


def _parts(c: Connection, where: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**r, "calls": int(r["calls"]), "input_tokens": int(r["input_tokens"]),
             "output_tokens": int(r["output_tokens"]), "seconds": float(r["seconds"]),
             "cost_microcents": int(r["cost_microcents"])}
            for r in c.execute(text(_PARTS.format(where=where)), params).mappings()]


def story_costs(c: Connection, story_id: str) -> dict[str, Any] | None:
    """A story's cost: ``parts`` (per provider, stage and currency: calls, tokens, seconds,
    micro-cents), ``budget_cents`` (None: the default), ``budget_unlimited``, ``held_microcents``.
    None when there is no such story."""
    story = c.execute(text("""
        SELECT budget_cents, budget_unlimited,
               COALESCE((SELECT sum(cost_microcents) FROM budget_holds h
                          WHERE h.story_id = s.id AND h.expires_at > now()), 0) AS held
          FROM stories s WHERE id = CAST(:s AS uuid)"""), {"s": story_id}).mappings().first()
    if story is None:
        return None
    return {"parts": _parts(c, "story_id = CAST(:s AS uuid) AND order_id IS NULL", {"s": story_id}),
            "budget_cents": story["budget_cents"], "budget_unlimited": story["budget_unlimited"],
            "held_microcents": int(story["held"])}


def order_costs(c: Connection, order_id: str) -> list[dict[str, Any]]:
    """An order's cost parts (its print job's, Lulu or the offline print shop), as :func:`story_costs`."""
    return _parts(c, "order_id = CAST(:o AS uuid)", {"o": order_id})


def daily_costs(c: Connection, days: int) -> list[dict[str, Any]]:
    """Totals per UTC day of the last ``days`` days (today included), newest first: ``day``
    (YYYY-MM-DD), ``currency``, ``calls``, ``stories`` (distinct), ``cost_microcents``. Index-backed
    (provider_usage.created_at)."""
    rows = c.execute(text("""
        SELECT to_char(date_trunc('day', created_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD') AS day, currency,
               sum(calls) AS calls, count(DISTINCT story_id) AS stories, sum(cost_microcents) AS cost_microcents
          FROM provider_usage
         WHERE created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                             - make_interval(days => :d - 1)
         GROUP BY 1, 2 ORDER BY 1 DESC, 2"""), {"d": days}).mappings()
    return [{**r, "calls": int(r["calls"]), "stories": int(r["stories"]), "cost_microcents": int(r["cost_microcents"])}
            for r in rows]


def order_usage_ids(c: Connection, order_id: str) -> list[int]:
    """The ids of an order's usage rows (forgetting a family re-keys a kept order: db/erasure_rows.py)."""
    return [int(r[0]) for r in c.execute(text("SELECT id FROM provider_usage WHERE order_id = CAST(:o AS uuid)"),
                                         {"o": order_id})]


def move_usage(c: Connection, ids: list[int], order_id: str, story_id: str) -> None:
    """Usage rows ``ids`` now belong to the re-keyed order ``order_id`` and its placeholder story:
    the kept order keeps its cost, and no row names the forgotten family's ids."""
    if ids:
        c.execute(text("""UPDATE provider_usage SET order_id = CAST(:o AS uuid), story_id = CAST(:s AS uuid)
                           WHERE id = ANY(:ids)"""), {"ids": ids, "o": order_id, "s": story_id})
