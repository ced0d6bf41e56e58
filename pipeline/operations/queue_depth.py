"""How many messages wait in each Celery queue, asked of the broker itself (Redis or RabbitMQ).

Asked through kombu, the library Celery publishes with, so the broker's own naming holds:
- Redis (kombu.transport.redis): a queue is one list per priority step, ``<queue>`` for priority 0
  and ``<queue>\\x06\\x16<step>`` for the others (``Channel._q_for_pri``; steps [0, 3, 6, 9] unless
  ``priority_steps`` is set), under ``global_keyprefix`` when set. Their LLENs are summed by the
  channel's own ``_size`` (what its ``queue_declare`` answers), called directly: a passive
  ``queue_declare`` first asks EXISTS, which kombu 5.7's prefixing client does not prefix, so with
  ``global_keyprefix`` set it would call every queue missing (measured: 2 messages read as 0). A
  message taken by a worker and not yet acked leaves the
  lists and sits in the ``unacked`` hash (``Channel.unacked_key``) until the ack, or until the
  visibility timeout brings it back; ETA/countdown tasks a worker holds are counted there too.
- RabbitMQ (py-amqp): a passive ``queue.declare`` answers ``message_count``, the messages ready
  for delivery (AMQP 0-9-1, queue.declare-ok); unacked ones are not in it (RabbitMQ's own
  Prometheus plugin exports them).
A queue the broker does not know (Redis: an empty queue has no key; RabbitMQ: no worker declared
it yet) holds 0 messages.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kombu import Connection


@dataclass(frozen=True)
class Depths:
    """``ready``: queue name -> messages waiting (int). ``unacked``: messages delivered to a worker
    and not yet acknowledged, all queues together (Redis only; None on RabbitMQ)."""

    ready: dict[str, int]
    unacked: int | None


def _not_found(exc: BaseException) -> bool:
    # AMQP's reply code 404 (NOT_FOUND): an int from py-amqp (amqp.exceptions.NotFound), the string
    # "404" from kombu's virtual transports (kombu.transport.virtual.Channel.queue_declare).
    return str(getattr(exc, "reply_code", None)) == "404"


def queue_depths(broker_url: str, queues: Iterable[str], transport_options: Mapping[str, Any] | None = None,
                 timeout: float = 5.0) -> Depths:
    """The depth of each queue in ``queues`` on the broker at ``broker_url`` (``redis://``,
    ``rediss://`` or ``amqp://``), with Celery's ``broker_transport_options`` (priority steps, key
    prefix). Raises the transport's connection error (kombu ``connection_errors``) when the broker
    does not answer within ``timeout`` seconds: the caller reports the broker as down."""
    with Connection(broker_url, transport_options=dict(transport_options or {}),
                    connect_timeout=timeout) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
        ready: dict[str, int] = {}
        channel = conn.channel()
        redis = conn.transport.driver_type == "redis"
        try:
            for queue in queues:
                if redis:
                    ready[queue] = int(channel._size(queue))  # see the module's docstring
                    continue
                try:
                    ready[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
                except conn.channel_errors as e:
                    if not _not_found(e):
                        raise
                    ready[queue] = 0
                    channel.close()  # AMQP closes a channel after a 404: carry on with a new one
                    channel = conn.channel()
            unacked = None
            if redis:
                unacked = int(channel.client.hlen(channel.unacked_key))
        finally:
            channel.close()
    return Depths(ready, unacked)
