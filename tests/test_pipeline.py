"""The pipeline end to end through a real worker process, driven the way the external API
drives it: rows in Postgres, then a task published by name with the broker URL alone."""
from __future__ import annotations

import json
import os
import uuid

import pytest

from pipeline.kernel import step
from tests.support import Db, WorkerProcess, astronaut_png, external_send, faceless_png

BROKER = os.environ["CELERY_BROKER_URL"]
PAGES = int(os.environ["STORY_PAGE_COUNT"])


def step_log_lines(worker: WorkerProcess) -> list[dict]:
    out = []
    for line in worker.log.read_text(errors="replace").splitlines():
        if "storycreator.step: step " in line:
            out.append(json.loads(line.split("storycreator.step: step ", 1)[1]))
    return out


def test_story_completes_through_the_external_contract(clean_db: Db, worker: WorkerProcess) -> None:
    # given a photo of a child and a story row, as the external API inserts them
    photo = clean_db.photo(astronaut_png())
    story = clean_db.story(photo, name="Zoë", age=6, theme="underwater")
    # when the external API publishes stories.generate by name, knowing only the broker URL
    external_send(BROKER, "stories.generate", {"story_id": story})
    # then the story completes, with a title naming the child
    row = clean_db.wait_story(story)
    assert row["status"] == "completed", row["error_message"]
    assert row["error_message"] is None and "Zoë" in row["title"]
    # and the photo was analysed on the way (stories.generate did not need photos.analyze)
    ph = clean_db.one("SELECT * FROM photos WHERE id = :p", p=photo)
    assert ph["ai_processing_status"] == "completed" and len(ph["face_details"]["faces"]) == 1
    # and every page has its text, base illustration and personalized illustration
    pages = clean_db.pages(story)
    assert [p["page_number"] for p in pages] == list(range(1, PAGES + 1))
    for p in pages:
        assert (p["text_generation_status"], p["image_generation_status"], p["personalization_status"]) \
            == ("completed", "completed", "completed")
        assert "Zoë" in p["text"]
        base = clean_db.storage / p["base_image_key"]
        final = clean_db.storage / p["personalized_image_key"]
        assert base.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and final.is_file()
        assert base.read_bytes() != final.read_bytes()
        assert p["personalized_image_key"] == f"stories/{story}/pages/{p['page_number']:02d}/personalized.png"
    # and the book exists as PDF and HTML
    assert (clean_db.storage / f"stories/{story}/book.pdf").read_bytes()[:5] == b"%PDF-"
    assert "Zoë" in (clean_db.storage / f"stories/{story}/book.html").read_text()


def test_photos_analyze_through_the_contract(clean_db: Db, worker: WorkerProcess) -> None:
    photo = clean_db.photo(astronaut_png())
    external_send(BROKER, "photos.analyze", {"photo_id": photo})
    row = clean_db.wait_photo(photo)
    assert row["ai_processing_status"] == "completed" and row["ai_error_message"] is None
    face = row["face_details"]["faces"][0]
    assert 0 < face["bounding_box"]["width"] < 1
    assert any(lb["name"] == "Face" or lb["name"] == "Person" for lb in row["detected_labels"])
    assert row["detected_objects"], "the face instances are labelled objects with boxes"


def test_analysis_and_generate_sent_together(clean_db: Db, worker: WorkerProcess) -> None:
    # given both tasks published at the same moment (the API does not wait for analysis)
    photo = clean_db.photo(astronaut_png())
    story = clean_db.story(photo)
    external_send(BROKER, "photos.analyze", {"photo_id": photo})
    external_send(BROKER, "stories.generate", {"story_id": story})
    # then the photo is analysed once and the story completes
    assert clean_db.wait_story(story)["status"] == "completed"
    done = [ln for ln in step_log_lines(worker) if ln.get("photo") == photo and ln["outcome"] == "done"]
    assert len(done) == 1, done


