"""The database as it is configured and as it comes and goes (issue 10, faults 1 and 2).

- The URL forms people write (``postgresql://``, Heroku-style ``postgres://``,
  ``postgresql+psycopg2://``, with a query string) all run on the driver the project ships;
  other drivers and garbage are one clear configuration error.
- A worker whose database cannot be used exits at boot, non-zero, with one line, and takes no
  message; once the configuration is fixed the queued stories complete with no operator command.
- A database lost mid-run (a TCP proxy in front of the shared server is cut: the server itself
  is never stopped) loses no message: steps are re-sent, beyond any fixed bound, and the
  stories complete once it is back, each page step done once.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

from db.engine import check_database, make_engine, unavailable
from db.url import DatabaseURLError, database_url
from tests.support import (
    CELERY,
    ROOT,
    Db,
    WorkerProcess,
    astronaut_png,
    boot_worker_until_exit,
    done_lines,
    external_send,
    queued_messages,
)

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 1}"
PAGES = int(os.environ["STORY_PAGE_COUNT"])
SECRET = "s3cret-Pw-9"


def _url(drivername: str, *, port: int | None = None, database: str | None = None, query: str = "") -> str:
    """The test database's URL written another way (as an operator would write it)."""
    u = make_url(os.environ["DATABASE_URL"])
    u = u.set(drivername=drivername, **({"port": port} if port else {}), **({"database": database} if database else {}))
    return u.render_as_string(hide_password=False) + query


@pytest.fixture()
def broker() -> Iterator[str]:
    r = redis.Redis.from_url(BROKER)
    r.flushdb()
    yield BROKER
    r.flushdb()
    r.close()


# --- fault 1: the forms of a database URL -------------------------------------------------------

@pytest.mark.parametrize("written", [
    "postgresql://app:pw@db.example.com/books",
    "postgres://app:pw@db.example.com:5432/books",  # Heroku, Render, Fly: DATABASE_URL as given
    "postgresql+psycopg2://app:pw@db.example.com/books",
    "postgres://app:pw@db.example.com:6543/books?sslmode=require&application_name=worker",
    "postgresql://app@/books?host=/var/run/postgresql",
    "  postgresql://app:p%40ss@db.example.com/books  ",
])
def test_url_forms_run_on_the_shipped_driver(written: str) -> None:
    u = database_url(written)
    assert u.drivername == "postgresql+psycopg2"
    w = make_url(written.strip())
    assert (u.username, u.password, u.host, u.port, u.database, dict(u.query)) == \
        (w.username, w.password, w.host, w.port, w.database, dict(w.query))
    assert database_url(u) == u  # idempotent
    make_engine(written).dispose()  # and SQLAlchemy builds an engine from it (imports the driver)


@pytest.mark.parametrize(("written", "says"), [
    (f"postgresql+asyncpg://app:{SECRET}@db/books", "driver 'asyncpg'"),
    (f"postgresql+psycopg://app:{SECRET}@db/books", "driver 'psycopg'"),
    (f"mysql://app:{SECRET}@db/books", "PostgreSQL"),
    (f"postgresql://app:{SECRET}@db", "names no database"),
    (f"postgresql://app:{SECRET}@db:port/books", "not a database URL"),
    (f"app:{SECRET}@db/books", "not a database URL"),
    ("", "empty"),
])
def test_unusable_urls_are_one_clear_configuration_error(written: str, says: str) -> None:
    with pytest.raises(DatabaseURLError) as e:
        make_engine(written)
    msg = str(e.value)
    assert says in msg and "\n" not in msg and SECRET not in msg


