"""Provider slots kept busy (issue 16), measured side by side in one run against the simulated
remote-job image provider (IMAGE_PROVIDER=simulated: pipeline/providers/simulated_jobs.py):

- for each job time (``--job-times``, seconds) and cap on concurrent jobs (``--slots``), a batch
  of stories of ``--pages`` pages (2 jobs a page: the illustration, then the personalization):
  the provider's busy fraction, sum of the jobs' running time / (slots x the provider's wall time,
  first job created to last job ended), and stories/s (first submit to last story completed) vs
  the quota's bound, slots / (jobs per story x job time). Target: busy >= 0.95 at each point.
- one 12-page story with 16 slots vs its critical path with remote jobs (2 jobs in a row: every
 page's illustration and personalization run at once under 16 slots, after its text).

Each point runs in two modes, back to back on fresh workers: ``after`` (shipped defaults: the
quota's FIFO line with hand-on at release, adaptive polling) and ``before`` (``QUOTA_WAKE=false
JOB_POLL_ADAPTIVE=false``: countdown retries of at most 10 s for a full cap, a look every
JOB_POLL_INTERVAL = 3 s). ``before`` runs a quarter of the stories (it is up to 10x slower), so its
ramp weighs more. Not restored by ``before``: the job input built only once a slot is held, the
slot freed when a look sees the job ended (not after the copy), status polls off the create limit.

The create rate limit is off (QUOTA_REPLICATE_RPS=0): 16 slots of 0.5 s jobs need 32 creates/s,
above Replicate's 600/min; the bench measures the concurrency bound. Text and vision are
``instant``; the worker is the Procfile's (threads pool, its default concurrency).

    .venv/bin/python -m bench.bench_quota [--quick] [--slots 1,4,16] [--job-times 0.5,5] [--pages 4]
                                          [--window 20] [--modes after,before] [--baseline DIR] [--json]

``--baseline DIR`` adds mode ``baseline``: the same point with the worker run from another checkout
(its code, this venv), shipped defaults, before this code's modes: side by side in one run.

Uses its own database (storycreator_bench_quota, or ``BENCH_DATABASE_URL``) and the Redis database
at ``BENCH_REDIS_URL`` (default redis://127.0.0.1:6379/10), flushed before each run; starts and
stops its workers.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TARGET = 0.95
MODES = {"after": {}, "before": {"QUOTA_WAKE": "false", "JOB_POLL_ADAPTIVE": "false"}, "baseline": {}}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module's docstring). ``--quick``: 2 pages, a 6 s window, job
    times 0.5 and 2 s."""
    ap = argparse.ArgumentParser(prog="bench.bench_quota", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (2 pages, 6 s windows, jobs of 0.5 and 2 s)")
    ap.add_argument("--slots", default="1,4,16", help="caps on concurrent jobs (comma separated)")
    ap.add_argument("--job-times", default=None, help="seconds per job (comma separated; default 0.5,5)")
    ap.add_argument("--pages", type=int, default=None, help="pages per story (default 4)")
    ap.add_argument("--window", type=float, default=None,
                    help="provider seconds of work per point at the bound (default 20): sets the stories")
    ap.add_argument("--modes", default="after,before", help="after (shipped), before (old behaviour)")
    ap.add_argument("--baseline", default=None,
                    help="another checkout (e.g. a git worktree of main at ../base): mode 'baseline' runs "
                         "its worker, shipped defaults")
    ap.add_argument("--no-story", action="store_true", help="skip the 12-page story")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    args.slots = [int(x) for x in args.slots.split(",")]
    args.job_times = [float(x) for x in (args.job_times or ("0.5,2" if args.quick else "0.5,5")).split(",")]
    args.pages = args.pages or (2 if args.quick else 4)
    args.window = args.window or (6.0 if args.quick else 20.0)
    args.modes = [m for m in args.modes.split(",") if m]
    if args.baseline and "baseline" not in args.modes:
        args.modes.insert(0, "baseline")
    for m in args.modes:
        if m == "baseline" and not args.baseline:
            ap.error("mode baseline needs --baseline DIR")
        if m not in MODES:
            ap.error(f"unknown mode {m!r}")
    return args


def stories_for(window: float, slots: int, jobs_per_story: int, job_s: float) -> int:
    """Stories that keep ``slots`` busy about ``window`` seconds at the bound (at least 1)."""
    return max(1, math.ceil(window * slots / (jobs_per_story * job_s)))


def busy_fraction(jobs: list[dict[str, float]], slots: int) -> tuple[float, float]:
    """(busy fraction, provider wall seconds) of the simulated jobs (``created``, ``seconds``):
    sum of running time / (slots x (last end - first create))."""
    if not jobs:
        raise ValueError("no jobs ran")
    start = min(j["created"] for j in jobs)
    end = max(j["created"] + j["seconds"] for j in jobs)
    return sum(j["seconds"] for j in jobs) / (slots * (end - start)), end - start


def steady_busy(jobs: list[dict[str, float]], slots: int) -> float | None:
    """Busy fraction while the line was full: from the creation of the ``slots``-th job (every slot
    taken once) to the creation of the last one (no job left waiting after), so the ramp and the
    tail (fewer jobs left than slots) are left out; None when that window is empty."""
    starts = sorted(j["created"] for j in jobs)
    if len(starts) <= slots:
        return None
    lo, hi = starts[slots - 1], starts[-1]
    if hi <= lo:
        return None
    ran = sum(max(0.0, min(hi, j["created"] + j["seconds"]) - max(lo, j["created"])) for j in jobs)
    return ran / (slots * (hi - lo))


def hand_on_gap(jobs: list[dict[str, float]]) -> float | None:
    """With one slot: the median seconds from a job's end to the next job's creation (the time a
    freed slot stays idle), else None."""
    seq = sorted(jobs, key=lambda j: j["created"])
    gaps = sorted(b["created"] - (a["created"] + a["seconds"]) for a, b in zip(seq, seq[1:], strict=False))
    return gaps[len(gaps) // 2] if gaps else None


def notice_lag(jobs: list[dict[str, float]]) -> float | None:
    """The median seconds from a job's end to the first look that saw it ended (its slot is freed
    then), or None when no look was recorded."""
    lags = sorted(j["seen"] - (j["created"] + j["seconds"]) for j in jobs if j.get("seen"))
    return lags[len(lags) // 2] if lags else None


def _point(mode: str, slots: int, job_s: float, n: int, pages: int, base: dict[str, str], engine: Any,
           storage: Path, logs: Path, baseline: str | None = None) -> dict[str, Any]:
    import redis

    from bench.bench_fairness import procfile_concurrency
    from bench.bench_pipeline import QUEUES, insert_stories, start_worker, stop, wait_stories
    from pipeline.providers.simulated_jobs import job_records

    r = redis.Redis.from_url(base["REDIS_URL"])
    r.flushdb()
    env = {**base, **MODES[mode], "QUOTA_REPLICATE_CONCURRENT": str(slots), "SIMULATED_JOB_SECONDS": str(job_s),
           "STORY_PAGE_COUNT": str(pages)}
    where = {"root": Path(baseline)} if mode == "baseline" and baseline else {}
    proc = start_worker("workers.app", QUEUES, procfile_concurrency(), env,
                        logs / f"{mode}-{slots}-{job_s}-{uuid.uuid4().hex[:4]}.log", **where)
    try:
        ids = insert_stories(engine, storage, n)
        client = _client(base["CELERY_BROKER_URL"])
        t0 = time.perf_counter()
        for sid in ids:
            client.send_task("stories.generate", kwargs={"story_id": sid})
        t1 = wait_stories(engine, ids, 1800)
        cpu = worker_cpu_seconds(proc.pid)
    finally:
        stop(proc)
    records = job_records(r)
    busy, provider_wall = busy_fraction(records, slots)
    gap = hand_on_gap(records) if slots == 1 else None
    steady = steady_busy(records, slots)
    lag = notice_lag(records)
    bound = slots / (2 * pages * job_s)
    return {"mode": mode, "slots": slots, "job_s": job_s, "stories": n, "busy": busy,
            "provider_wall_s": provider_wall, "stories_per_s": n / (t1 - t0), "bound_stories_per_s": bound,
            "throughput_vs_bound": n / (t1 - t0) / bound, "wall_s": t1 - t0,
            "hand_on_gap_ms": None if gap is None else gap * 1000, "steady_busy": steady,
            "notice_lag_ms": None if lag is None else lag * 1000, "worker_cpu_s": cpu,
            "worker_cpu_ms_per_job": None if cpu is None else cpu * 1000 / max(1, len(records))}


def worker_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) the worker process ``pid`` has used so far, from /proc (Linux;
    None elsewhere): with its start-up, every step of the stories and its idle loop, so per job it
    is an upper bound on what a job costs the process (one process runs at most one core of Python
    at a time: its GIL)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _client(url: str) -> Any:
    from celery import Celery

    c = Celery("bench-quota", broker=url)
    c.config_from_object("celeryconfig")
    return c


def _one_story(mode: str, job_s: float, base: dict[str, str], engine: Any, storage: Path,
               logs: Path) -> dict[str, Any]:
    """One 12-page story, 16 slots: latency vs its critical path (2 jobs in a row)."""
    res = _point(mode, 16, job_s, 1, 12, base, engine, storage, logs)
    return {"mode": mode, "job_s": job_s, "latency_s": res["wall_s"], "critical_s": 2 * job_s,
            "vs_critical": res["wall_s"] / (2 * job_s)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every point in every mode (modes back to back per point), then the 12-page story."""
    t_start, load0 = time.perf_counter(), os.getloadavg()
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
    db_url = os.environ.get("BENCH_DATABASE_URL",
                            "postgresql+psycopg2://postgres@127.0.0.1:5432/storycreator_bench_quota")
    storage = Path(tempfile.mkdtemp(prefix="storycreator-bench-"))
    base = {**os.environ, "DATABASE_URL": db_url, "CELERY_BROKER_URL": redis_url, "REDIS_URL": redis_url,
            "LOCAL_STORAGE_ROOT": str(storage), "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            "VISION_PROVIDER": "instant", "TEXT_PROVIDER": "instant", "IMAGE_PROVIDER": "simulated",
            "SIMULATED_JOB_IMAGES": "instant", "QUOTA_REPLICATE_RPS": "0", "USER_STORIES_IN_FLIGHT": "0"}
    for k in ("WORKER_CONCURRENCY", "SIMULATED_PROVIDER_LATENCY", "QUOTA_WAKE", "JOB_POLL_ADAPTIVE",
              "JOB_POLL_INTERVAL"):
        base.pop(k, None)
    os.environ.update({k: base[k] for k in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "LOCAL_STORAGE_ROOT")})
    from db.engine import ensure_database, make_engine

    ensure_database(db_url)
    engine = make_engine(db_url)
    logs = Path(tempfile.mkdtemp(prefix="storycreator-bench-logs-"))
    points, stories = [], []
    try:
        for job_s in args.job_times:
            for slots in args.slots:
                n = stories_for(args.window, slots, 2 * args.pages, job_s)
                for mode in args.modes:
                    k = max(1, math.ceil(n / 4)) if mode == "before" else n
                    p = _point(mode, slots, job_s, k, args.pages, base, engine, storage, logs, args.baseline)
                    p["load_1min"] = os.getloadavg()[0]
                    points.append(p)
                    print(_line(p), file=sys.stderr, flush=True)
        story_job = 2.0 if args.quick else 5.0
        for mode in [] if args.no_story else args.modes:
            stories.append(_one_story(mode, story_job, base, engine, storage, logs))
            print(_story_line(stories[-1]), file=sys.stderr, flush=True)
    finally:
        engine.dispose()
    return {"settings": {"slots": args.slots, "job_times": args.job_times, "pages": args.pages,
                         "window_s": args.window, "modes": args.modes},
            "points": points, "story": stories, "cores": os.cpu_count(),
            "load": {"start": list(load0), "end": list(os.getloadavg())},
            "seconds": time.perf_counter() - t_start, "logs": str(logs)}


def _line(p: dict[str, Any]) -> str:
    met = "met" if p["busy"] >= TARGET else "MISSED"
    return (f"{p['mode']:>6}: {p['slots']:>2} slots x {p['job_s']:>4}s jobs, {p['stories']:>3} stories: busy "
            f"{p['busy']:.3f} ({met} >= {TARGET}; steady {_f(p.get('steady_busy'))}), "
            f"{p['stories_per_s']:.3f} stories/s = "
            f"{p['throughput_vs_bound']:.3f}x the bound {p['bound_stories_per_s']:.3f} "
            f"(provider {p['provider_wall_s']:.1f}s, wall {p['wall_s']:.1f}s, load {p.get('load_1min', 0):.1f}"
            + (f", median end seen after {p['notice_lag_ms']:.0f} ms" if p.get("notice_lag_ms") is not None else "")
            + (f", median hand-on gap {p['hand_on_gap_ms']:.0f} ms" if p.get("hand_on_gap_ms") is not None else "")
            + (f", worker CPU {p['worker_cpu_s']:.1f}s = {p['worker_cpu_ms_per_job']:.0f} ms/job"
               if p.get("worker_cpu_s") is not None else "")
            + ")")


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _story_line(s: dict[str, Any]) -> str:
    return (f"{s['mode']:>6}: one 12-page story, 16 slots, {s['job_s']}s jobs: {s['latency_s']:.2f}s vs critical "
            f"path {s['critical_s']:.1f}s = {s['vs_critical']:.2f}x")


def format_report(result: dict[str, Any]) -> str:
    """The text report: every point, then after/before ratios side by side."""
    s = result["settings"]
    lines = [f"provider slots: stories of {s['pages']} pages (2 jobs a page), ~{s['window_s']}s of provider work "
             f"per point at the bound; modes {', '.join(s['modes'])}"]
    lines += [_line(p) for p in result["points"]]
    by = {(p["mode"], p["slots"], p["job_s"]): p for p in result["points"]}
    for (mode, slots, job_s), p in by.items():
        for other in ("before", "baseline"):
            old = by.get((other, slots, job_s))
            if mode == "after" and old is not None:
                lines.append(f"after/{other} {slots:>2} slots x {job_s}s: busy {p['busy']:.3f} vs {old['busy']:.3f} "
                             f"({p['busy'] / old['busy']:.2f}x), throughput vs bound {p['throughput_vs_bound']:.3f} "
                             f"vs {old['throughput_vs_bound']:.3f}")
    lines += [_story_line(x) for x in result["story"]]
    load = result["load"]
    lines.append(f"machine load (1 min, {result['cores']} cores): start {load['start'][0]:.2f}, end "
                 f"{load['end'][0]:.2f}; took {result['seconds']:.0f}s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
