"""A fake Replicate HTTP API for tests: real HTTP on 127.0.0.1, the real ``replicate`` SDK in front.

Endpoints (Replicate's paths, JSON shapes and error format ``{"title", "detail", "status"}``):

- ``POST /v1/predictions`` (``{"version", "input"}``; ``owner/name:hash`` or a bare hash)
- ``POST /v1/models/{owner}/{name}/predictions`` (``{"input"}``)
- ``GET /v1/predictions/{id}``, ``POST /v1/predictions/{id}/cancel``
- ``GET /v1/predictions``: newest first, ``{"next", "previous", "results"}``, ``page_size`` a page,
  ``next`` an absolute URL with an opaque ``cursor``
- ``GET /files/{id}.png``: outputs, without auth (like replicate.delivery).

Data retention, as Replicate documents it for API predictions ("input parameters, output values,
output files, and logs are automatically removed after an hour",
https://replicate.com/docs/topics/predictions/data-retention), each counted from completion:
``output_ttl`` (3600) after it the prediction shows ``output: null, data_removed: true`` and its
input and logs are emptied; ``file_ttl`` (default: ``output_ttl``) after it the output file
answers ``gone_status`` (404; 403 is what an expired signed URL says, 410 a deleted object); and
``purge_after`` (default never) after it the prediction itself is gone: ``GET`` 404 and not
listed (a prediction deleted from the dashboard). ``fake.next_retention(...)`` sets them for the
next created predictions only, like ``next_outcome``.

A prediction is ``starting`` for the first quarter of ``run_seconds``, then ``processing``, then
its outcome (computed on read, from wall-clock time). Outputs are real pictures: a prompt (with a
``prompt`` input) is drawn by the offline ``LocalIllustrator`` (theme from the prompt's setting,
composition from the prompt's hash, the input's ``seed``); a face swap (``input_image``/``image``/
``target_image`` + ``swap_image``/``face_image``/``source_image``, each a data: URI or URL) finds the
face in the swap image with the offline analyzer and composites it into the target. A swap image
without a face fails the prediction, as real swap models do. Base outputs are a list of one URL
(flux), swap outputs one URL.

Fault injection, for the next requests in order, any path (``fake.script([...])``):

- ``("status", code, headers, body)``: that status, headers and body (dict -> JSON, or str/bytes)
- ``("hang", seconds)``: say nothing for that long, then answer normally (the client is gone)
- ``("close",)``: close the connection without answering
- ``("malformed",)``: 200 with truncated JSON
- ``("pass",)``: answer this one normally (to target a later request)
- ``("gate", event)``: say nothing until the test sets ``event`` (a ``threading.Event``), then
  answer normally (a create makes its prediction only then)

``fake.next_outcome("failed", error=...)`` / ``("canceled")`` / ``("aborted")`` sets how the next
created predictions end (``aborted``: its deadline passed before it started; never started).
A ``/v1`` request without ``Authorization: Bearer <token>`` gets a 401 before any script.
``fake.webhooks = WebhookSender(secret)`` (tests/fakes/replicate_webhooks.py): predictions created
with ``webhook`` get Replicate's signed completion webhook when they end; None (default): none sent.
``known`` (model names and version hashes), when given, makes other models 404;
``versions`` maps version hashes to the ``owner/name`` a prediction reports.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from tests.fakes.base import LocalHTTPFake

DEFAULT_TOKEN = "r8_FAKEtoken0123456789abcdefSECRET"
TARGET_KEYS = ("input_image", "image", "target_image")
FACE_KEYS = ("swap_image", "face_image", "source_image")


def problem(status: int, title: str, detail: Any) -> dict[str, Any]:
    """A body in Replicate's error format (RFC 7807 problem details)."""
    return {"title": title, "detail": detail, "status": status}


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    created: float  # time.time()
    seq: int
    outcome: str = "succeeded"
    error: str | None = None
    canceled_at: float | None = None
    output: bytes | None = None
    render_error: str | None = None
    rendered: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    output_ttl: float | None = None  # None: the server's
    file_ttl: float | None = None
    purge_after: float | None = None
    gone_status: int | None = None