def _bad_story(db: Db, case: str) -> tuple[str, str]:
    """(story id, expected words in its error message) for one kind of bad input."""
    img = astronaut_png()
    if case == "no_face":
        return db.story(db.photo(faceless_png())), "could not find a face"
    if case == "corrupt_image":
        return db.story(db.photo(b"\x89PNG\r\n\x1a\n this is not really a png")), "could not be read"
    if case == "truncated_jpeg":
        from io import BytesIO

        from PIL import Image
        from skimage import data

        buf = BytesIO()
        Image.fromarray(data.astronaut()).save(buf, "JPEG")
        return db.story(db.photo(buf.getvalue()[:2000], content_type="image/jpeg")), "could not be read"
    if case == "photo_upload_failed":  # (a photo still pending_upload waits: tests/test_story_start.py)
        return db.story(db.photo(img, status="failed")), "its upload failed"
    if case == "photo_deleted":
        return db.story(db.photo(img, status="deleted")), "it was deleted"
    if case == "photo_file_missing":
        return db.story(db.photo(None)), "missing from storage"
    if case == "unsupported_storage":
        return db.story(db.photo(None, storage_provider="gcs", bucket="b")), "nsupported storage provider"
    if case == "age_too_high":
        return db.story(db.photo(img), age=37), "between 0 and 14"
    if case == "age_negative":
        return db.story(db.photo(img), age=-1), "between 0 and 14"
    if case == "unknown_theme":
        return db.story(db.photo(img), theme="zombie_apocalypse"), "Unknown story theme"
    if case == "empty_name":
        return db.story(db.photo(img), name="   "), "name is empty"
    if case == "huge_name":
        return db.story(db.photo(img), name="A" * 5000), "too long"
    if case == "key_escapes_root":
        return db.story(db.photo(None, object_key="../../etc/passwd")), "unsafe storage key"
    raise AssertionError(case)


BAD_CASES = ["no_face", "corrupt_image", "truncated_jpeg", "photo_upload_failed", "photo_deleted", "photo_file_missing",
             "unsupported_storage", "age_too_high", "age_negative", "unknown_theme", "empty_name",
             "huge_name", "key_escapes_root"]


def test_bad_inputs_fail_promptly_with_clear_messages(clean_db: Db, worker: WorkerProcess) -> None:
    # given one story per kind of bad input, all published at once
    cases = {case: _bad_story(clean_db, case) for case in BAD_CASES}
    for story, _ in cases.values():
        external_send(BROKER, "stories.generate", {"story_id": story})
    # then each story fails promptly with a message a person understands
    for case, (story, words) in cases.items():
        row = clean_db.wait_story(story, timeout=30)
        assert row["status"] == "failed", case
        assert words.lower() in row["error_message"].lower(), (case, row["error_message"])
        # and nothing is left processing that would block a later retry
        stuck = clean_db.one(
            """SELECT count(*) AS n FROM story_pages WHERE story_id = :s AND 'processing' IN
               (text_generation_status, image_generation_status, personalization_status)""", s=story)
        assert stuck["n"] == 0, case
        ph = clean_db.one("SELECT p.* FROM photos p JOIN stories s ON s.protagonist_photo_id = p.id "
                          "WHERE s.id = :s", s=story)
        assert ph["ai_processing_status"] != "processing", case
    # and the photo-level failures are on the photo row too
    no_face_photo = clean_db.one("SELECT p.* FROM photos p JOIN stories s ON s.protagonist_photo_id = p.id "
                                 "WHERE s.id = :s", s=cases["no_face"][0])
    assert no_face_photo["ai_processing_status"] == "failed"
    assert "face" in no_face_photo["ai_error_message"]
    # and no step was retried in a loop: at most one failure record per story
    for case, (story, _) in cases.items():
        n = clean_db.one("SELECT count(*) AS n FROM step_errors WHERE story_id = :s", s=story)["n"]
        assert n <= 1, case


def test_missing_and_malformed_ids_are_rejected_and_worker_keeps_serving(
        clean_db: Db, worker: WorkerProcess) -> None:
    # when the external API sends unknown ids, malformed ids and wrong kwargs
    external_send(BROKER, "stories.generate", {"story_id": str(uuid.uuid4())})
    external_send(BROKER, "photos.analyze", {"photo_id": str(uuid.uuid4())})
    external_send(BROKER, "stories.generate", {"story_id": "not-a-uuid"})
    external_send(BROKER, "stories.generate", {"storyid": "typo"})
    external_send(BROKER, "photos.analyze", {"photo_id": 42})
    # then the worker keeps serving: a good story sent after them completes
    story = clean_db.story(clean_db.photo(astronaut_png()))
    external_send(BROKER, "stories.generate", {"story_id": story})
    assert clean_db.wait_story(story)["status"] == "completed"
    assert "stories.generate needs kwargs {'story_id': '<uuid>'}" in worker.log.read_text()


