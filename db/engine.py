"""One engine per process, built lazily after fork and disposed at shutdown.

Steps take a connection per guarded statement (autocommit) or per short transaction, never one
held across a provider call (image models take up to a minute): a pool of a few connections
serves many concurrent steps.

A pool shared across fork() hands the same socket to two processes, so the engine is keyed by
pid: a forked child that inherits the parent's engine drops it (without closing the parent's
connections) and builds its own.
"""
from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import NullPool

from db.url import DatabaseURLError, database_url, redact
from pipeline.config import PROJECT_ROOT, settings

_lock = threading.Lock()
_engine: Engine | None = None
_engine_pid: int | None = None


def make_engine(url: str | URL | None = None, **kwargs: Any) -> Engine:
    """Every engine the project builds (workers, CLI, demo, tests, benches) comes from here: the
    URL as configured (default: DATABASE_URL) normalized by db.url.database_url, ``kwargs`` as
    for sqlalchemy.create_engine.

    Raises DatabaseURLError for a URL form we cannot serve, or when the driver cannot be imported
    (a broken install): one line, password hidden."""
    target = database_url(url if url is not None else settings().database_url)
    try:
        return create_engine(target, **kwargs)
    except ImportError as e:  # psycopg2 missing: the DBAPI module is imported by create_engine
        raise DatabaseURLError(f"the PostgreSQL driver for {redact(target)} cannot be imported ({e}); "
                               "reinstall the project (pip install -e .)") from None


def session_options() -> str:
    """libpq ``options`` for the workers' sessions: ``idle_in_transaction_session_timeout`` at the
    step lease (STEP_LEASE_SECONDS, at least 10 s). A worker frozen inside a transaction (SIGSTOP,
    a GC pause, a frozen VM) holds its row locks only that long: PostgreSQL ends its session
    (PostgreSQL docs, "Client Connection Defaults"), the locks go, and when it wakes its next
    statement fails as a lost connection, which the task layer treats as the database
    unavailable (the step is re-sent; its fenced writes find the step taken over)."""
    ms = int(max(10.0, settings().step_lease_seconds) * 1000)
    return f"-c idle_in_transaction_session_timeout={ms}"


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
            size = pool_size()
            _engine = make_engine(
                None,
                pool_size=size,
                max_overflow=size,
                # No pre-ping: it costs a round trip per checkout on the hot path. A connection
                # that died with a PostgreSQL restart raises OperationalError once, SQLAlchemy
                # invalidates the pool, and the task layer re-sends the step (workers/step_task.py
                # _run, db.engine.unavailable).
                pool_recycle=1800,
                connect_args={"application_name": f"storycreator-{pid}", "connect_timeout": 10,
                              "options": session_options()},
            )
            _engine_pid = pid
        return _engine


