"""A page's steps run as one Celery chain (pipeline/stories/stages.py ``page_chain``), built in one
place and sent by every enqueue path; the chain survives a retried step, a worker killed mid-step
(the redelivered message carries the rest of the chain), and a single re-sent stuck step resumes
the rest of its page. Real worker processes, Redis, Postgres; no sweeper unless the test runs it."""
from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest
import redis
from celery import Celery

import celeryconfig
from pipeline.kernel import publish
from pipeline.stories import steps
from pipeline.stories.stages import PAGE_STAGES, STORY, page_chain
from tests.fakes.replicate_server import FakeReplicate
from tests.support import Db, WorkerProcess, astronaut_png, done_lines, external_send, flush_redis

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "11"))  # this run's Redis databases: REDIS_DB .. REDIS_DB + 3
PAGE = "11111111-1111-1111-1111-111111111111"
STORY_ID = "22222222-2222-2222-2222-222222222222"


def _step_lines(*logs: Path) -> list[dict[str, object]]:
    out = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if "storycreator.step: step " in line:
                out.append(json.loads(line.split("storycreator.step: step ", 1)[1]))
    return out


def test_page_chain_is_immutable_signatures_by_name_from_the_stage_table() -> None:
    whole = page_chain(PAGE, story_id=STORY_ID)
    assert [t["task"] for t in whole.tasks] == ["pages.write_text", "pages.draw_base", "pages.personalize"]
    assert [t["task"] for t in whole.tasks] == [s.task for s in PAGE_STAGES]
    assert all(t.immutable and t.kwargs == {"page_id": PAGE, "story_id": STORY_ID} for t in whole.tasks)
    assert [t["task"] for t in page_chain(PAGE, "personalization").tasks] == ["pages.personalize"]
    assert page_chain(PAGE, "image").tasks[0].kwargs == {"page_id": PAGE}
    with pytest.raises(ValueError):
        page_chain(PAGE, "finish")
    with pytest.raises(KeyError):
        page_chain(PAGE, "nope")
    # the routes are the stage table's
    assert all(celeryconfig.task_routes[s.task]["queue"] == s.queue for s in STORY)


def test_chain_message_carries_the_rest_of_the_page_with_one_root_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a page step's message is in Redis: one message for the first link, the rest in its
    body; every link shares the first one's root_id (Flower shows the page as one chain)."""
    broker = f"{REDIS}/{REDIS_DB + 3}"
    flush_redis(broker)
    r = redis.Redis.from_url(broker)
    app = Celery("chain-test", set_as_current=False)
    app.config_from_object("celeryconfig")
    monkeypatch.setenv("CELERY_BROKER_URL", broker)  # Celery lets the variable win over broker_url
    app.conf.broker_url = broker
    first = publish.send_signature(page_chain(PAGE, "text", STORY_ID), via=app)
    single = publish.send("pages.write_text", {"page_id": PAGE, "story_id": STORY_ID}, via=app)
    raw = [r.lindex("text", i) for i in range(r.llen("text"))]
    assert len(raw) == 2 and all(raw)
    envelopes = [json.loads(m) for m in raw]  # type: ignore[arg-type]
    by_id = {e["headers"]["id"]: e for e in envelopes}
    chained, alone = by_id[first], by_id[single]
    assert chained["headers"]["root_id"] == first
    args, kwargs, embed = json.loads(base64.b64decode(chained["body"]))
    assert kwargs == {"page_id": PAGE, "story_id": STORY_ID}
    rest = embed["chain"]  # reversed: the next link last
    assert [s["task"] for s in reversed(rest)] == ["pages.draw_base", "pages.personalize"]
    assert all(s["options"].get("task_id") for s in rest)  # ids frozen at send time
    assert all(s["immutable"] for s in rest)
    sizes = {"chain": len(raw[envelopes.index(chained)]), "single": len(raw[envelopes.index(alone)])}
    print(f"page-step message in Redis: {sizes['single']} B alone, {sizes['chain']} B as a 3-link chain")
    assert sizes["chain"] < 4096, sizes  # ids only: a few KB at most


