"""Replicate's completion webhooks: a prediction's end is learnt when it ends, not at the next poll.

The fake Replicate server delivers signed webhooks the way Replicate documents them
(tests/fakes/replicate_webhooks.py, the signature computed by hand from Replicate's page) to a
small receiver that plays the external web API (tests/external_webhook_receiver.py: it imports
celery only and publishes each POST as ``images.replicate_webhook``), in front of real workers.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from standardwebhooks import Webhook

from pipeline.config import job_webhooks_configured
from pipeline.kernel import step
from pipeline.operations.boot_check import check_environment
from pipeline.providers.replicate_images import ReplicateImageJobs
from pipeline.providers.replicate_webhooks import WebhookConfig, WebhookRejected, verify, webhook_config
from pipeline.stories.webhook_follows import handed_on, handle_replicate_webhook
from tests.fakes.replicate_server import FakeReplicate
from tests.fakes.replicate_webhooks import WRONG_SECRET, WebhookSender, sign
from tests.support import ROOT, Db, WorkerProcess, astronaut_png, external_send, flush_redis

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 2}"  # own, flushed per test
TOKEN = "r8_test_token_0123456789"
SECRET = "whsec_" + base64.b64encode(b"replicate-account-signing-secret!").decode()
PAGES = 2

# The Standard Webhooks test vector (the scheme Replicate's "Verify webhooks" page describes):
# secret, id, timestamp and body -> the signature.
VECTOR = ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
          '{"test": 2432232314}', "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")


def _delivery(body: dict[str, Any] | str, *, secret: str = SECRET, age: int = 0,
              msg_id: str = "msg_2abc") -> tuple[str, dict[str, str]]:
    raw = body if isinstance(body, str) else json.dumps(body)
    ts = int(time.time()) - age
    return raw, {"Webhook-Id": msg_id, "Webhook-Timestamp": str(ts), "Webhook-Signature": sign(secret, msg_id, ts, raw)}


# --- the signature, against Replicate's description and the reference library ---------------------

@pytest.mark.unit
def test_signature_is_replicates_scheme_and_the_reference_librarys() -> None:
    secret, msg_id, ts, body, expected = VECTOR
    # computed by hand as Replicate's page says, and by the standardwebhooks library: the same
    assert sign(secret, msg_id, ts, body) == expected
    assert Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body) == expected
    # and our verifier accepts a delivery signed that way (a fresh timestamp), reading the prediction
    raw, headers = _delivery({"id": "ufawqhfynnddngldkgtslldrkq", "status": "succeeded"})
    done = verify(raw, headers, SECRET)
    assert (done.prediction_id, done.status, done.webhook_id) == ("ufawqhfynnddngldkgtslldrkq", "succeeded",
                                                                  "msg_2abc")
    # one of several signatures matching is enough (a secret being rotated)
    headers["Webhook-Signature"] = "v1,AAAA " + headers["Webhook-Signature"]
    assert verify(raw, headers, SECRET).prediction_id == "ufawqhfynnddngldkgtslldrkq"


@pytest.mark.unit
@pytest.mark.parametrize(("make", "reason"), [
    (lambda: _delivery({"id": "p1", "status": "succeeded"}, secret=WRONG_SECRET), "signature"),
    (lambda: _delivery({"id": "p1", "status": "succeeded"}, age=600), "expired"),
    (lambda: (json.dumps({"id": "p1", "status": "succeeded"}), {}), "headers"),
    (lambda: (json.dumps({"id": "p1"}), {"webhook-id": "m", "webhook-timestamp": str(int(time.time())),
                                         "webhook-signature": "garbage"}), "headers"),
    (lambda: _delivery("{not json"), "malformed"),
    (lambda: _delivery({"status": "succeeded"}), "malformed"),
    (lambda: _delivery(["p1"]), "malformed"),
])
def test_forged_expired_or_malformed_deliveries_are_rejected(make: Any, reason: str) -> None:
    raw, headers = make()
    with pytest.raises(WebhookRejected) as e:
        verify(raw, headers, SECRET)
    assert e.value.reason == reason


@pytest.mark.unit
def test_a_body_changed_after_signing_is_rejected() -> None:
    raw, headers = _delivery({"id": "p1", "status": "failed"})
    with pytest.raises(WebhookRejected, match="signature"):
        verify(raw.replace("failed", "succeeded"), headers, SECRET)


@pytest.mark.unit
def test_rejections_are_counted_never_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_WEBHOOK_SIGNING_SECRET", SECRET)

    def count(outcome: str) -> float:
        return REGISTRY.get_sample_value("storycreator_job_webhooks_total",
                                         {"provider": "replicate", "outcome": outcome}) or 0.0

    before = {o: count(o) for o in ("signature", "expired", "malformed", "not_ended")}
    for raw, headers in (_delivery({"id": "p1", "status": "succeeded"}, secret=WRONG_SECRET),
                         _delivery({"id": "p1", "status": "succeeded"}, age=3600), _delivery("[]")):
        result = handle_replicate_webhook(raw, headers, step.Attempt())
        assert result.outcome is step.Outcome.STOPPED and result.detail.startswith("rejected")
    raw, headers = _delivery({"id": "p1", "status": "processing"})  # not an end: ignored
    assert handle_replicate_webhook(raw, headers, step.Attempt()).outcome is step.Outcome.ALREADY_DONE
    assert {o: count(o) - before[o] for o in before} == {"signature": 1, "expired": 1, "malformed": 1,
                                                        "not_ended": 1}


# --- the job's row: woken once, and only the completer's message moves the chain on -----------------

def _claimed_image_page(db: Db) -> tuple[str, str, str, Any]:
    """A story's first page with its text done and its image step claimed: (story id, page id,
    column, claim)."""
    from db import pages as pages_db
    from db.engine import autocommit
    from pipeline.stories import steps

    story = db.story(db.photo(astronaut_png()))
    page = steps.generate_story(story).fanout[0]
    col = "image_generation_status"
    db.exec("UPDATE story_pages SET text_generation_status = 'completed' WHERE id = :p", p=page)
    with autocommit() as c:
        claim = pages_db.claim_page(c, page, col, 300.0, prerequisite="text_generation_status")
    assert claim is not None
    return story, page, col, claim


@pytest.mark.db
def test_a_webhook_wakes_a_running_job_once_and_only_the_completer_moves_on(clean_db: Db) -> None:
    from db import pages as pages_db
    from db import provider_jobs as jobs_db
    from db.engine import autocommit

    story, page, col, claim = _claimed_image_page(clean_db)
    with autocommit() as c:
        job = jobs_db.reserve_job(c, page, "image", col, "replicate", "a" * 64, claim.token)
        # created by the run of message T (the step's poll)
        assert job is not None and jobs_db.job_started(c, str(job["id"]), "pred-1", "a" * 64, claim.token,
                                                       by="task-T")
        # a prediction that is none of ours; then the first delivery wakes the job (its follow is
        # message W), the second does not
        assert jobs_db.wake_job(c, "replicate", "pred-unknown", "task-X") is None
        first = jobs_db.wake_job(c, "replicate", "pred-1", "task-W")
        second = jobs_db.wake_job(c, "replicate", "pred-1", "task-W2")
    assert first is not None and second is not None
    assert first["woken"] and not second["woken"]
    assert (str(first["story_id"]), first["stage"], first["status"]) == (story, "image", "running")
    # the run that completes the step (the webhook's follow, message W) records itself
    with autocommit() as c:
        assert pages_db.complete_page(c, page, col, {"base_image_key": "k.png"}, claim.token)
        assert jobs_db.job_finished(c, str(job["id"]), "succeeded", by="task-W")
        ended = jobs_db.wake_job(c, "replicate", "pred-1", "task-W3")
    assert ended is not None and not ended["woken"]  # a delivery after the end: a no-op
    # the poll that raced it stops (W carries the rest of the chain); W's own redelivery moves on,
    # and so does a later chain passing the completed step (retry --story sends pages from their text)
    done = step.StepResult(step.Outcome.ALREADY_DONE, "already done")
    assert handed_on(done, page, "image", step.Attempt(task_id="task-T")).outcome is step.Outcome.STOPPED
    for later in ("task-W", "task-retry", None):
        assert handed_on(done, page, "image", step.Attempt(task_id=later)).outcome is step.Outcome.ALREADY_DONE
    row = clean_db.one("SELECT started_by, woken_by, finished_by FROM provider_jobs WHERE id = :j", j=job["id"])
    assert (row["started_by"], row["woken_by"], row["finished_by"]) == ("task-T", "task-W", "task-W")


@pytest.mark.db
def test_after_a_replaced_job_only_the_completer_of_the_new_one_moves_on(clean_db: Db) -> None:
    from db import pages as pages_db
    from db import provider_jobs as jobs_db
    from db.engine import autocommit

    story, page, col, claim = _claimed_image_page(clean_db)
    with autocommit() as c:
        # job 1: created by T's run, woken (follow W), and it failed (interrupted: W makes job 2)
        j1 = jobs_db.reserve_job(c, page, "image", col, "replicate", "a" * 64, claim.token)
        assert j1 is not None and jobs_db.job_started(c, str(j1["id"]), "pred-1", "a" * 64, claim.token, by="T")
        assert jobs_db.wake_job(c, "replicate", "pred-1", "W") is not None
        assert jobs_db.job_finished(c, str(j1["id"]), "failed", "interrupted", token=claim.token)
        # job 2: created by W's retry; T still polls as a follower; a webhook's follow W2 completes it
        j2 = jobs_db.reserve_job(c, page, "image", col, "replicate", "b" * 64, claim.token)
        assert j2 is not None and jobs_db.job_started(c, str(j2["id"]), "pred-2", "b" * 64, claim.token, by="W")
        assert jobs_db.wake_job(c, "replicate", "pred-2", "W2") is not None
        assert pages_db.complete_page(c, page, col, {"base_image_key": "k.png"}, claim.token)
        assert jobs_db.job_finished(c, str(j2["id"]), "succeeded", by="W2")
    done = step.StepResult(step.Outcome.ALREADY_DONE, "already done")
    for racer in ("T", "W"):  # both raced for the step: they stop
        assert handed_on(done, page, "image", step.Attempt(task_id=racer)).outcome is step.Outcome.STOPPED
    for mover in ("W2", "a-later-retry"):
        assert handed_on(done, page, "image", step.Attempt(task_id=mover)).outcome is step.Outcome.ALREADY_DONE


@pytest.mark.db
def test_a_delivery_for_an_unrecorded_prediction_is_looked_at_again_twice_then_dropped(
        clean_db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_WEBHOOK_SIGNING_SECRET", SECRET)
    raw, headers = _delivery({"id": "pred-not-ours", "status": "succeeded"})
    for n in (0, 1):  # its create's reply may not be recorded yet
        with pytest.raises(step.RetryLater):
            handle_replicate_webhook(raw, headers, step.Attempt(number=n))
    result = handle_replicate_webhook(raw, headers, step.Attempt(number=2))
    assert (result.outcome, result.detail) == (step.Outcome.STOPPED, "unknown prediction")


# --- configuration and the create request ----------------------------------------------------------

@pytest.mark.unit
def test_a_webhook_url_without_its_secret_is_a_configuration_error() -> None:
    assert webhook_config({}) is None
    with pytest.raises(SystemExit, match="REPLICATE_WEBHOOK_SIGNING_SECRET is not"):
        webhook_config({"REPLICATE_WEBHOOK_URL": "https://api.example.com/hooks/replicate"})
    with pytest.raises(SystemExit, match="whsec_"):
        webhook_config({"REPLICATE_WEBHOOK_URL": "https://api.example.com/h", "REPLICATE_WEBHOOK_SIGNING_SECRET": "x"})
    with pytest.raises(SystemExit, match="http"):
        webhook_config({"REPLICATE_WEBHOOK_URL": "api.example.com/h", "REPLICATE_WEBHOOK_SIGNING_SECRET": SECRET})
    with pytest.raises(SystemExit, match="REPLICATE_WEBHOOK_SIGNING_SECRET"):
        ReplicateImageJobs.from_env({"REPLICATE_API_TOKEN": TOKEN, "REPLICATE_WEBHOOK_URL": "https://a.example/h"})
    with pytest.raises(SystemExit, match="REPLICATE_WEBHOOK_SIGNING_SECRET"):  # at boot, whatever the provider
        check_environment({"REPLICATE_WEBHOOK_URL": "https://a.example/h"})
    # with webhooks, polling is the fallback: every 30 s unless JOB_POLL_INTERVAL says otherwise
    hooks = {"IMAGE_PROVIDER": "replicate", "REPLICATE_WEBHOOK_URL": "https://a.example/h"}
    assert job_webhooks_configured(hooks) and not job_webhooks_configured({"REPLICATE_WEBHOOK_URL": "https://a/h"})


@pytest.mark.unit
def test_predictions_are_created_with_a_completed_webhook() -> None:
    with FakeReplicate(TOKEN) as fake:
        jobs = ReplicateImageJobs(TOKEN, base_url=fake.base_url,
                                  webhook=WebhookConfig("https://api.example.com/hooks/replicate", SECRET))
        jobs.create("base", {"prompt": "a lighthouse", "seed": 1})
        jobs.create("personalize", {"input_image": "https://x/a.png", "swap_image": "https://x/b.png"})
        plain = ReplicateImageJobs(TOKEN, base_url=fake.base_url)
        plain.create("base", {"prompt": "a lighthouse", "seed": 2})
        bodies = [r["json"] for r in fake.requests if r["method"] == "POST"]
    for body in bodies[:2]:
        assert body["webhook"] == "https://api.example.com/hooks/replicate"
        assert body["webhook_events_filter"] == ["completed"]
    assert "webhook" not in bodies[2] and "webhook_events_filter" not in bodies[2]


# --- through real workers --------------------------------------------------------------------------

@pytest.fixture()
def fake() -> Iterator[FakeReplicate]:
    server = FakeReplicate(TOKEN, run_seconds=0.4).start()
    server.webhooks = WebhookSender(SECRET, copies=2)  # Replicate delivers at least once: here twice
    yield server
    server.webhooks.stop()
    server.stop()


@pytest.fixture()
def receiver(tmp_path: Path) -> Iterator[str]:
    """The external API's webhook endpoint (its URL), publishing each POST by task name."""
    port_file = tmp_path / "receiver.port"
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "external_webhook_receiver.py"), BROKER,
                             "images.replicate_webhook", str(port_file)], cwd="/", env=env)
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "the receiver did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port_file.read_text()}/hooks/replicate"
    proc.terminate()
    proc.wait(timeout=10)


