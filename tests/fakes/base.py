"""What every fake provider server shares: a ThreadingHTTPServer on 127.0.0.1 in a daemon thread.

A fake subclasses LocalHTTPFake, sets ``handler`` (its BaseHTTPRequestHandler, which reaches the
fake as ``self.owner``) and adds the provider's protocol; ``_stopping`` wakes handlers that were
told to hang, so ``stop()`` never waits for a scripted timeout.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hanging handler must not block stop()
    allow_reuse_address = True  # a stopped fake can come back on its port (provider-down tests)


class LocalHTTPFake:
    handler: ClassVar[type[BaseHTTPRequestHandler]]
    name: ClassVar[str] = "fake"

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, port: int = 0) -> Self:
        """``port``: 0 for any free one; a fixed one to come back where a stopped fake was."""
        self._before_start()
        handler: Any = type("Handler", (self.handler,), {"owner": self})
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", port), handler)
        # A short poll interval: shutdown() waits for it, and tests start and stop many servers.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes hanging handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._after_stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def root(self) -> str:
        """``http://127.0.0.1:PORT``."""
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _before_start(self) -> None:
        """Hook: work to do before serving (e.g. warm a model)."""

    def _after_stop(self) -> None:
        """Hook: release what the fake holds beyond its server."""
