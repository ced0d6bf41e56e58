"""Pipeline benchmarks, measured side by side in one run (ratios, not absolute times):

1. orchestration overhead: pipeline tasks/s with instant providers vs bare Celery no-op tasks/s,
   same broker, same worker settings (threads pool, same concurrency). Target >= 0.5x.
2. latency: one 12-page story with a simulated provider latency per call vs its critical path
   (photo analysis + outline + text + illustration + personalization = 5 provider calls in a
   row; everything else — claims, queues, the barrier, the book — is overhead). Target <= 1.10x.

    .venv/bin/python -m bench.bench_pipeline [--stories 20] [--latency 2.0] [--concurrency 16]

Uses its own database (storycreator_bench) and Redis database 10; starts and stops its workers.
Each story is its own family's (``insert_stories``: one user per story), so the cap on stories in
flight per account (USER_STORIES_IN_FLIGHT) never holds one back and every page runs at priority 0:
the numbers are the pipeline's, comparable with those before the cap existed.

Measured for issue 11 (page steps as one Celery chain instead of each step sending its successor),
``--stories 10 --latency 1.0``, this 2-core machine shared with other test runs (load 4-6),
before/after runs interleaved: orchestration ratio before 0.22, 0.22, 0.30, 0.27 (pipeline 144-217
tasks/s), after 0.29, 0.30, 0.23 (169-188 tasks/s); latency ratio before 1.03-1.06x, after
1.05-1.08x. The difference is inside the run-to-run noise (the bare no-op rate alone moved
487-810 tasks/s). Message sizes: ``python -m bench.bench_messages``.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELERY = str(Path(sys.executable).parent / "celery")
# None: the worker consumes every queue celeryconfig declares (no -Q), as the Procfile starts it.
QUEUES = None


def start_worker(app: str, queues: str | None, concurrency: int, env: dict[str, str], log: Path,
                 root: Path = ROOT) -> subprocess.Popen:  # type: ignore[type-arg]
    """A worker for ``app`` started as the Procfile starts it (threads pool), run from ``root``: another
    checkout's code (bench_orchestration --baseline) with this venv's packages."""
    from celery import Celery

    fh = open(log, "wb")
    name = f"bench-{uuid.uuid4().hex[:6]}@localhost"
    p = subprocess.Popen(
        [
            CELERY,
            "-A",
            app,
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency),
            *(["-Q", queues] if queues else []),
            "-n",
            name,
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "WARNING",
        ],
        cwd=root,
        env=env if root == ROOT else {**env, "PYTHONPATH": str(root)},
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    # Timing starts only once the worker answers a ping (it has booted and warmed up).
    control = Celery("bench-control", broker=env["CELERY_BROKER_URL"])
    deadline = time.monotonic() + 60
    while not control.control.ping(destination=[name], timeout=0.5):
        if p.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker for {app} did not start:\n{log.read_text()}")
    return p


def stop(p: subprocess.Popen) -> None:  # type: ignore[type-arg]
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def photo_bytes() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "PNG")
    return buf.getvalue()


def insert_stories(engine, storage: Path, n: int, user: str | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    """``n`` pending stories, each with its own uploaded photo. Each story is its own account's
    (a new user per story) unless ``user`` is given: the cap on stories in flight per account
    (USER_STORIES_IN_FLIGHT, default 4) then never holds a story back, so throughput and latency
    measure the pipeline, not the cap (README "Fair turns between families"; bench/bench_fairness.py
    measures the cap)."""
    from sqlalchemy import text

    img = photo_bytes()
    ids = []
    with engine.begin() as c:
        for _ in range(n):
            owner = user or c.execute(
                text("INSERT INTO users (email) VALUES (:e) RETURNING id"),
                {"e": f"bench-{uuid.uuid4().hex}@example.com"},
            ).scalar()
            key = f"uploads/{uuid.uuid4()}.png"
            (storage / key).parent.mkdir(parents=True, exist_ok=True)
            (storage / key).write_bytes(img)
            photo = c.execute(
                text(
                    "INSERT INTO photos (user_id, storage_provider, object_key, filename, content_type, status) "
                    "VALUES (:u, 'local', :k, 'a.png', 'image/png', 'uploaded') RETURNING id"
                ),
                {"u": owner, "k": key},
            ).scalar()
            ids.append(
                str(
                    c.execute(
                        text(
                            "INSERT INTO stories (user_id, child_name, child_age, story_theme, protagonist_photo_id) "
                            "VALUES (:u, 'Mia', 6, 'space_adventure', :p) RETURNING id"
                        ),
                        {"u": owner, "p": photo},
                    ).scalar()
                )
            )
    return ids


def wait_stories(engine, ids: list[str], timeout: float) -> float:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        with engine.connect() as c:
            rows = c.execute(
                text("SELECT status, count(*) FROM stories WHERE id = ANY(CAST(:ids AS uuid[])) GROUP BY status"),
                {"ids": ids},
            ).all()
        counts = dict(rows)  # type: ignore[arg-type]
        if counts.get("failed"):
            raise SystemExit(f"stories failed during the bench: {counts}")
        if counts.get("completed", 0) == len(ids):
            return time.perf_counter()
        time.sleep(0.02)
    raise SystemExit(f"stories not done after {timeout}s: {counts}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stories", type=int, default=20)
    ap.add_argument("--pages", type=int, default=12)
    ap.add_argument("--latency", type=float, default=2.0, help="simulated seconds per provider call")
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()

    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
    db_url = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/storycreator_bench")
    storage = Path(tempfile.mkdtemp(prefix="storycreator-bench-"))
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "CELERY_BROKER_URL": redis_url,
        "REDIS_URL": redis_url,
        "BENCH_COUNTER_URL": redis_url,
        "LOCAL_STORAGE_ROOT": str(storage),
        "STORY_PAGE_COUNT": str(args.pages),
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "VISION_PROVIDER": "instant",
        "TEXT_PROVIDER": "instant",
        "IMAGE_PROVIDER": "instant",
    }
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "CELERY_BROKER_URL", "LOCAL_STORAGE_ROOT")})

    import redis
    from celery import Celery

    from db.engine import ensure_database, make_engine

    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    ensure_database(db_url)
    engine = make_engine(db_url)
    client = Celery("bench-client", broker=redis_url)
    logs = Path(tempfile.mkdtemp(prefix="storycreator-bench-logs-"))
    tasks_per_story = 2 + 3 * args.pages  # generate + (text, image, personalize) per page + finish

    # 1a. bare no-op tasks, same count as the pipeline run below
    n_tasks = args.stories * tasks_per_story
    w = start_worker("bench.noop_app", "bench-noop", args.concurrency, env, logs / "noop.log")
    try:
        r.delete("bench:noop:done")
        t0 = time.perf_counter()
        for _ in range(n_tasks):
            client.send_task("bench.noop", queue="bench-noop")
        while int(r.get("bench:noop:done") or 0) < n_tasks:
            time.sleep(0.005)
        bare = n_tasks / (time.perf_counter() - t0)
    finally:
        stop(w)

    # 1b. the pipeline with instant providers
    w = start_worker("workers.app", QUEUES, args.concurrency, env, logs / "pipeline.log")
    try:
        ids = insert_stories(engine, storage, args.stories)
        t0 = time.perf_counter()
        for sid in ids:
            client.send_task("stories.generate", kwargs={"story_id": sid})
        t1 = wait_stories(engine, ids, 600)
        pipeline = n_tasks / (t1 - t0)
    finally:
        stop(w)

    # 2. latency of one story with simulated provider latency
    lat_env = {**env, "SIMULATED_PROVIDER_LATENCY": str(args.latency)}
    w = start_worker("workers.app", QUEUES, max(args.concurrency, args.pages + 2), lat_env, logs / "latency.log")
    try:
        (sid,) = insert_stories(engine, storage, 1)
        t0 = time.perf_counter()
        client.send_task("stories.generate", kwargs={"story_id": sid})
        latency = wait_stories(engine, [sid], 600) - t0
    finally:
        stop(w)
    critical = 5 * args.latency
    engine.dispose()

    print(
        f"orchestration: {n_tasks} tasks; bare no-op {bare:.0f} tasks/s, pipeline {pipeline:.0f} tasks/s "
        f"-> ratio {pipeline / bare:.2f}x (target >= 0.5x)"
    )
    print(
        f"latency: {args.pages}-page story with {args.latency:.1f}s per provider call: {latency:.2f}s vs critical "
        f"path {critical:.2f}s -> ratio {latency / critical:.3f}x (target <= 1.10x)"
    )
    print(f"(threads pool, concurrency {args.concurrency}; broker {redis_url}; logs in {logs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
