"""The worker's message consumer: Celery's own, except that one malformed message cannot stop it.

Outside clients publish our tasks by name from any language (celery-node, gocelery, hand-built
kombu envelopes), and Celery's consumer only guards the faults it expects (an unknown task name,
a body it cannot decode, ``InvalidTaskError``). Anything else raised while it turns a message
into a request, for example a protocol 2 body with two items instead of ``[args, kwargs,
embed]`` (``ValueError: not enough values to unpack``), escapes into the worker's event loop and
stops the worker ("Unrecoverable error"). On Redis the message is restored to the queue at
shutdown (on RabbitMQ it is requeued when the connection closes), so a supervisor's restart
takes it again and dies again: one bad message stops every story.

Here such a message is rejected (not requeued), with one ERROR line saying why and what the body
was (``celery.worker.consumer.consumer``: "Received invalid task message"), exactly as Celery
does for the malformed messages it recognises. Nothing is lost for good: a story or photo whose
message was malformed is still ``pending`` in Postgres, and the sweeper (``ops.sweep``, beat)
re-sends it once it has waited ``STEP_LEASE_SECONDS``.

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
from collections.abc import Callable
from typing import Any

from celery.worker.consumer.consumer import Consumer as CeleryConsumer
from celery.worker.consumer.consumer import logger as log

# What kombu's Redis transport raises reading an item that is not a kombu envelope: not JSON, JSON
# that is not an object, a body that is not base64; and the KeyErrors of a missing field.
NOT_AN_ENVELOPE: tuple[type[BaseException], ...] = (json.JSONDecodeError, TypeError, binascii.Error)
ENVELOPE_KEYS = (("properties",), ("delivery_tag",))


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer (``worker_consumer`` in celeryconfig) whose task handler rejects a
    message it cannot turn into a request instead of letting the error stop the worker."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Raised by kombu's Redis transport for a queued item that is not an envelope (see above).
        errors: tuple[type[BaseException], ...] = getattr(self, "connection_errors")  # noqa: B009 - untyped in Celery
        self.connection_errors = (*errors, *NOT_AN_ENVELOPE)

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
