"""The operator commands' queries at scale: plans and times at 100,000 stories.

    .venv/bin/python -m bench.bench_ops_queries [--stories 100000] [--pages 12] [--check] [--drop]

Builds (once; kept for the next run unless --drop) a database of production shape
(bench/scale_data.py), runs the real commands (status, retry --dry-run with each filter,
backfill --dry-run, the sweep) with every SQL statement they send recorded, then EXPLAIN
ANALYZEs each statement with its own parameters and prints its time and access paths.
--check exits 1 when a statement reads a big table sequentially (tests/test_scale.py).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from typing import Any

BIG_TABLES = {"photos", "stories", "story_pages", "step_errors"}


def _walk(node: dict[str, Any], out: list[tuple[str, str | None, str | None]]) -> None:
    out.append((node["Node Type"], node.get("Relation Name"), node.get("Index Name")))
    for child in node.get("Plans", []):
        _walk(child, out)


def _exporter_reads(engine: Any) -> None:
    """The exporter's database reads, as one scrape sends them (its broker reads are not SQL)."""
    from pipeline.operations.gauges import BacklogCollector, Sources

    collector = BacklogCollector()
    collector.configure(Sources(lambda: engine, "redis://127.0.0.1:9/0", ()), 60)
    ups = [s.value for m in collector.collect() for s in m.samples
           if s.name == "storycreator_backlog_source_up" and s.labels["source"] == "database"]
    if ups != [1.0]:
        raise RuntimeError("the exporter could not read the database (see its warning above)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stories", type=int, default=100_000)
    ap.add_argument("--pages", type=int, default=12)
    ap.add_argument("--database", default=None, help="default: storycreator_scale_<stories>_<pages>")
    ap.add_argument("--check", action="store_true", help="exit 1 on a sequential scan of a big table")
    ap.add_argument("--drop", action="store_true", help="drop the database afterwards")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    base = os.environ.get("SCALE_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432")
    name = args.database or f"storycreator_scale_{args.stories}_{args.pages}"
    url = f"{base}/{name}"
    os.environ["DATABASE_URL"] = url  # before pipeline.config is read: the commands use this database

    from sqlalchemy import event, text

    from bench.scale_data import populate
    from db.engine import dispose_engine, ensure_database, get_engine, make_engine
    from db.url import database_url
    from pipeline.operations.cli import main as cli

    ensure_database(url)
    admin = make_engine(url)
    with admin.begin() as c:
        have = c.execute(text("SELECT count(*) FROM stories")).scalar_one()
    t_build = 0.0
    if have != args.stories:
        with admin.begin() as c:
            c.execute(text("TRUNCATE users, photos, stories, story_pages, step_errors, outbox_events CASCADE"))
        t0 = time.perf_counter()
        with admin.begin() as c:
            populate(c, args.stories, args.pages)
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM ANALYZE"))
        t_build = time.perf_counter() - t0
    with admin.begin() as c:
        failed = c.execute(text("SELECT id, protagonist_photo_id FROM stories WHERE status = 'failed' "
                                "ORDER BY id LIMIT 1")).first()
        failed_page = c.execute(text("SELECT id FROM story_pages WHERE story_id = :s LIMIT 1"),
                                {"s": failed[0]}).scalar_one()
        pages_total = c.execute(text("SELECT count(*) FROM story_pages")).scalar_one()

    recorded: list[tuple[str, str, Any]] = []
    current = ["?"]

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH", "UPDATE")):
            recorded.append((current[0], statement, parameters))

    event.listen(get_engine(), "before_cursor_execute", record)
    commands = [
        ("status (summary)", ["status"]),
        ("status <story>", ["status", str(failed[0])]),
        ("retry --story --dry-run", ["retry", "--story", str(failed[0]), "--dry-run"]),
        ("retry --page --dry-run", ["retry", "--page", str(failed_page), "--dry-run"]),
        ("retry --photo --dry-run", ["retry", "--photo", str(failed[1]), "--dry-run"]),
        ("retry --since 1d --stage image --dry-run", ["retry", "--since", "1d", "--stage", "image",
                                                      "--dry-run", "--limit", "50"]),
        ("retry --theme --dry-run", ["retry", "--theme", "pirate_treasure", "--dry-run", "--limit", "50"]),
        ("backfill --dry-run", ["backfill", "--dry-run", "--stale-after", "300", "--pending-after", "300",
                                "--batch-size", "500"]),
        ("exporter gauges", ["<exporter>"]),  # one scrape's database reads (pipeline/operations/gauges.py)
    ]
    wall: dict[str, float] = {}
    for label, argv_ in commands:
        current[0] = label
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if argv_ == ["<exporter>"]:
                _exporter_reads(get_engine())
            else:
                cli(argv_)
        wall[label] = (time.perf_counter() - t0) * 1000
    event.remove(get_engine(), "before_cursor_execute", record)

    rows = []
    seen: set[str] = set()
    bad = []
    raw = get_engine().raw_connection()
    try:
        cur = raw.cursor()
        for label, statement, params in recorded:
            if statement in seen:
                continue
            seen.add(statement)
            cur.execute("BEGIN")
            cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
            plan = cur.fetchone()[0][0]
            cur.execute("ROLLBACK")  # retry's UPDATEs are explained, never kept
            nodes: list[tuple[str, str | None, str | None]] = []
            _walk(plan["Plan"], nodes)
            access = sorted({f"{t}:{r or ''}" + (f"({i})" if i else "") for t, r, i in nodes if r or i})
            seq = sorted({r for t, r, _ in nodes if t == "Seq Scan" and r in BIG_TABLES})
            first = " ".join(statement.split())[:70]
            rows.append({"command": label, "sql": first, "ms": round(plan["Execution Time"], 2),
                         "access": access, "seq_scans": seq})
            if seq:
                bad.append(rows[-1])
    finally:
        raw.close()
        dispose_engine()

    if args.json:
        print(json.dumps({"stories": args.stories, "pages": pages_total, "build_s": round(t_build, 1),
                          "commands_ms": {k: round(v, 1) for k, v in wall.items()}, "statements": rows}, indent=2))
    else:
        print(f"{args.stories:,} stories, {pages_total:,} pages (built in {t_build:.1f} s)" if t_build
              else f"{args.stories:,} stories, {pages_total:,} pages (existing database {name})")
        print(f"\n{'command':<44} {'wall ms':>8}")
        for k, v in wall.items():
            print(f"{k:<44} {v:8.1f}")
        print(f"\n{'statement (EXPLAIN ANALYZE)':<72} {'ms':>8}  access")
        for r in rows:
            print(f"{r['sql']:<72} {r['ms']:8.2f}  {', '.join(r['access'])}")
    if args.drop:
        admin.dispose()
        u = database_url(url)
        root = make_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with root.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)'))
        root.dispose()
    if args.check and bad:
        print("\nsequential scans of big tables:", file=sys.stderr)
        for r in bad:
            print(f"  [{r['command']}] {r['sql']} -> {r['seq_scans']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
