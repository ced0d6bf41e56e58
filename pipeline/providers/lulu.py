"""Print-on-demand: the PrintProvider interface, the Lulu Print API client, an offline print shop.

``PrintProvider`` is what the order workers need from a print shop: the cover size for a book,
create a print job once (and find it again by our order id), read its status, cancel it.

``LuluClient`` speaks the Lulu Print API (https://api.lulu.com, sandbox
https://api.sandbox.lulu.com) with ``requests``:

- OAuth client credentials: ``POST /auth/realms/glasstree/protocol/openid-connect/token`` with
  HTTP Basic ``client_key:client_secret``. The token is cached per process (per API URL and key)
  until shortly before it expires, shared by the worker's threads, and fetched again once when
  the API answers 401 (a token revoked or expired early); a second 401 is a credentials problem.
- ``POST /print-jobs/`` (``external_id`` = our order id; the line item's ``external_id`` = order id
  + print run, so a job is recognised after a crash), ``GET /print-jobs/{id}/``,
  ``GET /print-jobs/?search=<order id>`` (Lulu has no exact ``external_id`` filter: ``search``
  matches it among other fields and the client keeps exact matches only),
  ``PUT /print-jobs/{id}/status/`` to cancel, ``POST /cover-dimensions/``.
- Errors, for the pipeline's policy (pipeline.stories.steps): timeouts, connection errors, 429 and 5xx
  and unreadable replies -> TransientStepError (``Retry-After`` honoured); 400/404/422 and
  credentials Lulu refuses -> PermanentStepError with Lulu's reason (truncated) and the status.
  No retries inside the client: the step layer retries with backoff. Secrets and tokens never
  appear in messages.
- Webhooks (``PRINT_JOB_STATUS_CHANGED``) are signed with HMAC-SHA256 of the raw body keyed with
  the API secret, in the ``Lulu-HMAC-SHA256`` header: ``verify_webhook``.

``LocalPrintShop`` is the offline default (``POD_PROVIDER=local``): jobs are JSON files under
``$LOCAL_STORAGE_ROOT/printshop/``, their files are checked like Lulu's normalization does (page
size = trim + bleed, page count within the product's range, fonts embedded, cover size) and a job
moves through Lulu's statuses over time (``LOCAL_PRINT_SHOP_STAGE_SECONDS`` per stage), ending
SHIPPED with a tracking number, or REJECTED with the reasons. The demo orders from it.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import requests

from pipeline.kernel.config import env_number
from pipeline.kernel.errors import PermanentStepError, TransientStepError, retry_after_seconds
from pipeline.providers.base import NoHooks, RequestHooks

log = logging.getLogger(__name__)

# Lulu's print job statuses. A job is followed until it is SHIPPED or in a problem status.
ACTIVE = ("CREATED", "UNPAID", "PAYMENT_IN_PROGRESS", "PRODUCTION_DELAYED", "PRODUCTION_READY")
IN_PRODUCTION = "IN_PRODUCTION"
SHIPPED = "SHIPPED"
PROBLEMS = ("REJECTED", "CANCELED", "ERROR")
KNOWN = (*ACTIVE, IN_PRODUCTION, SHIPPED, *PROBLEMS)

TOKEN_PATH = "/auth/realms/glasstree/protocol/openid-connect/token"
WEBHOOK_HEADER = "Lulu-HMAC-SHA256"
_REASON_CHARS = 300


@dataclass(frozen=True)
class PrintJobRequest:
    """One book to print and ship, as the order workers ask for it."""

    external_id: str  # our order id
    line_item_external_id: str  # order id + print run: tells this run's job from an earlier run's
    title: str
    pod_package_id: str
    page_count: int
    interior_url: str
    interior_md5: str
    cover_url: str
    cover_md5: str
    shipping_address: dict[str, Any]  # Lulu's field names (pipeline.orders.steps.lulu_address)
    shipping_level: str
    contact_email: str
    quantity: int = 1
    production_delay: int | None = None  # minutes; Lulu's default (60) when None


@dataclass(frozen=True)
class PrintJob:
    """A print job as last seen at the provider."""

    id: str
    external_id: str | None
    status: str  # one of KNOWN (an unknown name is kept as is and treated as still active)
    message: str = ""  # the provider's words on the status (why it was rejected, ...)
    changed: str | None = None  # ISO 8601 time of the last status change, as the provider says
    line_item_external_ids: tuple[str, ...] = ()
    tracking_id: str | None = None
    tracking_urls: tuple[str, ...] = ()
    carrier: str | None = None
    created: str | None = None

    @property
    def problem(self) -> bool:
        return self.status in PROBLEMS

    def reason(self) -> str:
        """The provider's reason, for a person (bounded)."""
        return (self.message or self.status)[:_REASON_CHARS]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "message": self.message[:_REASON_CHARS],
                "changed": self.changed, "tracking_id": self.tracking_id,
                "tracking_urls": list(self.tracking_urls), "carrier": self.carrier}


