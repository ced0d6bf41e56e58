"""How soon a remote job's end is learnt: polling alone vs Replicate's completion webhooks, side
by side in one run (README "Real providers", Replicate's completion webhooks).

One story at a time against the fake Replicate server (tests/fakes/replicate_server.py: each
prediction runs ``--run-seconds``), at most ``--slots`` predictions running at once
(QUOTA_REPLICATE_CONCURRENT), in two configurations, interleaved for ``--rounds`` rounds:

- ``poll``: JOB_POLL_INTERVAL=3 (the default without webhooks), no webhook;
- ``webhook``: REPLICATE_WEBHOOK_URL set (the fake delivers signed webhooks to a receiver that plays
  the external API, tests/external_webhook_receiver.py), JOB_POLL_INTERVAL at its webhook default (30 s).

Printed per configuration: the story's wall time (median), and the *end lag*: for each prediction,
the time from its end at the provider to our download of its output (the follow that sees the end
copies it, completes the step and frees the slot at once); mean and max. Both include the fake's
drawing of the output (it draws on first demand after the end, ~1 s here); for webhooks also the
worker's own part: from the delivery's 2xx to the download.

    .venv/bin/python -m bench.bench_job_webhooks [--pages 4] [--run-seconds 2] [--slots 2] [--rounds 2]

Uses its own database (storycreator_bench) and BENCH_REDIS_URL (default redis://127.0.0.1:6379/10).
"""
from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_pipeline import ROOT, insert_stories, start_worker, stop, wait_stories

TOKEN = "r8_bench_token_0123456789"
SECRET = "whsec_" + base64.b64encode(b"bench-replicate-signing-secret!!").decode()


def _lags(fake: Any, since: float) -> tuple[list[float], list[float]]:
    """Per prediction created after ``since`` (wall clock): seconds from its end to our download of
    its output (the follow that saw the end copies it at once). The fake draws an output when it is
    first asked for it after the end (a poll's GET, or the webhook's body), so both include that once.
    Also, for webhooks: seconds from the delivery's 2xx to that download (the worker's own part)."""
    out, after_hook = [], []
    for p in [p for p in fake.created if _wall(p["created_at"]) >= since]:
        end = _wall(p["created_at"]) + fake.run_seconds
        looks = [r["wall"] for r in fake.requests if r["method"] == "GET" and r["path"] == f"/files/{p['id']}.png"]
        if looks:
            out.append(min(looks) - end)
            sent = [d["wall"] for d in fake.webhooks.sent if d["prediction"] == p["id"]]
            if sent:
                after_hook.append(min(looks) - sent[0])
    return out, after_hook


def _wall(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=4)
    ap.add_argument("--run-seconds", type=float, default=2.0)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    from celery import Celery

    from db.engine import ensure_database, make_engine
    from tests.fakes.replicate_server import FakeReplicate
    from tests.fakes.replicate_webhooks import WebhookSender

    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
    db_url = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/storycreator_bench")
    storage = Path(tempfile.mkdtemp(prefix="storycreator-bench-"))
    logs = Path(tempfile.mkdtemp(prefix="storycreator-bench-logs-"))
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    ensure_database(db_url)
    engine = make_engine(db_url)
    client = Celery("bench-client", broker=redis_url)
    fake = FakeReplicate(TOKEN, run_seconds=args.run_seconds).start()
    fake.webhooks = WebhookSender(SECRET)
    port_file = logs / "receiver.port"
    plain = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    receiver = subprocess.Popen([sys.executable, str(ROOT / "tests" / "external_webhook_receiver.py"), redis_url,
                                 "images.replicate_webhook", str(port_file)], cwd="/", env=plain)
    while not (port_file.exists() and port_file.read_text()):
        time.sleep(0.05)
    base = {**os.environ, "DATABASE_URL": db_url, "CELERY_BROKER_URL": redis_url, "REDIS_URL": redis_url,
            "LOCAL_STORAGE_ROOT": str(storage), "STORY_PAGE_COUNT": str(args.pages), "LOG_LEVEL": "WARNING",
            "VISION_PROVIDER": "instant", "TEXT_PROVIDER": "instant", "IMAGE_PROVIDER": "replicate",
            "REPLICATE_API_TOKEN": TOKEN, "REPLICATE_BASE_URL": fake.base_url, "REPLICATE_TIMEOUT": "10",
            "QUOTA_REPLICATE_CONCURRENT": str(args.slots)}
    base.pop("JOB_POLL_INTERVAL", None)
    configs = {
        "poll": {**base, "JOB_POLL_INTERVAL": "3"},
        "webhook": {**base, "REPLICATE_WEBHOOK_URL": f"http://127.0.0.1:{port_file.read_text()}/hooks/replicate",
                    "REPLICATE_WEBHOOK_SIGNING_SECRET": SECRET},
    }
    walls: dict[str, list[float]] = {k: [] for k in configs}
    lags: dict[str, list[float]] = {k: [] for k in configs}
    after_hook: list[float] = []
    try:
        for _ in range(args.rounds):
            for name, env in configs.items():
                w = start_worker("workers.app", None, 8, env, logs / f"{name}.log")
                try:
                    (sid,) = insert_stories(engine, storage, 1)
                    since = time.time()
                    t0 = time.perf_counter()
                    client.send_task("stories.generate", kwargs={"story_id": sid})
                    walls[name].append(wait_stories(engine, [sid], 600) - t0)
                    lag, hook = _lags(fake, since)
                    lags[name].extend(lag)
                    after_hook.extend(hook)
                finally:
                    stop(w)
    finally:
        receiver.terminate()
        fake.webhooks.stop()
        fake.stop()
        engine.dispose()
    print(f"{args.pages} pages, predictions of {args.run_seconds} s, {args.slots} at once, {args.rounds} rounds")
    for name in configs:
        print(f"{name:8s} story {statistics.median(walls[name]):6.2f} s (median of {walls[name]}); end lag "
              f"mean {statistics.mean(lags[name]):.3f} s, max {max(lags[name]):.3f} s over {len(lags[name])} jobs")
    print(f"webhook: from the delivery's 2xx to the download, mean {statistics.mean(after_hook):.3f} s, "
          f"max {max(after_hook):.3f} s (the receiver's publish, the webhook task, the follow's claim and GET)")
    ratio = statistics.median(walls["webhook"]) / statistics.median(walls["poll"])
    lag_ratio = statistics.mean(lags["webhook"]) / statistics.mean(lags["poll"])
    print(f"webhook / poll: story time {ratio:.2f}x, mean end lag {lag_ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
