"""The worker's message consumer: Celery's own, except that one malformed message cannot stop it.

Outside clients publish our tasks by name from any language (celery-node, gocelery, hand-built
kombu envelopes), and Celery's consumer only guards the faults it expects (an unknown task name,
a body it cannot decode, ``InvalidTaskError``). Anything else raised while it turns a message
into a request, for example a protocol 2 body with two items instead of ``[args, kwargs,
embed]`` (``ValueError: not enough values to unpack``), escapes into the worker's event loop and
stops the worker ("Unrecoverable error"). On Redis the message is restored to the queue at
shutdown (on RabbitMQ it is requeued when the connection closes), so a supervisor's restart
takes it again and dies again: one bad message stops every story.

Here such a message is rejected (not requeued), with one ERROR line saying why
(``celery.worker.consumer.consumer``: "Received invalid task message"), as Celery does for the
malformed messages it recognises.

Never the body: Celery's own reports of a refused message (a message that is not a task at all,
"Received and deleted unknown message"; an invalid one; an unregistered task name; a body it cannot
decode) are several lines each, quoting up to 1 KB of the body and its headers, and a body can hold
personal data (a child's name, a Stripe payload). Each is replaced by one ERROR line (see
``refused``): the reason, then the message's id, queue, size and content type; Celery's own
record of it is dropped by a filter on its logger (``NoBodies``). What Celery does besides
logging (reject, its signals, marking an unregistered task failed) is unchanged.

Nothing is lost for good: a story or photo whose message was malformed is still ``pending`` in
Postgres, and the sweeper (``ops.sweep``, beat) re-sends it once it has waited
``STEP_LEASE_SECONDS``.

On Redis, a message that is not even a kombu envelope (a bare string, a JSON array or number, a
``body`` that is not base64 though ``body_encoding`` says so, no ``properties`` or no
``properties.delivery_tag``) fails inside kombu's transport, after ``BRPOP`` took it and before
any consumer code sees it: Celery stopped the worker (``JSONDecodeError``, ``TypeError``,
``binascii.Error``) or reported a lost connection (``KeyError``). It is logged (ERROR, "not a
kombu envelope", with the error) and the consumer reconnects as after a lost connection: the
message is gone (kombu had already taken it off the list), but it named nothing readable. The
cost of the rule: a ``TypeError`` from a bug in the event loop would reconnect (Celery's
restart-frequency guard logs and slows it) rather than stop the worker.

Broker errors raised while acknowledging (a connection lost, a channel closed) still propagate,
so the consumer reconnects as before. Kombu counts ``KeyError`` among Redis's connection errors
(for a stale poller file descriptor, kombu #2582); raised by a message's own content it is the
message's fault, so it is rejected like any other.
"""
from __future__ import annotations

import binascii
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import consumer as celery_consumer
from celery.worker.consumer.consumer import Consumer as CeleryConsumer
from celery.worker.consumer.consumer import logger as log

# What kombu's Redis transport raises reading an item that is not a kombu envelope: not JSON, JSON
# that is not an object, a body that is not base64; and the KeyErrors of a missing field.
NOT_AN_ENVELOPE: tuple[type[BaseException], ...] = (json.JSONDecodeError, TypeError, binascii.Error)
ENVELOPE_KEYS = (("properties",), ("delivery_tag",))


# Celery's multi-line reports of a refused message, each quoting the body (celery 5.x,
# celery/worker/consumer/consumer.py): the templates its logger is called with.
BODY_TEMPLATES = frozenset(getattr(celery_consumer, name) for name in
                           ("UNKNOWN_FORMAT", "UNKNOWN_TASK_ERROR", "INVALID_TASK_ERROR", "MESSAGE_DECODE_ERROR"))


