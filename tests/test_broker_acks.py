"""kombu's unacked bookkeeping (deliveries and acks) written off the event loop in batches
(pipeline/kernel/redis_transport.py, issue 16) keeps kombu's at-least-once contract: an acked
message leaves the unacked index (soon, and surely by the time its channel closes), is never
delivered again, frees its prefetch slot at once; a held message is in the index and survives its
process; a message whose ack was not yet written when its process died comes back after the
visibility timeout."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Exchange, Queue

import celeryconfig  # noqa: F401  (installs the transport for redis://)
from pipeline.kernel.redis_transport import QoS

BROKER = os.environ["CELERY_BROKER_URL"]


@pytest.fixture()
def r() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(BROKER)
    client.flushdb()
    yield client
    client.flushdb()


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def _publish(conn: Connection, q: Queue, n: int) -> None:
    with conn.Producer() as producer:
        for i in range(n):
            producer.publish({"n": i}, exchange=q.exchange, routing_key=q.routing_key, declare=[q])


def _unacked(r: redis.Redis) -> tuple[int, int]:
    return int(r.hlen("unacked")), int(r.zcard("unacked_index"))


def _wait_unacked(r: redis.Redis, want: tuple[int, int], timeout: float = 5.0) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while _unacked(r) != want and time.monotonic() < deadline:
        time.sleep(0.01)
    return _unacked(r)


def test_acks_leave_the_unacked_index_soon_and_free_the_prefetch_slot_at_once(r: redis.Redis) -> None:
    q = _queue("acks-batched")
    with Connection(BROKER) as conn:
        _publish(conn, q, 50)
        ch = conn.channel()
        try:
            assert isinstance(ch.qos, QoS)
            ch.basic_qos(prefetch_count=1)
            got = []
            for _ in range(50):
                assert ch.qos.can_consume(), "an acked message's prefetch slot is free at once"
                m = ch.basic_get(q.name, no_ack=False)
                assert m is not None
                got.append(m.payload["n"])
                m.ack()
            assert sorted(got) == list(range(50))
            assert _wait_unacked(r, (0, 0), 2.0) == (0, 0), "acks written within a moment, not at close"
            assert ch.basic_get(q.name) is None
        finally:
            ch.close()


def test_a_channel_closing_right_after_acks_writes_them_and_restores_nothing(r: redis.Redis) -> None:
    q = _queue("acks-close")
    with Connection(BROKER) as conn:
        _publish(conn, q, 20)
        ch = conn.channel()
        for _ in range(20):
            ch.basic_get(q.name, no_ack=False).ack()
        ch.close()  # at once: the acks still queued are written before kombu restores the unacked
    assert _unacked(r) == (0, 0)
    assert r.llen(q.name) == 0, "an acked message was put back on the queue (a duplicate run)"


def test_with_batching_off_each_ack_is_written_inline(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_ACK_BATCHING", "false")
    q = _queue("acks-inline")
    with Connection(BROKER) as conn:
        _publish(conn, q, 3)
        ch = conn.channel()
        try:
            for _ in range(3):
                ch.basic_get(q.name, no_ack=False).ack()
                assert _unacked(r) == (0, 0)  # no wait: written before ack() returned
            assert ch.qos._flusher is None
        finally:
            ch.close()


def _die_holding(q: Queue, patch: str, then: str) -> None:
    """A process takes the queue's one message, runs ``then`` (code using ``m``), and dies (os._exit)
    without closing anything; ``patch`` runs first (code using ``redis_transport``)."""
    with Connection(BROKER) as conn:
        _publish(conn, q, 1)
    child = "\n".join([
        "import os, time", "import celeryconfig", "from kombu import Connection",
        "from pipeline.kernel import redis_transport", textwrap.dedent(patch),
        f"with Connection({BROKER!r}) as conn:", "    ch = conn.channel()",
        f"    m = ch.basic_get({q.name!r}, no_ack=False)", "    assert m is not None",
        textwrap.indent(textwrap.dedent(then), "    "), "    os._exit(0)"])
    subprocess.run([sys.executable, "-c", child], check=True, timeout=60, env=os.environ.copy())


def _comes_back_after_the_visibility_timeout(r: redis.Redis, q: Queue) -> None:
    """The message is only in the unacked index; kombu's visibility-timeout restore (any worker's)
    puts it back on its queue."""
    assert _unacked(r) == (1, 1) and r.llen(q.name) == 0
    with Connection(BROKER, transport_options={"visibility_timeout": 0}) as conn:
        ch = conn.channel()
        try:
            ch.qos.restore_visible(num=10)
            m = ch.basic_get(q.name, no_ack=False)
            assert m is not None and m.payload == {"n": 0}
            m.ack()
        finally:
            ch.close()
    assert _unacked(r) == (0, 0)


def test_an_ack_not_yet_written_when_the_process_dies_brings_the_message_back(r: redis.Redis) -> None:
    """At-least-once: the process acks, but dies before the flusher writes the ack."""
    q = _queue("acks-crash")
    _die_holding(q, """
        write = redis_transport.QoS._write
        def acks_never_land(self, batch):
            if any(value is None for _, value in batch):
                time.sleep(60)  # an ack: the write never lands
            write(self, batch)
        redis_transport.QoS._write = acks_never_land
    """, """
        time.sleep(0.3)  # its delivery written to the unacked index
        m.ack()
        time.sleep(0.2)
    """)
    _comes_back_after_the_visibility_timeout(r, q)


def test_a_broker_error_while_writing_is_retried(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    q = _queue("acks-retry")
    calls = {"n": 0}
    real = QoS._write

    def flaky_pipeline_once(self: QoS, tags: list[object]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            orig = self.channel.conn_or_acquire

            def broken(*a: object, **k: object) -> object:
                self.channel.conn_or_acquire = orig  # the next try reaches Redis
                raise redis.ConnectionError("connection lost")

            self.channel.conn_or_acquire = broken
        real(self, tags)

    monkeypatch.setattr(QoS, "_write", flaky_pipeline_once)
    with Connection(BROKER) as conn:
        _publish(conn, q, 1)
        ch = conn.channel()
        try:
            ch.basic_get(q.name, no_ack=False).ack()
            assert _wait_unacked(r, (0, 0), 5.0) == (0, 0)
        finally:
            ch.close()


def test_a_held_message_is_written_to_the_unacked_index_and_survives_its_process(r: redis.Redis) -> None:
    """A task still running (or waiting for its countdown) when its worker dies comes back."""
    q = _queue("acks-held")
    _die_holding(q, "", "time.sleep(0.5)  # running, not acked")
    _comes_back_after_the_visibility_timeout(r, q)


def test_a_reject_with_requeue_right_after_delivery_puts_the_message_back_once(r: redis.Redis) -> None:
    q = _queue("acks-requeue")
    with Connection(BROKER) as conn:
        _publish(conn, q, 5)
        ch = conn.channel()
        try:
            for _ in range(5):
                m = ch.basic_get(q.name, no_ack=False)
                m.reject(requeue=True)  # kombu reads the unacked hash: the delivery must be written first
            assert r.llen(q.name) == 5, "each rejected message back on its queue"
            assert _wait_unacked(r, (0, 0), 2.0) == (0, 0)
            got = sorted(ch.basic_get(q.name, no_ack=True).payload["n"] for _ in range(5))
            assert got == list(range(5)) and ch.basic_get(q.name) is None
        finally:
            ch.close()


def test_many_deliveries_and_acks_from_threads_leave_nothing_behind(r: redis.Redis) -> None:
    """The event loop delivers, pool threads ack (Celery's threads pool): 500 messages, 8 threads."""
    import queue as stdqueue
    import threading

    q = _queue("acks-threads")
    with Connection(BROKER) as conn:
        _publish(conn, q, 500)
        ch = conn.channel()
        todo: stdqueue.Queue[object] = stdqueue.Queue()
        seen: list[int] = []

        def acker() -> None:
            while (m := todo.get()) is not None:
                seen.append(m.payload["n"])  # type: ignore[attr-defined]
                m.ack()  # type: ignore[attr-defined]

        threads = [threading.Thread(target=acker) for _ in range(8)]
        for t in threads:
            t.start()
        try:
            while (m := ch.basic_get(q.name, no_ack=False)) is not None:
                todo.put(m)
        finally:
            for _ in threads:
                todo.put(None)
            for t in threads:
                t.join(30)
            ch.close()
    assert sorted(seen) == list(range(500))
    assert _unacked(r) == (0, 0) and r.llen(q.name) == 0
