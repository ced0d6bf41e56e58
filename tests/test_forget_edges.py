"""Forgetting a family at its edges (an outside review of issue 15 found each as a failing test, now fixed).

Patterns as tests/test_forget.py: families by plain SQL (tests/lifecycle_support.py), then the
schema-blind scan of tests/privacy_scan.py."""
from __future__ import annotations

import contextlib
import json

from pipeline.privacy.forget import forget
from pipeline.privacy.retention import expire
from pipeline.privacy.settings import RetentionSettings
from tests.lifecycle_support import family, files_of, order, story
from tests.privacy_scan import scan_database
from tests.support import Db


def test_forget_after_retention_leaves_no_queued_print_folder_naming_the_old_order(clean_db: Db) -> None:
    # given a family whose finished story (with a shipped order) was just expired by retention:
    # its folders are queued in storage_deletions (kept there until the drain's second pass)
    fam = family(clean_db)
    sid = story(clean_db, fam)
    oid = order(clean_db, fam, sid, "shipped")
    clean_db.exec("UPDATE stories SET updated_at = now() - interval '400 days' WHERE id = :s", s=sid)
    expire(s=RetentionSettings(photo_days=0, book_days=365, batch_size=10, run_seconds=5))
    assert clean_db.one("SELECT files_deleted_at FROM stories WHERE id = :s", s=sid)["files_deleted_at"]
    # when the parent asks to be forgotten (nothing in flight: one run completes)
    assert forget(fam.user, "cli").status == "completed"
    # then no table names the family's order any more (README: "nothing anywhere names the family
    # when it returns"); found: storage_deletions.key = 'orders/<old order id>/print/' (retention's
    # key is not the erasure's target 'orders/<id>/', and complete() removes exact keys only)
    assert scan_database(clean_db, [oid, *fam.needles()]) == []


def test_an_order_placed_while_the_erasure_runs_is_never_stripped_of_its_address(clean_db: Db) -> None:
    # given a family with a finished story and no order: forget plans (no order in flight)
    fam = family(clean_db)
    sid = story(clean_db, fam)
    placed: list[str] = []

    def checkout(phase: str) -> None:
        # the parent buys the book while the erasure runs (after its plan, before the rows go);
        # Stripe confirms the payment at once
        if phase == "others" and not placed:
            placed.append(order(clean_db, fam, sid, "paid"))
            clean_db.exec("UPDATE orders SET shipping_address = CAST(:a AS jsonb) WHERE id = :o",
                          o=placed[0], a=json.dumps({"name": "Parent", "line1": "1 Main St"}))
            clean_db.exec("INSERT INTO order_steps (order_id, step) VALUES (:o, 'print_files')", o=placed[0])

    # when the erasure runs (the first run hits the order's RESTRICT key at DELETE FROM users) and
    # is carried on (the sweeper, or the operator running the command again)
    with contextlib.suppress(Exception):
        forget(fam.user, "task", after_phase=checkout)
    with contextlib.suppress(Exception):
        forget(fam.user, "task")
    # then the paid order, still to be printed and shipped, keeps its address and its print steps
    # (README: "Refused while an order is in flight ... nothing changes"). Found: the resumed run
    # skips the in-flight check (forget.py: `if erasure is None and ... fam["in_flight"]`) and
    # re-keys the paid order: address and order_steps gone, the book can never be shipped.
    paid = clean_db.all("SELECT id, shipping_address FROM orders WHERE status = 'paid'")
    assert len(paid) == 1 and paid[0]["shipping_address"] is not None, paid
    assert clean_db.one("SELECT count(*) AS n FROM order_steps")["n"] == 1


def test_a_print_step_in_flight_on_a_failed_order_makes_forget_wait_for_the_second_pass(clean_db: Db) -> None:
    # given a family whose order was refunded and failed while its print files were being rendered
    # (pipeline/orders/print_job.py handles exactly this race: "refunded and failed while it was
    # being created"): the order is not in flight, but its print_files step is still claimed
    fam = family(clean_db)
    sid = story(clean_db, fam)
    oid = order(clean_db, fam, sid, "failed")
    clean_db.exec("INSERT INTO order_steps (order_id, step, status) VALUES (:o, 'print_files', 'processing')", o=oid)
    # when the family is forgotten
    result = forget(fam.user, "task")
    # then the erasure waits for the step's lease before its last pass over the files: the step
    # writes orders/<id>/print/{interior,cover}.pdf (the child's name and pictures) when it ends.
    # Found: db/erasure_rows.py steps_in_flight ignores order_steps, so the run completes at once,
    # clears its targets and the queued deletions, and the late PDFs stay with no row pointing to them.
    assert result.status == "rechecking", result.counts


