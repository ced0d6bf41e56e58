"""Fair turns between families: each account's stories in flight, counted from the rows.

A story is *in flight* while ``stories.status = 'processing'`` (claimed by its start and not yet
completed or failed; a redo of a completed page puts its story there too). USER_STORIES_IN_FLIGHT
caps how many of one account's (``stories.user_id``) stories may be in flight at once; the others
wait ``pending`` (README "Fair turns between families").

Exact across every worker and machine: the only move into 'processing' that may take a slot (the
start's claim, db/stories.py claim_story with ``cap``) runs in one transaction that first takes
the account's advisory lock (:func:`lock_account`) and then counts the account's rows. Nothing is
held between steps: the slots are the rows themselves, so a dead worker's slot is its story's
'processing' row, which the stuck-work sweep takes over after the lease like any other claim (no
separate slot lease to leak). Counts use the partial index ix_stories_user_in_flight; the waiting
stories of an account use ix_stories_user_pending (schema.sql), each query repeating its index's
predicate word for word.
"""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection, RowMapping

from db.engine import lock_wait
from pipeline.config import settings

__all__ = [
    "IN_FLIGHT", "NOT_UPLOADING", "accounts_with_free_slots", "account_waiting", "cap_clause", "in_flight",
    "lock_account", "story_account", "story_start_state", "turn_clause", "waiting_stories",
]

# The index predicates (schema.sql): a story in flight, a story waiting for its start.
IN_FLIGHT = "status = 'processing'"
_PENDING = "status = 'pending'"


def in_flight(user: str = "s.user_id", *, excluding: str | None = None) -> str:
    """SQL: how many stories of the account ``user`` (an SQL expression) are in flight, without the
    story ``excluding`` (an SQL expression of its id) when given."""
    other = f" AND f.id <> {excluding}" if excluding else ""
    return f"(SELECT count(*) FROM stories f WHERE f.user_id = {user} AND f.{IN_FLIGHT}{other})"


def cap_clause(user: str = "s.user_id") -> str:
    """SQL: true when the account ``user`` has a free slot under the cap ``:cap`` (an int
    parameter; 0 or less: no cap). Exact only under :func:`lock_account` in the same transaction,
    in a statement after the lock's (a statement's snapshot is taken when it starts)."""
    return f"(CAST(:cap AS integer) <= 0 OR {in_flight(user)} < CAST(:cap AS integer))"


def turn_clause(s: str = "s") -> str:
    """SQL: true when the pending story ``s`` (a table alias) has its turn: no cap (``:cap`` <= 0),
    or fewer of its account's pending stories are older than it (created_at, then id) than the
    account has free slots. A story without its turn waits for a slot: no message of its own is
    due (its account's hand-off or the sweep's waiting pass sends it). The count of older ones
    stops at ``:cap`` (ix_stories_user_pending), so a large batch costs no more than a small one."""
    return (f"(CAST(:cap AS integer) <= 0 OR (SELECT count(*) FROM (SELECT 1 FROM stories o "
            f"WHERE o.user_id = {s}.user_id AND o.{_PENDING} AND (o.created_at, o.id) < ({s}.created_at, {s}.id) "
            f"LIMIT CAST(:cap AS integer)) older) < CAST(:cap AS integer) - {in_flight(f'{s}.user_id')})")


# A pending story that waits for a slot rather than for its photo: a photo still being uploaded
# (within PHOTO_UPLOAD_WAIT_SECONDS) has a message of its own polling for it (pipeline/stories/
# upload_wait.py); such a story takes no turn of its account until the upload is confirmed.
NOT_UPLOADING = ("NOT EXISTS (SELECT 1 FROM photos ph WHERE ph.id = w.protagonist_photo_id "
                  "AND ph.status = 'pending_upload')")


def lock_account(conn: Connection, user_id: str) -> None:
    """Take the account's transaction-scoped advisory lock (released at commit or rollback), in
    its own statement: every claim that may take one of ``user_id``'s slots holds it while it
    counts and claims, so two workers never both take the account's last slot. ``conn`` must be in
    a transaction (db.engine.transaction), not autocommit: there the lock would end with this
    statement. Waits at most a quarter of the step lease (2 s at most; db.engine.lock_wait): a
    worker stopped inside a start keeps the lock until PostgreSQL ends its session, and past the
    wait the driver's LockNotAvailable goes up as the database unavailable (the start re-sent)."""
    lock_wait(conn, min(2.0, settings().step_lease_seconds / 4))
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('story-slots:' || CAST(:u AS text), 0))"),
                 {"u": user_id})


