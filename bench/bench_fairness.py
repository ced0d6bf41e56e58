"""Fair turns between families (issue 14, section 1), measured side by side in one run:

- B's latency: one parent's single story (account B) submitted right after another account (A)
  queued a batch of 40, vs the same story alone. Target: fair/alone <= 1.5x.
- throughput: the batch's and B's stories per second, from the first submit to the last story
  completed, fair vs unfair. Target: fair/unfair >= 0.95x.

Three modes, interleaved in each repeat (alone, unfair, fair, alone, ...) so the machine's noise
hits them alike, each on a fresh worker process started as the Procfile's worker line starts it
(threads pool, its default concurrency) with ``instant`` providers and
``SIMULATED_PROVIDER_LATENCY`` per provider call:

- alone: only B's story, shipped defaults;
- unfair: ``USER_STORIES_IN_FLIGHT=0 FAIR_PRIORITY=false`` (no cap, first come first served);
- fair: the shipped defaults (``--cap N``: ``USER_STORIES_IN_FLIGHT=N``).

Stories are submitted as the external API submits them (pipeline.operations.submit.submit_story:
photo stored, user/photo/story rows inserted, ``stories.generate`` published by name), each
account by its own email. The headline ratios are medians of the per-repeat ratios (each repeat's
modes ran back to back); each repeat's ratios are printed too, with the machine's load.

    .venv/bin/python -m bench.bench_fairness [--batch 40] [--pages 12] [--latency 0.5] [--repeats 3]
                                             [--cap N] [--json]

Uses its own database (storycreator_bench_fairness, or ``BENCH_DATABASE_URL``) and the Redis
database at ``BENCH_REDIS_URL`` (default redis://127.0.0.1:6379/10), which it flushes between
modes; starts and stops its workers.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODES = ("alone", "unfair", "fair")
FAIRNESS_ENV = ("USER_STORIES_IN_FLIGHT", "FAIR_PRIORITY")
UNFAIR_ENV = {"USER_STORIES_IN_FLIGHT": "0", "FAIR_PRIORITY": "false"}
LATENCY_TARGET = 1.5  # fair/alone B latency, at most
THROUGHPUT_TARGET = 0.95  # fair/unfair throughput, at least


# --- the pure parts: arguments, settings per mode, ratios, the report ------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module's docstring). Raises SystemExit (argparse) on bad values:
    ``--batch``/``--pages``/``--repeats`` at least 1, ``--latency`` > 0 seconds, ``--cap`` >= 0."""
    def at_least(lo: int) -> Any:
        def parse(s: str) -> int:
            v = int(s)
            if v < lo:
                raise argparse.ArgumentTypeError(f"must be at least {lo}")
            return v
        return parse

    def positive(s: str) -> float:
        v = float(s)
        if not v > 0:
            raise argparse.ArgumentTypeError("must be > 0")
        return v

    ap = argparse.ArgumentParser(prog="bench.bench_fairness", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--batch", type=at_least(1), default=40, help="stories account A queues first")
    ap.add_argument("--pages", type=at_least(1), default=12, help="pages per story (STORY_PAGE_COUNT)")
    ap.add_argument("--latency", type=positive, default=0.5, help="simulated seconds per provider call")
    ap.add_argument("--repeats", type=at_least(1), default=3, help="rounds of (alone, unfair, fair)")
    ap.add_argument("--cap", type=at_least(0), default=None,
                    help="USER_STORIES_IN_FLIGHT in the fair mode (default: the shipped default)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    return ap.parse_args(argv)


def procfile_concurrency(procfile: Path = ROOT / "Procfile") -> int:
    """Threads per worker as the Procfile's worker line starts it by default (the N of
    ``--concurrency ${WORKER_CONCURRENCY:-N}``, or a literal number). Raises ValueError when the
    worker line has none."""
    for line in procfile.read_text().splitlines():
        if line.startswith("worker:"):
            m = re.search(r"--concurrency\s+(?:\$\{WORKER_CONCURRENCY:-(\d+)\}|(\d+))", line)
            if m:
                return int(m.group(1) or m.group(2))
    raise ValueError(f"no worker line with --concurrency in {procfile}")


def mode_env(base: dict[str, str], mode: str, cap: int | None = None) -> dict[str, str]:
    """The worker's environment for ``mode`` (one of MODES): ``base`` without any fairness setting
    (shipped defaults), plus ``UNFAIR_ENV`` for "unfair", plus ``USER_STORIES_IN_FLIGHT=cap`` for
    "fair" when ``cap`` is given. Raises ValueError for another mode."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    env = {k: v for k, v in base.items() if k not in FAIRNESS_ENV}
    if mode == "unfair":
        env.update(UNFAIR_ENV)
    elif mode == "fair" and cap is not None:
        env["USER_STORIES_IN_FLIGHT"] = str(cap)
    return env


def ratio(num: float, den: float) -> float:
    """num / den; ValueError when den is not > 0 (a bench that measured nothing)."""
    if not den > 0:
        raise ValueError(f"ratio over {den}")
    return num / den


def summarize(repeats: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Ratios and medians over repeats. Each repeat: ``{"alone": {"latency_s"}, "unfair":
    {"latency_s", "throughput"}, "fair": {"latency_s", "throughput"}}`` (seconds; stories/s).

    Returns ``{"repeats": [{"fair_vs_alone_latency", "unfair_vs_alone_latency",
    "fair_vs_unfair_throughput"}, ...], "median": {"<mode>_latency_s", "<mode>_throughput",
    "fair_vs_alone_latency", "unfair_vs_alone_latency", "fair_vs_unfair_throughput"},
    "met": {"latency", "throughput"}}``: the headline ratios are medians of the per-repeat
    (paired) ratios, not ratios of medians. ValueError for no repeats or a zero denominator."""
    if not repeats:
        raise ValueError("no repeats")
    per = [{"fair_vs_alone_latency": ratio(r["fair"]["latency_s"], r["alone"]["latency_s"]),
            "unfair_vs_alone_latency": ratio(r["unfair"]["latency_s"], r["alone"]["latency_s"]),
            "fair_vs_unfair_throughput": ratio(r["fair"]["throughput"], r["unfair"]["throughput"])}
           for r in repeats]
    med: dict[str, float] = {f"{m}_latency_s": statistics.median(r[m]["latency_s"] for r in repeats) for m in MODES}
    for m in ("unfair", "fair"):
        med[f"{m}_throughput"] = statistics.median(r[m]["throughput"] for r in repeats)
    for k in per[0]:
        med[k] = statistics.median(p[k] for p in per)
    return {"repeats": per, "median": med,
            "met": {"latency": med["fair_vs_alone_latency"] <= LATENCY_TARGET,
                    "throughput": med["fair_vs_unfair_throughput"] >= THROUGHPUT_TARGET}}


def _load(values: Sequence[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def format_report(result: dict[str, Any]) -> str:
    """The text report of :func:`run`'s result (``settings``, ``runs``, ``summary``, ``load``)."""
    s, med = result["settings"], result["summary"]["median"]
    cap = "shipped default" if s["cap"] is None else s["cap"]
    lines = [
        f"fairness: account A queues {s['batch']} stories x {s['pages']} pages, then account B submits 1; "
        f"{s['latency_s']}s per provider call; 1 worker, threads pool, concurrency {s['concurrency']}; "
        f"{s['repeats']} repeats of (alone, unfair, fair)",
        f"unfair: USER_STORIES_IN_FLIGHT=0 FAIR_PRIORITY=false; fair: USER_STORIES_IN_FLIGHT={cap}, "
        "FAIR_PRIORITY shipped default",
    ]
    for i, (run, per) in enumerate(zip(result["runs"], result["summary"]["repeats"], strict=True), 1):
        lines.append(
            f"repeat {i}: B latency alone {run['alone']['latency_s']:.2f}s, unfair {run['unfair']['latency_s']:.2f}s, "
            f"fair {run['fair']['latency_s']:.2f}s; throughput unfair {run['unfair']['throughput']:.3f}, "
            f"fair {run['fair']['throughput']:.3f} stories/s -> fair/alone latency "
            f"{per['fair_vs_alone_latency']:.2f}x, fair/unfair throughput {per['fair_vs_unfair_throughput']:.3f}x; "
            f"A's stories in flight at most: unfair {run['unfair']['a_in_flight_max']}, "
            f"fair {run['fair']['a_in_flight_max']} (load {run['load_1min']:.2f})")

    def each(key: str, fmt: str) -> str:
        return ", ".join(format(p[key], fmt) for p in result["summary"]["repeats"])

    met = result["summary"]["met"]
    lines += [
        f"B's latency (median): alone {med['alone_latency_s']:.2f}s, unfair {med['unfair_latency_s']:.2f}s, "
        f"fair {med['fair_latency_s']:.2f}s -> fair/alone {med['fair_vs_alone_latency']:.2f}x "
        f"(target <= {LATENCY_TARGET}x: {'met' if met['latency'] else 'MISSED'}; per repeat "
        f"{each('fair_vs_alone_latency', '.2f')}); unfair/alone {med['unfair_vs_alone_latency']:.2f}x",
        f"throughput (median): unfair {med['unfair_throughput']:.3f}, fair {med['fair_throughput']:.3f} stories/s "
        f"-> fair/unfair {med['fair_vs_unfair_throughput']:.3f}x (target >= {THROUGHPUT_TARGET}x: "
        f"{'met' if met['throughput'] else 'MISSED'}; per repeat {each('fair_vs_unfair_throughput', '.3f')})",
        f"machine load (1/5/15 min, {result['cores']} cores): start {_load(result['load']['start'])}, "
        f"end {_load(result['load']['end'])}; took {result['seconds']:.0f}s",
    ]
    return "\n".join(lines)


# --- the harness -----------------------------------------------------------------------------------

def completion_times(engine: Any, ids: list[str], timeout: float, poll: float = 0.02,
                     watch: Sequence[str] = ()) -> tuple[dict[str, float], int]:
    """Polls the stories until all are completed. Returns (story id -> ``time.perf_counter()``
    when it was first seen completed, at most ``poll`` seconds late; the most stories of ``watch``
    seen ``processing`` at once: one account's stories in flight). Raises SystemExit when one
    fails or they are not all done within ``timeout`` seconds."""
    from sqlalchemy import text

    done: dict[str, float] = {}
    watched, peak = set(watch), 0
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        with engine.connect() as c:
            rows = c.execute(text("SELECT id::text, status FROM stories WHERE id = ANY(CAST(:ids AS uuid[])) "
                                  "AND status IN ('processing', 'completed', 'failed')"),
                             {"ids": [i for i in ids if i not in done]}).all()
        now = time.perf_counter()
        peak = max(peak, sum(1 for sid, status in rows if status == "processing" and sid in watched))
        for sid, status in rows:
            if status == "failed":
                raise SystemExit(f"story {sid} failed during the bench")
            if status == "completed":
                done[sid] = now
        if len(done) == len(ids):
            return done, peak
        time.sleep(poll)
    raise SystemExit(f"{len(ids) - len(done)} of {len(ids)} stories not done after {timeout}s")


def _run_mode(mode: str, batch: int, env: dict[str, str], concurrency: int, engine: Any, photo: bytes,
              logs: Path, tag: str) -> dict[str, float]:
    """One mode on a fresh worker: A's batch (unless alone), then B's story. Returns B's
    ``latency_s`` and, with a batch, ``throughput`` (stories/s), ``seconds`` (first submit to
    last completion) and ``a_in_flight_max`` (the most of A's stories seen processing at once:
    the cap at work, or not)."""
    import redis

    from bench.bench_pipeline import QUEUES, start_worker, stop
    from pipeline.operations.submit import submit_story

    def submit(email: str) -> str:
        return submit_story(photo, "image/png", "a.png", "Mia", 6, "space_adventure", email=email)

    redis.Redis.from_url(env["CELERY_BROKER_URL"]).flushdb()  # no message or slot left from the last mode
    proc = start_worker("workers.app", QUEUES, concurrency, env, logs / f"{tag}.log")
    try:
        t_first = time.perf_counter()
        ids = [submit(f"bench-{tag}-a@example.com") for _ in range(0 if mode == "alone" else batch)]
        t_b = time.perf_counter()
        b = submit(f"bench-{tag}-b@example.com")
        done, in_flight = completion_times(engine, [*ids, b], 900, watch=ids)
    finally:
        stop(proc)
    out = {"latency_s": done[b] - t_b}
    if ids:
        out["seconds"] = max(done.values()) - t_first
        out["throughput"] = (len(ids) + 1) / out["seconds"]
        out["a_in_flight_max"] = in_flight
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole bench (see the module's docstring): settings, per-repeat runs, summary, load."""
    start, load_start = time.perf_counter(), os.getloadavg()
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
    db_url = os.environ.get("BENCH_DATABASE_URL",
                            "postgresql+psycopg2://postgres@127.0.0.1:5432/storycreator_bench_fairness")
    storage = Path(tempfile.mkdtemp(prefix="storycreator-bench-"))
    base = {**os.environ, "DATABASE_URL": db_url, "CELERY_BROKER_URL": redis_url, "REDIS_URL": redis_url,
            "LOCAL_STORAGE_ROOT": str(storage), "STORY_PAGE_COUNT": str(args.pages),
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"), "VISION_PROVIDER": "instant",
            "TEXT_PROVIDER": "instant", "IMAGE_PROVIDER": "instant",
            "SIMULATED_PROVIDER_LATENCY": str(args.latency)}
    base.pop("WORKER_CONCURRENCY", None)
    # This process submits (pipeline.config reads these once): before any pipeline import.
    os.environ.update({k: base[k] for k in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "LOCAL_STORAGE_ROOT",
                                            "STORY_PAGE_COUNT")})
    from bench.bench_pipeline import photo_bytes
    from db.engine import ensure_database, make_engine

    ensure_database(db_url)
    engine = make_engine(db_url)
    photo, concurrency = photo_bytes(), procfile_concurrency()
    logs = Path(tempfile.mkdtemp(prefix="storycreator-bench-logs-"))
    run_id = uuid.uuid4().hex[:6]
    runs = []
    try:
        for r in range(args.repeats):
            one: dict[str, Any] = {"load_1min": os.getloadavg()[0]}
            for mode in MODES:
                one[mode] = _run_mode(mode, args.batch, mode_env(base, mode, args.cap), concurrency, engine, photo,
                                      logs, f"{run_id}-{r + 1}-{mode}")
            runs.append(one)
    finally:
        engine.dispose()
    return {"settings": {"batch": args.batch, "pages": args.pages, "latency_s": args.latency,
                         "repeats": args.repeats, "cap": args.cap, "concurrency": concurrency},
            "runs": runs, "summary": summarize(runs), "cores": os.cpu_count(),
            "load": {"start": list(load_start), "end": list(os.getloadavg())},
            "seconds": time.perf_counter() - start, "logs": str(logs)}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
