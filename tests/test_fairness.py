"""Fair turns between families (issue 14, section 1; README "Fair turns between families"): at
most USER_STORIES_IN_FLIGHT of one account's stories in flight, exact across workers (the claim
counts rows under the account's advisory lock), the rest waiting ``pending`` and started by the
hand-off when one ends, or by the sweep when a worker died; a waiting story is not "stuck"; its
pages' broker priority; what ``status`` says.

Real worker processes for the cap and the SIGKILL (instant providers with a short simulated
latency, so stories overlap); the rest in-process on the real database and Redis. This process's
own settings: USER_STORIES_IN_FLIGHT 8 (the default), FAIR_PRIORITY on.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from db import slots as slots_db
from db import stories as tx
from db.engine import autocommit, make_engine
from pipeline.operations.cli import main as cli
from pipeline.stories import slots
from pipeline.stories.stages import page_chain
from tests.support import (
    ROOT,
    Db,
    WorkerProcess,
    astronaut_png,
    consume_all,
    flush_redis,
    standby_queue,
    start_workers,
    stop_workers,
)

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 2}"
FAST = {"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "USER_STORIES_IN_FLIGHT": "2",
        "VISION_PROVIDER": "instant", "TEXT_PROVIDER": "instant", "IMAGE_PROVIDER": "instant"}
CAP = 8  # this process's USER_STORIES_IN_FLIGHT (the default)

# Every move of a story into 'processing' records how many of its account's stories are then in
# flight (the trigger's query sees every committed row and its own transaction's).
AUDIT = """
CREATE TABLE IF NOT EXISTS fair_audit (user_id uuid, in_flight int, at timestamptz DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION fair_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'processing' AND OLD.status IS DISTINCT FROM 'processing' THEN
        INSERT INTO fair_audit (user_id, in_flight)
        SELECT NEW.user_id, count(*) FROM stories WHERE user_id = NEW.user_id AND status = 'processing';
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS trg_fair_audit ON stories;
CREATE TRIGGER trg_fair_audit AFTER UPDATE OF status ON stories FOR EACH ROW EXECUTE FUNCTION fair_audit();
"""


@pytest.fixture()
def audited(clean_db: Db) -> Iterator[Db]:
    """The test database with the in-flight audit trigger (dropped afterwards)."""
    clean_db.exec(AUDIT)
    yield clean_db
    clean_db.exec("DROP TRIGGER IF EXISTS trg_fair_audit ON stories; DROP TABLE IF EXISTS fair_audit; "
                  "DROP FUNCTION IF EXISTS fair_audit()")


def _family(db: Db, n: int) -> tuple[str, list[str]]:
    """An account with ``n`` stories (one photo each), inserted oldest first."""
    user = db.user()
    return user, [db.story(db.photo(astronaut_png(), user_id=user)) for _ in range(n)]


def _wait_all(db: Db, stories: list[str], timeout: float, *logs: WorkerProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = db.all("SELECT status FROM stories WHERE id = ANY(CAST(:s AS uuid[]))", s=stories)
        if all(r["status"] == "completed" for r in rows):
            return
        assert not [r for r in rows if r["status"] == "failed"], rows
        time.sleep(0.2)
    raise AssertionError("stories not completed: " + str(db.all(
        "SELECT id, status, error_message FROM stories WHERE id = ANY(CAST(:s AS uuid[]))", s=stories))
        + "\n" + "\n".join(w.tail(30) for w in logs))


def _send_starts(stories: list[str]) -> None:
    """stories.generate for each story, as the external API publishes it, all from one client
    process (tests/external_client.py), so they arrive together."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    subprocess.run([sys.executable, str(ROOT / "tests" / "external_client.py"), BROKER, "stories.generate",
                    *[json.dumps({"story_id": s}) for s in stories]], cwd="/", check=True, timeout=60, env=env)


def _peak(db: Db, user: str) -> int:
    return int(db.one("SELECT COALESCE(max(in_flight), 0) AS n FROM fair_audit WHERE user_id = :u", u=user)["n"])


