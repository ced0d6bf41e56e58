"""Helpers of the nemesis tests (tests/test_nemesis.py): a worker frozen with SIGSTOP (its whole
process group: the CPU processes that write the book are its children) and thawed with SIGCONT,
a cluster of real workers and a beat on this module's own broker, and the checks every case
ends with (nothing dropped, nothing done twice, every prediction accounted for).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.replicate_server import FakeReplicate
from tests.support import ROOT, Db, WorkerProcess, consume_all, standby_queue, start_workers, stop_workers

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 2}"  # this run's; own workers only
REPLICATE_TOKEN = "r8_nemesis_token_0123456789"
LEASE = 3.0  # STEP_LEASE_SECONDS in every case
ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "1"))

# A stage in flight, for one story (:s): its row claimed ('processing'), or for the finish, every
# page done and the story not yet (its completion, the book, is being written).
STAGE_IN_FLIGHT = {
    "analysis": """SELECT count(*) AS n FROM photos ph JOIN stories s ON s.protagonist_photo_id = ph.id
                    WHERE s.id = :s AND ph.ai_processing_status = 'processing'""",
    "text": "SELECT count(*) AS n FROM story_pages WHERE story_id = :s AND text_generation_status = 'processing'",
    "image": "SELECT count(*) AS n FROM story_pages WHERE story_id = :s AND image_generation_status = 'processing'",
    "personalization": """SELECT count(*) AS n FROM story_pages
                           WHERE story_id = :s AND personalization_status = 'processing'""",
    "finish": """SELECT count(*) AS n FROM stories s WHERE s.id = :s AND s.status = 'processing'
                 AND EXISTS (SELECT 1 FROM story_pages p WHERE p.story_id = s.id)
                 AND NOT EXISTS (SELECT 1 FROM story_pages p WHERE p.story_id = s.id
                                 AND p.personalization_status IS DISTINCT FROM 'completed')""",
}
PAGE_COLUMN = {"text": "text_generation_status", "image": "image_generation_status",
               "personalization": "personalization_status"}


def nemesis_env(replicate: FakeReplicate | None = None, **extra: str) -> dict[str, str]:
    """The workers' environment: short lease, the sweeper the only recovery (the broker's visibility
    timeout an hour), one CPU process per worker; images as Replicate predictions at ``replicate``
    when given, else drawn locally."""
    env = {"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "STEP_LEASE_SECONDS": f"{LEASE:g}",
           "BROKER_VISIBILITY_TIMEOUT": "3600", "SIMULATED_PROVIDER_LATENCY": "0.8",
           "SIMULATED_STORAGE_LATENCY": "0.3", "STEP_RETRY_BACKOFF_CAP": "1", "STORY_PAGE_COUNT": "2",
           "CPU_PROCESSES": "1", "JOB_POLL_INTERVAL": "0.2"}
    if replicate is not None:
        env.update(IMAGE_PROVIDER="replicate", REPLICATE_API_TOKEN=REPLICATE_TOKEN,
                   REPLICATE_BASE_URL=replicate.base_url)
    return {**env, **extra}


# --- the process group of a worker ---------------------------------------------------------------
def group_members(pgid: int) -> dict[int, str]:
    """pid -> state letter (R, S, T, Z, ...) of every process in process group ``pgid``."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:
            out[int(entry.name)] = fields[0]
    return out


def freeze(w: WorkerProcess) -> dict[int, str]:
    """SIGSTOP the worker's whole process group (the worker, its CPU processes, the resource
    tracker) and wait until every one of them is stopped. Returns pid -> command of each."""
    assert w.proc is not None and w.proc.poll() is None
    pgid = w.proc.pid  # start_new_session: the worker leads its own group
    os.killpg(pgid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while True:
        members = group_members(pgid)
        if all(s in "TtZX" for s in members.values()):
            break
        assert time.monotonic() < deadline, f"not all stopped: {members}"
        time.sleep(0.01)
    w.frozen = True  # type: ignore[attr-defined]
    return {pid: _cmdline(pid) for pid in members}


def thaw(w: WorkerProcess) -> None:
    """SIGCONT the worker's process group."""
    assert w.proc is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(w.proc.pid, signal.SIGCONT)
    w.frozen = False  # type: ignore[attr-defined]


def still_frozen(w: WorkerProcess) -> bool:
    assert w.proc is not None
    members = group_members(w.proc.pid)
    return bool(members) and all(s in "Tt" for s in members.values())


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)[:120]