def test_a_step_that_retries_inside_a_chain_still_runs_the_rest(
        clean_db: Db, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """(a) Remote image jobs: the illustration step re-schedules itself (task.retry, RetryLater)
    while its prediction runs, several times per page; the personalization after it in the chain
    must still run (nothing else sends it: no sweeper here)."""
    broker = f"{REDIS}/{REDIS_DB + 2}"
    flush_redis(broker)
    token = "r8_test_token_0123456789"
    fake = FakeReplicate(token, run_seconds=0.6).start()
    request.addfinalizer(fake.stop)
    w = WorkerProcess(tmp_path / "w.log", concurrency=8, env={
        "CELERY_BROKER_URL": broker, "REDIS_URL": broker, "IMAGE_PROVIDER": "replicate",
        "REPLICATE_API_TOKEN": token, "REPLICATE_BASE_URL": fake.base_url, "JOB_POLL_INTERVAL": "0.2",
        "REPLICATE_TIMEOUT": "5"})
    request.addfinalizer(w.stop)
    w.start()
    story = clean_db.story(clean_db.photo(astronaut_png()))
    external_send(broker, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story, timeout=120)
    assert row["status"] == "completed", (row["error_message"], w.tail())
    pages = {str(p["id"]) for p in clean_db.pages(story)}
    lines = _step_lines(w.log)
    waited = {ln["page"] for ln in lines if ln["stage"] == "image" and ln["outcome"] == "waiting"}
    assert waited == pages, "every illustration step should have re-scheduled itself at least once"
    personalized = {ln["page"] for ln in lines if ln["stage"] == "personalization" and ln["outcome"] == "done"}
    assert personalized == pages


@pytest.mark.timeout(240)
def test_a_worker_killed_mid_chain_step_the_redelivered_message_runs_the_rest(
        clean_db: Db, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """(b) SIGKILL while pages' text steps run: their unacked messages come back (Redis visibility
    timeout, short here) to another worker, carrying the chain: illustration and personalization
    follow. No sweeper runs, and nothing but the chain sends those steps."""
    broker = f"{REDIS}/{REDIS_DB + 2}"
    flush_redis(broker)
    env = {"CELERY_BROKER_URL": broker, "REDIS_URL": broker, "SIMULATED_PROVIDER_LATENCY": "1.5",
           "STEP_LEASE_SECONDS": "3", "BROKER_VISIBILITY_TIMEOUT": "4"}
    first = WorkerProcess(tmp_path / "first.log", env=env, concurrency=4)
    request.addfinalizer(first.stop)
    first.start()
    story = clean_db.story(clean_db.photo(astronaut_png()))
    external_send(broker, "stories.generate", {"story_id": story})
    deadline = time.monotonic() + 60
    sql = "SELECT count(*) AS n FROM story_pages WHERE story_id = :s AND text_generation_status = 'processing'"
    while clean_db.one(sql, s=story)["n"] < 1:
        assert time.monotonic() < deadline, "no text step started\n" + first.tail()
        time.sleep(0.05)
    first.kill()
    killed = {str(r["id"]) for r in clean_db.all(
        "SELECT id FROM story_pages WHERE story_id = :s AND text_generation_status = 'processing'", s=story)}
    assert killed
    second = WorkerProcess(tmp_path / "second.log", env=env, concurrency=4)
    request.addfinalizer(second.stop)
    second.start()
    # the killed pages finish by their redelivered chains alone
    done_sql = ("SELECT count(*) AS n FROM story_pages WHERE id::text = ANY(:ids) "
                "AND personalization_status = 'completed'")
    deadline = time.monotonic() + 120
    while clean_db.one(done_sql, ids=sorted(killed))["n"] < len(killed):
        assert time.monotonic() < deadline, "killed pages did not finish\n" + second.tail()
        time.sleep(0.2)
    # A message Redis had handed to the killed worker (BRPOP) but kombu had not yet put in its
    # unacked set is lost with the worker: that window is the broker's, and the sweeper re-sends
    # such a page (its text still pending) as its chain. Done here as the sweeper does, on this
    # test's broker, so the story can complete; the killed pages above needed no help.
    via = Celery("resend", set_as_current=False)
    via.config_from_object("celeryconfig")
    # (Celery lets CELERY_BROKER_URL win over broker_url: without it these went to the session's broker)
    monkeypatch.setenv("CELERY_BROKER_URL", broker)
    via.conf.broker_url = broker
    for r in clean_db.all("SELECT id FROM story_pages WHERE story_id = :s AND text_generation_status = 'pending'",
                          s=story):
        publish.send_signature(page_chain(str(r["id"]), story_id=story), via=via)
    row = clean_db.wait_story(story, timeout=150)
    assert row["status"] == "completed", (row["error_message"], second.tail())
    after = [ln for ln in done_lines(second.log) if ln.get("page") in killed]
    # the killed pages' text was done by the redelivered message, then the rest of their chain
    for page in killed:
        assert [ln["stage"] for ln in after if ln["page"] == page] == ["text", "image", "personalization"], after


@pytest.mark.parametrize("how", ["sweep", "backfill"])
def test_a_resent_stuck_step_resumes_the_rest_of_its_page(
        clean_db: Db, worker: WorkerProcess, how: str) -> None:
    """(c) Pages whose text is done and whose illustration message was lost: the sweeper (or
    backfill) finds only the illustration steps and re-sends each as the rest of its page's chain,
    so the personalization and the book follow without another pass."""
    from pipeline.operations.backfill import backfill
    from pipeline.operations.sweep import sweep

    story = clean_db.story(clean_db.photo(astronaut_png()))
    pages = steps.generate_story(story).fanout  # in-process: rows written, nothing enqueued
    for p in pages:
        assert steps.write_text(p).moves_on
    clean_db.exec("UPDATE story_pages SET updated_at = now() - interval '1 hour' WHERE story_id = :s", s=story)
    clean_db.exec("UPDATE stories SET updated_at = now() - interval '1 hour' WHERE id = :s", s=story)
    if how == "sweep":
        found = sweep()
        assert {(i.task, i.kwargs["page_id"]) for i in found} == {("pages.draw_base", p) for p in pages}
    else:
        progress = backfill(lease=300, pending_after=300, rate=0)
        assert progress.done and progress.enqueued == len(pages)
    row = clean_db.wait_story(story)
    assert row["status"] == "completed", row["error_message"]
    lines = [ln for ln in done_lines(worker.log) if ln.get("page") in pages]
    assert {(ln["stage"], ln["page"]) for ln in lines} >= {("personalization", p) for p in pages}
    # each page's steps ran as one chain: the personalization under the re-sent step's root id
    roots = {p: {ln.get("root") for ln in lines if ln["page"] == p and ln["stage"] == "personalization"}
             for p in pages}
    assert all(len(r) == 1 and None not in r for r in roots.values()), roots
    assert len({next(iter(r)) for r in roots.values()}) == len(pages)  # one chain per page


def test_a_link_that_ends_its_chain_still_sends_its_final_event(clean_db: Db, worker: WorkerProcess) -> None:
    """A link that stops its page's chain raises ``Ignore``, for which Celery sends no final task
    event: Flower showed it STARTED for ever. Its final event is sent by the task layer, and the
    rest of the chain does not run."""
    import threading

    story = clean_db.story(clean_db.photo(astronaut_png()))
    page = steps.generate_story(story).fanout[0]  # in-process: rows written, nothing enqueued
    clean_db.exec("UPDATE stories SET status = 'failed' WHERE id = :s", s=story)  # nothing to do now
    app = Celery(broker=os.environ["CELERY_BROKER_URL"])
    events: list[dict[str, object]] = []
    with app.connection() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": events.append})
        listening = threading.Thread(target=lambda: receiver.capture(limit=None, timeout=60, wakeup=False),
                                     daemon=True)
        listening.start()
        try:
            time.sleep(1.0)  # the receiver's queue is bound
            first = publish.send_signature(page_chain(page, story_id=story))
            deadline = time.monotonic() + 30
            while not any(e.get("uuid") == first and e.get("type") == "task-succeeded" for e in list(events)):
                assert time.monotonic() < deadline, [(e.get("type"), e.get("uuid")) for e in events]
                time.sleep(0.2)
            time.sleep(2.0)  # a next link, were it sent, would be received by now
        finally:
            receiver.should_stop = True
            listening.join(10)
    final = next(e for e in events if e.get("uuid") == first and e.get("type") == "task-succeeded")
    assert "stopped" in str(final.get("result")), final
    received = {str(e.get("name")) for e in events if e.get("type") == "task-received"}
    assert received == {"pages.write_text"}, received
