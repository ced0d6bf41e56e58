"""The hot path's shortcuts (issue 16) keep their contracts: kombu's Redis transport reuses one
client per connection pool and drops it with the pool; the page steps' psycopg2-cursor statements
bind as text() would; task events still reach a receiver (Flower's side: tests/test_flower.py)."""
from __future__ import annotations

import os

from db.engine import dbapi_sql, first_row, transaction

BROKER = os.environ["CELERY_BROKER_URL"]


def test_binds_become_pyformat_and_casts_and_percent_signs_stay_sql() -> None:
    sql = "SELECT CAST(:held AS bigint), x::text, make_interval(secs => :lease) WHERE a LIKE '5%' AND id=:id"
    assert dbapi_sql(sql) == ("SELECT CAST(%(held)s AS bigint), x::text, make_interval(secs => %(lease)s) "
                              "WHERE a LIKE '5%%' AND id=%(id)s")


def test_first_row_runs_in_the_callers_transaction(clean_db: object) -> None:
    with transaction() as c:
        row = first_row(c, "SELECT CAST(:n AS int) + 1 AS m, '50%' AS pct", {"n": 41})
        assert row == {"m": 42, "pct": "50%"}
        assert first_row(c, "SELECT 1 AS one WHERE false", {}) is None
        assert first_row(c, "SELECT txid_current_if_assigned() IS NULL AS fresh", {}) is not None


def test_the_redis_channel_reuses_its_client_until_its_pool_changes() -> None:
    from kombu import Connection

    import celeryconfig  # noqa: F401  (installs the transport for redis://)
    from pipeline.kernel.redis_transport import Transport

    with Connection(BROKER) as conn:
        assert isinstance(conn.transport, Transport)
        ch = conn.channel()
        try:
            first = ch._create_client()
            assert ch._create_client() is first, "one client per pool, not one per command"
            assert first.ping()
            ch._pool = None  # kombu replaces the pool (a reconnect): the client goes with it
            second = ch._create_client()
            assert second is not first and second.connection_pool is ch.pool
            assert ch._create_client(asynchronous=True) is not second  # the event loop's own, as kombu makes it
        finally:
            ch.close()


def test_a_publish_and_an_ack_go_through_the_shared_client() -> None:
    from kombu import Connection, Exchange, Queue

    import celeryconfig  # noqa: F401

    q = Queue("lean-path-test", Exchange("lean-path-test", type="direct"), routing_key="lean-path-test")
    with Connection(BROKER) as conn:
        with conn.Producer() as producer:
            for i in range(3):
                producer.publish({"n": i}, exchange=q.exchange, routing_key=q.routing_key, declare=[q])
        got, tags = [], []
        simple = conn.SimpleQueue(q)
        try:
            for _ in range(3):
                m = simple.get(timeout=5)
                got.append(m.payload["n"])
                tags.append(m.delivery_tag)
                m.ack()
            simple.channel.qos.sync()  # the flusher's writes (pipeline/kernel/redis_transport.py QoS)
        finally:
            simple.close()
        assert sorted(got) == [0, 1, 2]
        # and kombu's unacked bookkeeping was written and cleared through the same client
        import redis

        r = redis.Redis.from_url(BROKER)
        # (these messages' own tags: the hash is the whole broker database's, which other tests'
        # worker processes on this xdist process may be using at the same moment)
        assert r.hmget("unacked", tags) == [None] * 3
        assert [r.zscore("unacked_index", t) for t in tags] == [None] * 3
