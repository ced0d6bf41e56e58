"""Orchestration benchmarks (issue 16), measured side by side in one run (ratios, not absolute rates):

1. orchestration: pipeline steps/s with ``instant`` providers vs (a) bare Celery no-op tasks/s and
   (b) the same task graph made of no-op tasks (bench/noop_app.py: a start task, one Celery chain
   of three no-op links per page, a Redis counter as the pages' barrier, a finish task), same
   broker, worker settings and pool; each the median of ``--repeats`` interleaved runs.
   Targets >= 0.5x (a) and >= 0.8x (b). ``--baseline DIR`` also runs the pipeline from another
   checkout (e.g. a ``git worktree`` of main) in the same rounds: before/after from one run.
2. latency under load: p50/p95 story latency for 10/50/200 stories submitted at once, with a
   simulated latency per provider call, vs the bound the worker's threads set (the larger of the
   story's critical path and the load's makespan, threads x calls x latency). Target p95 <= 1.2x.
3. one 24-page story (the most a story has) with simulated latency vs its critical path (5 calls
   in a row), on a worker started with the shipped default concurrency. Target <= 1.10x.
4. cost per book: CPU-seconds and peak RSS of the worker (and its CPU processes) per 12-page
   book with the offline providers (``local``); then memory over ``--memory-stories`` stories: RSS of the
   worker's main process and of its CPU processes at several checkpoints and a verdict (bench/bench_memory.py).

    .venv/bin/python -m bench.bench_orchestration [--quick] [--baseline DIR] [--only 1,2,3,4]

``--quick``: small sizes for a check while developing (not the numbers to report). Its own database
(storycreator_bench) and BENCH_REDIS_URL (default Redis database 10); it starts and stops its workers.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_fairness import procfile_concurrency
from bench.bench_memory import memory
from bench.bench_pipeline import QUEUES, ROOT, insert_stories, start_worker, stop

# The shipped default (Procfile, ./run worker): WORKER_CONCURRENCY unset.
DEFAULT_CONCURRENCY = procfile_concurrency()


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        out.append(q)
        try:
            for task in Path(f"/proc/{q}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live descendants (the book's CPU processes), /proc."""
    total = 0
    for q in _tree(pid):
        try:
            f = Path(f"/proc/{q}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int, field: str = "VmRSS:") -> float:
    total = 0
    for q in _tree(pid):
        try:
            status = Path(f"/proc/{q}/status").read_text()
            total += int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith(field)))
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            continue
    return total / 1024


