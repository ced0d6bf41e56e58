"""Personal data's lifecycle on the real PostgreSQL and local storage (README "Personal data"):
foreign-key actions that never reach another family, files that follow their rows through the
deletion queue (pipeline/privacy/drain.py), and the retention periods (pipeline/privacy/retention.py),
each proven with the schema-blind scan of tests/privacy_scan.py."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.exc import IntegrityError

from pipeline.privacy.drain import drain, recheck_after
from pipeline.privacy.retention import expire
from pipeline.privacy.settings import RetentionSettings
from tests.lifecycle_support import digest, family, files_of, order, story
from tests.privacy_scan import scan_database, scan_storage
from tests.support import Db

TABLES = ("users", "photos", "stories", "story_pages", "story_outlines", "orders", "storage_deletions")


def _counts(db: Db) -> dict[str, int]:
    return {t: db.one(f"SELECT count(*) AS n FROM {t}")["n"] for t in TABLES}


def _photo_key(db: Db, photo: str) -> str:
    return str(db.one("SELECT object_key FROM photos WHERE id = :p", p=photo)["object_key"])


def _later(**delta: float) -> datetime:
    """A moment ``delta`` from now (retention and the drain take their clock as ``now``)."""
    return datetime.now().astimezone() + timedelta(**delta)


def _drain_everything(now: datetime | None = None) -> None:
    """Both passes of every queued row: now, then after the recheck delay."""
    while drain(now=now).claimed:
        pass
    later = (now or datetime.now().astimezone()) + timedelta(seconds=recheck_after() + 1)
    while drain(now=later).claimed:
        pass


def test_deleting_a_family_whose_photo_another_familys_story_uses_is_refused(clean_db: Db) -> None:
    # given family A, and family B whose story was made (wrongly) with A's photo
    a, b = family(clean_db), family(clean_db)
    story(clean_db, a)
    story(clean_db, b, photo=a.photo)
    before, files = _counts(clean_db), digest(clean_db.storage, *a.ids(), *b.ids())
    # when A's user is deleted through SQL
    with pytest.raises(IntegrityError, match="stories_protagonist_photo_id_fkey"):
        clean_db.exec("DELETE FROM users WHERE id = :u", u=a.user)
    # then the whole statement was refused: no row of either family gone, nothing queued, no file touched
    assert _counts(clean_db) == before and before["storage_deletions"] == 0
    assert digest(clean_db.storage, *a.ids(), *b.ids()) == files
    # and a photo a story uses cannot be deleted on its own either (its story is never cascaded away)
    with pytest.raises(IntegrityError, match="stories_protagonist_photo_id_fkey"):
        clean_db.exec("DELETE FROM photos WHERE id = :p", p=a.photo)
    assert _counts(clean_db) == before


def test_a_family_deleted_through_sql_takes_every_file_with_it(clean_db: Db) -> None:
    # given two families, A with two stories (one with a redone page), B with a story and an order
    a, b = family(clean_db, bucket="uploads-bucket"), family(clean_db)
    story(clean_db, a, redone_page=1)
    story(clean_db, a, status="failed", pages=1)
    b_story = story(clean_db, b)
    order(clean_db, b, b_story, "shipped")
    a_photo_key, b_photo_key = _photo_key(clean_db, a.photo), _photo_key(clean_db, b.photo)
    b_files = digest(clean_db.storage, *b.ids(), b_photo_key)
    assert len(b_files) == 9  # 2 pages x 2 pictures, 2 books, 2 print files and the upload
    # when A's user row is deleted by hand (the cascade takes A's photo, stories, pages, outlines)
    clean_db.exec("DELETE FROM users WHERE id = :u", u=a.user)
    # then its files were queued in the same statement: the upload and each story's folder, once each
    queued = clean_db.all("SELECT storage, key, is_prefix FROM storage_deletions ORDER BY key")
    assert sorted((r["storage"], r["key"]) for r in queued) == sorted(
        [("local", a_photo_key), *(("output", f"stories/{s}/") for s in a.stories)])
    # and once the sweeper's drain has run, nothing of A is left in storage: no path, no byte
    _drain_everything()
    assert files_of(clean_db.storage, *a.ids()) == []
    assert not (clean_db.storage / a_photo_key).exists()
    assert scan_storage(clean_db.storage, a.needles(), [a.photo_bytes]) == []
    # nor in the database, but for the events already recorded for the web app (ids only, no names)
    found = scan_database(clean_db, a.needles())
    assert {f.where for f in found} <= {"outbox_events.ordering_key", "outbox_events.story_id",
                                        "outbox_events.payload"}, found
    assert not [f for f in found if f.needle in (a.name, a.email, a.face_marker)]
    assert clean_db.one("SELECT count(*) AS n FROM storage_deletions")["n"] == 0
    # and B's files are all there, byte for byte
    assert digest(clean_db.storage, *b.ids(), b_photo_key) == b_files


def test_a_page_or_an_order_deleted_alone_takes_its_own_folder_only(clean_db: Db) -> None:
    fam = family(clean_db)
    sid = story(clean_db, fam, pages=2, redone_page=2)
    oid = order(clean_db, fam, sid, "failed")
    clean_db.exec("DELETE FROM story_pages WHERE story_id = :s AND page_number = 2", s=sid)
    clean_db.exec("DELETE FROM orders WHERE id = :o", o=oid)
    _drain_everything()
    left = files_of(clean_db.storage, sid, oid)
    assert left == sorted([f"stories/{sid}/book.html", f"stories/{sid}/book.pdf", f"stories/{sid}/r2/book.pdf",
                           f"stories/{sid}/pages/01/base.png", f"stories/{sid}/pages/01/personalized.png"])


def test_a_late_writer_s_file_is_deleted_by_the_second_pass(clean_db: Db) -> None:
    # given a story deleted while one of its steps was in flight, and the first pass drained
    fam = family(clean_db)
    sid = story(clean_db, fam)
    clean_db.exec("DELETE FROM stories WHERE id = :s", s=sid)
    first = drain()
    assert first.rechecks == 1 and first.objects == 6 and files_of(clean_db.storage, sid) == []
    # when the step wakes and writes its picture after the deletion
    late = clean_db.storage / f"stories/{sid}/pages/01/personalized.png"
    late.parent.mkdir(parents=True)
    late.write_bytes(fam.photo_bytes)
    # then nothing happens before the recheck is due (the lease + 60 s) ...
    assert drain().claimed == 0 and late.exists()
    # ... and the second pass deletes it and forgets the row
    second = drain(now=datetime.now().astimezone() + timedelta(seconds=recheck_after() + 1))
    assert (second.objects, second.finished) == (1, 1)
    assert files_of(clean_db.storage, sid) == []
    assert clean_db.one("SELECT count(*) AS n FROM storage_deletions")["n"] == 0


def test_a_failed_deletion_is_recorded_and_tried_again_with_backoff(clean_db: Db) -> None:
    clean_db.exec("INSERT INTO storage_deletions (storage, key, reason) VALUES ('gcs', 'uploads/x.png', 'photos')")
    failed = drain()
    row = clean_db.one("SELECT attempts, last_error, not_before - now() AS wait FROM storage_deletions")
    assert failed.failed == 1 and row["attempts"] == 1 and "Unsupported storage provider" in row["last_error"]
    assert timedelta(seconds=14) < row["wait"] <= timedelta(seconds=31)  # BACKOFF_BASE's first wait, jittered
    assert drain().claimed == 0  # not due yet
    again = drain(now=datetime.now().astimezone() + timedelta(minutes=1))
    assert again.failed == 1
    assert clean_db.one("SELECT attempts FROM storage_deletions")["attempts"] == 2


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_retention_deletes_exactly_what_is_due(clean_db: Db) -> None:
    s = RetentionSettings(photo_days=30, book_days=90, batch_size=2, run_seconds=30)
    # given: done, an old story finished with a shipped order and a redone page ...
    done = family(clean_db)
    done_story = story(clean_db, done, redone_page=1)
    order(clean_db, done, done_story, "shipped")
    # ... a story still pending, a story whose order is being printed, and a failed one
    pending, printing, failed = family(clean_db), family(clean_db), family(clean_db)
    story(clean_db, pending, status="pending", pages=0)
    order(clean_db, printing, story(clean_db, printing), "paid")
    failed_story = story(clean_db, failed, status="failed", pages=1)
    kept = digest(clean_db.storage, *pending.ids(), *printing.ids(), _photo_key(clean_db, pending.photo),
                  _photo_key(clean_db, printing.photo))
    photos_before, stories_before = _sample("storycreator_retention_expired_total", {"kind": "photo"}), \
        _sample("storycreator_retention_expired_total", {"kind": "story"})

    # when 40 days have passed: the photos of finished stories are due, their books not yet
    r = expire(now=_later(days=40), s=s)
    _drain_everything(_later(days=40))
    assert (r.photos, r.stories) == (2, 0)
    for fam in (done, failed):
        row = clean_db.one("SELECT status, face_details, character_profile, detected_labels, filename "
                           "FROM photos WHERE id = :p", p=fam.photo)
        assert dict(row) == {"status": "deleted", "face_details": None, "character_profile": None,
                             "detected_labels": None, "filename": ""}
        assert scan_storage(clean_db.storage, [], [fam.photo_bytes[:600]]) != []  # the book's pictures stay
        assert not (clean_db.storage / _photo_key(clean_db, fam.photo)).exists()
        assert scan_database(clean_db, [fam.face_marker]) == []
    assert files_of(clean_db.storage, done_story) != []

    # when 100 days have passed: the finished stories' pictures, books, texts and print files go too
    r = expire(now=_later(days=100), s=s)
    _drain_everything(_later(days=100))
    assert (r.photos, r.stories) == (0, 2)
    for fam in (done, failed):
        assert scan_storage(clean_db.storage, fam.needles(), [fam.photo_bytes[:600]]) == []
        assert [f for f in scan_database(clean_db, [fam.name, fam.face_marker])
                if f.where != "orders.shipping_address"] == []  # the address is the orders' (forget's) business
    tomb = clean_db.one("SELECT status, child_name, title, book_pdf_key, files_deleted_at FROM stories WHERE id = :s",
                        s=done_story)
    assert (tomb["status"], tomb["child_name"], tomb["title"], tomb["book_pdf_key"]) == ("completed", "", None, None)
    assert tomb["files_deleted_at"] is not None
    assert clean_db.one("SELECT count(*) AS n FROM story_pages WHERE story_id = :s", s=done_story)["n"] == 0
    # and nothing of the pending story or the order being printed was touched
    assert digest(clean_db.storage, *pending.ids(), *printing.ids(), _photo_key(clean_db, pending.photo),
                  _photo_key(clean_db, printing.photo)) == kept
    for fam in (pending, printing):
        assert {f.needle for f in scan_database(clean_db, [fam.face_marker, fam.name])} >= {fam.face_marker}
    # and the retry of a story whose files were deleted is refused, clearly
    from pipeline.operations.retry import retry_story

    plan = retry_story(failed_story)
    assert not plan.ok and "deleted" in plan.message
    # and the metrics counted each row once
    assert _sample("storycreator_retention_expired_total", {"kind": "photo"}) - photos_before == 2
    assert _sample("storycreator_retention_expired_total", {"kind": "story"}) - stories_before == 2
    # and a second run finds nothing more to do
    again = expire(now=_later(days=100), s=s)
    assert (again.photos, again.stories) == (0, 0)


def test_a_retention_period_of_zero_keeps_everything(clean_db: Db) -> None:
    fam = family(clean_db)
    story(clean_db, fam)
    r = expire(now=_later(days=5000), s=RetentionSettings(photo_days=0, book_days=0, batch_size=10, run_seconds=5))
    assert (r.photos, r.stories) == (0, 0)
    assert clean_db.one("SELECT count(*) AS n FROM storage_deletions")["n"] == 0


def test_retention_settings_defaults_and_clear_configuration_errors() -> None:
    from pipeline.privacy.settings import read_retention_settings

    s = read_retention_settings({})
    assert (s.photo_days, s.book_days, s.batch_size, s.run_seconds) == (30.0, 365.0, 200, 20.0)
    assert read_retention_settings({"RETENTION_PHOTO_DAYS": " ", "RETENTION_BOOK_DAYS": "0"}).photo_days == 30.0
    assert not read_retention_settings({"RETENTION_BOOK_DAYS": "0"}).books_on
    for name, value, says in [("RETENTION_PHOTO_DAYS", "-1", "out of range; allowed: a number from 0 to 3650 "
                                                              "(days; 0 = never delete)"),
                              ("RETENTION_BOOK_DAYS", "a year", "is not a number"),
                              ("RETENTION_BATCH_SIZE", "0", "out of range"),
                              ("RETENTION_RUN_SECONDS", "nan", "out of range")]:
        with pytest.raises(SystemExit, match=f"^configuration error: {name}="):
            read_retention_settings({name: value})
        try:
            read_retention_settings({name: value})
        except SystemExit as e:
            assert says in str(e), str(e)


def test_a_photo_waits_for_every_story_that_uses_it(clean_db: Db) -> None:
    s = RetentionSettings(photo_days=30, book_days=0, batch_size=10, run_seconds=5)
    # given a photo used by an old story and a recent one, and an old photo no story uses
    fam, lone = family(clean_db), family(clean_db)
    old, recent = story(clean_db, fam, pages=0), story(clean_db, fam, pages=0)
    clean_db.exec("UPDATE photos SET updated_at = now() - interval '60 days' WHERE id IN (:a, :b)",
                  a=fam.photo, b=lone.photo)
    clean_db.exec("UPDATE stories SET updated_at = now() - interval '50 days' WHERE id = :s", s=old)
    clean_db.exec("UPDATE stories SET updated_at = now() - interval '10 days' WHERE id = :s", s=recent)
    # when retention runs today: only the unused photo is due
    assert expire(s=s).photos == 1
    assert clean_db.one("SELECT status FROM photos WHERE id = :p", p=lone.photo)["status"] == "deleted"
    assert clean_db.one("SELECT status FROM photos WHERE id = :p", p=fam.photo)["status"] == "uploaded"
    # and once the recent story is 31 days old too, the shared photo goes
    clean_db.exec("UPDATE stories SET updated_at = now() - interval '31 days' WHERE id = :s", s=recent)
    assert expire(s=s).photos == 1
    assert clean_db.one("SELECT status FROM photos WHERE id = :p", p=fam.photo)["status"] == "deleted"


def test_two_drainers_never_take_the_same_rows(clean_db: Db) -> None:
    from db import lifecycle as q

    clean_db.exec("""INSERT INTO storage_deletions (storage, key, is_prefix, reason)
                     SELECT 'output', 'stories/' || g || '/', true, 'stories' FROM generate_series(1, 50) g""")
    with clean_db.engine.connect() as first, clean_db.engine.connect() as second, first.begin() as t1:
        a = q.claim_deletions(first, 25, 300, None)  # still uncommitted: its rows stay locked
        with second.begin():
            b = q.claim_deletions(second, 50, 300, None)
        t1.rollback()
    assert len(a) == 25 and len(b) == 25 and not {r["id"] for r in a} & {r["id"] for r in b}