def story_start_state(conn: Connection, story_id: str, upload_wait: float) -> RowMapping | None:
    """Why a story start was not claimed: ``status``, ``error_message``, ``age`` (interval since the
    row moved), plus, for a pending story whose own photo is still 'pending_upload',
    ``upload_wait_left`` (seconds until the wait ends; NULL otherwise), ``pending_for`` (seconds
    since the story became pending), ``pending_since`` (its updated_at, in µs since the epoch: which
    pending episode this is) and ``in_flight`` (how many other stories of its account are in
    flight: at USER_STORIES_IN_FLIGHT, a pending story waits for a slot). None: no such story."""
    return conn.execute(
        text(
            f"""
            SELECT s.status, s.error_message, now() - s.updated_at AS age,
                   CASE WHEN s.status = 'pending' AND ph.status = 'pending_upload' AND ph.user_id = s.user_id
                        THEN CAST(EXTRACT(EPOCH FROM s.updated_at + make_interval(secs => :wait) - now())
                                  AS float8) END AS upload_wait_left,
                   CAST(EXTRACT(EPOCH FROM now() - s.updated_at) AS float8) AS pending_for,
                   CAST(floor(EXTRACT(EPOCH FROM s.updated_at) * 1000000) AS bigint) AS pending_since,
                   {in_flight(excluding="s.id")} AS in_flight
              FROM stories s LEFT JOIN photos ph ON ph.id = s.protagonist_photo_id
             WHERE s.id = :id
            """
        ),
        {"id": story_id, "wait": upload_wait},
    ).mappings().first()


def story_account(conn: Connection, story_id: str | None = None, page_id: str | None = None) -> str | None:
    """The account (users.id) of a story, or of the story of page ``page_id``; None: no such row."""
    if story_id is not None:
        user = conn.execute(text("SELECT user_id FROM stories WHERE id = :s"), {"s": story_id}).scalar()
    else:
        user = conn.execute(text("SELECT s.user_id FROM story_pages p JOIN stories s ON s.id = p.story_id "
                                 "WHERE p.id = :p"), {"p": page_id}).scalar()
    return None if user is None else str(user)


def account_waiting(conn: Connection, user_id: str, cap: int) -> list[str]:
    """The account's oldest waiting stories (pending, photo not being uploaded; by created_at),
    as many as it has free slots under ``cap`` (> 0): the stories a slot freed should start. An
    empty list when the account is at its cap or nothing of it waits."""
    return [str(r[0]) for r in conn.execute(text(
        f"""SELECT w.id FROM stories w
             WHERE w.user_id = :u AND w.{_PENDING} AND {NOT_UPLOADING}
             ORDER BY w.created_at, w.id
             LIMIT greatest(CAST(:cap AS integer) - {in_flight("CAST(:u AS uuid)")}, 0)"""),
        {"u": user_id, "cap": cap})]


_WAITING = f"""
        WITH w AS (
            SELECT w.id, w.user_id, w.created_at,
                   row_number() OVER (PARTITION BY w.user_id ORDER BY w.created_at, w.id) AS turn
              FROM stories w
             WHERE w.status IN ('pending', 'processing') AND w.{_PENDING} AND {NOT_UPLOADING}
               AND w.updated_at < now() - make_interval(secs => :settle)
        ), a AS (
            SELECT u.user_id, CAST(:cap AS integer) - {in_flight("u.user_id")} AS free
              FROM (SELECT DISTINCT user_id FROM w) u
        )"""


def waiting_stories(conn: Connection, limit: int, cap: int, settle: float = 0.0) -> list[str]:
    """Pending stories whose account has a free slot under ``cap`` (> 0), oldest first (by
    created_at), at most as many per account as it has free slots and ``limit`` in all: what the
    sweep starts when a hand-off was lost (a worker died between a story's end and the send).
    Only stories pending for at least ``settle`` seconds (their own message has had its turn) and
    whose photo is not being uploaded. Driven by ix_stories_unfinished and ix_stories_user_in_flight."""
    return [str(r[0]) for r in conn.execute(text(
        f"""{_WAITING}
        SELECT w.id FROM w JOIN a USING (user_id) WHERE w.turn <= a.free
         ORDER BY w.created_at, w.id LIMIT :limit"""), {"cap": cap, "settle": settle, "limit": limit})]


def accounts_with_free_slots(conn: Connection, cap: int, limit: int = 1000) -> list[RowMapping]:
    """Accounts with waiting stories (pending, photo not being uploaded) and a free slot under
    ``cap`` (> 0): rows ``user_id``, ``free`` (slots free now), ``waiting`` (stories pending),
    ``oldest`` (created_at of the oldest), oldest first, at most ``limit``."""
    return list(conn.execute(text(
        f"""{_WAITING}
        SELECT a.user_id, a.free, count(*) AS waiting, min(w.created_at) AS oldest
          FROM w JOIN a USING (user_id) WHERE a.free > 0
         GROUP BY a.user_id, a.free ORDER BY oldest LIMIT :limit"""),
        {"cap": cap, "settle": 0.0, "limit": limit}).mappings())
