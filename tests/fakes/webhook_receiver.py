"""A web app's webhook endpoint, as a receiver following Standard Webhooks would run it: every
request is verified with the reference library (``standardwebhooks.Webhook(secret).verify``);
a request that fails verification is answered 400 and counted in ``rejected``.

It can be told to be unavailable (503 with ``Retry-After``), to hang (hold each request until
``release()`` or its hang time passes), or be stopped and started again on its port (connection
refused meanwhile). ``received`` lists every verified request in arrival order (duplicates
included: at-least-once), ``events()`` the first of each webhook-id.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from standardwebhooks import Webhook

from tests.fakes.base import LocalHTTPFake


class _Handler(BaseHTTPRequestHandler):
    owner: WebhookReceiver

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        o = self.owner
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        with o.lock:
            o.requests += 1
            mode, retry_after, hang = o.mode, o.retry_after, o.hang_seconds
        if mode == "hang":
            with o.lock:
                o.hanging_ports.append(self.client_address[1])
            o.hanging.set()
            deadline = time.monotonic() + hang
            while time.monotonic() < deadline and not o.released.is_set() and not o._stopping.is_set():
                time.sleep(0.02)
        if mode == "unavailable":
            self._reply(503, b"down for maintenance", {"Retry-After": str(retry_after)})
            return
        try:
            msg = Webhook(o.secret).verify(body, headers)
        except Exception as e:  # noqa: BLE001 - any verification failure is a rejected request
            with o.lock:
                o.rejected.append(f"{type(e).__name__}: {e}")
            self._reply(400, b"bad signature", {})
            return
        with o.lock:
            o.received.append({"id": headers["webhook-id"], "type": msg["type"], "timestamp": msg["timestamp"],
                               "data": msg["data"], "at": time.monotonic(), "after_hang": mode == "hang"})
        self._reply(204 if mode != "hang" or o.released.is_set() else 200, b"", {})

    def _reply(self, code: int, body: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the sender gave up (its timeout): nothing to answer
            pass


class WebhookReceiver(LocalHTTPFake):
    """The receiver; ``secret`` is the whsec_ signing secret shared with the sender."""

    handler = _Handler
    name = "webhook-receiver"

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.lock = threading.Lock()
        self.mode = "ok"  # ok | unavailable | hang
        self.retry_after = 1
        self.hang_seconds = 30.0
        self.hanging = threading.Event()  # set when a request starts hanging
        self.released = threading.Event()
        self.hanging_ports: list[int] = []  # the senders' ports of the requests held, in order
        self.requests = 0
        self.received: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self.port = 0

    def start(self, port: int = 0) -> WebhookReceiver:
        """Listen (again) on ``port`` (0: any, remembered for the next start)."""
        super().start(port or self.port)
        assert self._server is not None
        self.port = self._server.server_address[1]
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused until ``start()``)."""
        super().stop()
        self._server = None

    @property
    def running(self) -> bool:
        """Whether it listens."""
        return self._server is not None

    @property
    def url(self) -> str:
        """Where to POST: ``http://127.0.0.1:PORT/webhooks``."""
        return f"http://127.0.0.1:{self.port}/webhooks"

    def set_mode(self, mode: str, *, retry_after: int = 1, hang_seconds: float = 30.0) -> None:
        """``ok``, ``unavailable`` (503, Retry-After: ``retry_after`` s) or ``hang``."""
        with self.lock:
            self.mode, self.retry_after, self.hang_seconds = mode, retry_after, hang_seconds
            self.released.clear()
            self.hanging.clear()

    def release(self) -> None:
        """Let hanging requests finish and answer the next ones at once."""
        with self.lock:
            self.mode = "ok"
        self.released.set()

    def events(self, *, story_id: str | None = None, order_id: str | None = None) -> list[dict[str, Any]]:
        """Verified events, first arrival of each id, in arrival order; only a story's (its pages'
        too) or an order's when asked."""
        seen: set[str] = set()
        out = []
        with self.lock:
            for r in self.received:
                if r["id"] in seen:
                    continue
                if story_id is not None and (r["data"].get("story_id") != story_id or "order_id" in r["data"]):
                    continue
                if order_id is not None and r["data"].get("order_id") != order_id:
                    continue
                seen.add(r["id"])
                out.append(r)
        return out

    def dump(self) -> str:
        """What was received, for an assertion's message."""
        with self.lock:
            return json.dumps([{k: r[k] for k in ("id", "type")} for r in self.received][-40:])
