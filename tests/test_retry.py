"""Nothing a failure leaves behind blocks a later retry; a retry keeps completed work."""
from __future__ import annotations

import os

from pipeline.operations.cli import main as cli
from tests.support import Db, WorkerProcess, astronaut_png, external_send, faceless_png

BROKER = os.environ["CELERY_BROKER_URL"]


def test_story_failed_for_a_missing_photo_completes_after_the_upload_and_a_retry(
        clean_db: Db, worker: WorkerProcess, capsys) -> None:
    # given a story whose photo file had not arrived in storage yet: it failed
    photo = clean_db.photo(None)
    story = clean_db.story(photo)
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story)
    assert row["status"] == "failed" and "missing from storage" in row["error_message"]
    # when the file arrives and an operator retries the story
    key = clean_db.one("SELECT object_key FROM photos WHERE id = :p", p=photo)["object_key"]
    (clean_db.storage / key).parent.mkdir(parents=True, exist_ok=True)
    (clean_db.storage / key).write_bytes(astronaut_png())
    assert cli(["retry", "--story", story]) == 0
    # then the story completes, and the status command shows the history
    row = clean_db.wait_story(story)
    assert row["status"] == "completed" and row["error_message"] is None
    assert cli(["status", story]) == 0
    out = capsys.readouterr().out
    assert "completed" in out and "missing from storage" in out


def test_retry_keeps_completed_pages_and_reruns_only_the_failed_step(clean_db: Db, worker: WorkerProcess) -> None:
    # given a completed story in which one page's personalization is then marked failed
    story = clean_db.story(clean_db.photo(astronaut_png()))
    external_send(BROKER, "stories.generate", {"story_id": story})
    assert clean_db.wait_story(story)["status"] == "completed"
    pages = clean_db.pages(story)
    broken = pages[1]
    clean_db.exec("UPDATE story_pages SET personalization_status = 'failed' WHERE id = :p", p=broken["id"])
    clean_db.exec("UPDATE stories SET status = 'failed', error_message = 'Page 2: test' WHERE id = :s", s=story)
    untouched = {p["id"]: p["updated_at"] for p in pages if p["id"] != broken["id"]}
    # when it is retried
    assert cli(["retry", "--story", story]) == 0
    # then only that step ran again and the story completed
    assert clean_db.wait_story(story)["status"] == "completed"
    after = {p["id"]: p for p in clean_db.pages(story)}
    assert all(after[i]["updated_at"] == ts for i, ts in untouched.items())
    assert after[broken["id"]]["personalization_status"] == "completed"


def test_retry_refuses_a_photo_with_no_face_and_says_why(clean_db: Db, worker: WorkerProcess, capsys) -> None:
    story = clean_db.story(clean_db.photo(faceless_png()))
    external_send(BROKER, "stories.generate", {"story_id": story})
    assert clean_db.wait_story(story)["status"] == "failed"
    assert cli(["retry", "--story", story]) == 1
    assert "upload a new photo" in capsys.readouterr().out
    assert clean_db.story_row(story)["status"] == "failed"


def test_retry_of_a_completed_or_unknown_story_does_nothing(clean_db: Db, capsys) -> None:
    import uuid

    assert cli(["retry", "--story", str(uuid.uuid4())]) == 1
    assert cli(["retry", "--story", "nope"]) == 2
    assert "no such story" in capsys.readouterr().out


def test_submit_and_summary(clean_db: Db, worker: WorkerProcess, tmp_path, capsys) -> None:
    # given a photo file on disk
    photo = tmp_path / "kid.png"
    photo.write_bytes(astronaut_png())
    # when an operator submits it and the story runs
    assert cli(["submit", "--photo", str(photo), "--name", "Sam", "--age", "5", "--theme", "pirates",
                "--json"]) == 0
    import json

    story = json.loads(capsys.readouterr().out)["story_id"]
    assert clean_db.wait_story(story)["status"] == "completed"
    # then the summary counts it per stage
    assert cli(["status", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    pages = int(os.environ["STORY_PAGE_COUNT"])
    assert counts["story"] == {"completed": 1}
    assert counts["personalization"] == {"completed": pages} and counts["photo analysis"] == {"completed": 1}
    assert cli(["status"]) == 0
    assert "personalization" in capsys.readouterr().out
    # and a missing file is a usage error
    assert cli(["submit", "--photo", str(tmp_path / "none.png"), "--name", "S", "--age", "5",
                "--theme", "pirates"]) == 2


def test_retry_selects_failed_stories_by_stage_theme_photo_page_and_time(
        clean_db: Db, worker: WorkerProcess, capsys) -> None:
    import json

    from pipeline.stories import steps

    # given a story failed at its outline (unknown theme) and one failed at analysis (no face)
    bad_theme = clean_db.story(clean_db.photo(astronaut_png()), theme="zombies")
    no_face_photo = clean_db.photo(faceless_png())
    no_face = clean_db.story(no_face_photo)
    # and a story failed at one page's personalization
    page_story = clean_db.story(clean_db.photo(astronaut_png()))
    page = steps.generate_story(page_story).fanout[0]
    clean_db.exec("UPDATE story_pages SET personalization_status = 'processing', claim_token = 3 WHERE id = :p",
                  p=page)
    from db import pages as pages_db
    from db.engine import autocommit

    with autocommit() as c:
        assert pages_db.fail_page(c, page, "personalization_status", "personalization", "boom", "Page 1: boom", 0,
                                  None, 3)
    for s in (bad_theme, no_face):
        external_send(BROKER, "stories.generate", {"story_id": s})
        assert clean_db.wait_story(s)["status"] == "failed"

    def selected(*argv: str) -> set[str]:
        cli(["retry", *argv, "--dry-run", "--json"])
        return {r["story"] for r in json.loads(capsys.readouterr().out)["stories"]}

    # then each filter selects what it says
    assert selected("--stage", "outline") == {bad_theme}
    assert selected("--stage", "personalization") == {page_story}
    assert selected("--theme", "zombies") == {bad_theme}
    assert selected("--photo", no_face_photo) == {no_face}
    assert selected("--page", page) == {page_story}
    assert selected("--since", "1h") == {bad_theme, no_face, page_story}
    assert selected("--since", "1h", "--theme", "space_adventure") == {no_face, page_story}
    # and a dry run changed nothing
    assert {clean_db.story_row(s)["status"] for s in (bad_theme, no_face, page_story)} == {"failed"}
    # and without a selector it is a usage error
    assert cli(["retry"]) == 2
