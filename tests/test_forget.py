"""Forgetting a family (README "Forgetting a family"; pipeline/privacy/forget.py) on the real
PostgreSQL and local storage: everything of the family goes (proven by the schema-blind scan of
tests/privacy_scan.py), the orders keep their accounting only, another family is untouched, a
story of another family that used the photo is failed and loses its pictures, the dry run changes
nothing, an order in flight refuses the erasure, and a run that crashes after any phase is
completed by the next."""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from pipeline.privacy.forget import PHASES, finish_due, forget
from tests.lifecycle_support import Family, digest, family, files_of, order, story
from tests.privacy_scan import scan_database, scan_storage
from tests.support import Db

HINT = "make her hair curlier like grandma Philippa's"
STREET = "17 Larkspur Crescent"


def _later() -> datetime:
    """A moment past the second pass's delay (STEP_LEASE_SECONDS + 60 s)."""
    return datetime.now().astimezone() + timedelta(hours=1)


def in_flight(db: Db, fam: Family) -> None:
    """One of the family's page steps claimed (``processing``): a late writer may exist, so the
    erasure's second pass waits for the lease."""
    db.exec("""UPDATE story_pages SET image_generation_status = 'processing'
                WHERE id = (SELECT g.id FROM story_pages g JOIN stories s ON s.id = g.story_id
                             WHERE s.user_id = :u ORDER BY g.id LIMIT 1)""", u=fam.user)


def rich_family(db: Db) -> tuple[Family, dict[str, Any]]:
    """A family with 2 photos and 2 stories (one with a redone page, a redo hint, a step error and
    a remote job; one with a shipped order, its history, address and tracking number) and their
    outbox events; returns it and the shipped order's accounting columns."""
    fam = family(db)
    second = db.photo(fam.photo_bytes[::-1], user_id=fam.user, bucket="uploads-b")
    s1 = story(db, fam, redone_page=2)
    s2 = story(db, fam, photo=second)
    page = db.one("SELECT id FROM story_pages WHERE story_id = :s AND page_number = 2", s=s1)["id"]
    db.exec("""INSERT INTO page_redos (story_id, page_id, page_number, from_stage, hint, request_key, revision, status)
               VALUES (:s, :p, 2, 'image', :h, 'req-1', 2, 'completed')""", s=s1, p=page, h=HINT)
    db.exec("UPDATE story_pages SET redo_hint = :h, revision = 2 WHERE id = :p", h=HINT, p=page)
    db.exec("""INSERT INTO step_errors (story_id, page_id, photo_id, stage, permanent, message)
               VALUES (:s, :p, :ph, 'image', false, :m)""", s=s1, p=page, ph=fam.photo, m=f"{fam.name} timeout")
    db.exec("""INSERT INTO provider_jobs (page_id, stage, provider, external_id, input_sha256, status)
               VALUES (:p, 'image', 'replicate', :x, repeat('a', 64), 'succeeded')""", p=page, x=f"pred-{fam.user}")
    oid = order(db, fam, s2, "shipped")
    db.exec("""UPDATE orders SET shipping_address = CAST(:a AS jsonb), tracking_number = 'TRK-99871',
                      payment_provider = 'stripe', payment_intent_id = :pi, pod_provider = 'local',
                      pod_order_id = :pod, paid_at = now() - interval '3 days',
                      fulfilled_at = now() - interval '2 days', shipped_at = now() - interval '1 day'
                WHERE id = :o""",
            o=oid, pi=f"pi_{fam.user[:8]}", pod=f"print-{oid[:8]}",
            a=json.dumps({"name": f"{fam.name} Parent", "line1": STREET, "city": "Dunmore", "email": fam.email}))
    db.exec("""INSERT INTO order_events (order_id, source, event_id, kind, outcome, message, detail)
               VALUES (:o, 'local', 'ev-1', 'shipped', 'applied', :m, CAST(:d AS jsonb))""",
            o=oid, m=f"shipped to {STREET}", d=json.dumps({"address": STREET}))
    kept = dict(db.one("""SELECT product_type, status, amount, currency, payment_provider, payment_intent_id,
                                 pod_provider, pod_order_id, paid_at, fulfilled_at, shipped_at, created_at
                            FROM orders WHERE id = :o""", o=oid))
    fam.photo_bytes_2 = fam.photo_bytes[::-1]  # type: ignore[attr-defined]
    fam.photo2 = second  # type: ignore[attr-defined]
    return fam, kept