class PrintProvider(Protocol):
    """A print-on-demand shop, as the order workers use it."""

    name: str  # stored in orders.pod_provider

    def cover_dimensions(self, pod_package_id: str, page_count: int) -> tuple[float, float]:
        """The one-piece cover's (width, height) in points for this book."""
        ...

    def find_job(self, external_id: str, line_item_external_id: str) -> PrintJob | None:
        """The newest job created for this order and print run, if any (after a crash)."""
        ...

    def create_job(self, req: PrintJobRequest) -> PrintJob: ...

    def get_job(self, job_id: str) -> PrintJob: ...

    def cancel_job(self, job_id: str) -> None: ...


# --- parsing Lulu's print job JSON --------------------------------------------------------------

def _as_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list):
        return tuple(str(v) for v in value if v)
    return ()


def _messages(status: Any) -> dict[str, Any]:
    msgs = status.get("messages") if isinstance(status, Mapping) else None
    return dict(msgs) if isinstance(msgs, Mapping) else {}


def _reasons(msgs: Mapping[str, Any]) -> list[str]:
    """A line item's status messages that explain a problem (Lulu: error, info, and the
    normalization messages per file)."""
    out: list[str] = []
    for key in ("error", "info"):
        if isinstance(msgs.get(key), str) and msgs[key]:
            out.append(msgs[key])
    norm = msgs.get("printable_normalization")
    if isinstance(norm, Mapping):
        for part in ("interior", "cover"):
            for m in _as_list(norm.get(part)):
                out.append(f"{part}: {m}")
    return out


def parse_job(data: Any) -> PrintJob:
    """A PrintJob from Lulu's print job JSON (details endpoint, list results, webhook data).
    ValueError if it is not one."""
    if not isinstance(data, Mapping) or data.get("id") in (None, ""):
        raise ValueError("not a print job (no id)")
    status = data.get("status")
    if isinstance(status, str):  # tolerate a flattened status
        status = {"name": status}
    if not isinstance(status, Mapping) or not isinstance(status.get("name"), str):
        raise ValueError("a print job without a status name")
    name = status["name"].strip().upper()
    message = status.get("message") if isinstance(status.get("message"), str) else ""
    reasons: list[str] = [message] if message else []
    tracking_id: str | None = None
    urls: tuple[str, ...] = ()
    carrier: str | None = None
    line_ids: list[str] = []
    items: list[Any] = data["line_items"] if isinstance(data.get("line_items"), list) else []
    statuses: list[Any] = data["line_item_statuses"] if isinstance(data.get("line_item_statuses"), list) else []
    for item in [*items, *statuses]:
        if not isinstance(item, Mapping):
            continue
        if isinstance(item.get("external_id"), str):
            line_ids.append(item["external_id"])
        msgs = _messages(item.get("status") if "status" in item else item)
        tracking_id = tracking_id or item.get("tracking_id") or msgs.get("tracking_id") or None
        urls = urls or _as_list(item.get("tracking_urls")) or _as_list(msgs.get("tracking_urls"))
        carrier = carrier or item.get("carrier_name") or msgs.get("carrier_name") or None
        if name in PROBLEMS:
            reasons += [r for r in _reasons(msgs) if r not in reasons]
    return PrintJob(
        id=str(data["id"]), external_id=str(data["external_id"]) if data.get("external_id") else None,
        status=name, message="; ".join(reasons)[:1000],
        changed=str(status["changed"]) if status.get("changed") else None,
        line_item_external_ids=tuple(line_ids), tracking_id=str(tracking_id) if tracking_id else None,
        tracking_urls=urls, carrier=str(carrier) if carrier else None,
        created=str(data["date_created"]) if data.get("date_created") else None,
    )


