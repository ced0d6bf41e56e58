"""The row changes of forgetting a family (README "Forgetting a family"; the plan and the audit
record are in db/erasure.py). Each function runs in the caller's transaction and is idempotent:
run again after a crash, it finds its work done (or half done, in an earlier transaction) and does
the rest.

Kept orders (GDPR Art. 17(3)(b): the legal obligation to keep accounting records) must survive the
family's rows, yet ``orders.user_id`` and ``orders.story_id`` are NOT NULL foreign keys (RESTRICT)
and afterwards no row may name the family's ids (user, photos, stories, orders). So each erasure
makes an anonymous placeholder user (``erased-<random uuid>@invalid``), a placeholder photo
(``status='deleted'``, no object) and a placeholder story (``failed``, no text, files deleted), and
each kept order is inserted again as a new row with a new id holding only the accounting columns
(db.erasure.KEPT_ORDER_COLUMNS), pointing at the placeholders; the old row is deleted (its
order_steps and order_events, with the provider payloads and messages, cascade). The inserts' own
outbox events (the events triggers fire on a row inserted as 'shipped' or 'failed') are deleted
in the same transaction: they announce nothing real.
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from db import usage as usage_db
from db.erasure import FAILED_OTHER_STORY, KEPT_ORDER_COLUMNS
from db.lifecycle import ORDERS_IN_FLIGHT

_UUIDS = "CAST(:ids AS uuid[])"


def placeholders(c: Connection, erasure_id: str) -> dict[str, str]:
    """The erasure's placeholder user, photo and story (``user``, ``photo``, ``story``: ids),
    created on first use and recorded on the erasure row (``kept_*_id``)."""
    row = c.execute(text("SELECT kept_user_id, kept_photo_id, kept_story_id FROM erasures WHERE id = :id FOR UPDATE"),
                    {"id": erasure_id}).first()
    assert row is not None
    if row[0] is not None:
        return {"user": str(row[0]), "photo": str(row[1]), "story": str(row[2])}
    # The events triggers on stories are deferred to commit: made immediate here, so that the
    # placeholder story's own 'story.failed' can be deleted below, before anyone sees it.
    c.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
    tag = str(uuid.uuid4())
    user = str(c.execute(text("INSERT INTO users (email) VALUES (:e) RETURNING id"),
                         {"e": f"erased-{tag}@invalid"}).scalar_one())
    photo = str(c.execute(text("""
        INSERT INTO photos (user_id, storage_provider, object_key, filename, content_type, status,
                            ai_processing_status)
        VALUES (:u, 'local', :k, '', 'application/octet-stream', 'deleted', 'completed') RETURNING id"""),
        {"u": user, "k": f"erased/{tag}"}).scalar_one())
    story = str(c.execute(text("""
        INSERT INTO stories (user_id, child_name, child_age, story_theme, protagonist_photo_id, status,
                             error_message, files_deleted_at)
        VALUES (:u, '', 0, 'erased', :p, 'failed', 'Erased at the parent''s request.', now()) RETURNING id"""),
        {"u": user, "p": photo}).scalar_one())
    c.execute(text("DELETE FROM outbox_events WHERE story_id = :s OR photo_id = :p"), {"s": story, "p": photo})
    c.execute(text("UPDATE erasures SET kept_user_id = :u, kept_photo_id = :p, kept_story_id = :s WHERE id = :id"),
              {"id": erasure_id, "u": user, "p": photo, "s": story})
    return {"user": user, "photo": photo, "story": story}


def fail_other_stories(c: Connection, story_ids: list[str], kept_photo: str) -> int:
    """Other families' stories that used the forgotten family's photo (the pipeline refuses that;
    rows inserted by hand may exist): never deleted, but their pictures show the forgotten child.
    Each (locked, sorted by id; then its pages) is pointed at the placeholder photo, failed with
    FAILED_OTHER_STORY (its web app gets 'story.failed'), its book and picture keys and the chosen
    face cleared, its pages' picture steps marked failed. Their files are deleted by the caller.
    Returns how many stories changed."""
    if not story_ids:
        return 0
    ids = {"ids": story_ids}
    locked = [str(r[0]) for r in c.execute(text(
        f"SELECT id FROM stories WHERE id = ANY({_UUIDS}) ORDER BY id FOR UPDATE"), ids)]
    c.execute(text(f"SELECT id FROM story_pages WHERE story_id = ANY({_UUIDS}) ORDER BY story_id, id FOR UPDATE"), ids)
    # Fenced: every claim token moves on, so a step in flight on them (its photo's bytes in hand)
    # can complete nothing afterwards ("At least once": fencing); its steps end failed.
    c.execute(text(f"""
        UPDATE story_pages SET base_image_key = NULL, personalized_image_key = NULL, previous = NULL,
               claim_token = claim_token + 1,
               text_generation_status = CASE WHEN text_generation_status = 'processing' THEN 'failed'
                                             ELSE text_generation_status END,
               image_generation_status = CASE WHEN image_generation_status IN ('completed', 'processing')
                                              THEN 'failed' ELSE image_generation_status END,
               personalization_status = CASE WHEN personalization_status IN ('completed', 'processing')
                                             THEN 'failed' ELSE personalization_status END
         WHERE story_id = ANY({_UUIDS})"""), ids)
    c.execute(text(f"""UPDATE story_outlines SET protagonist_face = NULL, finish_token = finish_token + 1,
                              finish_claimed_at = NULL WHERE story_id = ANY({_UUIDS})"""), ids)
    return int(c.execute(text(f"""
        UPDATE stories SET protagonist_photo_id = :photo, status = 'failed', error_message = :msg,
               book_pdf_key = NULL, book_html_key = NULL, redo_id = NULL, claim_token = claim_token + 1
         WHERE id = ANY({_UUIDS})"""), {"ids": locked, "photo": kept_photo, "msg": FAILED_OTHER_STORY}).rowcount)


def rekey_orders(c: Connection, order_ids: list[str], kept: dict[str, str]) -> list[str]:
    """Each order in ``order_ids`` (locked, sorted) replaced by a new row with a new id holding
    only the accounting columns, owned by the placeholders ``kept`` (``user``, ``story``); the old
    row deleted with its steps and events. Returns the new orders' ids."""
    if not order_ids:
        return []
    c.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))  # the orders' deferred events triggers: see placeholders
    # (an order in flight is never re-keyed: its address and steps are still needed; the caller
    # refuses the erasure when it finds one under the deletion's locks)
    old = [str(r[0]) for r in c.execute(text(
        f"SELECT id FROM orders WHERE id = ANY({_UUIDS}) ORDER BY id FOR UPDATE"), {"ids": order_ids})]
    old = [str(r[0]) for r in c.execute(text(
        f"SELECT id FROM orders WHERE id = ANY({_UUIDS}) AND status <> ALL(CAST(:busy AS text[])) ORDER BY id"),
        {"ids": old, "busy": list(ORDERS_IN_FLIGHT)})]
    cols = ", ".join(KEPT_ORDER_COLUMNS)
    made: list[str] = []
    for oid in old:
        usage = usage_db.order_usage_ids(c, oid)  # its cost follows the new row (README "What each book costs")
        row: Any = c.execute(text(f"DELETE FROM orders WHERE id = :id RETURNING {cols}"), {"id": oid}).mappings().one()
        new = str(c.execute(text(f"""
            INSERT INTO orders (user_id, story_id, {cols})
            VALUES (:user, :story, {', '.join(':' + k for k in KEPT_ORDER_COLUMNS)}) RETURNING id"""),
            {**row, "user": kept["user"], "story": kept["story"]}).scalar_one())
        usage_db.move_usage(c, usage, new, kept["story"])
        made.append(new)
    c.execute(text("DELETE FROM outbox_events WHERE order_id = ANY(CAST(:ids AS uuid[]))"), {"ids": made})
    return made