@dataclass(frozen=True)
class Retention:
    """How long a prediction's data lasts after it completes (seconds; None: the server's)."""

    output_ttl: float | None = None
    file_ttl: float | None = None
    purge_after: float | None = None
    gone_status: int | None = None


class FakeReplicate(LocalHTTPFake):
    """``start()``, ``stop()``, ``base_url`` (``http://127.0.0.1:PORT/v1``), ``requests`` (each
    ``{"method", "path", "headers", "json", "t"}``, ``t`` from ``time.monotonic()``), ``created``
    (each prediction as returned by its create)."""

    name = "fake-replicate"

    def __init__(self, token: str = DEFAULT_TOKEN, *, run_seconds: float = 0.3, output_ttl: float = 3600.0,
                 file_ttl: float | None = None, purge_after: float | None = None, gone_status: int = 404,
                 page_size: int = 100, known: set[str] | None = None,
                 versions: dict[str, str] | None = None) -> None:
        super().__init__()
        self.token = token
        self.run_seconds = run_seconds
        self.output_ttl = output_ttl
        self.file_ttl = file_ttl
        self.purge_after = purge_after
        self.gone_status = gone_status
        self._retentions: deque[Retention] = deque()
        self.page_size = page_size
        self.known = known
        self.versions = dict(versions or {})  # version hash -> "owner/name", as Replicate knows them
        self.requests: list[dict[str, Any]] = []
        self.created: list[dict[str, Any]] = []
        self._predictions: dict[str, _Prediction] = {}
        self._script: deque[tuple[Any, ...]] = deque()
        self._outcomes: deque[tuple[str, str | None]] = deque()
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()
        self._seq = 0
        self.webhooks: Any = None  # a tests.fakes.replicate_webhooks.WebhookSender, or None

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    # --- test controls -----------------------------------------------------------------------

    def script(self, items: list[tuple[Any, ...]]) -> None:
        with self._lock:
            self._script.extend(items)

    def next_retention(self, output_ttl: float | None = None, file_ttl: float | None = None,
                       purge_after: float | None = None, gone_status: int | None = None) -> None:
        """How long the next created prediction's data lasts (see the module docstring)."""
        with self._lock:
            self._retentions.append(Retention(output_ttl, file_ttl, purge_after, gone_status))

    def next_outcome(self, status: str, error: str | None = None) -> None:
        """How the next created prediction ends: "succeeded", "failed" (with error), "canceled"
        or "aborted"."""
        assert status in ("succeeded", "failed", "canceled", "aborted")
        with self._lock:
            self._outcomes.append((status, error))

    def requests_to(self, method: str, path_prefix: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["method"] == method and r["path"].startswith(path_prefix)]

    def prediction(self, prediction_id: str) -> dict[str, Any]:
        """A prediction as GET would show it now (without recording a request)."""
        with self._lock:
            return self._view(self._predictions[prediction_id], time.time())

    # --- behaviour (called from handler threads) ------------------------------------------------

    def _record(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers, "json": body,
                                  "t": time.monotonic(), "wall": time.time()})

    def _next_step(self) -> tuple[Any, ...] | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def _create(self, model: str, version: str, model_input: Any, body: Any = None) -> tuple[int, Any]:
        if self.known is not None and model not in self.known and version not in self.known:
            return 404, problem(404, "Not found", "The requested model or version does not exist.")
        if not isinstance(model_input, dict):
            return 422, problem(422, "Input validation failed", "- input: Invalid type. Expected: object")
        has_target = any(model_input.get(k) for k in TARGET_KEYS)
        has_face = any(model_input.get(k) for k in FACE_KEYS)
        if not (has_target and has_face) and not isinstance(model_input.get("prompt"), str):
            return 422, problem(422, "Input validation failed", "- input: prompt is required")
        with self._lock:
            self._seq += 1
            pid = hashlib.sha256(f"{self._seq}:{time.time()}".encode()).hexdigest()[:26]
            pred = _Prediction(pid, model, version, model_input, time.time(), self._seq)
            if self._outcomes:
                pred.outcome, pred.error = self._outcomes.popleft()
            if self._retentions:
                r = self._retentions.popleft()
                pred.output_ttl, pred.file_ttl, pred.purge_after, pred.gone_status = (
                    r.output_ttl, r.file_ttl, r.purge_after, r.gone_status)
            self._predictions[pid] = pred
            view = self._view(pred, pred.created)
            self.created.append(view)
        self._schedule_webhook(pred, body)
        return 201, view

    def _schedule_webhook(self, pred: _Prediction, body: Any) -> None:
        """The completion webhook of a prediction created with ``webhook`` (and ``completed`` in its
        ``webhook_events_filter``, or no filter), sent when it ends (tests/fakes/replicate_webhooks.py)."""
        url = body.get("webhook") if isinstance(body, dict) else None
        events = body.get("webhook_events_filter") if isinstance(body, dict) else None
        if self.webhooks is None or not isinstance(url, str) or (events is not None and "completed" not in events):
            return

        def view() -> dict[str, Any] | None:
            code, payload = self._get(pred.id)
            return payload if code == 200 and payload.get("status") not in ("starting", "processing") else None

        self.webhooks.schedule(pred.created + self.run_seconds + 0.01, url, view)

    def _ttl(self, p: _Prediction, what: str) -> float | None:
        own = getattr(p, what)
        if own is not None:
            return float(own)
        if what == "file_ttl":
            return self._ttl(p, "output_ttl") if self.file_ttl is None else self.file_ttl
        value = getattr(self, what)
        return None if value is None else float(value)

    def _purged(self, p: _Prediction, now: float) -> bool:
        purge = self._ttl(p, "purge_after")
        return purge is not None and now > p.created + self.run_seconds + purge

    def _view(self, p: _Prediction, now: float) -> dict[str, Any]:
        """The prediction's JSON at ``now`` (lock held; rendering happens outside, see _ensure_rendered)."""
        done_at = p.created + self.run_seconds
        started_at: float | None = p.created + self.run_seconds * 0.25
        completed_at: float | None = None
        output: Any = None
        error: str | None = None
        data_removed = False
        if p.canceled_at is not None and p.canceled_at < done_at:
            status, completed_at = "canceled", p.canceled_at
            if started_at is not None and started_at > p.canceled_at:
                started_at = None
        elif p.outcome == "aborted":  # never started: starting until its deadline, then aborted
            status, started_at = ("starting", None) if now < done_at else ("aborted", None)
            completed_at = done_at if now >= done_at else None
        elif now < p.created + self.run_seconds * 0.25:
            status, started_at = "starting", None
        elif now < done_at:
            status = "processing"
        else:
            completed_at = done_at
            status = p.outcome
            if status == "failed":
                error = p.error or "Prediction failed"
            elif status == "succeeded" and p.render_error is not None:
                status, error = "failed", p.render_error
            elif status == "succeeded":
                if now > done_at + (self._ttl(p, "output_ttl") or 0.0):
                    data_removed = True
                else:
                    url = f"{self.root}/files/{p.id}.png"
                    output = [url] if "prompt" in p.input else url
        api = f"{self.base_url}/predictions/{p.id}"
        return {
            "id": p.id,
            "model": p.model,
            "version": p.version,
            "input": {} if data_removed else p.input,
            "output": output,
            "error": error,
            "logs": "" if status in ("starting", "aborted") or data_removed else "Running prediction...\n",
            "status": status,
            "source": "api",
            "data_removed": data_removed,
            "created_at": _iso(p.created),
            "started_at": _iso(started_at),
            "completed_at": _iso(completed_at),
            "urls": {"get": api, "cancel": f"{api}/cancel", "web": f"https://replicate.com/p/{p.id}"},
            "metrics": ({"predict_time": round(self.run_seconds * 0.75, 3), "total_time": round(self.run_seconds, 3)}
                        if completed_at and started_at else {}),
        }

    def _ensure_rendered(self, pid: str) -> None:
        """Draw the output of a prediction that has reached success (once, outside the state lock)."""
        with self._lock:
            p = self._predictions.get(pid)
            due = (p is not None and not p.rendered and p.outcome == "succeeded" and p.canceled_at is None
                   and time.time() >= p.created + self.run_seconds)
        if not due or p is None:
            return
        with self._render_lock:
            if p.rendered:
                return
            try:
                output = self._render(p.input)
                err = None
            except Exception as exc:  # noqa: BLE001 - the model's failure becomes the prediction's error
                output, err = None, f"{type(exc).__name__}: {exc}"
            with self._lock:
                p.output, p.render_error, p.rendered = output, err, True

    def _render(self, model_input: dict[str, Any]) -> bytes:
        from pipeline.providers.base import Outline, PageRequest, StoryRequest
        from pipeline.providers.local_vision import LocalPhotoAnalyzer
        from pipeline.providers.offline_images import LocalIllustrator
        from pipeline.providers.themes import THEMES

        target = next((model_input[k] for k in TARGET_KEYS if model_input.get(k)), None)
        face_ref = next((model_input[k] for k in FACE_KEYS if model_input.get(k)), None)
        if target is not None and face_ref is not None:
            base, photo = self._fetch(str(target)), self._fetch(str(face_ref))
            face = LocalPhotoAnalyzer().analyze_photo(photo).primary_face
            if face is None:
                raise ValueError("No face detected in the swap image")
            req = PageRequest(StoryRequest("child", 6, "pirates", 1, 0), Outline("fake", ("swap",)), 1)
            return LocalIllustrator().personalize(base, photo, face, req)

        prompt = str(model_input["prompt"])
        digest = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
        theme = next((t.id for t in THEMES.values() if t.setting in prompt), sorted(THEMES)[digest % len(THEMES)])
        seed = int(model_input.get("seed") or digest % 2**31)
        page = digest % 997 + 1  # a different composition per prompt, the story's look per seed
        req = PageRequest(StoryRequest("child", 6, theme, 1, seed), Outline("fake", (prompt,)), page)
        png = LocalIllustrator().draw_base(req)
        width, height = int(model_input.get("width") or 960), int(model_input.get("height") or 720)
        if (width, height) != (960, 720):
            with Image.open(io.BytesIO(png)) as im:
                buf = io.BytesIO()
                im.convert("RGB").resize((width, height)).save(buf, "PNG")
                png = buf.getvalue()
        return png

    def _fetch(self, ref: str) -> bytes:
        if ref.startswith("data:"):
            return base64.b64decode(ref.partition(",")[2])
        own = f"{self.root}/files/"
        if ref.startswith(own):
            data = self._file(ref[len(own):].removesuffix(".png"))
            if data is None:
                raise FileNotFoundError(f"{ref} is gone")
            return data
        with urllib.request.urlopen(ref, timeout=5) as r:  # noqa: S310 - test server fetching test URLs
            return bytes(r.read())

    def _file(self, pid: str) -> bytes | None:
        self._ensure_rendered(pid)
        with self._lock:
            p = self._predictions.get(pid)
            if p is None or p.output is None:
                return None
            if time.time() > p.created + self.run_seconds + (self._ttl(p, "file_ttl") or 0.0):
                return None
            return p.output

    def _file_gone_status(self, pid: str) -> int:
        with self._lock:
            p = self._predictions.get(pid)
            own = p.gone_status if p is not None else None
        return own or self.gone_status

    def _get(self, pid: str) -> tuple[int, Any]:
        self._ensure_rendered(pid)
        with self._lock:
            p = self._predictions.get(pid)
            now = time.time()
            if p is None or self._purged(p, now):
                return 404, problem(404, "Not found", "Not found.")
            return 200, self._view(p, now)

    def _cancel(self, pid: str) -> tuple[int, Any]:
        with self._lock:
            p = self._predictions.get(pid)
            now = time.time()
            if p is None or self._purged(p, now):
                return 404, problem(404, "Not found", "Not found.")
            if p.canceled_at is None and now < p.created + self.run_seconds:
                p.canceled_at = now
            return 200, self._view(p, now)

    def _list(self, cursor: str | None) -> tuple[int, Any]:
        try:
            offset = int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("o=")) if cursor else 0
        except ValueError:
            return 400, problem(400, "Bad request", "Invalid cursor")
        with self._lock:
            t = time.time()
            ordered = sorted((p for p in self._predictions.values() if not self._purged(p, t)),
                             key=lambda p: (p.created, p.seq), reverse=True)
            pids = [p.id for p in ordered[offset:offset + self.page_size]]
        for pid in pids:
            self._ensure_rendered(pid)
        now = time.time()
        with self._lock:
            results = [self._view(self._predictions[pid], now) for pid in pids]

        def link(off: int) -> str:
            c = base64.urlsafe_b64encode(f"o={off}".encode()).decode()
            return f"{self.base_url}/predictions?cursor={c}"

        nxt = link(offset + self.page_size) if offset + self.page_size < len(ordered) else None
        prev = link(max(0, offset - self.page_size)) if offset > 0 else None
        return 200, {"next": nxt, "previous": prev, "results": results}

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = urlsplit(path)
        segs = [s for s in parts.path.split("/") if s]
        if method == "POST" and segs == ["v1", "predictions"]:
            version = body.get("version") if isinstance(body, dict) else None
            if not isinstance(version, str) or not version:
                return 422, problem(422, "Invalid version", "- version: version is required")
            name, sep, vid = version.partition(":")
            model, version = (name, vid) if sep else (self.versions.get(version, "unknown/unknown"), version)
            return self._create(model, version, body.get("input"), body)
        if method == "POST" and len(segs) == 5 and segs[:2] == ["v1", "models"] and segs[4] == "predictions":
            model = f"{segs[2]}/{segs[3]}"
            version = hashlib.sha256(model.encode()).hexdigest()
            return self._create(model, version, body.get("input") if isinstance(body, dict) else None, body)
        if method == "GET" and segs == ["v1", "predictions"]:
            return self._list(parse_qs(parts.query).get("cursor", [None])[0])
        if method == "GET" and len(segs) == 3 and segs[:2] == ["v1", "predictions"]:
            return self._get(segs[2])
        if method == "POST" and len(segs) == 4 and segs[:2] == ["v1", "predictions"] and segs[3] == "cancel":
            return self._cancel(segs[2])
        return 404, problem(404, "Not found", "The requested resource could not be found.")


