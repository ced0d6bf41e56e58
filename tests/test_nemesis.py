"""Nemesis, for real: a worker that does not die but stops answering (SIGSTOP, a long GC pause, a
VM migrated, a laptop lid), kept stopped past its step's lease while another worker and the
sweeper take its work over, then let go (SIGCONT) to run on with what it thought it held; and a
poison step that kills every worker that runs it.

What must hold: nothing dropped (every story completes, or fails with its reason and an operator's
retry brings it back), nothing done twice (no page step completed twice, a stale holder's late
write is not a completion, one succeeded prediction per page step and none unrecorded), and a
stale holder's release or failure does not undo the step another worker took over.

Each case runs once; CHAOS_ROUNDS=N repeats it (NEMESIS_REPORT=FILE keeps one line per round).
Real processes: celery workers (threads pool, all queues), celery beat sweeping every second,
the fake Replicate and OpenAI servers; STEP_LEASE_SECONDS=3.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from pprint import pformat
from typing import Any

import pytest

from tests.fakes.openai_server import DEFAULT_KEY, FakeOpenAI, openai_error
from tests.fakes.replicate_server import FakeReplicate
from tests.nemesis_support import (
    BROKER,
    LEASE,
    PAGE_COLUMN,
    REPLICATE_TOKEN,
    ROUNDS,
    STAGE_IN_FLIGHT,
    Cluster,
    assert_each_page_step_done_once,
    assert_files,
    check_predictions,
    cli_retry,
    freeze,
    log_size,
    nemesis_env,
    report,
    still_frozen,
    thaw,
    wait_for,
)
from tests.support import Db, astronaut_png, external_send, flush_redis

pytestmark = pytest.mark.chaos  # stops and kills its own worker processes

RUN_ON = 3.0  # seconds a thawed worker runs on before the checks


@pytest.fixture()
def replicate() -> Iterator[FakeReplicate]:
    fake = FakeReplicate(REPLICATE_TOKEN, run_seconds=1.0).start()
    yield fake
    fake.stop()


def _fresh(db: Db, fake: FakeReplicate | None = None) -> None:
    flush_redis(BROKER)
    db.truncate()
    if fake is not None:
        fake.created.clear()
        fake.requests.clear()


def _start_story(db: Db) -> str:
    story = db.story(db.photo(astronaut_png()))
    external_send(BROKER, "stories.generate", {"story_id": story})
    return story


def _claims(db: Db, story: str) -> list[str]:
    """What is claimed ('processing') in the story right now, for the report."""
    rows = db.all("""SELECT 'analysis' AS what FROM photos ph JOIN stories s ON s.protagonist_photo_id = ph.id
                      WHERE s.id = :s AND ph.ai_processing_status = 'processing'
                     UNION ALL SELECT 'p' || page_number || ':' || c FROM story_pages p,
                        LATERAL (VALUES ('text', text_generation_status), ('image', image_generation_status),
                                        ('personalization', personalization_status)) v(c, st)
                      WHERE p.story_id = :s AND v.st = 'processing'""", s=story)
    return [r["what"] for r in rows]


def _story_locked(db: Db, story: str) -> bool:
    """Does another session hold the story's row lock (a finisher writing the book)?"""
    return db.one("SELECT id FROM stories WHERE id = :s FOR UPDATE SKIP LOCKED", s=story) is None


