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

Acks are written to Redis off the caller's thread (:class:`QoS`). kombu's Redis QoS emulates
acks with an "unacked" hash and index: each ack is a ZREM+HDEL transaction, one blocking round trip,
and Celery runs every ack on the worker's single event-loop thread (``hub.call_soon``), the same
thread that receives every message. Under load that thread was busy about 90 % of the time, a
quarter of it in acks (README "Benchmarks", issue 16). Here an ack updates kombu's in-memory state
at once (the prefetch window frees as before) and hands the tag to one flusher thread per channel,
which writes all tags waiting at that moment in one ZREM+HDEL transaction. Delivery stays
at-least-once: a message whose ack was not yet written when the worker died stays in the unacked
index and is restored after the visibility timeout, as a message whose task was still running
would be (every task here is idempotent). A closing channel writes the acks still waiting
before kombu restores the unacked ones. ``BROKER_ACK_BATCHING=false`` writes each ack inline, as
kombu does.

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
    """BROKER_ACK_BATCHING (default true): acks written by a flusher thread in batches (see the
    module's docstring); false writes each one inline on the acking thread, as kombu does. Raises
    SystemExit("configuration error: …") for a value that is not a boolean."""
    from pipeline.config import env_bool

    return env_bool("BROKER_ACK_BATCHING", True)


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    """kombu's Redis ack emulation with the acks' ZREM+HDEL written in batches by a flusher thread.

    ``ack(tag)`` marks the tag acked in kombu's in-memory state (so ``can_consume`` frees its
    prefetch slot) and queues it; the flusher writes every queued tag in one transaction
    (``ZREM unacked_index t1 t2 …``, ``HDEL unacked t1 t2 …``). A failed write is retried for up
    to :attr:`WRITE_RETRY_SECONDS` (a broker outage); after that the tags are left in the unacked
    index, to be restored after the visibility timeout (at-least-once). :meth:`flush_acks` waits
    for what is queued (a closing channel calls it)."""

    #: how long a failed ack write is retried before the tags are left to the visibility timeout
    WRITE_RETRY_SECONDS = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batching = ack_batching()
        self._cond = threading.Condition()
        self._queued: list[Any] = []
        self._writing = 0  # tags taken by the flusher and not yet written
        self._flusher: threading.Thread | None = None
        self._stopping = False

    def ack(self, delivery_tag: Any) -> None:
        if not self._batching:
            super().ack(delivery_tag)
            return
        with self._cond:
            self._queued.append(delivery_tag)
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name="broker-acks", daemon=True)
                self._flusher.start()
            self._cond.notify_all()
        virtual.QoS.ack(self, delivery_tag)  # in-memory only: the tag is "dirty", its slot free

    def flush_acks(self, timeout: float = 2.0) -> bool:
        """Wait up to ``timeout`` seconds until every queued ack is written; stop the flusher.
        Returns False if some were not written in time (they stay in the unacked index)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            while self._queued or self._writing:
                left = deadline - time.monotonic()
                if left <= 0 or self._flusher is None or not self._flusher.is_alive():
                    return not (self._queued or self._writing)
                self._cond.wait(left)
        return True

    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queued and not self._stopping:
                    self._cond.wait()
                if not self._queued:
                    self._flusher = None
                    return
                tags, self._queued = self._queued, []
                self._writing = len(tags)
            try:
                self._write(tags)
            finally:
                with self._cond:
                    self._writing = 0
                    self._cond.notify_all()

    def _write(self, tags: list[Any]) -> None:
        give_up = time.monotonic() + self.WRITE_RETRY_SECONDS
        while True:
            try:
                with self.channel.conn_or_acquire() as client:
                    client.pipeline().zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags).execute()
                return
            except Exception as exc:  # noqa: BLE001 - a broker error: retry, then leave it to the timeout
                if time.monotonic() >= give_up or self._stopping:
                    log.warning("could not write %d acks to the broker (%s: %s); their messages will be "
                                "restored after the visibility timeout", len(tags), type(exc).__name__, exc)
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
