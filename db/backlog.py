"""The backlog as operators watch it: how old the oldest waiting work is, and how many event
deliveries are dead. Read by the metrics exporter (pipeline/operations/gauges.py) at most once per
its cache period, whatever the scrape rate.

Cheap at 100,000+ stories: each query is driven by a partial index that holds only unfinished
rows (schema.sql: ix_stories_unfinished, ix_story_pages_<column>_unfinished,
ix_event_deliveries_dead) or by the status index of orders, and repeats the index's predicate word
for word so the planner can use it (EXPLAIN at 100,000 stories: bench/bench_ops_queries.py,
tests/test_scale.py). Ages are seconds (float), 0.0 when nothing waits, so an alert's series
always exists.
"""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.engine import Connection

from db.pages import page_column
from db.slots import NOT_UPLOADING, turn_clause

# waiting_for_slot: pending at its account's cap (USER_STORIES_IN_FLIGHT, db/slots.py), not lost.
STORY_STATUSES = ("pending", "processing", "waiting_for_slot")
# Orders between payment and the printer's hand-off (`paid`: print files, print job), and between
# the hand-off and shipping (`fulfilled`): each aged from the moment it entered that status.
ORDER_STATUSES = {"paid": "paid_at", "fulfilled": "fulfilled_at"}

# A pending story without its turn in its account (USER_STORIES_IN_FLIGHT; its photo not being
# uploaded) waits for a slot: its own series, so the pending one ages only stories that should be
# moving (also between a story's end and its hand-off's claim: then only the next in turn is pending).
_OLDEST_STORIES = f"""
        SELECT CASE WHEN w.status = 'pending' AND {NOT_UPLOADING} AND NOT {turn_clause("w")}
                    THEN 'waiting_for_slot' ELSE w.status END AS kind,
               EXTRACT(EPOCH FROM now() - min(w.created_at)), count(*)
          FROM stories w WHERE w.status IN ('pending', 'processing') GROUP BY 1"""

_OLDEST_ORDERS = """
        SELECT status, EXTRACT(EPOCH FROM now() - min(CASE status WHEN 'paid' THEN COALESCE(paid_at, updated_at)
                                                              ELSE COALESCE(fulfilled_at, updated_at) END))
          FROM orders WHERE status IN ('paid', 'fulfilled') GROUP BY status"""

_DEAD_DELIVERIES = "SELECT count(*) FROM event_deliveries WHERE status = 'dead'"


def _oldest_page_step(column: str, prerequisite: str | None) -> str:
    # A page step that waits (pending, its prerequisite done) or runs (processing) in a story that
    # runs: aged from the page row's last change (the prerequisite's completion, or the claim).
    col = page_column(column)
    pre = f"AND p.{page_column(prerequisite)} = 'completed'" if prerequisite is not None else ""
    return f"""
        SELECT EXTRACT(EPOCH FROM now() - min(p.updated_at))
          FROM story_pages p JOIN stories s ON s.id = p.story_id
         WHERE p.{col} IS DISTINCT FROM 'completed' AND s.status = 'processing' {pre}
           AND COALESCE(p.{col}, 'pending') IN ('pending', 'processing')"""


def _age(value: object) -> float:
    return max(0.0, float(value)) if value is not None else 0.0  # type: ignore[arg-type]


def story_backlog(c: Connection, cap: int = 0) -> tuple[dict[str, float], dict[str, int]]:
    """Age in seconds of the oldest story, and how many stories there are, per status: ``({"pending":
    s, "processing": s, "waiting_for_slot": s}, {"pending": n, ...})`` (0.0 and 0 when none), ages
    from the story's ``created_at`` (how long its parent has been waiting). ``waiting_for_slot``:
    pending stories without their turn under ``cap`` (USER_STORIES_IN_FLIGHT; 0: no cap, none):
    more of their account's stories in flight and older pending than it has slots
    (db.slots.turn_clause); they are not in ``pending``. One statement."""
    ages, counts = dict.fromkeys(STORY_STATUSES, 0.0), dict.fromkeys(STORY_STATUSES, 0)
    for status, age, n in c.execute(text(_OLDEST_STORIES), {"cap": cap}):
        ages[status], counts[status] = _age(age), int(n)
    return ages, counts


def oldest_stories(c: Connection, cap: int = 0) -> dict[str, float]:
    """The ages of :func:`story_backlog`: {"pending": s, "processing": s, "waiting_for_slot": s}."""
    return story_backlog(c, cap)[0]


def oldest_page_steps(c: Connection, stages: Sequence[tuple[str, str, str | None]]) -> dict[str, float]:
    """Age in seconds of the oldest waiting or running page step per stage, in processing stories.
    ``stages``: (stage name, status column, prerequisite column or None) from the story flow's
    table (pipeline/stories/stages.py); ValueError for a column that is not a page status column."""
    return {name: _age(c.execute(text(_oldest_page_step(column, pre))).scalar())
            for name, column, pre in stages}


def oldest_orders(c: Connection) -> dict[str, float]:
    """Age in seconds of the oldest order per status: {"paid": s since paid_at, "fulfilled": s since
    fulfilled_at} (updated_at when that column is empty; 0.0 when none)."""
    ages = dict.fromkeys(ORDER_STATUSES, 0.0)
    for status, age in c.execute(text(_OLDEST_ORDERS)):
        ages[status] = _age(age)
    return ages


def dead_deliveries(c: Connection) -> int:
    """Event deliveries out of attempts (status ``dead``): what ``events retry`` would resend."""
    return int(c.execute(text(_DEAD_DELIVERIES)).scalar_one())


def limit_statement_time(c: Connection, milliseconds: int) -> None:
    """Cap every later statement of the current transaction at ``milliseconds`` (PostgreSQL's
    ``statement_timeout``, SET LOCAL: it ends with the transaction). A statement past it raises
    sqlalchemy's OperationalError (QueryCanceled)."""
    c.execute(text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(int(milliseconds))})
