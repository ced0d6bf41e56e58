"""Issue 4's scale promise: the queries behind status, retry and backfill (and issue 14's metrics
exporter) use indexes on a
database of 100,000 stories (production-shaped: most finished, some failed, running, stuck).

The plans are read with EXPLAIN ANALYZE from the statements the real commands send
(bench/bench_ops_queries.py, which also prints their times). 4 pages a story here to keep the
suite fast; the bench defaults to 12.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.support import ROOT


@pytest.mark.timeout(300)
def test_operator_queries_use_indexes_at_100k_stories() -> None:
    name = f"storycreator_scale_test_{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_ops_queries", "--stories", "100000", "--pages", "4",
         "--database", name, "--check", "--drop", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    commands = {s["command"] for s in report["statements"]}
    # every command ran its queries, and none read a big table from end to end
    assert {"status (summary)", "status <story>", "retry --since 1d --stage image --dry-run",
            "retry --theme --dry-run", "backfill --dry-run"} <= commands
    assert not [s for s in report["statements"] if s["seq_scans"]]
    # and backfill's stuck-work queries run on the partial indexes of unfinished rows
    backfill = [s for s in report["statements"] if s["command"] == "backfill --dry-run"]
    on_pages = [s for s in backfill if "story_pages p JOIN stories" in s["sql"]]
    assert len(on_pages) == 3 and all(any("_unfinished" in a for a in s["access"]) for s in on_pages), on_pages
    # and the exporter's scrape reads (issue 14) run on indexes only: the partial indexes of unfinished
    # stories and pages, the orders' status index, the dead deliveries' partial index
    gauges = [s for s in report["statements"] if s["command"] == "exporter gauges" and "set_config" not in s["sql"]]
    assert len(gauges) == 6 and not [s for s in gauges if any(a.startswith("Seq Scan") for a in s["access"])], gauges
    used = {a for s in gauges for a in s["access"]}
    assert {"Index Scan:orders(ix_orders_status)",
            "Index Only Scan:event_deliveries(ix_event_deliveries_dead)"} <= used, used
    assert all(any(f"ix_story_pages_{stage}_unfinished" in a for a in used)
               for stage in ("text", "image", "personalization")), used
