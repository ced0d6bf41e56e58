"""A database (or storage) that goes away while workers run, from the outside (issue 12, item 4).

Each test has its own PostgreSQL cluster and its own Redis (tests/services.py): it stops and
starts those, never the machine's. One real ``celery worker`` and no beat: no sweeper, no
backfill, nobody typing ``retry``, so whatever comes back came back through the worker alone.

- PostgreSQL stopped mid-run (``pg_ctl stop``: ``fast`` for about a minute, ``immediate``, a crash,
  for ten seconds), with several stories in flight on the offline providers (simulated latency)
  or with their pictures made as remote jobs (the fake Replicate), and one more story sent while
  it is down: once it is back every story completes by itself within a bound, no message is
  dropped (no task failed or acked without its step done: the workers' step lines, the failure
  records and the broker's queues agree), no page step is done twice and the worker never exits.
- The local storage unwritable for 20 s (folders made immutable with ``chattr +i``, which stops
  root too; as another user, their write permission removed): the same, and no step recorded as
  failed (it was "an internal error" and the story failed, before StorageUnavailable).
- A worker booted while PostgreSQL is down takes no message (it exits with one line, as any
  worker that cannot work does; its supervisor starts it again) and works once it is back.

A step the outage cut off while it held its claim is resumed by its own re-sent message, which
carries the claim's fencing token (``held``), as soon as the database answers: not after the lease
(STEP_LEASE_SECONDS, 40 s here: longer than a recovery takes), and not counted as a takeover. The
report line gives the recovery time and how many claims were taken over (those whose run never
learned its token: the claim's reply itself lost with the connection). The bound on recovery is
the re-send backoff's cap (DB_RETRY_BACKOFF_MAX, 15 s here) plus the lease (for such a claim)
plus the work.
``CHAOS_ROUNDS=N`` repeats each outage N times, the later rounds 30-90 s long at a random moment.
"""
from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests import services
from tests.fakes.replicate_server import FakeReplicate
from tests.services import OwnPostgres, OwnRedis
from tests.support import ALL_QUEUES, Db, WorkerProcess, astronaut_png, boot_worker_until_exit, external_send

# The tests that stop and start services (their own) carry @pytest.mark.chaos; the rest are unit.
ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "1"))
TOKEN = "r8_outage_token_0123456789"
PAGES = 3
# STEP_LEASE_SECONDS, longer than the recovery takes: a step cut off holding its claim is resumed by
# its own re-sent message at once (it carries the claim's token, ``held``), not after the lease.
LEASE = 40.0
BACKOFF_MAX = 15.0  # DB_RETRY_BACKOFF_MAX: the longest wait of a re-sent step
PAGE_STAGES = ("text", "image", "personalization")


@dataclass
class Own:
    redis: OwnRedis
    pg: OwnPostgres
    db: Db
    broker: str
    storage: Path


@pytest.fixture()
def own(tmp_path: Path) -> Iterator[Own]:
    if why := services.missing():
        if os.environ.get("CI"):
            raise AssertionError(f"cannot start own services on this machine: {why}")
        pytest.skip(f"cannot start own services here: {why}")
    storage = tmp_path / "storage"
    with services.own_redis(tmp_path / "redis") as server, services.own_postgres() as pg:
        db = pg.database(storage)
        try:
            yield Own(server, pg, db, f"{server.url}/0", storage)
        finally:
            db.close()


def _env(own: Own, fake: FakeReplicate | None = None) -> dict[str, str]:
    env = {"DATABASE_URL": own.db.url, "CELERY_BROKER_URL": own.broker, "REDIS_URL": own.broker,
           "LOCAL_STORAGE_ROOT": str(own.storage), "STORY_PAGE_COUNT": str(PAGES),
           "SIMULATED_PROVIDER_LATENCY": "0.8", "SIMULATED_STORAGE_LATENCY": "0.1",
           "STEP_LEASE_SECONDS": str(LEASE), "DB_RETRY_BACKOFF_MAX": str(BACKOFF_MAX),
           "STEP_RETRY_BACKOFF_CAP": "2"}
    if fake is not None:
        env.update(IMAGE_PROVIDER="replicate", REPLICATE_API_TOKEN=TOKEN, REPLICATE_BASE_URL=fake.base_url,
                   JOB_POLL_INTERVAL="0.5")
    return env


