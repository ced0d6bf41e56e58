"""Stuck work (a dead worker's claim, a lost message) is found and re-enqueued, by the
`backfill` command and unattended by celery beat, without duplicating any page's work."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.operations.cli import main as cli
from pipeline.stories import steps
from tests.support import ROOT, Db, WorkerProcess, astronaut_png
from tests.test_pipeline import step_log_lines


def _stuck_story(db: Db) -> tuple[str, list[str]]:
    """A story whose worker died: outline and pages written, page 1's text claimed by the dead
    worker an hour ago, and no message left for any page (lost with the worker)."""
    story = db.story(db.photo(astronaut_png()))
    pages = steps.generate_story(story).fanout  # in-process: rows written, nothing enqueued
    db.exec("UPDATE story_pages SET text_generation_status = 'processing' WHERE id = :p", p=pages[0])
    db.exec("UPDATE story_pages SET updated_at = now() - interval '1 hour' WHERE story_id = :s", s=story)
    db.exec("UPDATE stories SET updated_at = now() - interval '1 hour' WHERE id = :s", s=story)
    return story, pages


def _done_once(worker: WorkerProcess, pages: list[str]) -> None:
    seen: dict[tuple[str, str], int] = {}
    for ln in step_log_lines(worker):
        if ln["outcome"] == "done" and ln.get("page") in pages:
            seen[(ln["stage"], ln["page"])] = seen.get((ln["stage"], ln["page"]), 0) + 1
    assert len(seen) == 3 * len(pages) and set(seen.values()) == {1}, seen


def test_backfill_dry_run_lists_and_changes_nothing(clean_db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    story, pages = _stuck_story(clean_db)
    assert cli(["backfill", "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {(i["task"], i.get("page_id")) for i in out["items"]} == {("pages.write_text", p) for p in pages}
    assert clean_db.one("SELECT text_generation_status FROM story_pages WHERE id = :p",
                        p=pages[0])["text_generation_status"] == "processing"


def test_backfill_twice_completes_a_stuck_story_without_duplicate_work(
        clean_db: Db, worker: WorkerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    # given a story stuck after its worker died
    story, pages = _stuck_story(clean_db)
    # when an operator runs backfill, twice (e.g. two people at once)
    assert cli(["backfill"]) == 0
    assert cli(["backfill"]) == 0
    assert f"{len(pages)} stuck step(s) re-enqueued" in capsys.readouterr().out
    # then the story completes and each page step ran once
    assert clean_db.wait_story(story)["status"] == "completed"
    time.sleep(1.0)  # let the duplicate messages drain (they must be no-ops)
    _done_once(worker, pages)


def test_beat_sweeps_stuck_work_unattended(clean_db: Db, worker: WorkerProcess, tmp_path: Path,
                                           request: pytest.FixtureRequest) -> None:
    # given a stuck story and celery beat running the sweep every second
    story, pages = _stuck_story(clean_db)
    log = open(tmp_path / "beat.log", "wb")
    beat = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "workers.app", "beat", "--loglevel", "INFO",
         "--schedule", str(tmp_path / "beat-schedule")],
        cwd=ROOT, env={**os.environ, "SWEEP_INTERVAL": "1"}, stdout=log, stderr=subprocess.STDOUT,
    )
    request.addfinalizer(lambda: (beat.kill(), beat.wait(10), log.close()))
    # then, with nobody running a command, the story completes without duplicate work
    assert clean_db.wait_story(story, timeout=60)["status"] == "completed"
    time.sleep(2.0)
    _done_once(worker, pages)


def test_backfill_goes_in_batches_at_a_bounded_rate_and_resumes(clean_db: Db, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.kernel import publish

    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(publish, "send", lambda name, kwargs, **_: sent.append((name, next(iter(kwargs.values())))))
    # a page step goes out as the rest of its page's chain: recorded as its first link
    monkeypatch.setattr(publish, "send_signature", lambda sig, **_: sent.append(
        (sig.tasks[0]["task"], next(iter(sig.tasks[0]["kwargs"].values())))))
    # given two stuck stories (8 page steps) and a lost story start
    pages = _stuck_story(clean_db)[1] + _stuck_story(clean_db)[1]
    lost = clean_db.story(clean_db.photo(astronaut_png()))
    clean_db.exec("UPDATE stories SET updated_at = now() - interval '1 hour' WHERE id = :s", s=lost)
    expected = {("pages.write_text", p) for p in pages} | {("stories.generate", lost)}
    # when a backfill is stopped after 4 (as if interrupted), then run again
    assert cli(["backfill", "--batch-size", "3", "--limit", "4"]) == 0
    assert "run again to continue" in capsys.readouterr().out
    assert len(sent) == 4
    t0 = time.monotonic()
    assert cli(["backfill", "--batch-size", "3", "--rate", "10"]) == 0
    elapsed = time.monotonic() - t0
    out = capsys.readouterr().out
    # then the second run resumed where the first stopped: everything sent once, nothing twice
    assert "resumed" in out and "5 stuck step(s) re-enqueued" in out
    assert sorted(sent) == sorted(expected) and len(sent) == len(expected)
    assert elapsed >= 0.4  # 5 messages at 10 a second
    # and a finished backfill starts over next time (the work is still stuck: nobody ran it)
    sent.clear()
    assert cli(["backfill", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["enqueued"] == len(expected)


def test_backfill_rejects_bad_arguments_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in (["--batch-size", "0"], ["--limit", "x"], ["--rate", "-1"]):
        with pytest.raises(SystemExit) as e:
            cli(["backfill", *bad])
        assert e.value.code == 2


def test_sweep_analyses_only_photos_a_story_needs_or_whose_claim_expired(clean_db: Db) -> None:
    """photos.analyze is optional (a story analyses its photo inline): the sweep never sends it for
    an upload nobody asked to analyse (a paid vision call per unused upload), only for a pending photo
    an unfinished story needs, or an analysis whose claim outlived the lease (its holder died)."""
    from pipeline.operations.stuck import find_stuck

    def photo(ai: str | None, ago: str) -> str:
        p = clean_db.photo(astronaut_png())
        clean_db.exec(f"UPDATE photos SET ai_processing_status = :ai, updated_at = now() - interval '{ago}' "
                      "WHERE id = :p", ai=ai, p=p)
        return p

    def with_story(p: str, status: str) -> str:
        clean_db.exec(f"UPDATE stories SET status = '{status}' WHERE id = :s", s=clean_db.story(p))
        return p

    # not sent: uploads nobody needs
    no_story = photo(None, "10 minutes")
    refused = with_story(photo("pending", "10 minutes"), "failed")  # its story failed validation / was refused
    done_story = with_story(photo(None, "1 hour"), "completed")
    fresh_claim = photo("processing", "1 minute")  # a live holder
    fresh_need = with_story(photo(None, "1 minute"), "pending")  # its message may still be on the way
    # sent: an unfinished story needs it (its message was lost), or a dead holder's claim
    needed_pending = with_story(photo(None, "10 minutes"), "pending")
    needed_processing = with_story(photo("pending", "10 minutes"), "processing")
    also_refused = with_story(needed_processing, "failed")  # a second story of the same photo, failed
    expired_claim = photo("processing", "10 minutes")  # someone asked; its holder died
    expired_needed = with_story(photo("processing", "10 minutes"), "failed")
    assert also_refused == needed_processing

    swept = {i.kwargs["photo_id"] for i in find_stuck(lease=300, pending_after=300) if i.task == "photos.analyze"}
    assert swept == {needed_pending, needed_processing, expired_claim, expired_needed}
    assert not swept & {no_story, refused, done_story, fresh_claim, fresh_need}