def _wait_completed(db: Db, cluster: Cluster, story: str, timeout: float, why: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.story_row(story)
        if row["status"] in ("completed", "failed"):
            break
        time.sleep(0.1)
    assert row["status"] == "completed", pformat({
        "why": why, "after": f"{timeout:g} s", "story": row["status"], "error": row["error_message"],
        "claims": _claims(db, story), "story row locked": _story_locked(db, story),
        "pages": [{k: p[k] for k in ("page_number", *PAGE_COLUMN.values())} for p in db.pages(story)],
        "last worker": cluster.workers[-1].tail(12).splitlines()}, width=160)
    return row


def _in_the_book(w: Any, then: float = 0.3) -> None:
    """Wait until worker ``w`` has taken the story's completion (stories.finish) and ``then`` s more:
    it is writing the book (reading the pictures, 2 x SIMULATED_STORAGE_LATENCY at least)."""
    deadline = time.monotonic() + 20
    while b"Task stories.finish[" not in w.log.read_bytes():
        assert time.monotonic() < deadline, w.tail()
        time.sleep(0.01)
    time.sleep(then)


def _late(cluster: Cluster, w: Any, offset: int) -> list[str]:
    return [f"{e['stage']}:{e['outcome']}" + (f"({e['detail'][:60]})" if e.get("detail") else "")
            for e in cluster.step_lines(w, offset)]


# --- 1. a worker paused past its lease in each stage, then thawed -----------------------------------
# Remote image jobs change only the picture stages; the other stages run with them under the long
# runs (CHAOS_ROUNDS>1), to keep one round of the suite within CI's budget.
PAUSES = [pytest.param(stage, images, id=f"{stage}-{images}")
          for stage in STAGE_IN_FLIGHT for images in ("local", "replicate")
          if images == "local" or stage in ("image", "personalization") or ROUNDS > 1]


@pytest.mark.timeout(150 * ROUNDS)
@pytest.mark.parametrize(("stage", "images"), PAUSES)
def test_worker_paused_past_its_lease_then_thawed(stage: str, images: str, clean_db: Db, replicate: FakeReplicate,
                                                  tmp_path: Path, request: pytest.FixtureRequest) -> None:
    remote = images == "replicate"
    for rnd in range(ROUNDS):
        _fresh(clean_db, replicate)
        cluster = Cluster(tmp_path / f"round{rnd}", request, nemesis_env(replicate if remote else None))
        first, spare = cluster.worker_and_standby()  # the spare takes nothing until it takes over
        cluster.beat()  # nothing is stuck before the pause: the sweeps find nothing
        # given a story running on one worker
        story = _start_story(clean_db)
        # when that worker (its CPU processes too) stops dead while the stage is in flight
        wait_for(clean_db, STAGE_IN_FLIGHT[stage], s=story, timeout=90, what=f"{stage} in flight", w=first)
        if stage == "finish":
            _in_the_book(first)
        stopped = freeze(first)
        t0 = time.monotonic()
        held = _claims(clean_db, story)
        # and another worker and the sweeper take its work over after the lease
        cluster.take_over(spare)
        # then the story completes while the first is still stopped
        _wait_completed(clean_db, cluster, story, LEASE + 60, f"paused in {stage}")
        took = time.monotonic() - t0
        assert still_frozen(first)
        # and when the first runs on with what it held, nothing it does counts twice or undoes anything
        offset = log_size(first)
        thaw(first)
        time.sleep(RUN_ON)
        row = clean_db.story_row(story)
        assert row["status"] == "completed" and row["error_message"] is None, dict(row)
        assert_each_page_step_done_once(cluster, clean_db, story)
        assert_files(clean_db, story)
        numbers = check_predictions(clean_db, replicate, story) if remote else {}
        report(f"pause stage={stage} images={images} round={rnd} frozen_processes={len(stopped)} held={held} "
               f"completed_after_pause={took:.1f}s stale_worker_after_thaw={_late(cluster, first, offset)} {numbers}")
        cluster.close()


@pytest.mark.timeout(150 * ROUNDS)
def test_worker_paused_inside_a_prediction_create(clean_db: Db, replicate: FakeReplicate, tmp_path: Path,
                                                  request: pytest.FixtureRequest) -> None:
    """The worst moment for a remote job: its worker stops while Replicate is making the prediction
    (the job reserved, its id not yet recorded). The new holder finds no prediction and makes its
    own; the one the stale worker asked for appears only later, and when that worker runs on it
    must record it and cancel it, not leave it running (paid for, known to nobody). The other
    page's create, answered while the worker was stopped, is found by the new holder."""
    for rnd in range(ROUNDS):
        _fresh(clean_db, replicate)
        gate = threading.Event()
        request.addfinalizer(gate.set)
        replicate.script([("gate", gate)])  # the first create waits for the gate
        cluster = Cluster(tmp_path / f"round{rnd}", request, nemesis_env(replicate))
        first, spare = cluster.worker_and_standby()
        cluster.beat()
        story = _start_story(clean_db)
        deadline = time.monotonic() + 90
        while not replicate.requests_to("POST", "/v1/"):
            assert time.monotonic() < deadline, first.tail()
            time.sleep(0.005)
        # when the worker stops while its first create is held at Replicate
        freeze(first)
        t0 = time.monotonic()
        held = _claims(clean_db, story)
        # then another worker takes over and the story completes while it is stopped
        cluster.take_over(spare)
        _wait_completed(clean_db, cluster, story, LEASE + 60, "paused inside a create")
        took = time.monotonic() - t0
        # and when it runs on, its create returns only now: a prediction made after it lost the claim
        offset = log_size(first)
        thaw(first)
        time.sleep(0.5)
        made = len(replicate.created)
        gate.set()
        deadline = time.monotonic() + 10
        while len(replicate.created) == made:
            assert time.monotonic() < deadline, "the held create never made its prediction"
            time.sleep(0.01)
        time.sleep(RUN_ON)
        row = clean_db.story_row(story)
        assert row["status"] == "completed" and row["error_message"] is None, dict(row)
        assert_each_page_step_done_once(cluster, clean_db, story)
        assert_files(clean_db, story)
        numbers = check_predictions(clean_db, replicate, story)
        assert numbers["extra_canceled"] >= 1, numbers  # the late one, cancelled while it ran
        report(f"pause-in-create round={rnd} held={held} completed_after_pause={took:.1f}s "
               f"stale_worker_after_thaw={_late(cluster, first, offset)} {numbers}")
        cluster.close()


# --- 2. a stale holder's release and failure do not undo the takeover ---------------------------------
@pytest.mark.timeout(120 * ROUNDS)
@pytest.mark.parametrize("ending", ["release", "failure"])
def test_stale_release_or_failure_does_not_undo_the_takeover(ending: str, clean_db: Db, tmp_path: Path,
                                                             request: pytest.FixtureRequest) -> None:
    """A page's text call hangs past the lease and then fails transiently (500) while its worker is
    stopped; another worker takes the step over. The stopped one, let go while the new holder's call
    is under way, releases its claim (tries left) or, with STEP_MAX_RETRIES=0, records the failure:
    neither may touch the step it no longer holds."""
    openai = FakeOpenAI().start()
    request.addfinalizer(openai.stop)
    error = openai_error("The server had an error while processing your request.", "server_error")
    late_500: tuple[Any, ...] = ("status", 500, {}, error)
    for rnd in range(ROUNDS):
        _fresh(clean_db)
        openai.requests.clear()
        env = nemesis_env(None, TEXT_PROVIDER="openai", OPENAI_API_KEY=DEFAULT_KEY, OPENAI_BASE_URL=openai.base_url,
                          OPENAI_TIMEOUT="30", STORY_PAGE_COUNT="1",
                          STEP_MAX_RETRIES="0" if ending == "failure" else "5")
        cluster = Cluster(tmp_path / f"round{rnd}", request, env)
        first, spare = cluster.worker_and_standby()
        cluster.beat()
        # given the outline answered, then page 1's text answered with a 500 after lease + 0.5 s,
        # then the next try answered after 2 s (under the lease)
        openai.script([("normal",), ("slow", LEASE + 0.5, *late_500), ("slow", 2.0)])
        story = _start_story(clean_db)
        deadline = time.monotonic() + 60
        while len(openai.requests) < 2:
            assert time.monotonic() < deadline, first.tail()
            time.sleep(0.01)
        # when its worker stops during that call
        freeze(first)
        page = clean_db.pages(story)[0]
        assert page["text_generation_status"] == "processing", dict(page)
        # and another worker takes the step over after the lease and calls OpenAI again
        cluster.take_over(spare)
        deadline = time.monotonic() + LEASE + 30
        while len(openai.requests) < 3:
            assert time.monotonic() < deadline, ("no takeover", _claims(clean_db, story), cluster.workers[-1].tail())
            time.sleep(0.01)
        time.sleep(0.3)
        # and the stopped worker runs on while the new holder's call is under way: it gets its 500
        offset = log_size(first)
        thaw(first)
        seen: list[str | None] = []
        deadline = time.monotonic() + 60
        while True:
            p = clean_db.one("""SELECT p.text_generation_status AS st, s.status AS story FROM story_pages p
                                  JOIN stories s ON s.id = p.story_id WHERE p.id = :p""", p=str(page["id"]))
            if not seen or seen[-1] != p["st"]:
                seen.append(p["st"])
            if p["story"] in ("completed", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        time.sleep(1.0)
        late = _late(cluster, first, offset)
        errors = [dict(r) for r in clean_db.all("SELECT stage, permanent, message FROM step_errors")]
        # then the page never went back to pending nor failed, and the story completed
        assert "pending" not in seen and "failed" not in seen, {"text status after the thaw": seen,
                                                                  "stale worker": late, "step_errors": errors}
        row = clean_db.story_row(story)
        assert row["status"] == "completed" and row["error_message"] is None, (dict(row), late, errors)
        assert not [e for e in errors if e["permanent"]], errors
        # and the text was written once, by the new holder's call: no third call
        pages = clean_db.pages(story)
        assert all(p["text"] for p in pages)
        assert len(openai.requests) == 3, [r["t"] for r in openai.requests]
        assert_each_page_step_done_once(cluster, clean_db, story)
        assert_files(clean_db, story)
        report(f"stale ending={ending} round={rnd} text_status_after_thaw={seen} stale_worker_after_thaw={late} "
               f"step_errors={[(e['stage'], e['permanent'], e['message'][:50]) for e in errors]}")
        cluster.close()


# --- 3. the story's completion frozen for good ---------------------------------------------------
@pytest.mark.timeout(150 * ROUNDS)
def test_completion_held_by_a_frozen_worker_is_taken_over(clean_db: Db, tmp_path: Path,
                                                          request: pytest.FixtureRequest) -> None:
    for rnd in range(ROUNDS):
        _fresh(clean_db)
        cluster = Cluster(tmp_path / f"round{rnd}", request, nemesis_env(None))
        # given a worker whose storage is slow (its book takes seconds to write)
        first, spare = cluster.worker_and_standby(SIMULATED_STORAGE_LATENCY="1.0")
        cluster.beat()
        story = _start_story(clean_db)
        # when it stops dead (its CPU process writing the book too) a second into the completion
        wait_for(clean_db, STAGE_IN_FLIGHT["finish"], s=story, timeout=90, what="finish in flight", w=first)
        _in_the_book(first, 1.0)
        stopped = freeze(first)
        t0 = time.monotonic()
        locked = _story_locked(clean_db, story)
        assert clean_db.story_row(story)["status"] == "processing"
        # and never runs again; a second worker and the sweeper are there
        cluster.take_over(spare)
        # then the story completes within the lease and 30 s
        _wait_completed(clean_db, cluster, story, LEASE + 30, "completion held by a frozen worker")
        took = time.monotonic() - t0
        assert still_frozen(first)
        assert_each_page_step_done_once(cluster, clean_db, story)
        assert_files(clean_db, story)
        report(f"frozen-completion round={rnd} frozen_processes={len(stopped)} story_row_locked_at_freeze={locked} "
               f"completed_after={took:.1f}s")
        cluster.close()


# --- 4. a poison step: every worker that runs it dies ------------------------------------------------
MAX_TAKEOVERS = 3


@pytest.mark.timeout(180 * ROUNDS)
@pytest.mark.parametrize("stage", ["image", "text"])
def test_poison_step_fails_after_killing_its_worker_3_times_then_retry_completes(
        stage: str, clean_db: Db, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    col = PAGE_COLUMN[stage]
    for rnd in range(ROUNDS):
        _fresh(clean_db)
        env = nemesis_env(None, STORY_PAGE_COUNT="1", STEP_MAX_TAKEOVERS=str(MAX_TAKEOVERS))
        cluster = Cluster(tmp_path / f"round{rnd}", request, env)
        # the worker, and the one a supervisor would start after the first kill, booted ahead (a
        # standby takes nothing until it takes over; each takeover boots the next standby)
        active, spare = cluster.worker_and_standby()
        cluster.beat()
        story = _start_story(clean_db)
        # when every worker that runs page 1's step is SIGKILLed as it runs it (and a supervisor
        # starts a new one each time)
        watch = f"""SELECT p.{col} AS st, p.updated_at AS at, s.status AS story, s.error_message AS err
                      FROM story_pages p JOIN stories s ON s.id = p.story_id
                     WHERE p.story_id = :s AND p.page_number = 1"""
        kills, last, t_failed = 0, None, None
        deadline = time.monotonic() + 120
        while True:
            row = clean_db.one(watch, s=story)
            if row is not None and row["st"] == "processing" and row["at"] != last:
                last = row["at"]  # a new claim of the step (a claim moves updated_at)
                # a look a moment later: a claim the cap fails at once is not a run (the step
                # itself takes SIMULATED_PROVIDER_LATENCY, so a kill still lands mid-step)
                time.sleep(0.2)
                again = clean_db.one(watch, s=story)
                if again["st"] == "processing" and again["at"] == last:
                    assert kills < MAX_TAKEOVERS, (
                        f"page 1's {stage} step ran again after its worker died {kills} times", active.tail(20))
                    active.kill()
                    kills += 1
                    active = cluster.take_over(spare)
                    if kills < MAX_TAKEOVERS:
                        spare = cluster.standby()  # boots while this one runs; the next kill's replacement
                continue
            if row is not None and row["story"] == "failed" and t_failed is None:
                t_failed = time.monotonic()
            if t_failed is not None and time.monotonic() > t_failed + LEASE + 3:
                break  # watched past another lease and sweep: nobody claims it again
            assert time.monotonic() < deadline, (kills, dict(row) if row else None, active.tail(20))
            time.sleep(0.01)
        # then the step and the story failed, saying why; the step ran exactly 3 times
        assert kills == MAX_TAKEOVERS
        row = clean_db.one(watch, s=story)
        assert row["st"] == "failed" and row["story"] == "failed", dict(row)
        assert "its worker 3 times" in (row["err"] or ""), row["err"]
        page = str(clean_db.pages(story)[0]["id"])
        errors = clean_db.all("SELECT page_id, stage, permanent, message FROM step_errors WHERE permanent")
        assert any(str(e["page_id"]) == page and e["stage"] == stage and "its worker 3 times" in e["message"]
                   for e in errors), [dict(e) for e in errors]
        message = row["err"]
        # and once the poison is gone (nobody kills), an operator's retry completes the story
        cli_retry(env, story)
        _wait_completed(clean_db, cluster, story, 60, "after the retry")
        assert_each_page_step_done_once(cluster, clean_db, story)
        assert_files(clean_db, story)
        report(f"poison stage={stage} round={rnd} kills={kills} message={message!r}")
        cluster.close()
