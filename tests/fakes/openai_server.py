"""A fake OpenAI Chat Completions server for tests: real HTTP on 127.0.0.1, real SDK in front.

By default it answers like the real API, with content that is valid JSON for the schema the
request sent (``response_format.json_schema.schema``), written from the request's user data
(a JSON object) so the child's name appears in the story; deterministic.

Fault injection, for the next requests in order (``fake.script([...])``):

- ``("status", code, headers, body)``: that status, headers and body (dict -> JSON, or str/bytes)
- ``("hang", seconds)``: say nothing for that long, then answer normally
- ``("slow", seconds, *then)``: say nothing for that long, then answer as the step ``then`` says
  (e.g. ``("slow", 4, "status", 500, {}, body)``: an error that comes late; no ``then``: normally)
- ``("close",)``: close the connection without answering
- ``("malformed",)``: 200 with a body that is not JSON
- ``("refusal", text)``: 200, the model refused (``message.refusal``, content null)
- ``("length",)``: 200, content cut off, ``finish_reason`` "length"
- ``("content_filter",)``: 200, ``finish_reason`` "content_filter"
- ``("content", text)``: 200, ``finish_reason`` "stop", exactly this message content

``fake.decorate = fn``: every default answer's text fields go through ``fn(field, value)``
(e.g. emoji sprinkled into the title and page text, as real models do).

A request without ``Authorization: Bearer <api_key>`` gets OpenAI's 401, before any script.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.base import LocalHTTPFake

DEFAULT_KEY = "sk-test-FAKE0123456789abcdefSECRET"


def openai_error(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """A body in OpenAI's error format."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class FakeOpenAI(LocalHTTPFake):
    """``start()``, ``stop()``, ``base_url`` (``http://127.0.0.1:PORT/v1``), ``requests``
    (each ``{"path", "headers", "json", "t"}``, ``t`` from ``time.monotonic()``)."""

    name = "fake-openai"

    def __init__(self, api_key: str = DEFAULT_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self._script: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()
        self._counter = 0
        self.decorate: Callable[[str, str], str] | None = None

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def script(self, items: list[tuple[Any, ...]]) -> None:
        """Queue responses for the next requests (then back to normal answers)."""
        with self._lock:
            self._script.extend(items)

    # --- used by the handler ---------------------------------------------------------------

    def _record(self, path: str, headers: dict[str, str], body: Any) -> int:
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "json": body, "t": time.monotonic()})
            self._counter += 1
            return self._counter

    def _next(self) -> tuple[Any, ...] | None:
        with self._lock:
            return self._script.popleft() if self._script else None


class _Handler(BaseHTTPRequestHandler):
    owner: FakeOpenAI
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API (the SDK pools connections)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        return None

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        n = self.owner._record(self.path, {k.lower(): v for k, v in self.headers.items()}, body)

        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, openai_error(f"Invalid URL (POST {self.path})", "invalid_request_error"))
            return
        auth = self.headers.get("Authorization", "")
        if auth != f"Bearer {self.owner.api_key}":
            offered = auth.removeprefix("Bearer ")
            # Worst case on purpose: OpenAI masks the key it echoes, a careless gateway may not.
            # The adapter must keep it out of its messages either way.
            self._json(401, openai_error(
                f"Incorrect API key provided: {offered}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key"))
            return
        if not isinstance(body, dict):
            self._json(400, openai_error("We could not parse the JSON body of your request.", "invalid_request_error"))
            return

        step = self.owner._next() or ("normal",)
        if step[0] == "slow":
            self.owner._stopping.wait(float(step[1]))
            step = tuple(step[2:]) or ("normal",)
        kind = step[0]
        if kind == "status":
            _, code, headers, payload = step
            self._send(code, payload, headers)
        elif kind == "hang":
            # The client gives up meanwhile; the late answer then goes to a closed socket.
            self.owner._stopping.wait(float(step[1]))
            self._reply(n, body, None)
        elif kind == "close":
            self.close_connection = True
        elif kind == "malformed":
            self._send(200, b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"ind')
        elif kind == "refusal":
            self._reply(n, body, {"content": None, "refusal": step[1]})
        elif kind == "length":
            self._reply(n, body, {"content": '{"title": "A very long', "finish_reason": "length"})
        elif kind == "content_filter":
            self._reply(n, body, {"content": "", "finish_reason": "content_filter"})
        elif kind == "content":
            self._reply(n, body, {"content": step[1]})
        elif kind == "normal":
            self._reply(n, body, None)
        else:
            raise AssertionError(f"unknown scripted response {step!r}")

    # --- responses -------------------------------------------------------------------------

    def _reply(self, n: int, req: dict[str, Any], override: dict[str, Any] | None) -> None:
        """A 200 chat.completion; ``override`` replaces content/refusal/finish_reason."""
        o = override or {}
        if "content" in o:
            content = o["content"]
        else:
            answer = _content_for(req)
            if self.owner.decorate is not None and isinstance(answer, dict):
                answer = {k: self.owner.decorate(k, v) if isinstance(v, str) else v for k, v in answer.items()}
            content = json.dumps(answer)
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": o.get("refusal"),
                                   "annotations": []}
        completion_tokens = len((content or "").split()) + 5
        self._send(200, {
            "id": f"chatcmpl-fake{n:06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(req.get("model", "gpt-4o-mini")),
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": o.get("finish_reason", "stop")}],
            "usage": {"prompt_tokens": 100, "completion_tokens": completion_tokens,
                      "total_tokens": 100 + completion_tokens},
        }, {"x-request-id": f"req_fake{n:06d}"})

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, payload, {"x-request-id": "req_fake_error"})

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client timed out and left


# --- default content: valid for the request's schema, from the request's data -------------


def _content_for(req: dict[str, Any]) -> Any:
    schema = (((req.get("response_format") or {}).get("json_schema") or {}).get("schema")) or {}
    data: dict[str, Any] = {}
    for m in req.get("messages") or []:
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
            try:
                parsed = json.loads(m["content"])
            except ValueError:
                continue
            if isinstance(parsed, dict):
                data = parsed
    return _fill(schema, "", data, 0)


_SIGHTS = ("a shining star", "a friendly whale", "a tiny glowing mushroom", "a smiling sun",
           "a rainbow bridge", "a sleepy cloud", "a singing shell", "a dancing leaf")


def _fill(schema: dict[str, Any], key: str, data: dict[str, Any], index: int) -> Any:
    name = str(data.get("child_name") or "the child")
    kind = schema.get("type")
    if kind == "object":
        return {k: _fill(s, k, data, index) for k, s in (schema.get("properties") or {}).items()}
    if kind == "array":
        count = int(schema.get("minItems") or 3)
        return [_fill(schema.get("items") or {}, key, data, i) for i in range(count)]
    if kind in ("integer", "number"):
        return index
    if kind == "boolean":
        return True
    theme = str(data.get("theme") or "adventure")
    if key == "title":
        return f"{name} and the {theme}"
    if key == "style":
        return "soft watercolour, warm pastel colours, gentle rounded shapes, cosy light"
    if key == "beats":
        return f"{name} finds {_SIGHTS[index % len(_SIGHTS)]} and smiles"
    if key == "text":
        page = int(data.get("page_number") or 1)
        return f"{name} waved at {_SIGHTS[(page - 1) % len(_SIGHTS)]}. It waved back, and {name} laughed."
    return f"{name} {key}".strip()


FakeOpenAI.handler = _Handler