def _latencies(engine: Any, ids: list[str], t0: float, timeout: float) -> list[float]:
    """Seconds from ``t0`` until each story is seen completed (polled every 20 ms)."""
    from sqlalchemy import text

    done: dict[str, float] = {}
    while len(done) < len(ids):
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"stories not done after {timeout}s: {len(done)}/{len(ids)}")
        with engine.connect() as c:
            rows = c.execute(text("SELECT id::text, status FROM stories WHERE id = ANY(CAST(:ids AS uuid[])) "
                                  "AND status IN ('completed', 'failed')"), {"ids": ids}).all()
        now = time.perf_counter() - t0
        for sid, status in rows:
            if status == "failed":
                raise SystemExit(f"story {sid} failed during the bench")
            done.setdefault(sid, now)
        time.sleep(0.02)
    return [done[i] for i in ids]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        import redis
        from celery import Celery

        from db.engine import ensure_database, make_engine

        self.args = args
        self.redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
        db_url = os.environ.get("BENCH_DATABASE_URL",
                                "postgresql+psycopg2://postgres@127.0.0.1:5432/storycreator_bench")
        self.storage = Path(tempfile.mkdtemp(prefix="storycreator-bench-"))
        self.env = {
            **os.environ, "DATABASE_URL": db_url, "CELERY_BROKER_URL": self.redis_url, "REDIS_URL": self.redis_url,
            "BENCH_COUNTER_URL": self.redis_url, "LOCAL_STORAGE_ROOT": str(self.storage),
            "STORY_PAGE_COUNT": str(args.pages), "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            "VISION_PROVIDER": "instant", "TEXT_PROVIDER": "instant", "IMAGE_PROVIDER": "instant",
        }
        os.environ.update({k: self.env[k] for k in ("DATABASE_URL", "CELERY_BROKER_URL", "LOCAL_STORAGE_ROOT")})
        self.r = redis.Redis.from_url(self.redis_url)
        self.r.flushdb()
        ensure_database(db_url)
        self.engine = make_engine(db_url)
        self.client = Celery("bench-client", broker=self.redis_url)
        self.logs = Path(tempfile.mkdtemp(prefix="storycreator-bench-logs-"))

    cpu_ms = 0.0  # the last run's worker CPU (its process tree) per task, milliseconds

    def _wait_counter(self, key: str, n: int, timeout: float = 600) -> float:
        t0 = time.perf_counter()
        while int(self.r.get(key) or 0) < n:
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"{key}: {self.r.get(key)} of {n} after {timeout}s (logs in {self.logs})")
            time.sleep(0.005)
        return time.perf_counter()

    def bare(self, n_tasks: int) -> float:
        """Bare no-op tasks/s: ``n_tasks`` published, then drained by one worker."""
        w = start_worker("bench.noop_app", None, self.args.concurrency, self.env, self.logs / "noop.log")
        try:
            self.r.delete("bench:noop:done")
            cpu0, t0 = _cpu_seconds(w.pid), time.perf_counter()
            for _ in range(n_tasks):
                self.client.send_task("bench.noop", queue="bench-noop")
            rate = n_tasks / (self._wait_counter("bench:noop:done", n_tasks) - t0)
            self.cpu_ms = (_cpu_seconds(w.pid) - cpu0) * 1000 / n_tasks
            return rate
        finally:
            stop(w)

    def graph(self, stories: int, pages: int) -> float:
        """Tasks/s of the story-shaped graph of no-op tasks (bench/noop_app.py graph_start)."""
        w = start_worker("bench.noop_app", None, self.args.concurrency, self.env, self.logs / "graph.log")
        try:
            self.r.delete("bench:graph:done")
            cpu0, t0 = _cpu_seconds(w.pid), time.perf_counter()
            for i in range(stories):
                self.client.send_task("bench.graph_start", args=(f"s{i}-{t0}", pages), queue="bench-noop")
            rate = stories * (2 + 3 * pages) / (self._wait_counter("bench:graph:done", stories) - t0)
            self.cpu_ms = (_cpu_seconds(w.pid) - cpu0) * 1000 / (stories * (2 + 3 * pages))
            return rate
        finally:
            stop(w)

    def pipeline(self, stories: int, root: Path = ROOT, env: dict[str, str] | None = None,
                 concurrency: int | None = None, name: str = "pipeline",
                 processes: int = 1) -> tuple[float, list[float]]:
        """Steps/s of ``stories`` stories sent at once and each story's latency (seconds), on
        ``processes`` workers (each with ``concurrency`` threads) running ``root``'s code."""
        ws = [start_worker("workers.app", QUEUES, concurrency or self.args.concurrency, env or self.env,
                           self.logs / f"{name}-{i}.log", root=root) for i in range(processes)]
        try:
            ids = insert_stories(self.engine, self.storage, stories)
            cpu0, t0 = sum(_cpu_seconds(w.pid) for w in ws), time.perf_counter()
            for sid in ids:
                self.client.send_task("stories.generate", kwargs={"story_id": sid})
            lat = _latencies(self.engine, ids, t0, 1800)
            pages = int((env or self.env)["STORY_PAGE_COUNT"])
            cpu = sum(_cpu_seconds(w.pid) for w in ws) - cpu0
            self.cpu_ms = cpu * 1000 / (stories * (2 + 3 * pages))
            return stories * (2 + 3 * pages) / max(lat), lat
        finally:
            for w in ws:
                stop(w)