def step_lines(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if "storycreator.step: step " in line:
            out.append(json.loads(line.split("storycreator.step: step ", 1)[1]))
    return out


def broker_state(broker: str) -> dict[str, int]:
    """Messages waiting in the queues, and taken by a worker but not yet acknowledged (kombu's
    Redis transport keeps those in the ``unacked`` hash: a re-sent step waiting out its backoff
    is there, with its ETA)."""
    r = redis.Redis.from_url(broker)
    try:
        return {"queued": sum(int(r.llen(q)) for q in ALL_QUEUES.split(",")),  # type: ignore[misc]
                "unacked": int(r.hlen("unacked"))}  # type: ignore[arg-type]
    finally:
        r.close()


def _in_flight(db: Db) -> dict[str, int]:
    """Page steps under way (claimed) per stage, and pages finished."""
    row = db.one("""SELECT count(*) FILTER (WHERE text_generation_status = 'processing') AS text,
                           count(*) FILTER (WHERE image_generation_status = 'processing') AS image,
                           count(*) FILTER (WHERE personalization_status = 'processing') AS personalization,
                           count(*) FILTER (WHERE personalization_status = 'completed') AS pages_done
                      FROM story_pages""")
    return dict(row)


def _under_way(db: Db, busy: int) -> bool:
    """At least one page finished and ``busy`` page steps claimed: the flow in full swing."""
    n = _in_flight(db)
    return n["pages_done"] >= 1 and n["text"] + n["image"] + n["personalization"] >= busy


def _wait_until(what: str, check: Any, timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(interval)


def _check_nothing_lost(own: Own, w: WorkerProcess, stories: list[str], fake: FakeReplicate | None,
                        skip: int = 0) -> dict[str, Any]:
    """Every story completed, each page step and each story's start and completion done once, no
    failure recorded, no task ended in failure, the broker empty, the worker alive. Returns the
    counts for the report (from the worker's step lines after the first ``skip``: this round's)."""
    db, log = own.db, w.log.read_text(errors="replace")
    for s in stories:
        row = db.story_row(s)
        assert row["status"] == "completed" and row["error_message"] is None, (dict(row), w.tail())
    pages = {str(p["id"]) for s in stories for p in db.pages(s)}
    assert len(pages) == PAGES * len(stories)
    lines = step_lines(w.log)[skip:]
    done = [(e["stage"], e.get("page") or e.get("story")) for e in lines if e["outcome"] == "done"]
    twice = {k for k in done if done.count(k) > 1}
    assert not twice, f"done twice: {twice}"
    expected = {(st, p) for st in PAGE_STAGES for p in pages} | {(st, s) for st in ("outline", "finish")
                                                                  for s in stories}
    finished = {(e["stage"], e.get("page") or e.get("story")) for e in lines
                if e["outcome"] in ("done", "already_done")}
    assert expected <= finished, f"never done: {expected - finished}"
    failed = [e for e in lines if e["outcome"] == "failed"]
    assert not failed, failed
    assert db.one("SELECT count(*) AS n FROM step_errors WHERE permanent")["n"] == 0
    # a task that raised (acked by task_acks_on_failure) is a message dropped
    assert " raised unexpected" not in log and "Unrecoverable error" not in log, w.tail(80)
    assert w.proc is not None and w.proc.poll() is None, f"the worker exited ({w.proc.returncode if w.proc else None})"
    if fake is not None:  # one prediction per page picture: none made twice
        inputs = [repr(sorted(p["input"].items())) for p in fake.created]
        assert len(inputs) == len(set(inputs)) == 2 * len(pages), len(inputs)
    # nothing left behind in the broker once the re-sent copies of finished steps have run
    _wait_until("the broker drained", lambda: broker_state(own.broker) == {"queued": 0, "unacked": 0},
                BACKOFF_MAX + LEASE + 10, 0.5)
    resent = [e for e in lines if " unavailable: " in str(e.get("detail", "")) and "retries" in e]
    return {"resent": len(resent), "max_retries": max((e["retries"] for e in resent), default=0),
            "waiting": sum(1 for e in lines if e["outcome"] == "waiting"),
            "stopped": sum(1 for e in lines if e["outcome"] == "stopped")}


OUTAGES = [  # (images, seconds, pg_ctl stop mode); the suite's default keeps CI under its budget
    pytest.param("replicate", 35.0, "fast", id="replicate-35s-fast"),
    pytest.param("local", 10.0, "immediate", id="local-10s-crash"),
]
if ROUNDS > 1:  # the long runs: every kind of images with every kind of stop, a minute and more
    OUTAGES += [
        pytest.param("local", 60.0, "fast", id="local-60s-fast"),
        pytest.param("replicate", 60.0, "fast", id="replicate-60s-fast"),
        pytest.param("replicate", 10.0, "immediate", id="replicate-10s-crash"),
    ]


@pytest.mark.chaos
@pytest.mark.timeout(240 * ROUNDS)
@pytest.mark.parametrize(("images", "seconds", "mode"), OUTAGES)
def test_database_stopped_mid_run_loses_nothing(own: Own, tmp_path: Path, images: str, seconds: float,
                                                mode: str, request: pytest.FixtureRequest) -> None:
    fake = FakeReplicate(TOKEN, run_seconds=1.0).start() if images == "replicate" else None
    if fake is not None:
        request.addfinalizer(fake.stop)
    w = WorkerProcess(tmp_path / "worker.log", env=_env(own, fake), concurrency=8)
    request.addfinalizer(w.stop)
    w.start()
    for rnd in range(ROUNDS):
        outage = seconds if rnd == 0 else random.uniform(30, 90)
        skip = len(step_lines(w.log))
        own.db.truncate()
        if fake is not None:
            fake.created.clear()
        # given several stories in flight, and one more the external API will send during the outage
        stories = [own.db.story(own.db.photo(astronaut_png())) for _ in range(4)]
        late = own.db.story(own.db.photo(astronaut_png()))
        for s in stories:
            external_send(own.broker, "stories.generate", {"story_id": s})
        busy = 2 if rnd == 0 else random.randint(1, 4)
        _wait_until("pages in flight", lambda: _under_way(own.db, busy), 90)  # noqa: B023
        before = _in_flight(own.db)
        # when PostgreSQL stops under them, for a while
        own.db.engine.dispose()
        own.pg.stop(mode)
        down = time.monotonic()
        external_send(own.broker, "stories.generate", {"story_id": late})
        held = []
        while time.monotonic() - down < outage:
            assert w.proc is not None and w.proc.poll() is None, f"the worker exited during the outage\n{w.tail()}"
            held.append(broker_state(own.broker))
            time.sleep(1.0)
        # messages were held (queued or taken and waiting to be re-run), never all acked away
        assert all(h["queued"] + h["unacked"] > 0 for h in held), held
        own.pg.start()
        up = time.monotonic()
        # then every story completes by itself: the longest backoff, a cut-off claim's lease, the work
        for s in [*stories, late]:
            own.db.wait_story(s, timeout=BACKOFF_MAX + LEASE + 60)
        recovered = time.monotonic() - up
        counts = _check_nothing_lost(own, w, [*stories, late], fake, skip)
        takeovers = own.db.one("SELECT (SELECT coalesce(sum(takeovers), 0) FROM story_pages)"
                               " + (SELECT coalesce(sum(takeovers), 0) FROM photos) AS n")["n"]
        report = {"images": images, "mode": mode, "seconds": round(outage, 1), "round": rnd,
                  "in_flight_at_stop": before, "recovered_after_s": round(recovered, 1), "dropped": 0,
                  "takeovers": int(takeovers), **counts}
        print(f"\noutage {json.dumps(report)}")
        assert counts["resent"] > 0
        if outage >= 30:  # many re-sends of one message, none acked as failed, none recorded
            assert counts["max_retries"] > 3, counts


def _freeze(root: Path, frozen: bool) -> None:
    """Make every folder and file under ``root`` unwritable (``frozen``) or writable again: as
    root, whom permissions do not stop, the immutable attribute (chattr +i: EPERM for root too);
    otherwise the folders' write permission."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-R", "+i" if frozen else "-i", str(root)], check=True, capture_output=True,
                       timeout=60)
        return
    for folder, _, _ in os.walk(root):
        os.chmod(folder, 0o555 if frozen else 0o755)


def _can_freeze(tmp_path: Path) -> str | None:
    """Why the storage cannot be made unwritable here, or None."""
    probe = tmp_path / "freeze-probe"
    probe.mkdir()
    try:
        _freeze(probe, True)
    except (OSError, subprocess.CalledProcessError) as e:
        return f"cannot make a folder unwritable here ({e})"
    try:
        (probe / "x").write_bytes(b"")
    except PermissionError:
        return None
    finally:
        _freeze(probe, False)
    return "an unwritable folder can still be written here"


@pytest.mark.chaos
@pytest.mark.timeout(240 * ROUNDS)
def test_storage_unwritable_mid_run_loses_nothing(own: Own, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if why := _can_freeze(tmp_path):
        pytest.skip(why)
    w = WorkerProcess(tmp_path / "worker.log", env=_env(own), concurrency=8)
    request.addfinalizer(w.stop)
    w.start()
    for rnd in range(ROUNDS):
        skip = len(step_lines(w.log))
        own.db.truncate()
        # given several stories in flight on local storage
        stories = [own.db.story(own.db.photo(astronaut_png())) for _ in range(4)]
        for s in stories:
            external_send(own.broker, "stories.generate", {"story_id": s})
        _wait_until("pages in flight", lambda: _under_way(own.db, 2), 90)
        before = _in_flight(own.db)
        # when the storage cannot be written for a while (a permission lost, a read-only remount)
        outage = 20.0 if rnd == 0 else random.uniform(10, 60)
        request.addfinalizer(lambda: _freeze(own.storage, False))
        _freeze(own.storage, True)
        down = time.monotonic()
        while time.monotonic() - down < outage:
            assert w.proc is not None and w.proc.poll() is None, f"the worker exited during the outage\n{w.tail()}"
            time.sleep(1.0)
        _freeze(own.storage, False)
        up = time.monotonic()
        # then every story completes by itself, nothing failed, nothing done twice
        for s in stories:
            own.db.wait_story(s, timeout=BACKOFF_MAX + LEASE + 60)
        recovered = time.monotonic() - up
        counts = _check_nothing_lost(own, w, stories, None, skip)
        report = {"storage": "local", "seconds": round(outage, 1), "round": rnd, "in_flight_at_stop": before,
                  "recovered_after_s": round(recovered, 1), "dropped": 0, **counts}
        print(f"\noutage {json.dumps(report)}")
        assert counts["resent"] > 0


@pytest.mark.chaos
@pytest.mark.timeout(180)
def test_a_worker_booted_while_the_database_is_down_takes_nothing_then_works(own: Own, tmp_path: Path) -> None:
    """tests/test_database_config.py boots workers against databases that cannot work (a port that
    refuses, no such database, no schema, a role without rights) and then a fixed configuration.
    Here the configuration is right and the server is down, then up: what a supervisor
    (systemd ``Restart=always``, Kubernetes) sees while PostgreSQL restarts under a deploy."""
    env = _env(own)
    # given stories the external API sent
    stories = [own.db.story(own.db.photo(astronaut_png())) for _ in range(2)]
    for s in stories:
        external_send(own.broker, "stories.generate", {"story_id": s})
    # when PostgreSQL is down and the supervisor starts the worker, again each time it exits
    own.pg.stop("fast")
    boots, down = [], time.monotonic()
    while time.monotonic() - down < 20:
        t0 = time.monotonic()
        code, out = boot_worker_until_exit(env, tmp_path / f"boot{len(boots)}.log", timeout=40)
        boots.append(round(time.monotonic() - t0, 1))
        # then each start exits non-zero with one line, and takes no message
        assert code not in (None, 0), f"the worker did not exit ({code}):\n{out[-3000:]}"
        lines = [ln for ln in out.splitlines() if "configuration error" in ln]
        assert len(lines) == 1 and "cannot reach the database" in lines[0], out[-3000:]
        assert "Traceback" not in out, out
        assert broker_state(own.broker) == {"queued": len(stories), "unacked": 0}
        time.sleep(1.0)  # RestartSec
    # and once PostgreSQL is back, the next start works: the stories complete, nobody intervening
    own.pg.start()
    up = time.monotonic()
    w = WorkerProcess(tmp_path / "worker.log", env=env, concurrency=8)
    try:
        w.start()
        for s in stories:
            own.db.wait_story(s, timeout=90)
        counts = _check_nothing_lost(own, w, stories, None)
    finally:
        w.stop()
    report = {"boots_while_down": len(boots), "seconds_to_exit": boots,
              "completed_after_s": round(time.monotonic() - up, 1), **counts}
    print(f"\nboot {json.dumps(report)}")


# --- the storage's outage, in-process ------------------------------------------------------------

def test_a_storage_that_cannot_be_written_is_an_outage_not_a_failure(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from db.engine import unavailable
    from pipeline.kernel.step import FIRST_TRY, Callbacks, guarded
    from pipeline.kernel.storage import LocalStorage, ObjectMissing, StorageUnavailable

    storage = LocalStorage(tmp_path)
    storage.put("a/kept.png", b"kept", "image/png")

    def refuse(*_: Any) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", str(tmp_path / "a"))

    # given a filesystem that refuses every write (a permission lost, an immutable or read-only mount)
    monkeypatch.setattr(os, "replace", refuse)
    # when a step stores its picture
    calls: list[tuple[str, Any]] = []
    record = Callbacks(lambda m: calls.append(("fail", m)), lambda n: calls.append(("release", n)))
    with pytest.raises(StorageUnavailable) as raised:
        guarded(lambda: storage.put("a/new.png", b"new", "image/png"), attempt=FIRST_TRY, record=record,
                what="Illustration")
    # then it is the storage unavailable (the same OSError), not the step's failure: the claim is
    # given back and nothing recorded; the task layer re-sends the step (db.engine.unavailable)
    assert isinstance(raised.value, OSError) and raised.value.errno == errno.EPERM
    assert unavailable(raised.value)
    assert calls == [("release", None)]
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".tmp-")]
    # and a key naming nothing is still a missing object (permanent), never an outage
    for key in ("a/none.png", "a/kept.png/below.png", "a"):
        with pytest.raises(ObjectMissing):
            storage.get(key)
    assert storage.get("a/kept.png") == b"kept"


def test_a_storage_that_cannot_be_read_is_an_outage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.kernel.storage import LocalStorage, StorageUnavailable

    LocalStorage(tmp_path).put("a/photo.png", b"photo", "image/png")

    def refuse(self: Path) -> bytes:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(StorageUnavailable) as raised:
        LocalStorage(tmp_path).get("a/photo.png")
    assert raised.value.errno == errno.EACCES