def test_completed_story_reenqueued_is_a_noop(clean_db: Db, worker: WorkerProcess) -> None:
    # given a completed story
    story = clean_db.story(clean_db.photo(astronaut_png()))
    external_send(BROKER, "stories.generate", {"story_id": story})
    assert clean_db.wait_story(story)["status"] == "completed"
    before = clean_db.story_row(story)["updated_at"]
    pages_before = [(p["id"], p["updated_at"]) for p in clean_db.pages(story)]
    book = clean_db.storage / f"stories/{story}/book.pdf"
    book_mtime = book.stat().st_mtime_ns
    # when every task of the pipeline is delivered again for it
    external_send(BROKER, "stories.generate", {"story_id": story})
    for pid, _ in pages_before:
        for name in ("pages.write_text", "pages.draw_base", "pages.personalize"):
            external_send(BROKER, name, {"page_id": str(pid)})
    external_send(BROKER, "stories.finish", {"story_id": story})
    # then (once the worker has consumed them) nothing changed
    _wait_for_log(worker, lambda ln: ln.get("story") == story and ln["stage"] == "finish"
                  and ln["outcome"] == "already_done")
    assert clean_db.story_row(story)["updated_at"] == before
    assert [(p["id"], p["updated_at"]) for p in clean_db.pages(story)] == pages_before
    assert book.stat().st_mtime_ns == book_mtime