def lock_family(c: Connection, user_id: str) -> bool:
    """Lock the family's rows for its deletion, in the pipeline's order: the users row (``FOR
    UPDATE``: no photo or story can be added to it meanwhile, their inserts wait on it), then its
    stories, their pages and its photos, each sorted by id. A worker's guarded statement on one of
    them waits for the deletion and then finds no row; one that committed first has its events
    committed too (the events triggers run in the writer's transaction), so the events read after
    this see them. False if the user is gone."""
    if c.execute(text("SELECT id FROM users WHERE id = :u FOR UPDATE"), {"u": user_id}).first() is None:
        return False
    c.execute(text("SELECT id FROM stories WHERE user_id = :u ORDER BY id FOR UPDATE"), {"u": user_id})
    c.execute(text("""SELECT g.id FROM story_pages g JOIN stories s ON s.id = g.story_id WHERE s.user_id = :u
                       ORDER BY g.story_id, g.id FOR UPDATE OF g"""), {"u": user_id})
    c.execute(text("SELECT id FROM photos WHERE user_id = :u ORDER BY id FOR UPDATE"), {"u": user_id})
    # its orders too: a payment moving one into flight waits, and is seen by the check after this
    c.execute(text("SELECT id FROM orders WHERE user_id = :u ORDER BY id FOR UPDATE"), {"u": user_id})
    return True


