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

Registered under the ``redis`` (and ``rediss``) scheme by :func:`install` (called from
celeryconfig), so the worker, the CLI, the sweeper and the bench's bare no-op app all publish and
ack through it, with broker URLs unchanged.
"""
from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

PATH = "pipeline.kernel.redis_transport:Transport"


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel, reusing one synchronous client per connection pool."""

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