def pool_size() -> int:
    """DB_POOL_SIZE: connections per worker process (as many again as overflow); 0 or unset: 8.

    Raises SystemExit("configuration error: …") for anything but a whole number 0–1000."""
    from pipeline.config import env_int

    return env_int("DB_POOL_SIZE", 0, 0, 1000) or 8


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
    instead of three (BEGIN, statement, COMMIT). The statement is atomic by itself.

    Autocommit is psycopg2's own client-side flag (``connection.autocommit``), switched on here
    and off before the connection goes back to the pool. Not SQLAlchemy's
    ``isolation_level="AUTOCOMMIT"`` option: once a connection's isolation level had been reset
    explicitly, psycopg2 sent ``SET default_transaction_isolation`` to the server at each switch,
    and the switch back ran inside the pool's check-in, unwrapped and uncaught. A connection
    lost just after a committed claim then raised a bare psycopg2.OperationalError from the
    ``with`` exit (the task acked as failed, the step left 'processing'), and the pool never got
    that slot back. With the isolation level left at the server's default, the flag is a
    client-side switch (psycopg2 ``conn_set_session``): no round trip, nothing to lose.
    Errors of the statements themselves come wrapped by SQLAlchemy as before."""
    with get_engine().connect() as conn:
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        dbapi_conn.autocommit = True
        try:
            yield conn
        finally:
            if not conn.invalidated:
                try:
                    dbapi_conn.autocommit = False  # never back to the pool in autocommit
                except Exception:  # noqa: BLE001 - psycopg2 knows it closed: drop it, don't pool it
                    conn.invalidate()


# --- the hot path's statements on the DBAPI connection -------------------------------------------

_BIND = re.compile(r"(?<![:\w]):(\w+)")  # :name, not a ::cast


@functools.lru_cache(maxsize=512)
def dbapi_sql(sql: str) -> str:
    """``sql`` written with ``:name`` binds (as for sqlalchemy.text) in psycopg2's ``%(name)s``
    style, literal ``%`` doubled (psycopg2 docs, "Passing parameters to SQL queries"). Cached: the
    page steps' statements are a handful of strings. The statements it serves hold no ``:`` inside
    string literals (they would be taken for binds)."""
    return _BIND.sub(r"%(\1)s", sql.replace("%", "%%"))


def first_row(conn: Connection, sql: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """Run one statement (``:name`` binds, see :func:`dbapi_sql`) on ``conn``'s DBAPI connection with
    a plain psycopg2 cursor, and return its first row as ``{column: value}`` (None: no row, or a
    statement that returns none).

    The same statement, the same connection, the same transaction (or autocommit, see
    :func:`autocommit`) as ``conn.execute(text(sql), params)``, without SQLAlchemy's per-call
    construct, compile-cache lookup and result machinery: about 1 ms of CPU less per statement on the
    page steps' hot path (README "Benchmarks"). Values come back as psycopg2 returns them (the
    same as through text(), which declares no result types). A ``conn`` in neither autocommit nor
    a transaction is put in one (``conn.begin()``), as SQLAlchemy's autobegin would.

    Raises psycopg2's own errors, not SQLAlchemy's wrappers: :func:`unavailable` and :func:`reason`
    read both. A connection psycopg2 found closed is invalidated when :func:`autocommit` hands it
    back; SQLAlchemy does not invalidate the rest of the pool for it (each of those fails once
    in its turn, and its step is re-sent)."""
    dbapi: Any = conn.connection.dbapi_connection  # psycopg2's connection
    if not dbapi.autocommit and not conn.in_transaction():
        conn.begin()
    with dbapi.cursor() as cur:
        cur.execute(dbapi_sql(sql), params)
        if cur.description is None:
            return None
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))


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
    target = database_url(url or settings().database_url)
    admin = make_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}
            ).scalar()
            if not exists:
                conn.exec_driver_sql(f'CREATE DATABASE "{target.database}"')
    finally:
        admin.dispose()
    eng = make_engine(target)
    try:
        with eng.begin() as conn:
            apply_schema(conn)
    finally:
        eng.dispose()


# --- a database that cannot be used -------------------------------------------------------------

# SQLSTATEs that say the schema is not (yet) there, not that a statement is wrong: undefined_table,
# invalid_schema_name; and insufficient_privilege (the configured role may not use the tables:
# a configuration to fix, after which the step runs) (PostgreSQL Appendix A,
# https://www.postgresql.org/docs/current/errcodes-appendix.html).
_SCHEMA_MISSING = {"42P01", "3F000", "42501"}

try:  # the one driver the project ships (db.url); DB-API 2.0 (PEP 249) exception classes
    import psycopg2 as _dbapi

    _DBAPI_UNAVAILABLE: tuple[type[BaseException], ...] = (_dbapi.OperationalError, _dbapi.InterfaceError)
    _DBAPI_PROGRAMMING: tuple[type[BaseException], ...] = (_dbapi.ProgrammingError,)
except ImportError:  # a broken install: make_engine says so (DatabaseURLError)
    _DBAPI_UNAVAILABLE = _DBAPI_PROGRAMMING = ()


LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock wait cut off by lock_timeout


def lock_wait(conn: Connection, seconds: float) -> None:
    """Bound how long the rest of ``conn``'s transaction waits for any one lock (advisory locks
    included) to ``seconds`` (``SET LOCAL lock_timeout``, at least 1 ms; PostgreSQL docs, "Client
    Connection Defaults"). A lock held by a stopped worker (SIGSTOP, a frozen VM) stays held until
    idle_in_transaction_session_timeout ends its session (:func:`session_options`: the lease, at
    least 10 s); without this bound every other worker thread that wants it waits that long. A wait
    cut off raises the driver's LockNotAvailable (:func:`lock_not_available`), an OperationalError,
    so to :func:`unavailable` a re-run later. ``conn`` must be in a transaction."""
    conn.execute(text("SELECT set_config('lock_timeout', :v, true)"), {"v": f"{max(1, int(seconds * 1000))}ms"})


def lock_not_available(exc: BaseException) -> bool:
    """True when ``exc`` is a lock wait cut off by lock_timeout (SQLSTATE 55P03: :func:`lock_wait`)."""
    orig = getattr(exc, "orig", None) or exc
    return getattr(orig, "pgcode", None) == LOCK_NOT_AVAILABLE


class ServiceUnavailable(Exception):
    """Another service every step needs besides the database could not be used at all, as the
    database unusable (:func:`unavailable` is true for it): the step is sent again later, with no
    bound, nothing recorded as failed. ``service`` names it for the log line ("storage": see
    pipeline.kernel.storage.StorageUnavailable)."""

    service = "service"


def unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the database could not be used at all (unreachable, restarting,
    dropped or renamed, the connection lost, the pool exhausted, the schema missing, the URL or
    the driver unusable), or another service every step needs could not (a
    :class:`ServiceUnavailable`: the storage): the step it interrupted never got to do its work,
    and running it again later is right. False for errors of a statement itself (constraint
    violations, bugs)."""
    if isinstance(exc, ServiceUnavailable):
        return True
    if isinstance(exc, DatabaseURLError | sa_exc.OperationalError | sa_exc.InterfaceError
                  | sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    # The driver's own errors, unwrapped: psycopg2 calls SQLAlchemy makes outside a statement (a
    # connection's session settings, its reset on return to the pool) raise them as they are.
    if isinstance(exc, _DBAPI_UNAVAILABLE):
        return True
    orig = exc.orig if isinstance(exc, sa_exc.ProgrammingError) else exc
    return isinstance(orig, _DBAPI_PROGRAMMING) and getattr(orig, "pgcode", None) in _SCHEMA_MISSING


def reason(exc: BaseException) -> str:
    """One line saying why the database could not be used: the driver's own first line (no SQL,
    no parameters: those may hold a child's name), or the exception's type."""
    orig = getattr(exc, "orig", None) or exc
    first = next((ln.strip() for ln in str(orig).splitlines() if ln.strip()), "")
    return f"{type(orig).__name__}: {first}"[:300] if first else type(orig).__name__


class DatabaseNotReady(Exception):
    """The database cannot serve the workers. ``str()`` is the one line to show, password hidden."""


def check_database(url: str | URL | None = None, *, timeout: float = 10.0) -> None:
    """Connect once and check the schema is applied (every table and column db.models declares
    exists). For a worker's boot: a worker that cannot work must not take messages.

    Raises DatabaseNotReady saying what is wrong (bad URL, unreachable, schema missing, the role
    lacking privileges on a table)."""
    from db.models import Base

    try:
        target = database_url(url if url is not None else settings().database_url)
        eng = make_engine(target, poolclass=NullPool, connect_args={"connect_timeout": max(1, int(timeout))})
    except DatabaseURLError as e:
        raise DatabaseNotReady(str(e)) from None
    written = url if url is not None else settings().database_url
    shown = redact(written) + (" (password hidden)" if target.password else "")
    try:
        with eng.connect() as conn:
            # pg_catalog, not information_schema: the latter shows a role only the columns it
            # may use, so a role without privileges looked like a database without the schema.
            rows = conn.execute(text(
                "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') "
                "AND a.attnum > 0 AND NOT a.attisdropped")).all()
            denied = conn.execute(text(
                "SELECT c.relname, current_user FROM pg_class c "
                "WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY(:tables) "
                "AND c.relkind IN ('r', 'p') "
                # one call per privilege: with a list, has_table_privilege is true if ANY is held
                "AND NOT (has_table_privilege(c.oid, 'SELECT') AND has_table_privilege(c.oid, 'INSERT') "
                "AND has_table_privilege(c.oid, 'UPDATE') AND has_table_privilege(c.oid, 'DELETE'))"),
                {"tables": [t.name for t in Base.metadata.sorted_tables]}).all()
    except Exception as e:  # noqa: BLE001 - whatever the driver raises, one line says why
        why = reason(e)
        if "database" in why and "does not exist" in why:
            # The server answers, the database is missing (PostgreSQL's FATAL at connect; psycopg2
            # gives no SQLSTATE there). Not created here: a mistyped name would get an empty one.
            raise DatabaseNotReady(
                f"the database at {shown} does not exist: create it and apply schema.sql "
                f"(./run demo does both for its own), or correct DATABASE_URL") from None
        raise DatabaseNotReady(f"cannot reach the database at {shown}: {why}") from None
    finally:
        eng.dispose()
    if denied:
        names = sorted(t for t, _ in denied)
        raise DatabaseNotReady(
            f"the role {denied[0][1]!r} at {shown} lacks the privileges SELECT, INSERT, UPDATE, DELETE on "
            f"{len(names)} table(s) ({', '.join(names[:8])}{', …' if len(names) > 8 else ''}): grant them "
            "or use the role that owns the schema")
    have = {(t, c) for t, c in rows}
    missing = sorted(f"{t.name}.{c.name}" for t in Base.metadata.sorted_tables for c in t.columns
                     if (t.name, c.name) not in have)
    if missing:
        tables = {m.split(".")[0] for m in missing}
        if len(missing) == sum(len(t.columns) for t in Base.metadata.sorted_tables):
            what = "has no schema"
        else:
            more = ", …" if len(missing) > 5 else ""
            what = f"lacks {len(missing)} column(s) of the schema ({', '.join(missing[:5])}{more})"
        raise DatabaseNotReady(
            f"the database at {shown} {what}: apply schema.sql (psql -f schema.sql, idempotent; "
            f"tables concerned: {', '.join(sorted(tables)[:8])})")