def _run_story(db: Db, fake: FakeReplicate, receiver: str, tmp_path: Path, request: pytest.FixtureRequest,
               poll: str) -> tuple[str, float, WorkerProcess]:
    flush_redis(BROKER)
    env = {"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "IMAGE_PROVIDER": "replicate",
           "REPLICATE_API_TOKEN": TOKEN, "REPLICATE_BASE_URL": fake.base_url, "REPLICATE_TIMEOUT": "5",
           "REPLICATE_WEBHOOK_URL": receiver, "REPLICATE_WEBHOOK_SIGNING_SECRET": SECRET,
           "JOB_POLL_INTERVAL": poll, "STORY_PAGE_COUNT": str(PAGES)}
    w = WorkerProcess(tmp_path / "w.log", env=env, concurrency=8)
    request.addfinalizer(w.stop)
    w.start()
    story = db.story(db.photo(astronaut_png()))
    t0 = time.monotonic()
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = db.wait_story(story, timeout=90)
    assert row["status"] == "completed", row["error_message"]
    return story, time.monotonic() - t0, w


def _steps(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line.split("storycreator.step: step ", 1)[1]) for line in log.read_text().splitlines()
            if "storycreator.step: step " in line]


@pytest.mark.workers
@pytest.mark.timeout(180)
def test_story_completes_through_webhooks_long_before_the_next_poll(
        clean_db: Db, fake: FakeReplicate, receiver: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # given workers that would look at a running prediction only every 60 s
    story, took, w = _run_story(clean_db, fake, receiver, tmp_path, request, poll="60")
    # then the story completed within seconds: every job's end came by webhook, none by a poll
    assert took < 30, took
    jobs = clean_db.all("SELECT j.* FROM provider_jobs j JOIN story_pages p ON p.id = j.page_id "
                        "WHERE p.story_id = :s", s=story)
    assert len(jobs) == 2 * PAGES
    assert all(j["status"] == "succeeded" and j["polls"] == 0 and j["woken_at"] is not None
               and j["finished_by"] == j["woken_by"] != j["started_by"] for j in jobs), jobs
    # each prediction's webhook was delivered twice; the second delivery was a no-op
    assert len(fake.webhooks.sent) == 2 * len(jobs) and {d["code"] for d in fake.webhooks.sent} == {200}
    hooks = [s for s in _steps(w.log) if s["stage"] == "job_webhook"]
    assert sorted(s["outcome"] for s in hooks) == ["already_done"] * len(jobs) + ["done"] * len(jobs), hooks
    # and each page's illustration and personalization completed once, by the webhook's follow
    done = [s for s in _steps(w.log) if s["stage"] in ("image", "personalization") and s["outcome"] == "done"]
    assert len(done) == 2 * PAGES


@pytest.mark.workers
@pytest.mark.timeout(180)
def test_the_pending_poll_after_a_webhooks_follow_is_a_no_op_and_the_chain_runs_once(
        clean_db: Db, fake: FakeReplicate, receiver: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # given a poll due 3 s after each job started, and one forged and one stale delivery (each sent twice)
    fake.webhooks.forge_next(1)
    fake.webhooks.stale_next(1)
    story, _, w = _run_story(clean_db, fake, receiver, tmp_path, request, poll="3")
    time.sleep(5)  # every pending poll has come by now
    steps = _steps(w.log)
    # then the forged and the stale deliveries were rejected (their jobs' ends seen by a poll)
    rejected = [s["detail"] for s in steps if s["stage"] == "job_webhook" and s["outcome"] == "stopped"]
    assert sorted(d.split(":")[1].strip() for d in rejected) == ["expired"] * 2 + ["signature"] * 2, rejected
    # each page step completed once; every other copy (a pending poll, a webhook's follow that came
    # second) stopped without moving the page's chain on: no link ran twice
    page_steps = [s for s in steps if s["stage"] in ("image", "personalization")]
    assert sum(s["outcome"] == "done" for s in page_steps) == 2 * PAGES
    assert not [s for s in page_steps if s["outcome"] == "already_done"], page_steps
    followed = [s for s in page_steps if s["outcome"] == "stopped" and "already done by message" in s["detail"]]
    assert len(followed) >= 2 * PAGES - 2, page_steps  # the polls after a webhook's follow
    finished = [s for s in steps if s["stage"] == "finish" and s["outcome"] in ("done", "already_done")]
    assert len(finished) == 1, finished
    assert clean_db.story_row(story)["status"] == "completed"