def _wait_for_log(worker: WorkerProcess, pred, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(pred(ln) for ln in step_log_lines(worker)):
            return
        time.sleep(0.1)
    raise AssertionError("expected step log line not seen")


def test_one_story_enqueued_five_times_at_once(clean_db: Db, worker: WorkerProcess) -> None:
    # given a story published five times in one burst (a client retrying its POST)
    story = clean_db.story(clean_db.photo(astronaut_png()))
    external_send(BROKER, "stories.generate", {"story_id": story}, times=5)
    # then it completes once: one outline, each page's step done exactly once
    assert clean_db.wait_story(story)["status"] == "completed"
    page_ids = {str(p["id"]) for p in clean_db.pages(story)}
    assert len(page_ids) == PAGES
    import time

    time.sleep(1.0)  # let duplicate finish/no-op messages drain before counting
    done = [ln for ln in step_log_lines(worker) if ln["outcome"] == "done"
            and (ln.get("page") in page_ids or ln.get("story") == story)]
    per_step: dict[tuple[str, str], int] = {}
    for ln in done:
        key = (ln["stage"], ln.get("page") or ln.get("story"))
        per_step[key] = per_step.get(key, 0) + 1
    assert all(n == 1 for n in per_step.values()), per_step
    assert sum(1 for (stage, _) in per_step if stage in ("text", "image", "personalization")) == 3 * PAGES
    assert per_step[("outline", story)] == 1 and per_step[("finish", story)] == 1


def test_steps_called_twice_are_idempotent(clean_db: Db) -> None:
    """Each step function run twice in a row, in-process: the second run is a no-op."""
    from pipeline.stories import steps

    story = clean_db.story(clean_db.photo(astronaut_png()))
    photo = str(clean_db.story_row(story)["protagonist_photo_id"])
    assert steps.analyze_photo(photo).outcome is step.Outcome.DONE
    assert steps.analyze_photo(photo).outcome is step.Outcome.ALREADY_DONE
    first = steps.generate_story(story)
    assert first.outcome is step.Outcome.DONE and len(first.fanout) == PAGES
    # a second generate while the story is being worked on leaves it to the holder
    assert steps.generate_story(story).outcome is step.Outcome.STOPPED
    for page in first.fanout:
        for fn in (steps.write_text, steps.draw_base, steps.personalize):
            assert fn(page).outcome is step.Outcome.DONE
            snapshot = clean_db.one("SELECT * FROM story_pages WHERE id = :p", p=page)
            assert fn(page).outcome is step.Outcome.ALREADY_DONE
            assert clean_db.one("SELECT * FROM story_pages WHERE id = :p", p=page) == snapshot
    assert steps.finish_story(story).outcome is step.Outcome.DONE
    assert steps.finish_story(story).outcome is step.Outcome.ALREADY_DONE
    assert steps.generate_story(story).outcome is step.Outcome.ALREADY_DONE
    assert clean_db.story_row(story)["status"] == "completed"
    # each image was written once, at its deterministic key, and nothing else was stored
    files = sorted(str(p.relative_to(clean_db.storage)) for p in (clean_db.storage / "stories" / story).rglob("*")
                   if p.is_file())
    assert len(files) == 2 * PAGES + 2, files


def test_page_step_waits_for_its_previous_step(clean_db: Db) -> None:
    from pipeline.stories import steps

    story = clean_db.story(clean_db.photo(astronaut_png()))
    pages = steps.generate_story(story).fanout
    # personalization before the base image exists does nothing and claims nothing
    r = steps.personalize(pages[0])
    assert r.outcome is step.Outcome.STOPPED and "previous step" in r.detail
    assert clean_db.one("SELECT personalization_status FROM story_pages WHERE id = :p",
                        p=pages[0])["personalization_status"] == "pending"


def test_stale_claim_is_taken_over_but_fresh_one_is_not(clean_db: Db) -> None:
    """The lease: a dead worker's claim (old updated_at) is taken over; a live one is not."""
    from pipeline.stories import steps

    story = clean_db.story(clean_db.photo(astronaut_png()))
    page = steps.generate_story(story).fanout[0]
    # given a text step claimed just now by another (live) worker
    clean_db.exec("UPDATE story_pages SET text_generation_status = 'processing' WHERE id = :p", p=page)
    assert steps.write_text(page).outcome is step.Outcome.STOPPED
    # given the same claim, but its row untouched for longer than the lease (the worker died)
    clean_db.exec("UPDATE story_pages SET updated_at = now() - interval '1 hour' WHERE id = :p", p=page)
    assert steps.write_text(page).outcome is step.Outcome.DONE


def test_redelivered_copy_waits_for_the_lease_instead_of_dropping_the_step(clean_db: Db) -> None:
    """On RabbitMQ a dead worker's message comes back at once, while its claim still looks
    fresh: that copy must come back after the lease, not give up (the step would be lost)."""
    from pipeline.stories import steps

    story = clean_db.story(clean_db.photo(astronaut_png()))
    page = steps.generate_story(story).fanout[0]
    clean_db.exec("UPDATE story_pages SET text_generation_status = 'processing' WHERE id = :p", p=page)
    with pytest.raises(step.RetryLater) as waited:
        steps.write_text(page, step.Attempt(redelivered=True))
    lease = float(os.environ.get("STEP_LEASE_SECONDS", "300"))
    assert waited.value.waiting and lease - 5 < waited.value.countdown <= lease + 1.5
    # and nothing was changed meanwhile
    assert clean_db.one("SELECT text_generation_status FROM story_pages WHERE id = :p",
                        p=page)["text_generation_status"] == "processing"


def test_photo_analysed_before_its_upload_finished_is_analysed_again_once_uploaded(
        clean_db: Db, worker: WorkerProcess) -> None:
    # given a photo analysed too early (its row still says pending_upload): analysis failed
    photo = clean_db.photo(astronaut_png(), status="pending_upload")
    external_send(BROKER, "photos.analyze", {"photo_id": photo})
    row = clean_db.wait_photo(photo)
    assert row["ai_processing_status"] == "failed" and "not 'uploaded'" in row["ai_error_message"]
    # when the upload completes and the story is requested
    clean_db.exec("UPDATE photos SET status = 'uploaded' WHERE id = :p", p=photo)
    story = clean_db.story(photo)
    external_send(BROKER, "stories.generate", {"story_id": story})
    # then that failure did not stick: the photo is analysed and the story completes
    assert clean_db.wait_story(story)["status"] == "completed"
    assert clean_db.one("SELECT ai_processing_status FROM photos WHERE id = :p", p=photo)[
        "ai_processing_status"] == "completed"