# --- real workers ------------------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_a_capped_account_runs_two_at_a_time_and_the_rest_start_by_themselves(
        audited: Db, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # given a worker with USER_STORIES_IN_FLIGHT=2 and an account that sends five stories at once
    flush_redis(BROKER)
    w = WorkerProcess(tmp_path / "worker.log", env={**FAST, "SIMULATED_PROVIDER_LATENCY": "0.3"}, concurrency=8)
    request.addfinalizer(w.stop)
    w.start()
    user, stories = _family(audited, 5)
    _send_starts(stories)
    # then all five complete, with no operator and nothing re-sent by hand
    _wait_all(audited, stories, 90, w)
    # and never more than two of them were in flight at once (two were: the cap was reached)
    assert _peak(audited, user) == 2
    # and the start of a story at the cap stopped without error, saying why
    log = w.log.read_text()
    assert "waiting for a slot: 2 of the account's stories in flight (USER_STORIES_IN_FLIGHT=2)" in log
    assert not audited.all("SELECT 1 FROM step_errors WHERE story_id = ANY(CAST(:s AS uuid[]))", s=stories)


@pytest.mark.timeout(150)
def test_a_worker_killed_holding_the_accounts_slots_does_not_strand_its_waiting_stories(
        audited: Db, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # given a capped account's two stories in flight on a worker, two more waiting, and no
    # redelivery by the broker within the test (visibility timeout 10 min): only the leases and
    # the sweep (the beat, every second) can free the dead worker's slots
    flush_redis(BROKER)
    env = {**FAST, "SIMULATED_PROVIDER_LATENCY": "0.5", "STEP_LEASE_SECONDS": "3", "BROKER_VISIBILITY_TIMEOUT": "600",
           "SWEEP_INTERVAL": "1"}
    first = WorkerProcess(tmp_path / "first.log", env=env, concurrency=8)
    second = WorkerProcess(tmp_path / "second.log", env=env, concurrency=8)
    second.queues = standby_queue(second)  # booted alongside, takes no work until the kill
    request.addfinalizer(lambda: stop_workers(first, second))
    start_workers(first, second)
    beat_log = open(tmp_path / "beat.log", "ab")
    beat = subprocess.Popen([str(Path(sys.executable).parent / "celery"), "-A", "workers.app", "beat",
                             "--loglevel", "INFO", "--schedule", str(tmp_path / "beat-schedule")],
                            cwd=ROOT, env={**os.environ, **env}, stdout=beat_log, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def stop_beat() -> None:
        beat.kill()
        beat.wait(10)
        beat_log.close()

    request.addfinalizer(stop_beat)
    user, stories = _family(audited, 4)
    _send_starts(stories)
    deadline = time.monotonic() + 40
    while audited.one("""SELECT count(*) AS n FROM story_pages p JOIN stories s ON s.id = p.story_id
                          WHERE s.user_id = :u AND p.text_generation_status = 'completed'""", u=user)["n"] < 1:
        assert time.monotonic() < deadline, first.tail()
        time.sleep(0.05)
    # when the worker is SIGKILLed while it holds both slots
    first.kill()
    held = audited.all("SELECT id FROM stories WHERE user_id = :u AND status = 'processing'", u=user)
    assert len(held) == 2, held
    # and another worker takes the queues
    consume_all(BROKER, second)
    # then every story of the account completes, the cap held throughout
    _wait_all(audited, stories, 90, second)
    assert _peak(audited, user) <= 2


# --- the database tier --------------------------------------------------------------------------------

def _claims_at_once(stories: list[str], hold: float) -> int:
    """Each story's start claimed by its own thread and connection, all released at once, each
    transaction held ``hold`` seconds after its claim: how many claimed."""
    engine = make_engine(os.environ["DATABASE_URL"], pool_size=len(stories), max_overflow=0)
    gate = threading.Barrier(len(stories))
    won: list[bool] = []

    def claim(story: str) -> None:
        with engine.connect() as warm:  # connected before the gate: the claims race, not the connects
            warm.close()
        gate.wait()
        with engine.begin() as c:
            row = tx.claim_story(c, story, 300.0, cap=CAP)
            time.sleep(hold)
        won.append(row is not None)

    threads = [threading.Thread(target=claim, args=(s,)) for s in stories]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    engine.dispose()
    return sum(won)


def test_twenty_concurrent_claims_of_one_account_take_exactly_its_cap(
        clean_db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    # given an account with twenty pending stories
    user = clean_db.user()
    stories = _family_of(clean_db, user, 20)
    # when twenty workers claim them at the same moment, cap 4
    # then exactly four are in flight
    assert _claims_at_once(stories, 0.02) == CAP
    assert clean_db.one("SELECT count(*) AS n FROM stories WHERE user_id = :u AND status = 'processing'",
                        u=user)["n"] == CAP
    # and without the account's lock the count alone is not enough (each claim's snapshot misses
    # the others' uncommitted claims): the lock is what makes the cap exact
    clean_db.exec("UPDATE stories SET status = 'pending' WHERE user_id = :u", u=user)
    monkeypatch.setattr(tx, "lock_account", lambda conn, user_id: None)
    assert _claims_at_once(stories, 0.3) > CAP


def _in_flight(db: Db, user: str, n: int) -> list[str]:
    stories = _family_of(db, user, n)
    db.exec("UPDATE stories SET status = 'processing' WHERE id = ANY(CAST(:s AS uuid[]))", s=stories)
    return stories


def _family_of(db: Db, user: str, n: int, minutes_ago: list[int] | None = None) -> list[str]:
    out = []
    for i in range(n):
        story = db.story(db.photo(b"", user_id=user))
        if minutes_ago:
            db.exec("UPDATE stories SET created_at = now() - make_interval(mins => :m), "
                    "updated_at = now() - make_interval(mins => :m) WHERE id = :s", m=minutes_ago[i], s=story)
        out.append(story)
    return out


@pytest.fixture()
def quiet_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """What the code publishes goes to this module's broker, which no worker consumes now (the
    session's shared worker, if one runs, would take the messages before the test reads them)."""
    from celery import Celery

    from pipeline.kernel import publish

    monkeypatch.setenv("CELERY_BROKER_URL", BROKER)  # Celery reads it over its own configuration
    client = Celery("fairness-test", set_as_current=False)
    client.config_from_object("celeryconfig")
    client.conf.broker_url = BROKER
    monkeypatch.setattr(publish, "app", lambda: client)
    flush_redis(BROKER)
    yield BROKER
    flush_redis(BROKER)
    client.close()


def _sent_starts() -> list[str]:
    """story ids of the stories.generate messages in this module's broker queue 'stories'."""
    r = redis.Redis.from_url(BROKER)
    try:
        out = []
        for raw in reversed(r.lrange("stories", 0, -1)):  # LPUSH: oldest last
            msg = json.loads(raw)
            if msg["headers"]["task"] == "stories.generate":
                out.append(json.loads(base64.b64decode(msg["body"]))[1]["story_id"])
        return out
    finally:
        r.close()


def test_a_story_at_the_cap_waits_is_not_stuck_and_the_oldest_starts_when_a_slot_frees(
        clean_db: Db, quiet_broker: str) -> None:
    from pipeline.operations.stuck import find_stuck
    from pipeline.stories import steps

    # given an account with four stories in flight and three waiting, sent in another order than
    # they were made, and another account's older story
    user = clean_db.user()
    running = _in_flight(clean_db, user, CAP)
    newest, oldest, middle = _family_of(clean_db, user, 3, minutes_ago=[1, 30, 20])
    other = _family_of(clean_db, clean_db.user(), 1, minutes_ago=[60])[0]
    # when a waiting story's start runs
    result = steps.generate_story(middle)
    # then it stops without a claim or an error, saying why, and stays pending
    assert result.outcome.value == "stopped", result
    assert result.detail == (f"waiting for a slot: {CAP} of the account's stories in flight "
                             f"(USER_STORIES_IN_FLIGHT={CAP})")
    row = clean_db.story_row(middle)
    assert (row["status"], row["error_message"], row["claim_token"]) == ("pending", None, 0)
    # and the sweep sends none of the account's waiting stories (not stuck: waiting; not in a loop)
    stuck = {i.kwargs.get("story_id") for i in find_stuck(lease=300, pending_after=0)}
    assert {newest, oldest, middle}.isdisjoint(stuck) and other in stuck
    assert slots.sweep_waiting(settle=0, dry_run=True) == [other]
    # and the gauges count the account's waiting stories apart from the pending ones
    from db.backlog import story_backlog

    with autocommit() as c:
        ages, counts = story_backlog(c, CAP)
    assert counts == {"pending": 1, "processing": CAP, "waiting_for_slot": 3}, counts
    assert 29 * 60 < ages["waiting_for_slot"] < 31 * 60 and ages["pending"] > 59 * 60
    # when one of its stories ends
    clean_db.exec("UPDATE stories SET status = 'completed' WHERE id = :s", s=running[0])
    sent = slots.ended_story(story_id=running[0])
    # then the account's oldest waiting story is sent, and only it (one slot free)
    assert sent == [oldest] and _sent_starts() == [oldest]
    # and the sweep's backstop would send the same oldest first, one per free slot
    assert slots.sweep_waiting(settle=0, dry_run=True) == [other, oldest]
    # and until that start claims the slot, only the story whose turn it is counts as pending (a
    # lost message would be re-sent for it alone); the two after it still wait for a slot
    stuck = {i.kwargs.get("story_id") for i in find_stuck(lease=300, pending_after=0)}
    assert oldest in stuck and {newest, middle}.isdisjoint(stuck)
    with autocommit() as c:
        assert story_backlog(c, CAP)[1] == {"pending": 2, "processing": CAP - 1, "waiting_for_slot": 2}
    with autocommit() as c:
        assert slots_db.waiting_stories(c, 10, CAP, settle=0) == [other, oldest]
        accounts = [(str(a["user_id"]), a["free"], a["waiting"]) for a in slots_db.accounts_with_free_slots(c, CAP)]
        assert accounts[1:] == [(user, 1, 3)] and accounts[0][1:] == (CAP, 1)
        clean_db.exec("UPDATE stories SET status = 'failed' WHERE id = :s", s=running[1])
        assert slots_db.account_waiting(c, user, CAP) == [oldest, middle]


def test_status_says_a_story_waits_for_a_slot_of_its_account(clean_db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    user = clean_db.user()
    _in_flight(clean_db, user, CAP)
    story = _family_of(clean_db, user, 1)[0]
    clean_db.exec("UPDATE photos SET ai_processing_status = 'completed'")
    capsys.readouterr()
    assert cli(["status", story]) == 0
    out = capsys.readouterr().out
    assert (f"waiting for a slot of its account ({CAP} of its stories in flight; USER_STORIES_IN_FLIGHT={CAP}): "
            "it starts when one of them ends") in out, out
    # and once a slot is free it only waits for a worker
    clean_db.exec("UPDATE stories SET status = 'completed' WHERE user_id = :u AND id <> :s", u=user, s=story)
    assert cli(["status", story]) == 0
    assert "waiting for a worker (queued)" in capsys.readouterr().out


def test_pages_of_a_busier_account_go_later_on_every_link(clean_db: Db, quiet_broker: str) -> None:
    # the priority: 0 for a family's only story, then Redis's steps 3, 6, 9
    assert [slots.page_priority(n, 0) for n in range(5)] == [0, 3, 6, 9, 9]
    assert slots.page_priority(1, 1) == 6 and slots.page_priority(0, 40) == 9
    # from the claim: the account's other stories in flight and pending
    user = clean_db.user()
    _in_flight(clean_db, user, 1)
    first, second, _ = _family_of(clean_db, user, 3)
    with autocommit() as c:
        claim = tx.claim_story(c, first, 300.0)
    assert claim is not None and (claim["in_flight_before"], claim["backlog"]) == (1, 2)
    # every link of a page's chain carries it to the broker (Redis: the queue's priority-9 list)
    from pipeline.kernel import publish

    publish.send_signature(page_chain("00000000-0000-0000-0000-000000000001", "text", first, priority=9))
    r = redis.Redis.from_url(quiet_broker)
    try:
        assert r.llen("text") == 0 and r.llen("text\x06\x169") == 1
        msg: dict[str, Any] = json.loads(r.lindex("text\x06\x169", 0))  # type: ignore[arg-type]
    finally:
        r.close()
    assert msg["properties"]["priority"] == 9
    rest = json.loads(base64.b64decode(msg["body"]))[2]["chain"]
    assert [link["options"].get("priority") for link in rest] == [9, 9]
