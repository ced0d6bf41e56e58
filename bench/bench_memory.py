"""Memory over many stories (issue 16, bench/bench_orchestration.py ``--only 4``): one worker as the
Procfile starts it (threads pool, ``--concurrency``), ``instant`` providers, 12-page stories, sent in
batches; after each batch has completed, the resident memory (``VmRSS``, /proc) of the worker's
main process and of its spawned CPU processes (pipeline/kernel/cpu.py: they build the PDFs),
measured separately, plus the main process's glibc heap (in use vs kept free) and its objects.

The verdict compares the growth over the last half of the run (checkpoint N/2 -> N) with the RSS at
the first checkpoint (after 50 stories, once every thread and connection has warmed up): ``flat``
when it is at most 2 % of it either way, ``falls`` when it shrinks by more, ``levels off`` when it
is at most a quarter of the first half's growth, else ``grows`` (MB per 1,000 stories over the
last half). A process that only levels off later needs a longer run (``--memory-stories``). At
the end the worker and its CPU processes call glibc's ``malloc_trim(0)`` and their RSS is read
again: what that gives back was free memory the allocator kept (with 32 threads glibc makes up to
8 arenas per core), not live data.

``BENCH_TRACEMALLOC=<frames>`` (environment) runs the worker with tracemalloc on from its ready
signal and prints the source lines whose allocations grew most (bench/mem_probe_app.py): slower,
for finding what grows, not for the RSS numbers. ``--malloc-arena-max N`` sets glibc's
``MALLOC_ARENA_MAX`` for the worker (default: unset, as shipped).

    .venv/bin/python -m bench.bench_orchestration --only 4 [--memory-stories 2000]
        [--memory-checkpoints 50,250,500,1000,1500,2000] [--malloc-arena-max N] [--books 10]
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.bench_pipeline import insert_stories, start_worker, stop, wait_stories


def checkpoints(total: int, given: str | None = None) -> list[int]:
    """The story counts at which memory is read: ``given`` (comma-separated) or 50, then an eighth,
    a quarter, half, three quarters and all of ``total``; always ending at ``total``."""
    pts = [int(x) for x in given.split(",") if x] if given else [50, total // 8, total // 4, total // 2,
                                                                   3 * total // 4, total]
    return sorted({p for p in pts if 0 < p <= total} | {total})


def processes(pid: int) -> dict[str, list[int]]:
    """The worker's processes by role: ``main`` (the Celery worker: its threads run the tasks) and
    ``cpu`` (children spawned by multiprocessing; its resource tracker is left out), from /proc."""
    roles: dict[str, list[int]] = {"main": [pid], "cpu": []}
    todo = [pid]
    while todo:
        q = todo.pop()
        try:
            kids = [int(c) for t in Path(f"/proc/{q}/task").iterdir() for c in (t / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for k in kids:
            try:
                cmd = Path(f"/proc/{k}/cmdline").read_bytes()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if b"resource_tracker" not in cmd:
                roles["cpu"].append(k)
            todo.append(k)
    return roles


def rss_mb(pid: int) -> float:
    """VmRSS of one process, MB (0 when it is gone)."""
    try:
        line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("VmRSS:"))
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return 0.0
    return int(line.split()[1]) / 1024


def verdict(points: list[int], mb: list[float]) -> str:
    """Growth over the last half vs the first checkpoint's RSS and the first half's growth (see the
    module docstring)."""
    n = points[-1]
    mid = min(range(len(points)), key=lambda i: abs(points[i] - n / 2))
    first_half, last_half = mb[mid] - mb[0], mb[-1] - mb[mid]
    per_k = last_half * 1000 / max(1, n - points[mid])
    head = (f"{mb[0]:.1f} MB at {points[0]} -> {mb[mid]:.1f} at {points[mid]} -> {mb[-1]:.1f} at {n}: last half "
            f"{last_half:+.1f} MB ({100 * last_half / mb[0]:+.1f} % of the first, {per_k:+.1f} MB per 1,000 stories)")
    if abs(last_half) <= 0.02 * mb[0]:
        return head + " -> flat"
    if last_half < 0:
        return head + " -> falls"
    if last_half <= 0.25 * max(0.0, first_half):
        return head + f" -> levels off (first half {first_half:+.1f} MB)"
    return head + f" -> grows (first half {first_half:+.1f} MB)"


def memory(b: Any) -> None:
    """Measure 4 (memory): see the module docstring. ``b`` is bench_orchestration's Bench."""
    from celery import Celery

    a = b.args
    points = checkpoints(a.memory_stories, a.memory_checkpoints)
    env = {**b.env, "STORY_PAGE_COUNT": "12"}
    if a.malloc_arena_max:
        env["MALLOC_ARENA_MAX"] = str(a.malloc_arena_max)
    w = start_worker("bench.mem_probe_app", None, a.concurrency, env, b.logs / "memory.log")
    control = Celery("bench-mem-control", broker=b.redis_url)
    rows: list[dict[str, Any]] = []
    try:
        done, t0 = 0, time.perf_counter()
        for p in points:
            ids = insert_stories(b.engine, b.storage, p - done)
            for sid in ids:
                b.client.send_task("stories.generate", kwargs={"story_id": sid})
            wait_stories(b.engine, ids, 3600)
            done = p
            roles = processes(w.pid)
            row: dict[str, Any] = {"n": p, "s": time.perf_counter() - t0, "main": rss_mb(w.pid),
                   "cpu": [rss_mb(q) for q in roles["cpu"]]}
            replies = control.control.broadcast("bench_mem_probe", arguments={"top": 12}, reply=True,
                                                 limit=1, timeout=120)
            row["probe"] = next(iter(replies[0].values())) if replies else {}
            rows.append(row)
            m = row["probe"].get("malloc", {})
            print(f"   after {p:5d} stories ({row['s']:.0f} s): main {row['main']:.1f} MB, CPU processes "
                  + " + ".join(f"{x:.1f}" for x in row["cpu"]) + " MB; heap in use "
                  f"{m.get('in_use', 0):.1f} MB, kept free {m.get('free', 0):.1f} MB, mmap {m.get('mmap', 0):.1f} MB;"
                  f" {row['probe'].get('objects', 0)} gc objects since boot, {row['probe'].get('blocks', 0)} Python"
                  " blocks", flush=True)
        # What the allocator keeps but could give back: RSS after glibc's malloc_trim(0).
        control.control.broadcast("bench_mem_probe", arguments={"trim": 1}, reply=True, limit=1, timeout=120)
        trimmed = [rss_mb(w.pid), sum(rss_mb(q) for q in processes(w.pid)["cpu"])]
    finally:
        stop(w)
    _report(a, points, rows, trimmed)


