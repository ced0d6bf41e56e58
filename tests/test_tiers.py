"""The test tiers keep themselves honest (tests/conftest.py): a unit test that reaches a real
service, or a db test that starts a worker process, fails loudly instead of slowing the fast loop."""
from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest
import redis
from sqlalchemy import text

from db.engine import make_engine
from db.url import database_url
from tests import support
from tests.support import TierViolation, WorkerProcess


def _pg_dsn() -> str:
    u = database_url(support.SERVICE_URLS["PostgreSQL"])
    return f"host={u.host or '127.0.0.1'} port={u.port or 5432} user={u.username or 'postgres'} dbname=postgres"


@pytest.mark.unit
def test_a_unit_test_cannot_reach_postgresql() -> None:
    with pytest.raises(TierViolation, match="unit.*PostgreSQL"):
        psycopg2.connect(_pg_dsn())
    engine = make_engine(database_url(support.SERVICE_URLS["PostgreSQL"]).set(database="postgres"))
    try:
        with pytest.raises(TierViolation, match="PostgreSQL"), engine.connect() as c:
            c.execute(text("SELECT 1"))
    finally:
        engine.dispose()


@pytest.mark.unit
def test_a_unit_test_cannot_reach_redis_or_rabbitmq() -> None:
    r = redis.Redis.from_url(support.SERVICE_URLS["Redis"])
    with pytest.raises(TierViolation, match="Redis"):
        r.ping()
    amqp = urlsplit(support.SERVICE_URLS["RabbitMQ"])
    with socket.socket() as s, pytest.raises(TierViolation, match="service"):
        s.connect((amqp.hostname or "127.0.0.1", amqp.port or 5672))


@pytest.mark.unit
def test_a_unit_test_may_still_try_an_unusable_address() -> None:
    # (the outage tests do: nothing listens on port 1)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1).ping()


@pytest.mark.unit
@pytest.mark.parametrize("tier", ["unit", "db"])
def test_unit_and_db_tests_cannot_start_a_worker(tier: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(support, "CURRENT_TIER", tier)
    with pytest.raises(TierViolation, match="celery worker"):
        WorkerProcess(tmp_path / "w.log").start()
    assert not (tmp_path / "w.log").exists()


@pytest.mark.db
def test_a_db_test_reaches_postgresql_and_redis() -> None:
    conn = psycopg2.connect(_pg_dsn())
    try:
        assert conn.cursor().execute("SELECT 1") is None
    finally:
        conn.close()
    assert redis.Redis.from_url(support.SERVICE_URLS["Redis"]).ping()


def test_every_test_has_exactly_one_tier(request: pytest.FixtureRequest) -> None:
    tiers = ("unit", "db", "workers", "chaos")
    for item in request.session.items:
        marked = [t for t in tiers if item.get_closest_marker(t)]
        assert len(marked) == 1, (item.nodeid, marked)


@pytest.mark.unit
def test_measured_slow_tests_are_marked_slow_and_each_line_names_a_real_test(request: pytest.FixtureRequest) -> None:
    import importlib

    from tests.conftest import SLOW_FILE, measured_slow

    listed = measured_slow()
    assert len(listed) > 100  # the file is there and read
    for item in request.session.items:  # what this run selected
        if item.nodeid in listed:
            assert item.get_closest_marker("slow"), item.nodeid
    for nodeid in listed:  # a renamed or deleted test leaves a line to rewrite (--record-slow)
        path, _, name = nodeid.partition("::")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert callable(getattr(module, name.split("[", 1)[0], None)), f"{SLOW_FILE.name}: no test {nodeid}"


@pytest.mark.unit
def test_the_slow_list_reads_seconds_then_a_node_id_and_skips_comments(tmp_path: Path) -> None:
    from tests.conftest import measured_slow

    listed = tmp_path / "slow.txt"
    listed.write_text("# a comment\n\n1.50 tests/test_a.py::test_x[a b # c]\n0.20 tests/test_b.py::test_y\n",
                      encoding="utf-8")
    assert measured_slow(listed) == {"tests/test_a.py::test_x[a b # c]", "tests/test_b.py::test_y"}
    assert measured_slow(tmp_path / "missing.txt") == set()