class _Handler(BaseHTTPRequestHandler):
    owner: FakeReplicate
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API; httpx pools connections

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        fake = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("latin-1")
        headers = {k.lower(): v for k, v in self.headers.items()}
        fake._record(method, self.path, headers, body)
        if self.path.startswith("/v1/") and headers.get("authorization") != f"Bearer {fake.token}":
            self._send(401, problem(401, "Unauthenticated", "You did not pass a valid authentication token"))
            return
        step = fake._next_step()
        if step is not None:
            kind = step[0]
            if kind == "status":
                _, code, extra, payload = step
                self._send(code, payload, extra)
                return
            if kind == "close":
                self.close_connection = True
                return
            if kind == "malformed":
                self._send(200, b'{"id": "abc", "status": "succ', {"Content-Type": "application/json"})
                return
            if kind == "hang":
                fake._stopping.wait(float(step[1]))
                if fake._stopping.is_set():
                    self.close_connection = True
                    return
            elif kind == "gate":
                while not step[1].wait(0.05):
                    if fake._stopping.is_set():
                        self.close_connection = True
                        return
            elif kind != "pass":
                raise AssertionError(f"unknown script step {step!r}")

        if method == "GET" and self.path.startswith("/files/"):
            pid = urlsplit(self.path).path.removeprefix("/files/").removesuffix(".png")
            data = fake._file(pid)
            if data is None:
                gone = fake._file_gone_status(pid)
                self._send(gone, b"Not Found" if gone == 404 else b"<Error><Code>AccessDenied</Code></Error>",
                           {"Content-Type": "text/plain"})
            else:
                self._send(200, data, {"Content-Type": "image/png"})
            return
        code, payload = fake.route(method, self.path, body)
        self._send(code, payload)

    def _send(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        if isinstance(payload, bytes):
            data, ctype = payload, "application/octet-stream"
        elif isinstance(payload, str):
            data, ctype = payload.encode(), "text/plain; charset=utf-8"
        else:
            data, ctype = json.dumps(payload).encode(), "application/json"
        try:
            self.send_response(code)
            merged = {"Content-Type": ctype, **(headers or {})}
            for k, v in merged.items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a hang past its timeout)


FakeReplicate.handler = _Handler