class NoBodies(logging.Filter):
    """Drops Celery's consumer records that quote a message's body (BODY_TEMPLATES); the
    consumer below logs one line without it instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in BODY_TEMPLATES


NO_BODIES = NoBodies()


def refused(reason: str, message: Any) -> None:
    """Log one ERROR line for a refused message: ``reason`` (one line, at most 200 characters
    kept), then the message's id (its task id, else its correlation id, else its delivery tag),
    queue (the routing key it came by), size of the body in bytes and content type. Never the
    body or the headers' values."""
    headers = getattr(message, "headers", None) or {}
    properties = getattr(message, "properties", None) or {}
    ident = headers.get("id") or properties.get("correlation_id") or getattr(message, "delivery_tag", None)
    info = getattr(message, "delivery_info", None) or {}
    body = getattr(message, "body", b"") or b""
    log.error("%s [id=%s queue=%s size=%db content_type=%s]",
              " ".join(reason.split())[:200], str(ident)[:64], info.get("routing_key"), len(body),
              getattr(message, "content_type", None))


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer (``worker_consumer`` in celeryconfig) whose task handler rejects a
    message it cannot turn into a request instead of letting the error stop the worker, and
    which reports a refused message in one line without its body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._events_lock = threading.Lock()
        self._events_wake = threading.Event()
        super().__init__(*args, **kwargs)
        log.addFilter(NO_BODIES)  # once: a filter already present is not added again
        # Raised by kombu's Redis transport for a queued item that is not an envelope (see above).
        errors: tuple[type[BaseException], ...] = getattr(self, "connection_errors")  # noqa: B009 - untyped in Celery
        self.connection_errors = (*errors, *NOT_AN_ENVELOPE)

    # Task events (Flower): Celery buffers them per worker and asks the event loop to publish the
    # buffer after every single event (``on_send_event_buffered``: a wake-up of the loop and one
    # Redis PUBLISH of one to three events each time, a quarter of the loop thread's time in the
    # pipeline's profile; the loop thread also receives every message, so it bounded the worker).
    # Here the first event of a quiet spell arms one publish EVENTS_FLUSH_DELAY later, and every
    # event sent until then goes with it; the publish runs on a thread of its own ("task-events"),
    # not the loop (Celery's dispatcher takes its mutex for a flush and itself publishes a full
    # buffer, 24 events, from whichever thread sent the last one). Flower sees each event at most
    # that much later.
    EVENTS_FLUSH_DELAY = 0.1  # seconds
    _events_armed = False
    _events_stopping = False
    _events_thread: threading.Thread | None = None

    def on_send_event_buffered(self) -> None:
        if self.hub is not None and not self._events_armed:
            self._events_armed = True
            with self._events_lock:
                if self._events_thread is None:
                    self._events_thread = threading.Thread(target=self._events_publisher, name="task-events",
                                                           daemon=True)
                    self._events_thread.start()
            self._events_wake.set()

    def _events_publisher(self) -> None:
        while True:
            self._events_wake.wait()
            if self._events_stopping:
                return
            time.sleep(self.EVENTS_FLUSH_DELAY)
            self._events_wake.clear()
            self._events_armed = False  # events sent from now on arm the next publish
            try:
                self._flush_events()
            except Exception:  # noqa: BLE001 - events are for people watching: the next publish retries
                log.warning("could not publish task events", exc_info=True)

    def shutdown(self) -> None:
        """Publish the task events still buffered (Celery's events step closes the dispatcher without
        publishing them), then Celery's shutdown."""
        self._events_stopping = True
        self._events_wake.set()
        try:
            self._flush_events()
        except Exception:  # noqa: BLE001 - events are for people watching: never block the shutdown
            log.warning("could not publish the last task events", exc_info=True)
        super().shutdown()

    def on_connection_error_after_connected(self, exc: BaseException) -> None:
        if isinstance(exc, NOT_AN_ENVELOPE) or (isinstance(exc, KeyError) and exc.args[:1] in ENVELOPE_KEYS):
            log.error("Dropped a message that is not a kombu envelope (%s: %s); reconnecting",
                      type(exc).__name__, str(exc)[:200])
        super().on_connection_error_after_connected(exc)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle = super().create_task_handler(*args, **kwargs)
        broker_errors = tuple(e for e in (*self.connection_errors, *self.channel_errors) if e is not KeyError)

        def on_task_received(message: Any) -> Any:
            try:
                return handle(message)
            except broker_errors:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever the message's content raised: refuse it
                if message.acknowledged:  # Celery acked or rejected it before raising: only say why
                    log.error("Error after handling a task message (already %s): %r", message._state, exc,
                              exc_info=True)
                    return None
                return self.on_invalid_task(None, message, exc)

        return on_task_received

    def on_unknown_message(self, body: Any, message: Any) -> None:
        """Not a Celery task message (no task name in its headers or body): one line, then
        Celery's reject and ``task_rejected`` signal."""
        refused("Received and deleted unknown message (not a Celery task: no task name)", message)
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: BaseException) -> None:
        """A task name no worker registers: one line, then Celery's handling (reject, the task
        marked failed with NotRegistered, ``task-failed`` event, ``task_unknown`` signal)."""
        refused(f"Received unregistered task of type {str(exc)}", message)
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
        """A task message Celery cannot run (InvalidTaskError, or whatever on_task_received
        caught): one line with the reason, then Celery's reject and ``task_rejected`` signal."""
        refused(f"Received invalid task message: {exc}", message)
        super().on_invalid_task(body, message, exc)

    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        """A body that cannot be decoded (not JSON, a serializer refused: pickle): one line, then
        Celery's ack."""
        refused(f"Can't decode message body: {exc}", message)
        super().on_decode_error(message, exc)