# --- the cluster ---------------------------------------------------------------------------------
class Cluster:
    """Worker processes and a beat on BROKER; ``close()`` (and the test's teardown) thaws and stops
    them all, the beat included."""

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest, env: dict[str, str]) -> None:
        self.tmp_path, self.env = tmp_path, env
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.workers: list[WorkerProcess] = []
        self.beat_proc: subprocess.Popen[bytes] | None = None
        request.addfinalizer(self.close)

    def worker(self, **env: str) -> WorkerProcess:
        """A new worker (started: ready), with ``env`` over the cluster's environment."""
        w = self._new(env)
        w.start()
        return w

    def worker_and_standby(self, **env: str) -> tuple[WorkerProcess, WorkerProcess]:
        """A new worker (``env`` over the cluster's environment) and a standby (the cluster's
        environment), booted side by side; both ready. The standby takes no work until
        :meth:`take_over` (tests/support.py ``consume_all``)."""
        w, spare = self._new(env), self.standby(launch=False)
        start_workers(w, spare)
        return w, spare

    def standby(self, *, launch: bool = True) -> WorkerProcess:
        """A worker booting now on a queue of its own (nothing is sent there): it takes no work
        until :meth:`take_over`, which is then the moment "another worker starts", without the
        boot's 7-20 s after it."""
        w = self._new({})
        w.queues = standby_queue(w)
        if launch:
            w.launch()
        return w

    def take_over(self, spare: WorkerProcess) -> WorkerProcess:
        """The standby ``spare`` consumes every queue from now on, as a worker started now would
        (waiting first for its boot, if still under way)."""
        spare.wait_ready()
        consume_all(self.env["CELERY_BROKER_URL"], spare)
        return spare

    def _new(self, env: dict[str, str]) -> WorkerProcess:
        w = WorkerProcess(self.tmp_path / f"worker{len(self.workers)}.log", env={**self.env, **env}, concurrency=8)
        w.frozen = False  # type: ignore[attr-defined]
        self.workers.append(w)
        return w

    def beat(self) -> None:
        """celery beat sending the stuck-work sweep every second."""
        log = open(self.tmp_path / "beat.log", "ab")
        self.beat_proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "workers.app", "beat", "--loglevel", "INFO",
             "--schedule", str(self.tmp_path / "beat-schedule")],
            cwd=ROOT, env={**os.environ, **self.env, "SWEEP_INTERVAL": "1"}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()

    def close(self) -> None:
        running = [w for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for w in running:
            thaw(w)  # a stopped process would not act on SIGTERM
        stop_workers(*running)  # all at once: each takes seconds to exit
        if self.beat_proc is not None and self.beat_proc.poll() is None:
            os.killpg(self.beat_proc.pid, signal.SIGKILL)
            self.beat_proc.wait(10)

    def step_lines(self, w: WorkerProcess, offset: int = 0) -> list[dict[str, Any]]:
        """The step log lines of worker ``w`` from byte ``offset`` of its log."""
        with open(w.log, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
        return [json.loads(line.split("storycreator.step: step ", 1)[1]) for line in text.splitlines()
                if "storycreator.step: step " in line]

    def done_counts(self) -> dict[tuple[str, str], int]:
        """(stage, page id) -> how many "done" step lines all workers wrote for it."""
        seen: dict[tuple[str, str], int] = {}
        for w in self.workers:
            for e in self.step_lines(w):
                if e["outcome"] == "done" and "page" in e:
                    seen[(e["stage"], e["page"])] = seen.get((e["stage"], e["page"]), 0) + 1
        return seen


def log_size(w: WorkerProcess) -> int:
    return w.log.stat().st_size


def wait_for(db: Db, sql: str, *, timeout: float, what: str, w: WorkerProcess | None = None,
             poll: float = 0.01, **params: Any) -> None:
    deadline = time.monotonic() + timeout
    while db.one(sql, **params)["n"] == 0:
        assert time.monotonic() < deadline, f"{what} never happened\n{w.tail() if w else ''}"
        time.sleep(poll)


def cli_retry(env: dict[str, str], story: str) -> None:
    """``python -m pipeline.operations.cli retry --story ID``, as an operator types it."""
    retry = subprocess.run([sys.executable, "-m", "pipeline.operations.cli", "retry", "--story", story], cwd=ROOT,
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert retry.returncode == 0, retry.stdout + retry.stderr


# --- the checks ----------------------------------------------------------------------------------
def assert_each_page_step_done_once(cluster: Cluster, db: Db, story: str) -> None:
    """Every page step of the story has exactly one "done" line across all workers (a stale
    holder's late write is not one)."""
    counts = cluster.done_counts()
    pages = [str(p["id"]) for p in db.pages(story)]
    mine = {k: v for k, v in counts.items() if k[1] in pages}
    expected = {(stage, p) for p in pages for stage in PAGE_COLUMN}
    assert set(mine) == expected and set(mine.values()) == {1}, {
        "twice": {k: v for k, v in mine.items() if v > 1}, "never": sorted(expected - set(mine))}


def assert_files(db: Db, story: str) -> None:
    """One base and one personalized picture per page, one book (PDF and HTML): nothing else."""
    root = db.storage / "stories" / story
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    n = len(db.pages(story))
    expected = sorted([f"pages/{i:02d}/{v}.png" for i in range(1, n + 1) for v in ("base", "personalized")]
                      + ["book.html", "book.pdf"])
    assert files == expected, files


def check_predictions(db: Db, fake: FakeReplicate, story: str) -> dict[str, Any]:
    """Every prediction the fake created is recorded (provider_jobs.external_id) and ended
    (succeeded or canceled); per page step exactly one succeeded prediction and exactly one
    succeeded provider_jobs row. Returns the numbers for the report (extra = canceled ones)."""
    pages = db.pages(story)
    jobs = db.all("""SELECT j.page_id, j.stage, j.status, j.external_id FROM provider_jobs j
                       JOIN story_pages p ON p.id = j.page_id WHERE p.story_id = :s""", s=story)
    steps = {(str(p["id"]), stage) for p in pages for stage in ("image", "personalization")}
    ok_rows: dict[tuple[str, str], int] = {}
    for j in jobs:
        if j["status"] == "succeeded":
            key = (str(j["page_id"]), j["stage"])
            ok_rows[key] = ok_rows.get(key, 0) + 1
    assert ok_rows == dict.fromkeys(steps, 1), [dict(j) for j in jobs]
    created = [p["id"] for p in fake.created]
    # a prediction ends run_seconds after it was made (or when canceled): give the last ones time
    deadline = time.monotonic() + fake.run_seconds + 2
    while True:
        status = {pid: fake.prediction(pid)["status"] for pid in created}
        if all(s not in ("starting", "processing") for s in status.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    recorded = {str(j["external_id"]) for j in jobs if j["external_id"]}
    assert set(created) <= recorded, {"unrecorded": [(pid, status[pid]) for pid in created if pid not in recorded],
                                      "jobs": [dict(j) for j in jobs]}
    assert all(s in ("succeeded", "canceled") for s in status.values()), status
    by_input: dict[str, list[str]] = {}
    for p in fake.created:
        by_input.setdefault(repr(sorted(p["input"].items())), []).append(status[p["id"]])
    assert len(by_input) == len(steps) and all(v.count("succeeded") == 1 for v in by_input.values()), by_input
    return {"predictions": len(created), "extra_canceled": sum(1 for s in status.values() if s == "canceled"),
            "job_rows": len(jobs), "job_statuses": sorted(j["status"] for j in jobs)}


def report(line: str) -> None:
    """One line for the run's report (pytest -s shows it; tests/nemesis-report.txt keeps it)."""
    print(f"\nNEMESIS {line}")
    path = os.environ.get("NEMESIS_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