def verify_webhook(payload: str | bytes, signature: str | None, secret: str) -> bool:
    """Is ``signature`` (the ``Lulu-HMAC-SHA256`` header) Lulu's HMAC-SHA256 of the raw body,
    keyed with our API secret? Accepts the hex digest (Lulu's) or its base64 form."""
    if not signature or not secret:
        return False
    body = payload.encode() if isinstance(payload, str) else payload
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    offered = signature.strip()
    return hmac.compare_digest(digest.hex(), offered.lower()) or hmac.compare_digest(
        base64.b64encode(digest).decode(), offered)


def webhook_signature(payload: str | bytes, secret: str) -> str:
    """The header value Lulu would send for ``payload`` (tests, tools)."""
    body = payload.encode() if isinstance(payload, str) else payload
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- the Lulu Print API --------------------------------------------------------------------------



def _flatten(body: Any, prefix: str = "") -> list[str]:
    """Lulu's validation errors ({"field": ["msg"], "line_items": [{...}]}) as "field: msg"."""
    if isinstance(body, Mapping):
        out: list[str] = []
        for k, v in body.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(body, list):
        if all(isinstance(v, str) for v in body):
            return [f"{prefix}: {v}" if prefix else v for v in body]
        out = []
        for i, v in enumerate(body):
            out += _flatten(v, f"{prefix}.{i}" if prefix else str(i))
        return out
    if body is None:
        return []
    return [f"{prefix}: {body}" if prefix and prefix != "detail" else str(body)]


