"""Replicate's completion webhooks, delivered the way Replicate does, for the fake Replicate server.

A prediction created with ``webhook`` (and ``webhook_events_filter`` containing ``completed``, or
no filter) gets one POST of its JSON (as ``GET /v1/predictions/{id}`` shows it then) to that URL
once it has ended, with the headers Replicate documents
(https://replicate.com/docs/topics/webhooks/verify-webhook): ``webhook-id`` (``msg_...``, the same
on every retry of that delivery), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed with the base64 bytes after ``whsec_``).
The signature is computed here by hand from that page, not by the ``standardwebhooks`` library,
so that the tests check our verifier (which uses the library) against Replicate's own description.
A delivery that does not get a 2xx is tried again (Replicate retries; here 3 tries, 0.2 s apart).

Test controls: ``copies`` (each delivery sent that many times: Replicate delivers at least once),
``forge_next(n)`` (the next n deliveries signed with another key), ``stale_next(n)`` (the next n
stamped 10 minutes ago), ``hold()``/``release()`` (deliveries wait), ``sent`` (what went out).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

WRONG_SECRET = "whsec_" + base64.b64encode(b"not-the-account-secret-0123456789").decode()


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """``webhook-signature`` per Replicate's "Verify webhooks" page: base64(HMAC-SHA256(key,
    f"{id}.{timestamp}.{body}")) where key = base64-decode(secret without "whsec_")."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookSender:
    """Sends completion webhooks from one daemon thread, each at its due time."""

    def __init__(self, secret: str, *, copies: int = 1) -> None:
        self.secret = secret
        self.copies = copies
        self.sent: list[dict[str, Any]] = []  # {"id", "url", "status", "forged", "stale", "code", "t"}
        self._due: list[tuple[float, str, Callable[[], dict[str, Any] | None]]] = []
        self._forge = 0
        self._stale = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._held = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="fake-replicate-webhooks", daemon=True)
        self._thread.start()

    def forge_next(self, n: int = 1) -> None:
        with self._lock:
            self._forge += n

    def stale_next(self, n: int = 1) -> None:
        with self._lock:
            self._stale += n

    def hold(self) -> None:
        with self._lock:
            self._held = True

    def release(self) -> None:
        with self._wake:
            self._held = False
            self._wake.notify_all()

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        self._thread.join(timeout=5)

    def schedule(self, when: float, url: str, view: Callable[[], dict[str, Any] | None]) -> None:
        """POST ``view()`` (the prediction's JSON then; None: nothing) to ``url`` at ``when`` (time.time())."""
        with self._wake:
            self._due.append((when, url, view))
            self._due.sort(key=lambda d: d[0])
            self._wake.notify_all()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stop and (self._held or not self._due or self._due[0][0] > time.time()):
                    wait = None if self._held or not self._due else max(0.005, self._due[0][0] - time.time())
                    self._wake.wait(wait)
                if self._stop:
                    return
                _, url, view = self._due.pop(0)
                forged, self._forge = self._forge > 0, max(0, self._forge - 1)
                stale = not forged and self._stale > 0  # one fault per delivery: the forged one first
                self._stale -= 1 if stale else 0
            prediction = view()
            if prediction is not None:
                self._deliver(url, prediction, forged, stale)

    def _deliver(self, url: str, prediction: dict[str, Any], forged: bool, stale: bool) -> None:
        body = json.dumps(prediction)
        msg_id = "msg_" + secrets.token_hex(12)
        for _ in range(self.copies):
            code = 0
            for _try in range(3):
                ts = int(time.time()) - (600 if stale else 0)
                headers = {"Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(ts),
                           "webhook-signature": sign(WRONG_SECRET if forged else self.secret, msg_id, ts, body)}
                req = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - a test URL
                        code = r.status
                except urllib.error.HTTPError as e:
                    code = e.code
                except OSError:
                    code = 0
                if 200 <= code < 300:
                    break
                time.sleep(0.2)
            with self._lock:
                self.sent.append({"id": msg_id, "url": url, "status": prediction.get("status"), "forged": forged,
                                  "stale": stale, "code": code, "t": time.monotonic(), "wall": time.time(),
                                  "prediction": prediction.get("id")})