def delete_family(c: Connection, user_id: str, event_seqs: list[int]) -> dict[str, int]:
    """The family's rows deleted (after ``lock_family``): its outbox events ``event_seqs`` (their
    deliveries and attempts cascade), then the users row, whose cascade takes its photos (face
    data), stories, pages (texts, keys, remote jobs), outlines (chosen face), redo requests
    (hints) and step errors. The files-follow-rows triggers queue the deleted rows' objects
    (schema.sql, ``storage_deletions``). Returns ``outbox_events`` and ``users`` deleted."""
    events = c.execute(text("DELETE FROM outbox_events WHERE seq = ANY(:s)"), {"s": event_seqs}).rowcount
    users = c.execute(text("DELETE FROM users WHERE id = :u"), {"u": user_id}).rowcount
    return {"outbox_events": int(events), "users": int(users)}


def steps_in_flight(c: Connection, user_id: str | None, other_stories: list[str], lease: float,
                    orders: Sequence[str] = ()) -> int:
    """How many steps that write files may still be running for the family's rows, or for the other
    families' stories that used its photo (``other_stories``), read under ``lock_family``'s locks:
    stories and pages ``processing`` (a claimed step's row says so until it ends), photos being
    analysed, page redos running, books whose finish was claimed within the last ``lease``
    seconds, and print steps (``order_steps``) ``processing`` for ``orders`` or the family's
    (``user_id`` None: only ``other_stories`` and ``orders``). A step not claimed by now never
    writes: its claim finds no row. 0 means no late writer can exist, so one pass over the files
    is enough (pipeline/privacy/forget.py)."""
    return int(c.execute(text("""
        WITH s AS (SELECT id, status FROM stories WHERE user_id = :u OR id = ANY(CAST(:o AS uuid[])))
        SELECT (SELECT count(*) FROM s WHERE s.status = 'processing')
             + (SELECT count(*) FROM story_pages g JOIN s ON s.id = g.story_id
                 WHERE 'processing' IN (g.text_generation_status, g.image_generation_status,
                                        g.personalization_status))
             + (SELECT count(*) FROM photos WHERE user_id = :u AND ai_processing_status = 'processing')
             + (SELECT count(*) FROM page_redos r JOIN s ON s.id = r.story_id WHERE r.status = 'running')
             + (SELECT count(*) FROM story_outlines o JOIN s ON s.id = o.story_id
                 WHERE o.finish_claimed_at > now() - make_interval(secs => :lease))
             + (SELECT count(*) FROM order_steps st JOIN orders od ON od.id = st.order_id
                 WHERE st.status = 'processing'
                   AND (od.user_id = :u OR od.id = ANY(CAST(:ord AS uuid[])) OR od.story_id IN (SELECT id FROM s)))"""),
        {"u": user_id, "o": list(other_stories), "lease": lease, "ord": list(orders)}).scalar() or 0)
