"""A Redis restart must not kill the worker: a guard for Celery 5.7's close of the lost connection.

The bug (issue 12, item 3; measured by tests/test_broker_restart.py): with messages held unacked
by the worker (delayed retries waiting in its timer: remote image jobs polled every
JOB_POLL_INTERVAL; tasks running under acks_late), a Redis restart stopped the worker in about
half of the restarts with ``Unrecoverable error: AttributeError("'NoneType' object has no attribute
'hostname'")``. Celery 5.6.3 did not; the path came with celery PR #10242 (5.7.0).

How (celery 5.7.0, kombu 5.7.0, redis-py 8.1): on a lost connection the consumer runs
``Consumer.on_connection_error_after_connected`` (celery/worker/consumer/consumer.py), which

1. calls ``connection.collect(socket_timeout=5)`` (line 476, any error swallowed). kombu's
   ``Connection.collect`` (kombu/connection.py:432) closes the channels, then detaches the
   transport: ``transport.client = None`` (``_do_close_transport``, line 429). The closing can
   stop half-way: the task channel's ``close`` (kombu/transport/redis.py:1890) first reads the
   reply of its outstanding ``BRPOP`` (``_in_poll``, the usual state of an idle consumer), which
   raises ``ConnectionError`` before the channel is marked closed (``maybe_close_channel``
   swallows it); then ``Transport.close_connection`` (kombu/transport/virtual/base.py:988) closes
   the channels last-first and stops at the first one that raises: the remote-control (pidbox)
   channel, deleting its auto-delete fanout binding over the dead socket (redis.py:1902-1906).
   The task channel is left open, its pools in place, its transport detached;
2. then (new in 5.7.0) closes the connection: ``ignore_errors(connection, connection.close)``
   (line 487). ``close`` closes the task channel again; it gets through ``_disconnect_pools()``
   (the pool is gone) to ``QoS.restore_unacked_once()`` (virtual/base.py:806). With messages
   delivered and unacked (the held retries, the running tasks), ``restore_unacked`` asks for a
   client (``conn_or_acquire``, redis.py:2089), ``_get_pool`` builds a pool from ``_connparams``
   (redis.py:1957), which reads ``self.connection.client.hostname``, and ``client`` is the
   ``None`` of step 1: ``AttributeError``. Neither a connection nor a channel error, so
   ``ignore_errors`` lets it through, out of the consumer's ``start``: the worker exits.

When the loss is noticed on the ``BRPOP`` reply itself, nothing is outstanding, the first close
completes (its restore fails with ``ConnectionError`` while the transport is still attached, having
built a new pool that later acks reuse) and the worker lives: hence "about half". With nothing
unacked no client is asked for. Celery 5.6.3 ran step 1 only: the half-closed channel kept its
pool, and later acks went through it. And the close is not the only victim: a task that finishes while
the consumer reconnects acks through the half-closed channel from the event loop after the
reconnect, and the same ``AttributeError`` there (no pool, detached transport) would stop the
worker too, even with the close's error swallowed.

The guard: a Redis channel whose transport is detached (``channel.connection`` or its ``client``
is ``None``) answers a request for a new connection pool with the transport's own connection
error, ``redis.exceptions.ConnectionError``, instead of ``AttributeError``. Every caller above
already handles that one as "the connection is gone": the close path ignores it and reconnects,
an ack logs "Couldn't ack" and goes on, a publish is retried on a new connection (kombu's
``ensure``). Nothing else changes: a channel with its transport attached builds its pool as before.

What happens to the messages (the test checks every story completes and no page step runs twice):

- nothing is acked into nothing: an ack that meets the detached channel fails as a connection
  error (Celery logs "Couldn't ack", CRITICAL, once per message) and the message stays in Redis's
  unacked set if Redis kept it: it comes back after the visibility timeout and the step's claim
  makes the repeat a no-op (the task had finished);
- the retries the worker held are dropped with the old connection (Celery's ``on_close`` cancels
  their timer entries, expecting the broker to deliver them again). A Redis that kept its data
  holds them in its unacked set (back after BROKER_VISIBILITY_TIMEOUT); a Redis restarted without
  persistence has lost them, as it lost every queued message: the sweeper (``ops.sweep`` under
  beat) re-sends each step whose lease (STEP_LEASE_SECONDS) ran out, and a re-sent image step
  goes on polling the provider job already recorded (no second job). The guard changes none of
  this: it only keeps the worker alive to take the re-sent work.

When it is on: Celery 5.7.0 or newer (the close path of step 2; below it there is nothing to
guard); below ``CELERY_FIXED_IN`` once a Celery release fixes it (none has yet: set it then, and
tests/test_broker_restart.py says whether the worker still survives without the guard); and only
while the installed kombu still raises ``AttributeError`` for a detached channel (checked at apply
time on a bare channel object, no network: a kombu that raises its connection error there itself
switches the guard off). Off, for a proof run only: ``BROKER_SURVIVAL_GUARD=0`` (or false/no/off)
in the worker's environment.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Any

import celery
import redis.exceptions
from packaging.version import Version

log = logging.getLogger(__name__)

CELERY_BROKEN_FROM = Version("5.7.0")  # celery PR #10242: close the lost connection after collect()
CELERY_FIXED_IN: Version | None = None  # set to the first Celery release that fixes it upstream
SWITCH = "BROKER_SURVIVAL_GUARD"
_OFF = ("0", "false", "no", "off")

_original: Any = None  # kombu's own Channel._connparams while the guard is in place


class DetachedChannelError(redis.exceptions.ConnectionError):
    """A Redis channel of a lost connection asked for a new pool after its transport was detached."""


def _switched_off() -> bool:
    return os.environ.get(SWITCH, "").strip().lower() in _OFF


def _kombu_connparams() -> Any:
    from kombu.transport import redis as kombu_redis

    return _original or kombu_redis.Channel._connparams


def _kombu_raises_attribute_error() -> bool:
    """Whether kombu's Redis channel still fails with AttributeError when its transport is
    detached: a bare Channel (no __init__, no network) whose transport has ``client = None``."""
    from kombu.transport import redis as kombu_redis

    probe = kombu_redis.Channel.__new__(kombu_redis.Channel)
    probe.connection = type("DetachedTransport", (), {"client": None, "default_port": 6379})()
    try:
        _kombu_connparams()(probe)
    except AttributeError:
        return True
    except Exception:  # noqa: BLE001 - anything else (its connection error) means kombu handles it
        return False
    return False


def affected() -> tuple[bool, str]:
    """Whether the installed Celery and kombu have the bug, and why (one line)."""
    version = Version(celery.__version__)
    if version < CELERY_BROKEN_FROM:
        return False, f"celery {version} does not close the lost connection after collect()"
    if CELERY_FIXED_IN is not None and version >= CELERY_FIXED_IN:
        return False, f"celery {version} has the fix (from {CELERY_FIXED_IN})"
    if not _kombu_raises_attribute_error():
        return False, "kombu raises its connection error for a detached Redis channel itself"
    return True, f"celery {version} closes the lost connection after collect(); kombu leaves the channel detached"


def apply() -> bool:
    """Put the guard in place if the installed versions are ``affected()`` and the switch is not
    off (idempotent). Returns whether it is in place."""
    global _original
    from kombu.transport import redis as kombu_redis

    if _original is not None:
        return True
    on, why = affected()
    if not on:
        return False
    if _switched_off():
        log.warning("broker restart guard off (%s=%s): a Redis restart can stop this worker (%s)",
                    SWITCH, os.environ.get(SWITCH), why)
        return False
    original = kombu_redis.Channel._connparams

    @functools.wraps(original)
    def _connparams(self: Any, *args: Any, **kwargs: Any) -> Any:
        transport = self.connection
        if transport is None or getattr(transport, "client", None) is None:
            if not getattr(self, "_survival_reported", False):  # once a channel: its late acks follow
                self._survival_reported = True
                log.info("broker restart guard: a Redis channel of a lost connection was used after its transport "
                         "was detached; raised as a lost connection (not AttributeError)")
            raise DetachedChannelError("the Redis channel's connection was closed (its transport is detached)")
        return original(self, *args, **kwargs)

    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]
    _original = original
    return True


def remove() -> None:
    """Take the guard out again (tests: the proof that it is what keeps the worker alive)."""
    global _original
    from kombu.transport import redis as kombu_redis

    if _original is not None:
        kombu_redis.Channel._connparams = _original  # type: ignore[method-assign]
        _original = None


apply()