def orchestration(b: Bench) -> None:
    a = b.args
    n_tasks = a.stories * (2 + 3 * a.pages)
    bases = [x for x in (a.baseline or "").split(",") if x]
    runs: dict[str, list[float]] = {k: [] for k in ("bare", "graph", "pipeline", *bases)}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    spans: dict[str, list[tuple[float, float]]] = {}  # pipeline runs: (first, last) story completed, s
    for i in range(a.repeats):
        for k in runs:
            if k in ("bare", "graph"):
                rate = b.bare(n_tasks) if k == "bare" else b.graph(a.stories, a.pages)
            else:
                rate, lat = (b.pipeline(a.stories) if k == "pipeline"
                             else b.pipeline(a.stories, root=Path(k), name=f"baseline-{Path(k).name}"))
                spans.setdefault(k, []).append((min(lat), max(lat)))
            runs[k].append(rate)
            cpu[k].append(b.cpu_ms)
        print(f"  round {i + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s ({cpu[k][-1]:.2f} CPU-ms/task)"
                                               for k, v in runs.items() if v), flush=True)
        # The stories' page chains interleave, so they all reach their book at about the same time:
        # from the first story completed to the last, the run is the books' PDFs in the CPU processes.
        print("    stories completed (first..last): " + ", ".join(
            f"{k} {s[-1][0]:.2f}..{s[-1][1]:.2f} s" for k, s in spans.items()), flush=True)
    med = {k: statistics.median(v) for k, v in runs.items() if v}
    mcpu = {k: statistics.median(v) for k, v in cpu.items() if v}
    print("   worker CPU per task (median): " + ", ".join(f"{k} {v:.2f} ms" for k, v in mcpu.items()))
    print(f"1. orchestration ({a.stories} stories x {a.pages} pages = {n_tasks} tasks, median of {a.repeats}, "
          f"threads pool, concurrency {a.concurrency}): bare no-op {med['bare']:.0f} tasks/s, no-op story graph "
          f"{med['graph']:.0f} tasks/s, pipeline {med['pipeline']:.0f} steps/s -> {med['pipeline'] / med['bare']:.2f}x "
          f"of bare no-op (target >= 0.5x), {med['pipeline'] / med['graph']:.2f}x of the no-op graph "
          "(target >= 0.8x)")
    for k in bases:
        print(f"   baseline {k}: {med[k]:.0f} steps/s -> {med[k] / med['bare']:.2f}x of bare, "
              f"{med[k] / med['graph']:.2f}x of the graph; this code / baseline "
              f"{med['pipeline'] / med[k]:.2f}x in steps/s, {mcpu['pipeline'] / mcpu[k]:.2f}x in CPU per step")


