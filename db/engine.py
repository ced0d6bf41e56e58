"""One engine per process, built lazily after fork and disposed at shutdown.

Steps take a connection per guarded statement (autocommit) or per short transaction, never one
held across a provider call (image models take up to a minute): a pool of a few connections
serves many concurrent steps.

A pool shared across fork() hands the same socket to two processes, so the engine is keyed by
pid: a forked child that inherits the parent's engine drops it (without closing the parent's
connections) and builds its own.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import Connection, make_url

from pipeline.config import PROJECT_ROOT, settings

_lock = threading.Lock()
_engine: Engine | None = None
_engine_pid: int | None = None


def get_engine() -> Engine:
    global _engine, _engine_pid
    pid = os.getpid()
    if _engine is not None and _engine_pid == pid:
        return _engine
    with _lock:
        if _engine is not None and _engine_pid != pid:
            _engine.dispose(close=False)  # the parent's connections stay the parent's
            _engine = None
        if _engine is None:
            # Threads pool: one connection per worker thread plus a little headroom; prefork: 2.
            size = int(os.environ.get("DB_POOL_SIZE", "0")) or 8
            _engine = create_engine(
                settings().database_url,
                pool_size=size,
                max_overflow=size,
                # No pre-ping: it costs a round trip per checkout on the hot path. A connection
                # that died with a PostgreSQL restart raises OperationalError once, SQLAlchemy
                # invalidates the pool, and the task layer retries the step (RETRY_DB_ERRORS).
                pool_recycle=1800,
                connect_args={"application_name": f"storycreator-{pid}", "connect_timeout": 10},
            )
            _engine_pid = pid
        return _engine


def dispose_engine() -> None:
    global _engine
    with _lock:
        if _engine is not None and _engine_pid == os.getpid():
            _engine.dispose()
        _engine = None


@contextmanager
def transaction() -> Iterator[Connection]:
    """A Core connection in one transaction: the guarded transitions use this."""
    with get_engine().begin() as conn:
        yield conn


@contextmanager
def autocommit() -> Iterator[Connection]:
    """A Core connection in autocommit mode, for a single guarded statement: one round trip
    instead of three (BEGIN, statement, COMMIT). The statement is atomic by itself."""
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        yield conn


SCHEMA_PATH = PROJECT_ROOT / "schema.sql"


def apply_schema(conn: Connection, path: Path = SCHEMA_PATH) -> None:
    """Apply schema.sql in the caller's transaction; serialized so two starters don't race."""
    conn.execute(text("SELECT pg_advisory_xact_lock(727274)"))
    # Through the DBAPI cursor without parameters: the script's format('%1$s') must not be
    # taken for a parameter placeholder.
    with conn.connection.dbapi_connection.cursor() as cur:  # type: ignore[union-attr]
        cur.execute(path.read_text())


def ensure_database(url: str | None = None) -> None:
    """Create the database named in the URL if missing, then apply the schema (idempotent)."""
    target = make_url(url or settings().database_url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}
            ).scalar()
            if not exists:
                conn.exec_driver_sql(f'CREATE DATABASE "{target.database}"')
    finally:
        admin.dispose()
    eng = create_engine(target)
    try:
        with eng.begin() as conn:
            apply_schema(conn)
    finally:
        eng.dispose()