def needles(fam: Family) -> list[str]:
    return [*fam.needles(), fam.photo2, HINT, STREET, "Philippa", "TRK-99871"]  # type: ignore[attr-defined]


def snapshot(db: Db, fam: Family) -> dict[str, Any]:
    """Every row of ``fam`` (users, photos, stories, pages, outlines, orders, events) and its files."""
    q = {"users": "SELECT * FROM users WHERE id = :u",
         "photos": "SELECT * FROM photos WHERE user_id = :u ORDER BY id",
         "stories": "SELECT * FROM stories WHERE user_id = :u ORDER BY id",
         "pages": "SELECT g.* FROM story_pages g JOIN stories s ON s.id = g.story_id "
                  "WHERE s.user_id = :u ORDER BY g.id",
         "outlines": "SELECT o.* FROM story_outlines o JOIN stories s ON s.id = o.story_id WHERE s.user_id = :u",
         "orders": "SELECT * FROM orders WHERE user_id = :u ORDER BY id",
         "events": "SELECT * FROM outbox_events WHERE payload ->> 'user_id' = :u ORDER BY seq"}
    out: dict[str, Any] = {k: [dict(r) for r in db.all(sql, u=fam.user)] for k, sql in q.items()}
    out["files"] = digest(db.storage, *fam.ids())
    return out


def assert_forgotten(db: Db, fam: Family) -> None:
    found = scan_database(db, needles(fam))
    assert found == [], found
    files = scan_storage(db.storage, needles(fam), [fam.photo_bytes, fam.photo_bytes_2])  # type: ignore[attr-defined]
    assert files == [], files


def test_forget_deletes_everything_of_the_family_keeps_the_accounting_and_touches_no_other_family(
        clean_db: Db) -> None:
    # given a family with photos, stories, a redone page, a shipped order and events, and another family
    fam, kept = rich_family(clean_db)
    other = family(clean_db)
    story(clean_db, other, redone_page=1)
    before = snapshot(clean_db, other)
    assert scan_database(clean_db, needles(fam)) and files_of(clean_db.storage, *fam.ids())

    in_flight(clean_db, fam)
    # when it is forgotten: rows and files at once, the files once more after the lease
    first = forget(fam.user, "cli")
    assert first.status == "rechecking"
    assert files_of(clean_db.storage, *fam.ids()) == []
    done = forget(fam.user, "cli", now=_later())

    # then nothing of it is left in any table or file, and the audit record has counts only
    assert done.status == "completed", done
    assert_forgotten(clean_db, fam)
    audit = clean_db.one("SELECT * FROM erasures")
    assert audit["status"] == "completed" and audit["user_id"] is None and audit["targets"] is None
    assert audit["requested_by"] == "cli" and audit["finished_at"] >= audit["requested_at"]
    assert {k: audit["counts"][k] for k in ("users", "photos", "stories", "page_redos", "orders_kept")} == {
        "users": 1, "photos": 2, "stories": 2, "page_redos": 1, "orders_kept": 1}
    assert audit["counts"]["objects_deleted"] >= 2 + 2 * 4 + 2 + 3  # uploads, pictures, books, print files
    # and the order's accounting is kept under the anonymous placeholder, without address or tracking
    kept_now = dict(clean_db.one("""SELECT o.product_type, o.status, o.amount, o.currency, o.payment_provider,
                                           o.payment_intent_id, o.pod_provider, o.pod_order_id, o.paid_at,
                                           o.fulfilled_at, o.shipped_at, o.created_at, o.shipping_address,
                                           o.tracking_number, u.email
                                      FROM orders o JOIN users u ON u.id = o.user_id WHERE u.id = :u""",
                                 u=audit["kept_user_id"]))
    assert kept_now.pop("shipping_address") is None and kept_now.pop("tracking_number") is None
    assert kept_now.pop("email").startswith("erased-")
    assert kept_now == kept
    assert clean_db.one("SELECT count(*) AS n FROM order_events")["n"] == 0
    # (no event announces the placeholders)
    assert clean_db.one("SELECT count(*) AS n FROM outbox_events WHERE payload ->> 'user_id' = :u",
                        u=str(audit["kept_user_id"]))["n"] == 0
    # and the other family is byte for byte and row for row the same
    assert snapshot(clean_db, other) == before
    # and forgetting again finds nothing to do
    assert forget(fam.user, "cli").status == "not_found"