def test_a_photo_in_a_storage_this_deployment_cannot_reach_never_leaves_a_half_forgotten_family(
        clean_db: Db) -> None:
    # given a family one of whose photo rows names a storage the worker does not read (the spec's
    # storage_provider is free text; 'gcs' from an older API, or an S3 bucket without credentials)
    fam = family(clean_db)
    story(clean_db, fam)
    clean_db.photo(None, user_id=fam.user, storage_provider="gcs", object_key="uploads/old.jpg")
    # when the operator forgets it, twice
    for _ in range(2):
        with contextlib.suppress(Exception):
            forget(fam.user, "cli")
    # then either it was refused up front (nothing deleted, the reason recorded) or it completed
    # (the unreachable object reported): found instead, the users row is gone, the erasure is stuck
    # 'running' forever holding the user's id and targets, no message in it, and the CLI prints a
    # traceback (PermanentStepError from registry._photo_place) each time it is run
    row = clean_db.one("SELECT status, message FROM erasures ORDER BY requested_at DESC LIMIT 1")
    users = clean_db.one("SELECT count(*) AS n FROM users WHERE id = :u", u=fam.user)["n"]
    assert (row["status"] == "refused" and users == 1) or row["status"] == "completed", (row, users)


def test_truncate_never_leaves_files_without_rows(clean_db: Db) -> None:
    # given a family with a photo and a story (files on disk)
    fam = family(clean_db)
    sid = story(clean_db, fam)
    before = len(files_of(clean_db.storage, sid, fam.photo))
    assert before
    # when an operator empties the tables by SQL the short way
    refused = False
    try:
        clean_db.exec("TRUNCATE users CASCADE")
    except Exception:  # noqa: BLE001 - refusing is one of the two right answers
        refused = True
    # then it is refused, or its files are queued for deletion (issue 15: "deleting rows through
    # SQL ... never leaves files without rows"). Found: the files-follow triggers are AFTER DELETE
    # only (schema.sql), TRUNCATE fires none: rows gone, files stay, nothing queued
    queued = clean_db.one("SELECT count(*) AS n FROM storage_deletions")["n"]
    assert refused or queued, (before, queued)


def test_a_step_in_flight_on_another_familys_story_cannot_complete_with_the_forgotten_childs_picture(
        clean_db: Db) -> None:
    from db.engine import transaction
    from db.pages import complete_page

    # given another family's story being made with this family's photo (rows inserted by hand: the
    # README's case), one page's personalization claimed by a worker (token 7): it has the photo's
    # bytes in hand and is painting the forgotten child's face
    fam, other = family(clean_db), family(clean_db)
    story(clean_db, fam)
    theirs = story(clean_db, other, photo=fam.photo, status="processing")
    page = clean_db.one("SELECT id FROM story_pages WHERE story_id = :s AND page_number = 1", s=theirs)["id"]
    clean_db.exec("""UPDATE story_pages SET personalization_status = 'processing', claim_token = 7,
                            personalized_image_key = NULL WHERE id = :p""", p=page)
    # when the family is forgotten (the other story is failed and loses its pictures)
    forget(fam.user, "cli")
    assert clean_db.story_row(theirs)["status"] == "failed"
    seq = clean_db.one("SELECT coalesce(max(seq), 0) AS n FROM outbox_events")["n"]
    # then the in-flight step's guarded completion writes nothing: its claim must be fenced.
    # Found: fail_other_stories (db/erasure_rows.py) leaves 'processing' pages as they are, claim
    # token unchanged, so the late step completes: the page points at a new picture of the forgotten
    # child and the other family's web app is sent an event naming it (until the second pass deletes
    # the file, leaving the key dangling)
    key = f"stories/{theirs}/pages/01/personalized.png"
    with transaction() as c:
        completed = complete_page(c, str(page), "personalization_status", {"personalized_image_key": key}, 7)
    events = clean_db.all("SELECT type FROM outbox_events WHERE seq > :n AND story_id = :s", n=seq, s=theirs)
    assert not completed and events == [], events


def test_forgetting_a_placeholder_user_does_not_break_the_audit_records_kept_orders(clean_db: Db) -> None:
    # given a forgotten family whose shipped order is kept under the anonymous placeholder
    fam = family(clean_db)
    order(clean_db, fam, story(clean_db, fam), "shipped")
    assert forget(fam.user, "cli").status == "completed"
    kept_user = str(clean_db.one("SELECT kept_user_id FROM erasures")["kept_user_id"])
    # when an operator (or a script forgetting every user) forgets that placeholder
    forget(kept_user, "cli")
    # then the first audit record still names the user owning its kept orders. Found: the
    # placeholder is forgotten like a family: the kept orders are re-keyed again under a second
    # placeholder and erasures.kept_user_id of the first record points at a deleted user
    assert clean_db.one("SELECT count(*) AS n FROM orders WHERE user_id = :u", u=kept_user)["n"] == 1