def _reason(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        text = " ".join(resp.text.split())
        return text[:_REASON_CHARS] or resp.reason or ""
    if isinstance(body, Mapping) and ("error" in body or "error_description" in body):
        # Keycloak's token errors: {"error": "unauthorized_client", "error_description": "..."}
        parts = [str(body.get("error") or ""), str(body.get("error_description") or "")]
        return ": ".join(p for p in parts if p)[:_REASON_CHARS]
    return "; ".join(_flatten(body))[:_REASON_CHARS]


_tokens: dict[tuple[str, str], tuple[str, float]] = {}  # (api url, client key) -> (token, expires at)
_tokens_lock = threading.Lock()
_refresh_lock = threading.Lock()


def forget_tokens() -> None:
    """Drop every cached token (tests; a rotated secret)."""
    with _tokens_lock:
        _tokens.clear()


class LuluClient:
    """The Lulu Print API. Thread-safe; one per process (``print_provider()``)."""

    name = "lulu"

    def __init__(self, base_url: str, client_key: str, client_secret: str, *, timeout: float = 30.0,
                 connect_timeout: float = 5.0, hooks: RequestHooks | None = None,
                 allow_file_urls: bool = False) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = client_key
        self._secret = client_secret
        self._timeout = (min(connect_timeout, timeout), timeout)
        self._hooks: RequestHooks = hooks if hooks is not None else NoHooks()
        self._allow_file_urls = allow_file_urls
        self._local = threading.local()

    @classmethod
    def from_env(cls, hooks: RequestHooks | None = None, env: Mapping[str, str] | None = None) -> LuluClient:
        e = os.environ if env is None else env
        return cls(
            e.get("LULU_API_URL", "https://api.lulu.com"), e.get("LULU_CLIENT_KEY", ""),
            e.get("LULU_CLIENT_SECRET", ""), timeout=env_number(e, "LULU_TIMEOUT", 30.0, 0.1, 600.0),
            connect_timeout=env_number(e, "LULU_CONNECT_TIMEOUT", 5.0, 0.1, 600.0), hooks=hooks,
            allow_file_urls=e.get("LULU_ALLOW_FILE_URLS", "") in ("1", "true", "yes"),
        )

    @property
    def webhook_secret(self) -> str:
        return self._secret

    # --- HTTP ---------------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.headers["User-Agent"] = "storycreator-workers (+print orders)"
        return s

    def _send(self, op: str, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One HTTP request under the hooks; transport failures and 429/5xx become
        TransientStepError. Other statuses are returned for the caller to judge."""
        self._hooks.before("lulu", op)
        t0 = time.perf_counter()
        outcome = "ok"
        try:
            resp = self._session().request(method, url, timeout=self._timeout, allow_redirects=False, **kwargs)
        except requests.Timeout:
            outcome = "timeout"
            raise TransientStepError(f"Lulu did not answer within {self._timeout[1]:g} s ({op})") from None
        except requests.RequestException as e:
            outcome = "connection_error"
            raise TransientStepError(f"Lulu could not be reached ({op}: {type(e).__name__})") from None
        finally:
            if outcome != "ok":
                self._hooks.after("lulu", op, outcome, time.perf_counter() - t0)
        code = resp.status_code
        if code == 429 or code >= 500:
            self._hooks.after("lulu", op, "throttled" if code == 429 else "server_error", time.perf_counter() - t0)
            raise TransientStepError(f"Lulu answered HTTP {code} to {op}: {_reason(resp)}",
                                     retry_after=retry_after_seconds(resp.headers.get("Retry-After")))
        self._hooks.after("lulu", op, "ok" if code < 400 else "client_error", time.perf_counter() - t0)
        return resp

    def _token(self, *, stale: str | None = None) -> str:
        """A valid access token: the cached one, or a fresh one when it expires soon or when
        ``stale`` (the token the API just refused) is still the cached one."""
        if not self._key or not self._secret:
            raise PermanentStepError("Lulu is not configured: set LULU_CLIENT_KEY and LULU_CLIENT_SECRET.")
        cache_key = (self.base_url, self._key)
        with _tokens_lock:
            cached = _tokens.get(cache_key)
            if cached and cached[0] != stale and cached[1] > time.time():
                return cached[0]
        # Single flight: when a token expires, every worker thread finds out at once; one fetches
        # a new token and the others use it (no database connection is held while waiting).
        with _refresh_lock:
            with _tokens_lock:
                cached = _tokens.get(cache_key)
                if cached and cached[0] != stale and cached[1] > time.time():
                    return cached[0]
            return self._fetch_token(cache_key)

    def _fetch_token(self, cache_key: tuple[str, str]) -> str:
        resp = self._send("token", "POST", self.base_url + TOKEN_PATH, data={"grant_type": "client_credentials"},
                          auth=(self._key, self._secret),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        if resp.status_code != 200:
            raise PermanentStepError(f"Lulu refused our API credentials (HTTP {resp.status_code}: {_reason(resp)}); "
                                     "check LULU_CLIENT_KEY / LULU_CLIENT_SECRET.")
        try:
            body = resp.json()
            token = str(body["access_token"])
            ttl = float(body.get("expires_in") or 300)
        except (ValueError, KeyError, TypeError):
            raise TransientStepError("Lulu's token endpoint sent an unreadable reply") from None
        # Renew before it runs out: a request sent with a token that expires in flight gets a 401.
        expires = time.time() + max(1.0, ttl - min(60.0, ttl * 0.1))
        with _tokens_lock:
            _tokens[cache_key] = (token, expires)
        return token

    def _api(self, op: str, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        """An authenticated API call returning the JSON body; one token refresh on 401."""
        token = self._token()
        url = path if path.startswith("http") else self.base_url + path
        resp = self._send(op, method, url, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        if resp.status_code == 401:
            resp = self._send(op, method, url, headers={"Authorization": f"Bearer {self._token(stale=token)}"},
                              **kwargs)
            if resp.status_code == 401:
                raise PermanentStepError(f"Lulu refused our credentials (HTTP 401 on {op}): {_reason(resp)}")
        if resp.status_code not in ok:
            if resp.status_code == 404:
                raise PermanentStepError(f"Lulu has no such resource (HTTP 404 on {op}): {_reason(resp)}")
            raise PermanentStepError(f"Lulu refused {op} (HTTP {resp.status_code}): {_reason(resp)}")
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise TransientStepError(f"Lulu sent an unreadable reply to {op}") from None

    def _job(self, op: str, data: Any) -> PrintJob:
        try:
            return parse_job(data)
        except ValueError as e:
            raise TransientStepError(f"Lulu sent an unreadable print job ({op}: {e})") from None

    # --- PrintProvider ------------------------------------------------------------------------

    def cover_dimensions(self, pod_package_id: str, page_count: int) -> tuple[float, float]:
        body = self._api("cover_dimensions", "POST", "/cover-dimensions/", ok=(200, 201),
                         json={"pod_package_id": pod_package_id, "interior_page_count": page_count, "unit": "pt"})
        try:
            if str(body.get("unit", "pt")) != "pt":
                raise ValueError(f"unit {body.get('unit')!r}")
            return float(body["width"]), float(body["height"])
        except (AttributeError, KeyError, TypeError, ValueError):
            raise TransientStepError("Lulu sent unreadable cover dimensions") from None

    def find_job(self, external_id: str, line_item_external_id: str) -> PrintJob | None:
        params: dict[str, Any] | None = {"search": external_id, "page_size": 100}
        url = "/print-jobs/"
        best: tuple[str, PrintJob] | None = None
        for _ in range(20):  # search narrows to this order's jobs: a page or two at most
            body = self._api("find_job", "GET", url, params=params)
            results = body.get("results") if isinstance(body, Mapping) else None
            if not isinstance(results, list):
                raise TransientStepError("Lulu sent an unreadable print job list")
            for item in results:
                job = self._job("find_job", item)
                # search matches many fields; only this exact order and print run count
                if job.external_id == external_id and line_item_external_id in job.line_item_external_ids:
                    key = job.created or job.id.zfill(20)
                    if best is None or key > best[0]:
                        best = (key, job)
            nxt = body.get("next")
            if not nxt:
                break
            url, params = str(nxt), None
        return best[1] if best else None

    def create_job(self, req: PrintJobRequest) -> PrintJob:
        for url in (req.interior_url, req.cover_url):
            if urlsplit(url).scheme not in ("https", "http") and not self._allow_file_urls:
                raise PermanentStepError(
                    "Lulu downloads print files from a public URL, and this storage gives "
                    f"{urlsplit(url).scheme}: URLs; set PRINT_FILES_BASE_URL or use S3 storage.")
        payload: dict[str, Any] = {
            "external_id": req.external_id,
            "contact_email": req.contact_email,
            "shipping_level": req.shipping_level,
            "shipping_address": req.shipping_address,
            "line_items": [{
                "external_id": req.line_item_external_id,
                "title": req.title[:255],
                "quantity": req.quantity,
                "printable_normalization": {
                    "pod_package_id": req.pod_package_id,
                    "interior": {"source_url": req.interior_url, "source_md5_sum": req.interior_md5},
                    "cover": {"source_url": req.cover_url, "source_md5_sum": req.cover_md5},
                },
            }],
        }
        if req.production_delay is not None:
            payload["production_delay"] = req.production_delay
        return self._job("create_job", self._api("create_job", "POST", "/print-jobs/", ok=(200, 201), json=payload))

    def get_job(self, job_id: str) -> PrintJob:
        return self._job("get_job", self._api("get_job", "GET", f"/print-jobs/{job_id}/"))

    def cancel_job(self, job_id: str) -> None:
        self._api("cancel_job", "PUT", f"/print-jobs/{job_id}/status/", json={"name": "CANCELED"})


# --- the offline print shop -----------------------------------------------------------------------

_TIMELINE = (  # (status, stages it lasts); then SHIPPED
    ("CREATED", 1), ("UNPAID", 1), ("PAYMENT_IN_PROGRESS", 1), ("PRODUCTION_DELAYED", 1),
    ("PRODUCTION_READY", 1), ("IN_PRODUCTION", 2),
)


@dataclass
class _LocalJob:
    id: str
    created: float
    request: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    canceled: float | None = None


def print_shop_stage_seconds() -> float:
    """LOCAL_PRINT_SHOP_STAGE_SECONDS: seconds the offline print shop spends in each status
    (default 3). Raises SystemExit("configuration error: …") outside 0–86400."""
    from pipeline.kernel.config import env_float

    return env_float("LOCAL_PRINT_SHOP_STAGE_SECONDS", 3.0, 0.0, 86400.0)


class LocalPrintShop:
    """A print shop on this machine that behaves like Lulu over time (see the module doc).

    Jobs live in ``<root>/printshop/jobs/<id>.json``; ``<root>/printshop/orders/<external id>/``
    lists the jobs of each order, so ``find_job`` works after a crash like Lulu's search does."""

    name = "local"

    def __init__(self, root: Path, *, stage_seconds: float = 3.0) -> None:
        self.root = root / "printshop"
        self.stage_seconds = stage_seconds

    @classmethod
    def from_env(cls, root: Path) -> LocalPrintShop:
        return cls(root, stage_seconds=print_shop_stage_seconds())

    def cover_dimensions(self, pod_package_id: str, page_count: int) -> tuple[float, float]:
        from pipeline.orders.print_files import cover_size_pt, parse_pod_package

        try:
            return cover_size_pt(parse_pod_package(pod_package_id), page_count)
        except ValueError as e:
            raise PermanentStepError(f"The print shop does not make {pod_package_id!r}: {e}") from None

    def _path(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise PermanentStepError(f"No print job {job_id[:40]!r} at the local print shop.")
        return self.root / "jobs" / f"{job_id}.json"

    def _load(self, job_id: str) -> _LocalJob:
        try:
            raw = json.loads(self._path(job_id).read_text())
        except FileNotFoundError:
            raise PermanentStepError(f"No print job {job_id!r} at the local print shop.") from None
        return _LocalJob(raw["id"], raw["created"], raw["request"], raw.get("errors", []), raw.get("canceled"))

    def _save(self, job: _LocalJob) -> None:
        path = self._path(job.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{uuid.uuid4().hex[:6]}")
        tmp.write_text(json.dumps(job.__dict__))
        os.replace(tmp, path)  # atomic: a reader never sees half a job

    def _view(self, job: _LocalJob) -> PrintJob:
        elapsed = (time.time() - job.created) / max(self.stage_seconds, 1e-6)
        status, message, changed_at = "SHIPPED", "All line-items were shipped", job.created
        if job.errors and elapsed >= 1:
            status, message = "REJECTED", "; ".join(job.errors)
            changed_at = job.created + self.stage_seconds
        else:
            t = 0.0
            for name, stages in _TIMELINE:
                if elapsed < t + stages:
                    status, message = name, ""
                    break
                t += stages
            changed_at = job.created + min(elapsed, t) * self.stage_seconds
        if job.canceled is not None and status not in (IN_PRODUCTION, SHIPPED, "REJECTED"):
            status, message, changed_at = "CANCELED", "Canceled at our request", job.canceled
        req = job.request
        shipped = status == SHIPPED
        return PrintJob(
            id=job.id, external_id=req["external_id"], status=status, message=message,
            changed=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(changed_at)) + f".{int(changed_at % 1 * 1e6):06d}Z",
            line_item_external_ids=(req["line_item_external_id"],),
            tracking_id=f"LP{job.id[:12].upper()}" if shipped else None,
            tracking_urls=(f"https://tracking.invalid/LP{job.id[:12].upper()}",) if shipped else (),
            carrier="Local Post" if shipped else None,
            created=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(job.created)),
        )

    def _read(self, url: str) -> bytes | None:
        parts = urlsplit(url)
        try:
            if parts.scheme == "file":
                return Path(unquote(parts.path)).read_bytes()
            if parts.scheme in ("http", "https"):
                resp = requests.get(url, timeout=30)
                return resp.content if resp.status_code == 200 else None
        except (OSError, requests.RequestException):
            return None
        return None

    def create_job(self, req: PrintJobRequest) -> PrintJob:
        from pipeline.orders.print_files import check_print_files

        interior, cover = self._read(req.interior_url), self._read(req.cover_url)
        errors: list[str] = []
        if interior is None or cover is None:
            errors.append("The print files could not be downloaded.")
        else:
            if hashlib.md5(interior).hexdigest() != req.interior_md5:  # noqa: S324 - Lulu's own checksum
                errors.append("interior: the file does not match its MD5 checksum")
            try:
                errors += check_print_files(interior, cover, req.pod_package_id,
                                            self.cover_dimensions(req.pod_package_id, req.page_count))
            except ImportError:  # pypdfium2 reads the PDFs; without it the shop trusts them
                log.warning("local print shop: pypdfium2 is not installed; print files not checked")
        job = _LocalJob(uuid.uuid4().hex[:16], time.time(), {
            "external_id": req.external_id, "line_item_external_id": req.line_item_external_id,
            "title": req.title, "pod_package_id": req.pod_package_id, "shipping_level": req.shipping_level,
            "country": req.shipping_address.get("country_code"),
        }, errors)
        self._save(job)
        index = self.root / "orders" / req.external_id
        index.mkdir(parents=True, exist_ok=True)
        (index / job.id).write_text(req.line_item_external_id)
        log.info("local print shop: job %s created (%s)", job.id, "files rejected" if errors else "files ok")
        return self._view(job)

    def find_job(self, external_id: str, line_item_external_id: str) -> PrintJob | None:
        index = self.root / "orders" / external_id
        if not index.is_dir():
            return None
        mine = [p.name for p in index.iterdir() if p.read_text() == line_item_external_id]
        jobs = sorted((self._load(j) for j in mine), key=lambda j: j.created)
        return self._view(jobs[-1]) if jobs else None

    def get_job(self, job_id: str) -> PrintJob:
        return self._view(self._load(job_id))

    def cancel_job(self, job_id: str) -> None:
        job = self._load(job_id)
        if job.canceled is None and self._view(job).status in ACTIVE:
            job.canceled = time.time()
            self._save(job)
