"""SQL of forgetting a family (README "Forgetting a family"; pipeline/privacy/forget.py runs it):
what a family owns, the audit record (``erasures``), and the statements of each phase.

Each function runs in the caller's transaction (``c``); the phases are short transactions of their
own. Row locks are taken in the pipeline's order (a story before its pages: db/stories.py,
db/redo.py), always sorted by id, so an erasure beside live workers waits for a row at most as long
as one guarded statement holds it and never deadlocks with them. Ids are passed and returned as
text (UUIDs).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, RowMapping

from db.lifecycle import ORDERS_IN_FLIGHT

# What an order keeps for accounting (GDPR Art. 17(3)(b) and (e): a legal obligation to keep
# accounting records, e.g. 10 years under German HGB §257 / AO §147, 6 years under UK Companies Act
# s.388): the amounts, currency, status, product, the payment's and the print provider's references
# (to reconcile with Stripe and Lulu) and the dates. Not: the shipping address (name, address), the
# tracking number (identifies a parcel to a home), the order's history (provider payloads).
KEPT_ORDER_COLUMNS = ("product_type", "status", "amount", "currency", "payment_provider", "payment_intent_id",
                      "pod_provider", "pod_order_id", "paid_at", "fulfilled_at", "shipped_at", "created_at")
FAILED_OTHER_STORY = ("The story's pictures were deleted: its photo was deleted at its owner's request. "
                      "Create a new story with a photo of your own.")


def _ids(rows: Any) -> list[str]:
    return [str(r[0]) for r in rows]


def family(c: Connection, user_id: str) -> dict[str, Any] | None:
    """What ``user_id`` owns, or None when there is no such user. Keys: ``photos`` (each
    ``id``, ``storage_provider``, ``bucket``, ``object_key``), ``stories`` (ids), ``orders``
    (each ``id``, ``status``, ``story_id``), ``in_flight`` (the orders that block: ORDERS_IN_FLIGHT),
    ``other_stories`` (ids of stories of OTHER users that use one of its photos) and
    ``other_orders`` (ids of those stories' orders)."""
    if c.execute(text("SELECT 1 FROM users WHERE id = :u"), {"u": user_id}).first() is None:
        return None
    photos = [dict(r) for r in c.execute(text(
        "SELECT id::text, storage_provider, bucket, object_key FROM photos WHERE user_id = :u ORDER BY id"),
        {"u": user_id}).mappings()]
    pids = [p["id"] for p in photos]
    stories = _ids(c.execute(text("SELECT id FROM stories WHERE user_id = :u ORDER BY id"), {"u": user_id}))
    orders = [dict(r) for r in c.execute(text(
        "SELECT id::text, status, story_id::text, pod_provider FROM orders "
        "WHERE user_id = :u OR story_id = ANY(CAST(:s AS uuid[])) ORDER BY id"),
        {"u": user_id, "s": stories}).mappings()]
    others = _ids(c.execute(text(
        "SELECT id FROM stories WHERE protagonist_photo_id = ANY(CAST(:p AS uuid[])) AND user_id <> :u ORDER BY id"),
        {"p": pids, "u": user_id}))
    other_orders = _ids(c.execute(text(
        "SELECT id FROM orders WHERE story_id = ANY(CAST(:s AS uuid[])) ORDER BY id"), {"s": others}))
    return {"photos": photos, "stories": stories, "orders": orders,
            "in_flight": [o for o in orders if o["status"] in ORDERS_IN_FLIGHT],
            "other_stories": others, "other_orders": other_orders}


def row_counts(c: Connection, user_id: str, fam: dict[str, Any]) -> dict[str, int]:
    """How many rows of each kind the family has (the audit record's and ``--dry-run``'s counts)."""
    p = {"u": user_id, "s": fam["stories"], "p": [x["id"] for x in fam["photos"]],
         "o": [o["id"] for o in fam["orders"]]}
    s_, p_, o_ = "CAST(:s AS uuid[])", "CAST(:p AS uuid[])", "CAST(:o AS uuid[])"
    row = c.execute(text(f"""
        SELECT (SELECT count(*) FROM story_pages WHERE story_id = ANY({s_})) AS pages,
               (SELECT count(*) FROM story_outlines WHERE story_id = ANY({s_})) AS outlines,
               (SELECT count(*) FROM page_redos WHERE story_id = ANY({s_})) AS page_redos,
               (SELECT count(*) FROM step_errors WHERE story_id = ANY({s_}) OR photo_id = ANY({p_})) AS step_errors,
               (SELECT count(*) FROM provider_jobs j JOIN story_pages g ON g.id = j.page_id
                 WHERE g.story_id = ANY({s_})) AS provider_jobs,
               (SELECT count(*) FROM order_events WHERE order_id = ANY({o_})) AS order_events,
               (SELECT count(*) FROM photos WHERE id = ANY({p_}) AND (face_details IS NOT NULL
                       OR character_profile IS NOT NULL)) AS face_data"""), p).mappings().first()
    assert row is not None
    counts = {k: int(v) for k, v in row.items()}
    counts["outbox_events"] = len(family_events(c, user_id, fam))
    counts.update(users=1, photos=len(fam["photos"]), stories=len(fam["stories"]),
                  orders_kept=len(fam["orders"]), other_stories_failed=len(fam["other_stories"]))
    return counts


def family_events(c: Connection, user_id: str, fam: dict[str, Any]) -> list[int]:
    """The outbox events (``seq``) that name the family: by their story, order or photo column, or
    any of its ids anywhere in the payload (the user's id is in every payload)."""
    ids = [user_id, *fam["stories"], *[p["id"] for p in fam["photos"]], *[o["id"] for o in fam["orders"]]]
    return [int(r[0]) for r in c.execute(text("""
        SELECT seq FROM outbox_events e
         WHERE story_id = ANY(CAST(:ids AS uuid[])) OR order_id = ANY(CAST(:ids AS uuid[]))
            OR photo_id = ANY(CAST(:ids AS uuid[]))
            OR EXISTS (SELECT 1 FROM unnest(CAST(:ids AS text[])) i WHERE position(i IN e.payload::text) > 0)
         ORDER BY seq"""), {"ids": ids})]


# --- the audit record ---------------------------------------------------------------------------

def open_erasure(c: Connection, user_id: str, requested_by: str, counts: dict[str, int],
                 targets: list[dict[str, Any]]) -> RowMapping:
    """The user's unfinished erasure (status running or rechecking), created (``counts``,
    ``targets``: what is to be deleted) when there is none. Keys: every column of ``erasures``."""
    c.execute(text("""
        INSERT INTO erasures (user_id, requested_by, counts, targets)
        VALUES (:u, :by, CAST(:counts AS jsonb), CAST(:targets AS jsonb))
        ON CONFLICT (user_id) WHERE status IN ('running', 'rechecking') DO NOTHING"""),
        {"u": user_id, "by": requested_by, "counts": json.dumps(counts), "targets": json.dumps(targets)})
    row = open_for(c, user_id)
    assert row is not None
    return row


def open_for(c: Connection, user_id: str) -> RowMapping | None:
    """The user's unfinished erasure row (locked ``FOR UPDATE``), or None."""
    return c.execute(text("""
        SELECT * FROM erasures WHERE user_id = :u AND status IN ('running', 'rechecking') FOR UPDATE"""),
        {"u": user_id}).mappings().first()


def record_refusal(c: Connection, user_id: str, requested_by: str, message: str) -> str:
    """An erasure refused (nothing deleted): its row, with ``message`` (no names: counts and
    statuses), and the user's id until a later erasure of that user completes. Returns its id."""
    return str(c.execute(text("""
        INSERT INTO erasures (user_id, requested_by, status, message, finished_at)
        VALUES (:u, :by, 'refused', :m, now()) RETURNING id"""),
        {"u": user_id, "by": requested_by, "m": message}).scalar_one())


def is_placeholder(c: Connection, user_id: str) -> bool:
    """Is ``user_id`` an erasure's anonymous placeholder (``erasures.kept_user_id``)?"""
    return c.execute(text("SELECT 1 FROM erasures WHERE kept_user_id = :u LIMIT 1"), {"u": user_id}).first() is not None


def refuse_open(c: Connection, erasure_id: str, message: str) -> None:
    """An unfinished erasure refused after its plan (an order went into flight meanwhile): status
    'refused' with ``message``, its targets dropped (none of the family's rows or files were
    deleted; a later request starts a new erasure)."""
    c.execute(text("""
        UPDATE erasures SET status = 'refused', message = :m, targets = NULL, recheck_at = NULL, finished_at = now()
         WHERE id = :id"""), {"id": erasure_id, "m": message})


def add_targets(c: Connection, erasure_id: str, targets: list[dict[str, Any]]) -> None:
    """Merge ``targets`` into the erasure's (a resumed run may find more, e.g. a photo uploaded
    since), without duplicates."""
    c.execute(text("""
        UPDATE erasures SET targets = (SELECT jsonb_agg(DISTINCT t) FROM jsonb_array_elements(
                                           COALESCE(targets, '[]'::jsonb) || CAST(:t AS jsonb)) t)
         WHERE id = :id"""), {"id": erasure_id, "t": json.dumps(targets)})


def add_count(c: Connection, erasure_id: str, kind: str, n: int) -> None:
    """Add ``n`` to the erasure's count of ``kind`` (e.g. ``objects_deleted``)."""
    c.execute(text("""
        UPDATE erasures SET counts = jsonb_set(counts, ARRAY[CAST(:k AS text)],
                                               to_jsonb(COALESCE((counts ->> :k)::bigint, 0) + :n))
         WHERE id = :id"""), {"id": erasure_id, "k": kind, "n": n})


def set_status(c: Connection, erasure_id: str, status: str, recheck_after: float | None = None) -> None:
    """Move the erasure to ``status``; ``recheck_after``: seconds from now to ``recheck_at``."""
    c.execute(text("""
        UPDATE erasures SET status = :st,
               recheck_at = CASE WHEN CAST(:after AS float8) IS NULL THEN recheck_at
                                 ELSE now() + make_interval(secs => CAST(:after AS float8)) END
         WHERE id = :id"""), {"id": erasure_id, "st": status, "after": recheck_after})


def complete(c: Connection, erasure_id: str, user_id: str, keys: Sequence[str]) -> None:
    """The erasure done: its user id and targets cleared, ``finished_at`` set; the user's earlier
    refusals forget the user's id too; the storage deletion queue's rows for ``keys`` (already
    deleted twice here) removed."""
    c.execute(text("""
        UPDATE erasures SET status = 'completed', user_id = NULL, targets = NULL, finished_at = now()
         WHERE id = :id"""), {"id": erasure_id})
    c.execute(text("UPDATE erasures SET user_id = NULL WHERE user_id = :u"), {"u": user_id})
    # every queued row at or under a target (retention may have queued orders/<id>/print/ under
    # the erasure's orders/<id>/): all deleted by now
    c.execute(text("""
        DELETE FROM storage_deletions d
         WHERE d.key = ANY(:k)
            OR EXISTS (SELECT 1 FROM unnest(CAST(:k AS text[])) AS t(key)
                        WHERE right(t.key, 1) = '/' AND left(d.key, length(t.key)) = t.key)"""),
              {"k": list(keys)})


def due_rechecks(c: Connection, stalled_after: float, limit: int = 100) -> list[str]:
    """Users whose erasure the sweeper should carry on, oldest first: its second pass is due
    (``recheck_at`` passed), or it is still ``running`` ``stalled_after`` seconds after it was
    asked for (its run died: a worker lost, a database outage; a live run holds the user's lock,
    so a second one changes nothing)."""
    return _ids(c.execute(text("""
        SELECT user_id FROM erasures
         WHERE user_id IS NOT NULL
           AND ((status = 'rechecking' AND recheck_at <= now())
                OR (status = 'running' AND requested_at < now() - make_interval(secs => :stalled)))
         ORDER BY requested_at LIMIT :n"""), {"n": limit, "stalled": stalled_after}))


def state(c: Connection, erasure_id: str, now: Any = None) -> RowMapping:
    """The erasure's ``counts``, ``recheck_at`` and ``due`` (its second pass due at ``now``: a
    timezone-aware datetime, or None for the database's clock)."""
    return c.execute(text("""
        SELECT counts, recheck_at, recheck_at <= COALESCE(CAST(:now AS timestamptz), now()) AS due
          FROM erasures WHERE id = :id"""), {"id": erasure_id, "now": now}).mappings().one()


def try_lock(conn: Connection, user_id: str) -> bool:
    """Take the session advisory lock on this user's erasure (on an autocommit connection held
    for the run); False if another session holds it."""
    return bool(conn.execute(text("SELECT pg_try_advisory_lock(hashtextextended(:k, 0))"),
                             {"k": f"erasure:{user_id}"}).scalar())


def unlock(conn: Connection, user_id: str) -> None:
    """Release the lock ``try_lock`` took."""
    conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"), {"k": f"erasure:{user_id}"})