def test_dry_run_deletes_nothing_and_lists_what_would_go(clean_db: Db) -> None:
    fam, _ = rich_family(clean_db)
    before = snapshot(clean_db, fam)
    plan = forget(fam.user, "cli", dry_run=True)
    assert plan.status == "dry_run"
    assert plan.counts["photos"] == 2 and plan.counts["stories"] == 2 and plan.counts["pages"] == 4
    assert plan.counts["page_redos"] == 1 and plan.counts["orders_kept"] == 1 and plan.counts["outbox_events"] >= 2
    keys = {t["key"] for t in plan.targets}
    assert {f"stories/{s}/" for s in fam.stories} | {f"orders/{o}/" for o in fam.orders} <= keys
    assert snapshot(clean_db, fam) == before
    assert clean_db.one("SELECT count(*) AS n FROM erasures")["n"] == 0


def test_an_order_in_flight_refuses_the_erasure_and_the_refusal_is_recorded(clean_db: Db) -> None:
    fam = family(clean_db)
    sid = story(clean_db, fam)
    oid = order(clean_db, fam, sid, "paid")
    before = snapshot(clean_db, fam)
    result = forget(fam.user, "task")
    assert result.status == "refused" and result.blocking == [{"id": oid, "status": "paid"}]
    assert "in flight" in result.message and "Try again once" in result.message
    assert snapshot(clean_db, fam) == before
    row = clean_db.one("SELECT * FROM erasures")
    assert row["status"] == "refused" and row["requested_by"] == "task" and str(row["user_id"]) == fam.user
    # once shipped, it goes, and the refusal forgets the user's id too
    clean_db.exec("UPDATE orders SET status = 'shipped' WHERE id = :o", o=oid)
    assert forget(fam.user, "cli").status == "completed"  # nothing in flight: one run
    assert clean_db.one("SELECT count(*) AS n FROM erasures WHERE user_id IS NOT NULL")["n"] == 0
    assert scan_database(clean_db, fam.needles()) == []


def test_another_familys_story_made_with_the_photo_is_failed_and_loses_its_pictures(clean_db: Db) -> None:
    fam, other = family(clean_db), family(clean_db)
    story(clean_db, fam)
    theirs = story(clean_db, other, photo=fam.photo)
    theirs_order = order(clean_db, other, theirs, "shipped")
    assert forget(fam.user, "cli").status == "completed"  # nothing in flight: one run
    row = clean_db.story_row(theirs)
    assert row["status"] == "failed" and "deleted at its owner's request" in row["error_message"]
    assert row["user_id"] is not None and str(row["user_id"]) == other.user
    assert files_of(clean_db.storage, theirs, theirs_order) == []
    assert all(p["personalized_image_key"] is None for p in clean_db.pages(theirs))
    assert scan_database(clean_db, fam.needles()) == []
    assert scan_storage(clean_db.storage, fam.needles(), [fam.photo_bytes]) == []
    # the other family's own rows are there (its story's text names its own child)
    assert clean_db.one("SELECT count(*) AS n FROM orders WHERE user_id = :u", u=other.user)["n"] == 1


class Crash(Exception):
    pass


