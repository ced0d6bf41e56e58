"""kombu's Redis transport without a new ``redis.Redis`` client per command.

kombu 5.x (``kombu/transport/redis.py``, ``Channel.conn_or_acquire``) builds a fresh
``redis.Redis(connection_pool=channel.pool)`` for every publish, every ack (the unacked index's
ZREM/HDEL), every message's unacked bookkeeping and every queue size: with redis-py 8 that
constructor (its retry policy, response callbacks, command parser set-up) took 13-14 % of a
threads-pool worker's GIL time in the pipeline's profile (README "Benchmarks"). The commands go
through the channel's connection pool either way; only the client object around it was new.

Here each channel keeps one synchronous client per connection pool and hands it out again. A
``redis.Redis`` over a connection pool is safe to share between threads (each command takes its
own connection from the pool; redis-py docs, "Thread safety"); pipelines and transactions are
still built per use (``client.pipeline()``), as kombu does. When kombu replaces the pool (the
channel was closed, or the connection was lost and re-established) the cached client is dropped
with it and a new one is made on the next command. The asynchronous client (BRPOP, the event
loop's ``client``) and the pub/sub client are kombu's own, unchanged.

kombu's unacked bookkeeping is written off the caller's thread (:class:`QoS`). kombu's Redis
QoS emulates acks with an "unacked" hash and index: each delivered message is written there
(HSET+ZADD) and removed on ack (ZREM+HDEL), each a blocking round trip, and Celery runs both on the
worker's single event-loop thread, the same thread that receives every message. Under load that
thread was busy about 90 % of the time, half of it in that bookkeeping (README "Benchmarks",
issue 16). Here a flusher thread per channel writes what is queued in order, in one
transaction per batch; a message delivered and acked within one batch is not written at all.
Delivery stays at-least-once: a message whose ack was not yet written when the worker died stays
in the unacked index and is restored after the visibility timeout. A closing channel writes what
is queued before kombu restores the unacked ones. ``BROKER_ACK_BATCHING=false`` writes each inline,
as kombu does.

Registered under the ``redis`` (and ``rediss``) scheme by :func:`install` (called from
celeryconfig), so the worker, the CLI, the sweeper and the bench's bare no-op app all publish and
ack through it, with broker URLs unchanged.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis

PATH = "pipeline.kernel.redis_transport:Transport"
log = logging.getLogger(__name__)


def ack_batching() -> bool:
    """BROKER_ACK_BATCHING (default true): the unacked bookkeeping (deliveries and acks) written by a
    flusher thread in batches (see :class:`QoS`); false writes each inline, as kombu does. Raises
    SystemExit("configuration error: …") for a value that is not a boolean."""
    from pipeline.config import env_bool

    return env_bool("BROKER_ACK_BATCHING", True)


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    """kombu's Redis ack emulation with its bookkeeping written in batches by a flusher thread.

    kombu writes a delivered message into the unacked hash and index (``append``: HSET+ZADD) and
    removes it on ack (ZREM+HDEL), each a blocking round trip on the calling thread, Celery's
    event loop. Here both update kombu's in-memory state at once (an ack frees its prefetch slot)
    and queue the write; one flusher thread per channel writes what is queued, in order, in one
    transaction: the appends, then the removals, and neither for a message delivered and acked
    within the same batch (it never needs restoring). Order is kept because one thread writes
    them all, so an ack never reaches Redis before its message's append.

    What is not yet written when the process dies: an ack leaves its message in the unacked
    index, restored after the visibility timeout (at-least-once, as for a task still running); an
    append leaves nothing to restore — the same loss window kombu has between BRPOP and its own
    append, here a few milliseconds longer (the stuck-work sweep re-sends a step whose message
    was lost: README "What it is"). A failed write is retried for up to :attr:`WRITE_RETRY_SECONDS`
    (a broker outage). Before kombu restores or requeues from the unacked hash (a reject with
    requeue, a closing channel) the queue is written first (:meth:`sync`)."""

    #: how long a failed write is retried before its tags are left to the visibility timeout
    WRITE_RETRY_SECONDS = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batching = ack_batching()
        self._cond = threading.Condition()
        self._queued: list[tuple[Any, Any]] = []  # (tag, the unacked hash's value) or (tag, None): an ack
        self._writing = 0  # entries taken by the flusher and not yet written
        self._flusher: threading.Thread | None = None
        self._stopping = False

    def append(self, message: Any, delivery_tag: Any) -> None:
        if not self._batching:
            super().append(message, delivery_tag)
            return
        d = message.delivery_info
        self._enqueue(delivery_tag, kombu_redis.dumps([message._raw, d["exchange"], d["routing_key"]]))
        virtual.QoS.append(self, message, delivery_tag)  # in-memory: kombu's delivered set

    def ack(self, delivery_tag: Any) -> None:
        if not self._batching:
            super().ack(delivery_tag)
            return
        self._enqueue(delivery_tag, None)
        virtual.QoS.ack(self, delivery_tag)  # in-memory only: the tag is "dirty", its slot free

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        self.sync()  # kombu's requeue reads the unacked hash: its append must be there
        super().reject(delivery_tag, requeue=requeue)

    def restore_unacked(self, client: Any = None) -> Any:
        self.sync()
        return super().restore_unacked(client)

    def _enqueue(self, tag: Any, value: Any) -> None:
        with self._cond:
            self._queued.append((tag, value))
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name="broker-acks", daemon=True)
                self._flusher.start()
            self._cond.notify_all()

    def sync(self, timeout: float = 2.0, stop: bool = False) -> bool:
        """Wait up to ``timeout`` seconds until everything queued is written (``stop``: and let the
        flusher end). Returns False if some was not written in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._stopping = self._stopping or stop
            self._cond.notify_all()
            while self._queued or self._writing:
                left = deadline - time.monotonic()
                if left <= 0 or self._flusher is None or not self._flusher.is_alive():
                    return not (self._queued or self._writing)
                self._cond.wait(left)
        return True

    def flush_acks(self, timeout: float = 2.0) -> bool:
        """:meth:`sync` and stop the flusher: what a closing channel does first."""
        return self.sync(timeout, stop=True)

    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queued and not self._stopping:
                    self._cond.wait()
                if not self._queued:
                    self._flusher = None
                    return
                batch, self._queued = self._queued, []
                self._writing = len(batch)
            try:
                self._write(batch)
            finally:
                with self._cond:
                    self._writing = 0
                    self._cond.notify_all()

    def _write(self, batch: list[tuple[Any, Any]]) -> None:
        appends: dict[Any, Any] = {}
        acks: list[Any] = []
        for tag, value in batch:
            if value is not None:
                appends[tag] = value
            elif appends.pop(tag, None) is None:  # delivered and acked in this batch: neither is written
                acks.append(tag)
        if not appends and not acks:
            return
        give_up = time.monotonic() + self.WRITE_RETRY_SECONDS
        while True:
            try:
                with self.channel.conn_or_acquire() as client:
                    pipe = client.pipeline()
                    if appends:
                        now = time.time()
                        pipe.zadd(self.unacked_index_key, dict.fromkeys(appends, now))
                        pipe.hset(self.unacked_key, mapping=appends)
                    if acks:
                        pipe.zrem(self.unacked_index_key, *acks).hdel(self.unacked_key, *acks)
                    pipe.execute()
                return
            except Exception as exc:  # noqa: BLE001 - a broker error: retry, then leave it to the timeout
                if time.monotonic() >= give_up or self._stopping:
                    log.warning("could not write %d deliveries and %d acks to the broker (%s: %s); acked "
                                "messages will be restored after the visibility timeout",
                                len(appends), len(acks), type(exc).__name__, exc)
                    return
                time.sleep(0.5)


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel, reusing one synchronous client per connection pool."""

    QoS = QoS
    _shared_client: Any = None
    _shared_pool: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        client = self._shared_client
        if client is None or self._shared_pool is not pool:
            client = super()._create_client(asynchronous=False)
            self._shared_client, self._shared_pool = client, pool
        return client

    def close(self) -> None:
        qos = getattr(self, "_qos", None)
        if qos is not None and not self.closed:
            qos.flush_acks()  # before kombu disconnects the pools and restores the unacked
        self._shared_client = self._shared_pool = None
        super().close()


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel


def install() -> None:
    """Serve ``redis://`` and ``rediss://`` broker URLs with :class:`Transport` in this process
    (kombu.transport.TRANSPORT_ALIASES: the scheme -> class table kombu resolves URLs with)."""
    TRANSPORT_ALIASES["redis"] = PATH
    TRANSPORT_ALIASES["rediss"] = PATH
