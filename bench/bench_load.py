"""Load benchmarks, measured side by side in one run (ratios, not absolute times):

3. throughput: N concurrent stories with a simulated provider latency per call, vs the bound the
   worker's threads set (threads x seconds / (provider calls per story x latency)). Target >= 0.8x.
   Then the same load on two worker processes vs one.
4. cost per step: SQL statements (round trips) per step, counted on the connection while each
   step runs in-process (target <= 3), and the broker message size of each task (ids only,
   target < 2 KB), read back from Redis.
5. memory: a worker's RSS after its first stories vs after all of them (flat = no growth).

    .venv/bin/python -m bench.bench_load [--stories 100] [--pages 4] [--latency 0.2]
                                         [--memory-stories 1000] [--concurrency 16]

Uses its own database (storycreator_bench) and Redis database 10; starts and stops its workers.
Each story is its own family's (bench.bench_pipeline.insert_stories: one user per story), so the cap
on stories in flight per account (USER_STORIES_IN_FLIGHT) does not distort the throughput bound.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_pipeline import QUEUES, insert_stories, start_worker, stop, wait_stories


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants (the book's CPU processes), from /proc."""
    total, todo = 0, [pid]
    while todo:
        q = todo.pop()
        try:
            status = Path(f"/proc/{q}/status").read_text()
            total += int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS:")))
            for task in Path(f"/proc/{q}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            continue
    return total / 1024


def _run(engine: Any, storage: Path, client: Any, env: dict[str, str], logs: Path, n: int, workers: int,
         concurrency: int, name: str) -> float:
    procs = [start_worker("workers.app", QUEUES, concurrency, env, logs / f"{name}{i}.log") for i in range(workers)]
    try:
        ids = insert_stories(engine, storage, n)
        t0 = time.perf_counter()
        for sid in ids:
            client.send_task("stories.generate", kwargs={"story_id": sid})
        return wait_stories(engine, ids, 1800) - t0
    finally:
        for p in procs:
            stop(p)


def _step_costs(pages: int) -> dict[str, Any]:
    """SQL statements per step, each step run in-process against the bench database."""
    from sqlalchemy import event

    from db.engine import get_engine
    from pipeline.stories import steps

    counts: dict[str, list[int]] = {}
    current = [""]

    def count(*_: Any) -> None:
        counts.setdefault(current[0], []).append(1)

    import db.pages
    import db.usage

    # Statements sent on the psycopg2 cursor (db.engine.first_row: the page steps' and the usage
    # rows') do not pass SQLAlchemy's events: counted where they are sent.
    raw = {m: m.first_row for m in (db.pages, db.usage)}

    def counted(fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            count()
            return fn(*args, **kwargs)
        return wrapper

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count)
    for m, fn in raw.items():
        m.first_row = counted(fn)  # type: ignore[attr-defined]
    try:
        from sqlalchemy import text

        with engine.begin() as c:
            story = str(c.execute(text("SELECT id FROM stories WHERE status = 'pending' LIMIT 1")).scalar_one())
        current[0] = "stories.generate"
        page_ids = steps.generate_story(story).fanout
        for name, fn in (("pages.write_text", steps.write_text), ("pages.draw_base", steps.draw_base),
                         ("pages.personalize", steps.personalize)):
            current[0] = name
            for p in page_ids:
                fn(p)
        current[0] = "stories.finish"
        steps.finish_story(story)
    finally:
        event.remove(engine, "before_cursor_execute", count)
        for m, fn in raw.items():
            m.first_row = fn  # type: ignore[attr-defined]
    per_step = {"stories.generate": len(counts.get("stories.generate", [])),
                "stories.finish": len(counts.get("stories.finish", []))}
    for name in ("pages.write_text", "pages.draw_base", "pages.personalize"):
        per_step[name] = len(counts.get(name, [])) / max(1, len(page_ids))
    return per_step


def _message_sizes(redis_url: str, client: Any) -> dict[str, int]:
    """Bytes of each task's message as it sits in Redis (kombu's JSON envelope included)."""
    import uuid

    import redis

    r = redis.Redis.from_url(redis_url)
    sizes = {}
    for name, kwargs, queue in (("stories.generate", {"story_id": str(uuid.uuid4())}, "stories"),
                                ("photos.analyze", {"photo_id": str(uuid.uuid4())}, "photos"),
                                ("pages.write_text", {"page_id": str(uuid.uuid4())}, "text"),
                                ("pages.personalize", {"page_id": str(uuid.uuid4()), "tries": 3}, "personalize")):
        r.delete(queue)
        client.send_task(name, kwargs=kwargs, queue=queue)
        sizes[name] = len(r.lindex(queue, 0) or b"")
        r.delete(queue)
    return sizes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stories", type=int, default=100)
    ap.add_argument("--pages", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.2, help="simulated seconds per provider call")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--memory-stories", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
    db_url = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/storycreator_bench")
    storage = Path(tempfile.mkdtemp(prefix="storycreator-bench-"))
    env = {**os.environ, "DATABASE_URL": db_url, "CELERY_BROKER_URL": redis_url, "REDIS_URL": redis_url,
           "LOCAL_STORAGE_ROOT": str(storage), "STORY_PAGE_COUNT": str(args.pages),
           "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
           "VISION_PROVIDER": "instant", "TEXT_PROVIDER": "instant", "IMAGE_PROVIDER": "instant"}
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "LOCAL_STORAGE_ROOT",
                                           "STORY_PAGE_COUNT", "VISION_PROVIDER", "TEXT_PROVIDER",
                                           "IMAGE_PROVIDER")})
    import redis
    from celery import Celery

    from db.engine import ensure_database, make_engine

    redis.Redis.from_url(redis_url).flushdb()
    ensure_database(db_url)
    engine = make_engine(db_url)
    client = Celery("bench-client", broker=redis_url)
    logs = Path(tempfile.mkdtemp(prefix="storycreator-bench-logs-"))
    out: dict[str, Any] = {}

    # 3. throughput vs the threads' bound, one worker, then two
    slow = {**env, "SIMULATED_PROVIDER_LATENCY": str(args.latency)}
    calls = 2 + 3 * args.pages  # analysis + outline + (text, image, personalization) per page
    bound = args.concurrency / (calls * args.latency)  # stories/s if every thread always waits on a call
    one = _run(engine, storage, client, slow, logs, args.stories, 1, args.concurrency, "one")
    two = _run(engine, storage, client, slow, logs, args.stories, 2, args.concurrency, "two")
    out["throughput"] = {"stories": args.stories, "pages": args.pages, "latency_s": args.latency,
                         "bound_stories_per_s": round(bound, 2),
                         "one_worker_stories_per_s": round(args.stories / one, 2),
                         "ratio_vs_bound": round(args.stories / one / bound, 3),
                         "two_workers_stories_per_s": round(args.stories / two, 2),
                         "two_vs_one": round(one / two, 3)}

    # 4. cost per step
    insert_stories(engine, storage, 1)
    out["sql_statements_per_step"] = _step_costs(args.pages)
    out["message_bytes"] = _message_sizes(redis_url, client)

    # 5. memory over many stories (instant providers: as many steps per second as possible)
    proc = start_worker("workers.app", QUEUES, args.concurrency, env, logs / "memory.log")
    try:
        first = min(50, args.memory_stories)
        ids = insert_stories(engine, storage, first)
        for sid in ids:
            client.send_task("stories.generate", kwargs={"story_id": sid})
        wait_stories(engine, ids, 600)
        rss_start = _rss_mb(proc.pid)
        rest = args.memory_stories - first
        for lo in range(0, rest, 100):
            batch = insert_stories(engine, storage, min(100, rest - lo))
            for sid in batch:
                client.send_task("stories.generate", kwargs={"story_id": sid})
            wait_stories(engine, batch, 1800)
        rss_end = _rss_mb(proc.pid)
    finally:
        stop(proc)
    out["memory"] = {"stories": args.memory_stories, "rss_mb_after_first_50": round(rss_start, 1),
                     "rss_mb_at_end": round(rss_end, 1), "growth": round(rss_end / rss_start, 3)}
    engine.dispose()

    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    t, c, m = out["throughput"], out["sql_statements_per_step"], out["memory"]
    print(f"throughput: {t['stories']} stories x {t['pages']} pages, {t['latency_s']}s per provider call, "
          f"{args.concurrency} threads: {t['one_worker_stories_per_s']} stories/s vs bound "
          f"{t['bound_stories_per_s']} -> ratio {t['ratio_vs_bound']}x (target >= 0.8x)")
    print(f"two worker processes vs one: {t['two_workers_stories_per_s']} vs {t['one_worker_stories_per_s']} "
          f"stories/s -> {t['two_vs_one']}x")
    print("SQL statements per step: " + ", ".join(f"{k} {v:g}" for k, v in c.items()) + " (target <= 3)")
    print("message bytes: " + ", ".join(f"{k} {v}" for k, v in out["message_bytes"].items()) + " (target < 2048)")
    print(f"memory: worker RSS {m['rss_mb_after_first_50']} MB after 50 stories, {m['rss_mb_at_end']} MB after "
          f"{m['stories']} -> {m['growth']}x")
    print(f"(logs in {logs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