@pytest.mark.parametrize("phase", PHASES)
def test_a_run_that_crashes_after_any_phase_is_completed_by_the_next(clean_db: Db, phase: str) -> None:
    fam, kept = rich_family(clean_db)
    theirs = story(clean_db, family(clean_db), photo=fam.photo2)  # type: ignore[attr-defined]
    in_flight(clean_db, fam)

    def crash(at: str) -> None:
        if at == phase:
            raise Crash(at)

    with pytest.raises(Crash):
        forget(fam.user, "task", now=_later(), after_phase=crash)
    # the sweeper carries on a run that died (still running a lease after it was asked for) ...
    clean_db.exec("UPDATE erasures SET requested_at = now() - interval '1 hour'")
    finish_due()
    if phase in ("open", "others", "orders", "rows"):
        assert clean_db.one("SELECT status FROM erasures")["status"] == "rechecking"
    # ... and once the second pass is due, the next run completes it
    result = forget(fam.user, "task", now=_later())
    if phase == "recheck":  # it had completed before the crash
        assert result.status == "not_found"
    else:
        assert result.status == "completed", result
    assert_forgotten(clean_db, fam)
    assert clean_db.one("SELECT count(*) AS n FROM orders")["n"] == 1
    assert clean_db.one("SELECT count(*) AS n FROM users WHERE email LIKE 'erased-%'")["n"] == 1
    assert clean_db.story_row(theirs)["status"] == "failed"
    assert clean_db.one("SELECT count(*) AS n FROM erasures WHERE status = 'completed'")["n"] == 1


def test_a_second_run_beside_a_running_one_changes_nothing_and_the_sweeper_finishes_due_ones(clean_db: Db) -> None:
    from db import erasure as q
    from db.engine import autocommit
    from pipeline.privacy.forget import finish_due

    fam = family(clean_db)
    story(clean_db, fam)
    in_flight(clean_db, fam)
    # a run holds the user's erasure: another is told so and changes nothing
    with autocommit() as held:
        assert q.try_lock(held, fam.user)
        try:
            busy = forget(fam.user, "task")
        finally:
            q.unlock(held, fam.user)
    assert busy.status == "busy" and clean_db.one("SELECT count(*) AS n FROM users WHERE id = :u", u=fam.user)["n"]
    # the first pass; the sweeper leaves it until its second pass is due, then completes it
    assert forget(fam.user, "cli").status == "rechecking"
    assert finish_due() == 0
    clean_db.exec("UPDATE erasures SET recheck_at = now() - interval '1 second'")
    assert finish_due() == 1
    assert clean_db.one("SELECT status, user_id FROM erasures") == {"status": "completed", "user_id": None}
    assert scan_database(clean_db, fam.needles()) == []


def test_the_command_prints_what_would_go_and_says_why_it_refuses(
        clean_db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.operations.cli import main

    fam = family(clean_db)
    sid = story(clean_db, fam)
    oid = order(clean_db, fam, sid, "fulfilled")
    assert main(["forget", "--user", fam.user, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would be refused: 1 order(s) in flight" in out and f"order {oid} is fulfilled" in out
    assert f"would delete output stories/{sid}/ (folder)" in out and "stories: 1" in out
    assert main(["forget", "--user", fam.user]) == 1
    assert "not forgotten: 1 order(s) still in flight (fulfilled)" in capsys.readouterr().out
    assert main(["forget", "--user", "not-a-uuid"]) == 2
    assert main(["forget", "--user", "00000000-0000-4000-8000-000000000000"]) == 1
    assert "no user" in capsys.readouterr().out
    assert clean_db.one("SELECT count(*) AS n FROM stories WHERE id = :s", s=sid)["n"] == 1


def test_with_no_step_in_flight_one_run_completes_and_leaves_no_id_anywhere(clean_db: Db) -> None:
    # given a family whose stories are all finished (nothing claimed: no step can write later)
    fam, _kept = rich_family(clean_db)
    family(clean_db)
    # when it is forgotten once
    result = forget(fam.user, "task")
    # then the same run completes, and at once no table (the audit record and the storage deletion
    # queue included) and no file holds any of its ids, names or bytes
    assert result.status == "completed", result
    assert clean_db.one("SELECT counts ->> 'steps_in_flight' AS n FROM erasures")["n"] == "0"
    assert_forgotten(clean_db, fam)