def test_cli_says_configuration_error_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "DATABASE_URL": f"postgresql+asyncpg://app:{SECRET}@127.0.0.1/books"}
    r = subprocess.run([str(Path(CELERY).parent / "python"), "-m", "pipeline.operations.cli", "status"],
                       cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().startswith("configuration error:") and len(r.stderr.strip().splitlines()) == 1
    assert SECRET not in r.stderr + r.stdout


@pytest.mark.parametrize("form", ["postgresql", "postgres-with-query"])
def test_worker_completes_a_story_with_each_url_form(clean_db: Db, broker: str, tmp_path: Path, form: str) -> None:
    # given a worker configured with the URL as people write it (a fresh install has SQLAlchemy 2.1,
    # whose driver for a plain postgresql:// is psycopg 3, not installed), or as a Heroku-style
    # platform gives it (postgres://, with libpq parameters)
    url = {"postgresql": _url("postgresql"),
           "postgres-with-query": _url("postgres", query="?sslmode=disable&application_name=storycreator-form")}[form]
    w = WorkerProcess(tmp_path / "worker.log", env={"DATABASE_URL": url, "CELERY_BROKER_URL": broker,
                                                    "REDIS_URL": broker}, concurrency=4)
    w.start()
    try:
        # when the external API sends a story
        story = clean_db.story(clean_db.photo(astronaut_png()))
        external_send(broker, "stories.generate", {"story_id": story})
        # then it completes
        row = clean_db.wait_story(story, timeout=60)
        assert row["status"] == "completed", (row["error_message"], w.tail())
    finally:
        w.stop()


# --- fault 2: a worker that cannot work takes no message ------------------------------------------


def test_worker_with_an_unusable_database_exits_at_boot_and_keeps_the_messages(
        clean_db: Db, broker: str, tmp_path: Path) -> None:
    # an empty database (reachable, no schema), dropped at the end
    empty = f"{make_url(os.environ['DATABASE_URL']).database}_empty"
    admin = make_engine(make_url(os.environ["DATABASE_URL"]).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{empty}"'))
        c.execute(text(f'CREATE DATABASE "{empty}"'))
    bad = {
        "driver we do not ship": (f"postgresql+asyncpg://postgres:{SECRET}@127.0.0.1/x", "driver 'asyncpg'"),
        "garbage": (f"postgres:{SECRET}@127.0.0.1/x", "not a database URL"),
        "port that refuses": (_url("postgresql", port=1).replace("postgres@", f"postgres:{SECRET}@"),
                              "cannot reach the database"),
        "database that does not exist": (_url("postgres", database=f"nope_{uuid.uuid4().hex[:8]}"),
                                         "does not exist"),
        "database without the schema": (_url("postgresql", database=empty), "has no schema"),
    }
    stories = []
    try:
        for case, (url, says) in bad.items():
            # given a story the external API sent (before, or while, the worker is down)
            story = clean_db.story(clean_db.photo(astronaut_png()))
            external_send(broker, "stories.generate", {"story_id": story})
            stories.append(story)
            # when a worker starts with that database configuration
            log = tmp_path / f"{len(stories)}.log"
            t0 = time.monotonic()
            code, out = boot_worker_until_exit({"DATABASE_URL": url, "CELERY_BROKER_URL": broker, "REDIS_URL": broker},
                                               log, timeout=30)
            # then it exits, non-zero, quickly, with one line saying why (no password, no traceback)
            assert code not in (None, 0), f"{case}: worker did not exit ({code}):\n{out[-3000:]}"
            assert time.monotonic() - t0 < 20, case
            lines = [ln for ln in out.splitlines() if "configuration error" in ln]
            assert len(lines) == 1 and says in lines[0], f"{case}:\n{out[-3000:]}"
            assert lines[0].startswith("configuration error: ") and out.strip().endswith(lines[0])
            assert SECRET not in out and "Traceback" not in out, f"{case}:\n{out}"
            # and it took no message: every story sent so far is still in the broker
            assert queued_messages(broker) == len(stories), case
            assert clean_db.story_row(story)["status"] == "pending"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{empty}" WITH (FORCE)'))
        admin.dispose()
    # when the configuration is fixed, the queued stories complete, with no operator command
    w = WorkerProcess(tmp_path / "fixed.log", env={"DATABASE_URL": _url("postgres"), "CELERY_BROKER_URL": broker,
                                                   "REDIS_URL": broker}, concurrency=8)
    w.start()
    try:
        for story in stories:
            assert clean_db.wait_story(story, timeout=90)["status"] == "completed", w.tail()
    finally:
        w.stop()


class _Proxy:
    """A TCP proxy in front of the shared PostgreSQL: ``down()`` cuts every connection and refuses
    new ones (as a server restarting, a failover or a network partition does), ``up()`` serves
    again on the same port. The server itself is never touched."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def up(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def down(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def test_database_lost_mid_run_loses_no_message(clean_db: Db, broker: str, tmp_path: Path) -> None:
    u = make_url(os.environ["DATABASE_URL"])
    proxy = _Proxy((u.host or "127.0.0.1", u.port or 5432))
    proxy.up()
    w = WorkerProcess(tmp_path / "worker.log", concurrency=8, env={
        "DATABASE_URL": _url("postgresql", port=proxy.port),
        "CELERY_BROKER_URL": broker, "REDIS_URL": broker, "SIMULATED_PROVIDER_LATENCY": "0.3",
        "STEP_LEASE_SECONDS": "3", "DB_RETRY_BACKOFF_MAX": "0.5"})
    w.start()
    try:
        # given a story under way
        first = clean_db.story(clean_db.photo(astronaut_png()))
        external_send(broker, "stories.generate", {"story_id": first})
        deadline = time.monotonic() + 30
        while not clean_db.one("SELECT 1 FROM story_pages WHERE story_id = :s AND text_generation_status = "
                               "'completed'", s=first):
            assert time.monotonic() < deadline, w.tail()
            time.sleep(0.05)
        # when the database goes away mid-run, for longer than Celery's old bound of 10 retries,
        # and another story is sent meanwhile
        proxy.down()
        second = clean_db.story(clean_db.photo(astronaut_png()))
        external_send(broker, "stories.generate", {"story_id": second})
        time.sleep(8)
        proxy.up()
        back = time.monotonic()
        # then both complete once it is back, promptly (the backoff is capped), nobody intervening
        for story in (first, second):
            row = clean_db.wait_story(story, timeout=45)
            assert row["status"] == "completed", (row["error_message"], w.tail())
        assert time.monotonic() - back < 40
        # and steps were re-sent beyond any fixed bound, without recording a failure
        retries = [json.loads(ln.split("storycreator.step: step ", 1)[1]) for ln in
                   w.log.read_text(errors="replace").splitlines()
                   if "storycreator.step: step " in ln and "database unavailable" in ln]
        assert retries and max(r["retries"] for r in retries) > 10, retries[-3:]
        assert clean_db.one("SELECT count(*) AS n FROM step_errors")["n"] == 0
        # and each page step was done once
        time.sleep(1.0)
        pages = {str(p["id"]) for s in (first, second) for p in clean_db.pages(s)}
        done = [(d["stage"], d["page"]) for d in done_lines(w.log) if d.get("page") in pages]
        assert len(done) == len(set(done)), "a page step was done twice"
        # A step whose completion committed just before the connection died is re-sent and finds
        # itself already done (one "already_done" line instead of its "done" line): still once.
        finished = {(d["stage"], d["page"]) for d in _step_lines(w.log)
                    if d.get("page") in pages and d["outcome"] in ("done", "already_done")}
        assert finished == {(stage, p) for stage in ("text", "image", "personalization") for p in pages}
        assert len(pages) == 2 * PAGES
    finally:
        w.stop()
        proxy.down()


def _cut_after(statement_start: str, db: Db) -> Any:
    """A before/after_cursor_execute listener for the workers' engine that ends the session of
    the first statement starting with ``statement_start`` right after it ran (and, in autocommit,
    committed): its reply is in hand, the connection is gone, as when a network cut falls there."""
    cut: list[int] = []

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if cut or not statement.lstrip().startswith(statement_start):
            return
        pid = cursor.connection.info.backend_pid
        cut.append(pid)
        db.exec("SELECT pg_terminate_backend(:pid)", pid=pid)
        deadline = time.monotonic() + 10
        while db.one("SELECT 1 FROM pg_stat_activity WHERE pid = :pid", pid=pid):
            assert time.monotonic() < deadline, "the backend did not end"
            time.sleep(0.02)

    after.cut = cut  # type: ignore[attr-defined]
    return after


def test_connection_lost_right_after_a_committed_claim_is_an_outage(clean_db: Db,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12, the mid-run outage test's 1 run in 4: an image step's claim committed, then the
    connection died before the ``with autocommit()`` block closed. Switching the connection back
    out of autocommit (a round trip psycopg2 made there) raised a bare psycopg2.OperationalError,
    which db.engine.unavailable did not recognize: the task was acked as failed and the page
    stayed 'processing' for good, and the pool never got that connection's slot back."""
    from sqlalchemy import event

    from db.engine import autocommit, dispose_engine, get_engine
    from pipeline.kernel import step
    from pipeline.stories import steps

    # given a page whose text is done, and a pool whose one connection has served a step before
    story = clean_db.story(clean_db.photo(astronaut_png()))
    page = steps.generate_story(story).fanout[0]
    assert steps.write_text(page).outcome is step.Outcome.DONE
    dispose_engine()
    with autocommit() as c:
        c.execute(text("SELECT 1"))
    engine = get_engine()
    cut = _cut_after("UPDATE story_pages p SET claim_token", clean_db)  # the image step's claim
    event.listen(engine, "after_cursor_execute", cut)
    # (the page steps' guarded statements run on the psycopg2 cursor, db.engine.first_row, which
    # SQLAlchemy's cursor events do not see: the same cut right after that call returns)
    import db.pages as pages_db

    real_first_row = pages_db.first_row

    def first_row_then_cut(conn: Any, sql: str, params: Any) -> Any:
        row = real_first_row(conn, sql, params)
        cut(conn, SimpleNamespace(connection=conn.connection.dbapi_connection), sql)
        return row

    monkeypatch.setattr(pages_db, "first_row", first_row_then_cut)
    try:
        # when the connection is lost right after the image step's claim committed
        with pytest.raises(Exception) as lost:
            steps.draw_base(page, step.Attempt(task_id="first"))
    finally:
        event.remove(engine, "after_cursor_execute", cut)
    assert cut.cut, "the claim statement was not seen"
    # then what the step raises says "the database", so the task layer re-sends it (never acks it)
    assert unavailable(lost.value), repr(lost.value)
    row = clean_db.one("SELECT image_generation_status AS s FROM story_pages WHERE id = :p", p=page)
    assert row["s"] == "processing"  # the claim committed: only a re-sent copy can finish it
    # and the pool got its connection back (it was lost for good, one slot per outage)
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    # and the re-sent copy waits for the lease, then takes the step over and completes it
    with pytest.raises(step.RetryLater) as wait:
        steps.draw_base(page, step.Attempt(task_id="first", redelivered=True))
    assert wait.value.waiting
    clean_db.exec("UPDATE story_pages SET updated_at = now() - interval '1 hour' WHERE id = :p", p=page)
    assert steps.draw_base(page, step.Attempt(task_id="first", redelivered=True)).outcome is step.Outcome.DONE


def test_provider_error_policy_leaves_a_database_outage_to_the_task_layer(clean_db: Db) -> None:
    """A job step's own statements (reserving its job) run inside the provider error policy: a
    database outage there was taken for an internal error and, once the database answered the
    failure's own statement, the page was failed for good. It is re-raised, nothing recorded."""
    from pipeline.kernel import step

    with pytest.raises(Exception) as refused:
        make_engine(_url("postgresql", port=1)).connect()
    recorded: list[str] = []

    def outage() -> None:
        raise refused.value

    with pytest.raises(Exception) as raised:
        step.guarded(outage, attempt=step.Attempt(), what="Illustration",
                     record=step.Callbacks(recorded.append, lambda m: recorded.append(f"release {m}")))
    assert raised.value is refused.value and unavailable(raised.value)
    assert recorded == []


def _step_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(ln.split("storycreator.step: step ", 1)[1])
            for ln in log.read_text(errors="replace").splitlines() if "storycreator.step: step " in ln]


def test_what_counts_as_the_database_unavailable(clean_db: Db) -> None:
    """Real errors from the real server: a statement's own error is not retried as an outage."""
    eng = make_engine(os.environ["DATABASE_URL"])
    try:
        with pytest.raises(Exception) as missing, eng.connect() as c:
            c.execute(text("SELECT * FROM no_such_table_schema_not_applied"))
        assert unavailable(missing.value)  # the schema is missing: wait for it
        with pytest.raises(Exception) as violation, eng.begin() as c:
            c.execute(text("INSERT INTO users (email) VALUES (NULL)"))
        assert not unavailable(violation.value)  # a bug or bad data: not an outage
    finally:
        eng.dispose()
    with pytest.raises(Exception) as refused:
        make_engine(_url("postgresql", port=1)).connect()
    assert unavailable(refused.value)
    check_database(os.environ["DATABASE_URL"])  # the test database passes the boot check


# --- fault 2's kind: any setting a worker cannot work with, not only the database's -------------

BAD_SETTINGS = {
    # read by the first step that touches the database: each task raised ValueError and was acked
    "DB_POOL_SIZE=abc": ({"DB_POOL_SIZE": "abc"}, "DB_POOL_SIZE"),
    "DB_POOL_SIZE=-3": ({"DB_POOL_SIZE": "-3"}, "DB_POOL_SIZE"),
    # the book's CPU processes: every story's completion failed
    "CPU_PROCESSES=abc": ({"CPU_PROCESSES": "abc"}, "CPU_PROCESSES"),
    "CPU_PROCESSES=-1": ({"CPU_PROCESSES": "-1"}, "CPU_PROCESSES"),
    # the metrics endpoint silently not served
    "METRICS_PORT=abc": ({"METRICS_PORT": "abc"}, "METRICS_PORT"),
    # every provider call
    "QUOTA_MAX_INLINE_WAIT=abc": ({"QUOTA_MAX_INLINE_WAIT": "abc"}, "QUOTA_MAX_INLINE_WAIT"),
    # the orders' settings, read only when a payment arrives
    "ORDER_POLL_INTERVAL=nan": ({"ORDER_POLL_INTERVAL": "nan"}, "ORDER_POLL_INTERVAL"),
    "LULU_PRODUCTION_DELAY=abc": ({"LULU_PRODUCTION_DELAY": "abc"}, "LULU_PRODUCTION_DELAY"),
    "LOCAL_PRINT_SHOP_STAGE_SECONDS=x": ({"LOCAL_PRINT_SHOP_STAGE_SECONDS": "x"}, "LOCAL_PRINT_SHOP_STAGE_SECONDS"),
    "STRIPE_MODE contradicting the key": ({"STRIPE_MODE": "test", "STRIPE_SECRET_KEY": "sk_live_" + SECRET},
                                         "STRIPE_MODE"),
    "LOG_LEVEL=verbose": ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
}


def test_worker_with_a_bad_setting_exits_at_boot_and_keeps_the_messages(
        clean_db: Db, broker: str, tmp_path: Path) -> None:
    """A worker that booted "ready" with DB_POOL_SIZE=abc took each story's message, raised
    ValueError and acked it: the story stayed pending with nothing recorded. Every setting is
    checked before the consumer starts: exit non-zero with one line naming the variable."""
    story = clean_db.story(clean_db.photo(astronaut_png()))
    external_send(broker, "stories.generate", {"story_id": story})
    failures = []
    for case, (env, says) in BAD_SETTINGS.items():
        log = tmp_path / f"{case.split('=')[0].replace(' ', '_')}.log"
        t0 = time.monotonic()
        code, out = boot_worker_until_exit({"CELERY_BROKER_URL": broker, "REDIS_URL": broker, **env}, log)
        lines = [ln for ln in out.splitlines() if "configuration error" in ln]
        ok = (code not in (None, 0) and len(lines) == 1 and says in lines[0] and "Traceback" not in out
              and SECRET not in out and queued_messages(broker) == 1)
        if not ok:
            failures.append(f"{case}: exit {code} after {time.monotonic() - t0:.0f}s, "
                            f"queued {queued_messages(broker)}, lines {lines}\n{out[-1500:]}")
            # put the message back if this worker ate it, so the next case is judged alone
            if queued_messages(broker) == 0:
                external_send(broker, "stories.generate", {"story_id": story})
    assert not failures, "\n\n".join(failures)
    assert clean_db.story_row(story)["status"] == "pending"


# --- fault 2's kind: a database role that may not use the tables ---------------------------------

@pytest.fixture()
def read_only_role(clean_db: Db) -> Iterator[str]:
    """A login role that may only read the tables (a read replica's or a reporting user's
    credentials given to the workers by mistake), its password with URL-encoded specials."""
    role = f"ro_{uuid.uuid4().hex[:8]}"
    admin = make_engine(os.environ["DATABASE_URL"], isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'p@ss:w/rd%?#&'"))
        c.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
    u = make_url(os.environ["DATABASE_URL"])
    yield f"postgresql://{role}:p%40ss%3Aw%2Frd%25%3F%23%26@{u.host}:{u.port or 5432}/{u.database}"
    with admin.connect() as c:
        c.execute(text(f"DROP OWNED BY {role}"))
        c.execute(text(f"DROP ROLE {role}"))
    admin.dispose()


def test_worker_whose_role_may_not_write_exits_at_boot_and_keeps_the_message(
        clean_db: Db, broker: str, tmp_path: Path, read_only_role: str) -> None:
    """The boot check read information_schema (which shows a role only what it may use) and
    not the privileges: a read-only role booted a "ready" worker whose every step raised
    InsufficientPrivilege and was acked, the story left pending with nothing recorded."""
    story = clean_db.story(clean_db.photo(astronaut_png()))
    external_send(broker, "stories.generate", {"story_id": story})
    log = tmp_path / "ro.log"
    code, out = boot_worker_until_exit(
        {"DATABASE_URL": read_only_role, "CELERY_BROKER_URL": broker, "REDIS_URL": broker}, log)
    lines = [ln for ln in out.splitlines() if "configuration error" in ln]
    assert code not in (None, 0), out[-3000:]
    assert len(lines) == 1 and "privilege" in lines[0] and "p@ss" not in out and "Traceback" not in out, out[-3000:]
    assert queued_messages(broker) == 1
    assert clean_db.story_row(story)["status"] == "pending"
    # and a step that meets such a role mid-run (privileges revoked) is re-sent, not acked as done
    eng = make_engine(read_only_role)
    try:
        with pytest.raises(Exception) as denied, eng.begin() as c:
            c.execute(text("UPDATE stories SET status = status WHERE id = :s"), {"s": story})
        assert unavailable(denied.value)
    finally:
        eng.dispose()