def _report(a: Any, points: list[int], rows: list[dict[str, Any]], trimmed: list[float]) -> None:
    first, last = rows[0]["probe"], rows[-1]["probe"]
    grew = {t: c - first.get("types", {}).get(t, 0) for t, c in last.get("types", {}).items()}
    print("   gc objects by type, most at the end (growth since the first checkpoint): "
          + ", ".join(f"{t} {last['types'][t]} ({d:+d})" for t, d in grew.items()))
    for where, size_kb, count in last.get("growth", []):
        print(f"   tracemalloc growth since the first checkpoint: {size_kb:+.1f} KB, {count:+d} blocks: {where}")
    arena = f"MALLOC_ARENA_MAX={a.malloc_arena_max}" if a.malloc_arena_max else "MALLOC_ARENA_MAX unset"
    print(f"4. memory, {points[-1]} stories x 12 pages, instant providers, {a.concurrency} threads, {arena}"
          f"{', tracemalloc on' if last.get('growth') is not None else ''}:")
    print("   worker main process: " + verdict(points, [r["main"] for r in rows]), flush=True)
    gave = trimmed[0] - rows[-1]["main"]
    print(f"   main process after malloc_trim(0) at the end: {trimmed[0]:.1f} MB ({gave:+.1f} MB: free memory"
          " glibc's arenas had kept)", flush=True)
    cpu = [sum(r["cpu"]) for r in rows]
    if all(cpu):
        print(f"   its {len(rows[-1]['cpu'])} CPU processes (sum): " + verdict(points, cpu), flush=True)
        print(f"   CPU processes after malloc_trim(0) at the end: {trimmed[1]:.1f} MB ({trimmed[1] - cpu[-1]:+.1f} MB)",
              flush=True)
    heap = [r["probe"].get("malloc", {}).get("in_use", 0) for r in rows]
    if all(heap):
        print("   main process heap in use (mallinfo2): " + verdict(points, heap), flush=True)
