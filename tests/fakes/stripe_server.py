"""A fake Stripe API for tests: real HTTP on 127.0.0.1, Stripe's official ``stripe`` package in
front (``StripeClient(base_addresses={"api": fake.root})``, STRIPE_API_BASE for the workers).

What it speaks, like api.stripe.com (https://docs.stripe.com/api/events/retrieve,
https://docs.stripe.com/api/errors): ``GET /v1/events/{id}`` with HTTP Basic or Bearer auth by
a secret key (``sk_...``) or restricted key (``rk_...``) of one mode; the event as stored, or
404 ``{"error": {"type": "invalid_request_error", "code": "resource_missing", ...}}``; 401 for a
wrong key. Keys of the other mode do not see an event (Stripe keeps live and test data apart).

Tests add events with ``add(event)`` (the event JSON as Stripe would send it), make the API
fail with ``fail_next(status, times)`` and read ``requests``.
"""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.base import LocalHTTPFake

LIVE_KEY = "rk_live_fake0123456789abcdef"
TEST_KEY = "sk_test_fake0123456789abcdef"


class FakeStripe(LocalHTTPFake):
    name = "fake-stripe"

    def __init__(self, keys: tuple[str, ...] = (LIVE_KEY, TEST_KEY)) -> None:
        super().__init__()
        self.keys = set(keys)
        self.events: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self._fail: list[int] = []
        self._lock = threading.Lock()

    def add(self, event: dict[str, Any] | str) -> dict[str, Any]:
        ev = json.loads(event) if isinstance(event, str) else dict(event)
        with self._lock:
            self.events[ev["id"]] = ev
        return ev

    def fail_next(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._fail += [status] * times

    def lookups(self, event_id: str) -> int:
        return len([r for r in self.requests if r["path"] == f"/v1/events/{event_id}"])

    class handler(BaseHTTPRequestHandler):  # noqa: N801 - LocalHTTPFake's attribute name
        owner: FakeStripe

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _key(self) -> str:
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                return auth[7:].strip()
            if auth.startswith("Basic "):
                return base64.b64decode(auth[6:]).decode().split(":")[0]
            return ""

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", "req_fake")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            fake = self.owner
            key = self._key()
            path = self.path.split("?")[0]
            with fake._lock:
                fake.requests.append({"method": "GET", "path": path, "key_mode": key[3:7] if key else None})
                failing = fake._fail.pop(0) if fake._fail else None
            if failing is not None:
                self._send(failing, {"error": {"type": "api_error", "message": "Something went wrong (fake)."}})
                return
            if key not in fake.keys:
                self._send(401, {"error": {"type": "invalid_request_error",
                                           "message": "Invalid API Key provided: " + key[:8] + "***"}})
                return
            if not path.startswith("/v1/events/"):
                self._send(404, {"error": {"type": "invalid_request_error", "message": "Unrecognized request URL"}})
                return
            event_id = path.rsplit("/", 1)[1]
            live = key.startswith(("sk_live_", "rk_live_"))
            ev = fake.events.get(event_id)
            if ev is None or bool(ev.get("livemode")) != live:
                self._send(404, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                                           "param": "id", "message": f"No such event: '{event_id}'"}})
                return
            self._send(200, ev)