def latency_under_load(b: Bench) -> None:
    a = b.args
    lat_env = {**b.env, "SIMULATED_PROVIDER_LATENCY": str(a.latency), "STORY_PAGE_COUNT": str(a.load_pages)}
    calls = 2 + 3 * a.load_pages  # analysis + outline + (text, image, personalization) per page
    # --processes N: the same threads in all, split over N worker processes (N event loops and GILs)
    per = max(1, a.concurrency // a.processes)
    for n in a.loads:
        _, lat = b.pipeline(n, env=lat_env, concurrency=per, name=f"load{n}", processes=a.processes)
        bound = max(5 * a.latency, n * calls * a.latency / (per * a.processes))
        lat.sort()
        p50, p95 = statistics.median(lat), lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        print(f"2. {n} stories x {a.load_pages} pages at once, {a.latency}s per call, "
              f"{a.processes} x {per} threads: "
              f"p50 {p50:.2f}s, p95 {p95:.2f}s vs bound {bound:.2f}s -> p95 {p95 / bound:.2f}x (target <= 1.2x)",
              flush=True)


def big_story(b: Bench) -> None:
    a = b.args
    env = {**b.env, "SIMULATED_PROVIDER_LATENCY": str(a.latency24), "STORY_PAGE_COUNT": "24"}
    for conc in dict.fromkeys((DEFAULT_CONCURRENCY, *a.concurrency24)):
        _, (lat,) = b.pipeline(1, env=env, concurrency=conc, name=f"story24-{conc}")
        crit = 5 * a.latency24
        print(f"3. one 24-page story, {a.latency24}s per call, concurrency {conc}"
              f"{' (shipped default)' if conc == DEFAULT_CONCURRENCY else ''}: {lat:.2f}s vs critical path "
              f"{crit:.2f}s -> {lat / crit:.3f}x (target <= 1.10x)", flush=True)


def book_cost(b: Bench) -> None:
    """Cost per book (skipped with ``--books 0``), then memory over many stories (bench/bench_memory.py)."""
    if b.args.books:
        _books(b)
    memory(b)


def _books(b: Bench) -> None:
    a = b.args
    env = {**b.env, "VISION_PROVIDER": "local", "TEXT_PROVIDER": "local", "IMAGE_PROVIDER": "local",
           "STORY_PAGE_COUNT": "12"}
    w = start_worker("workers.app", QUEUES, a.concurrency, env, b.logs / "books.log")
    try:
        cpu0 = _cpu_seconds(w.pid)
        ids = insert_stories(b.engine, b.storage, a.books)
        t0 = time.perf_counter()
        for sid in ids:
            b.client.send_task("stories.generate", kwargs={"story_id": sid})
        _latencies(b.engine, ids, t0, 1800)
        cpu, peak = _cpu_seconds(w.pid) - cpu0, _rss_mb(w.pid, "VmHWM:")
    finally:
        stop(w)
    print(f"4. {a.books} 12-page books, offline providers: {cpu / a.books:.2f} CPU-s per book (worker and its CPU "
          f"processes), peak RSS {peak:.0f} MB (sum over those processes)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a check, not the numbers to report")
    ap.add_argument("--only", default="1,2,3,4", help="which measures (1-4)")
    ap.add_argument("--baseline", default=None,
                    help="other checkouts (comma-separated) whose pipeline runs in the same rounds")
    ap.add_argument("--stories", type=int, default=20)
    ap.add_argument("--pages", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    ap.add_argument("--loads", default="10,50,200")
    ap.add_argument("--processes", type=int, default=1, help="worker processes sharing --concurrency's threads (2.)")
    ap.add_argument("--load-pages", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.2, help="simulated seconds per provider call (2.)")
    ap.add_argument("--latency24", type=float, default=2.0, help="simulated seconds per provider call (3.)")
    ap.add_argument("--concurrency24", default="", help="other concurrencies to try for 3. (comma-separated)")
    ap.add_argument("--books", type=int, default=10)
    ap.add_argument("--memory-stories", type=int, default=1000)
    ap.add_argument("--memory-checkpoints", default=None, help="story counts at which RSS is read (4.)")
    ap.add_argument("--malloc-arena-max", type=int, default=0, help="MALLOC_ARENA_MAX for the worker of 4.")
    args = ap.parse_args()
    if args.quick:
        args.stories, args.repeats, args.loads, args.books, args.memory_stories = 6, 1, "10,50", 3, 200
        args.latency, args.latency24 = 0.1, 0.5
    args.loads = [int(x) for x in str(args.loads).split(",") if x]
    args.concurrency24 = [int(x) for x in str(args.concurrency24).split(",") if x]
    b = Bench(args)
    steps = {"1": orchestration, "2": latency_under_load, "3": big_story, "4": book_cost}
    t0 = time.perf_counter()
    for k in args.only.split(","):
        steps[k.strip()](b)
    b.engine.dispose()
    print(f"(broker {b.redis_url}; logs in {b.logs}; {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
