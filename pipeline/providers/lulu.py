"""The Lulu Print API client (``LuluClient``).

The vendor-neutral interface it implements is in pipeline/providers/print_jobs.py; the offline
print shop is pipeline/providers/offline_print.py.

``LuluClient`` speaks the Lulu Print API (https://api.lulu.com/docs/, sandbox
https://api.sandbox.lulu.com) with ``httpx``:

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
  Secrets and tokens never appear in messages.
- Retries: the idempotent reads (the token, ``get_job``, ``find_job``'s pages) are tried again
  at once, at most 3 tries and 1 s of waiting in all, when the connection dropped or was refused,
  the connect timed out or Lulu answered 500/502/503/504 without a longer Retry-After
  (pipeline/providers/http_retry.py, tenacity). Everything else, and whatever is still failing
  after that, is the step layer's: it retries with backoff.
- Webhooks (``PRINT_JOB_STATUS_CHANGED``) are signed with HMAC-SHA256 of the raw body keyed with
  the API secret, in the ``Lulu-HMAC-SHA256`` header: ``verify_webhook`` (lulu_jobs.py, with
  ``parse_job``).
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from pipeline.kernel.config import env_number
from pipeline.kernel.errors import PermanentStepError, TransientStepError, retry_after_seconds
from pipeline.providers.base import NoHooks, RequestHooks
from pipeline.providers.http_retry import RetryableError, retry_transient, retryable_status

# Lulu's job JSON and webhooks (lulu_jobs.py) and the neutral print job types (print_jobs.py),
# importable from here as before (the order code uses lulu.parse_job, lulu.PrintJob, ...).
from pipeline.providers.lulu_jobs import WEBHOOK_HEADER, parse_job, verify_webhook, webhook_signature  # noqa: F401
from pipeline.providers.print_jobs import (  # noqa: F401
    ACTIVE,
    IN_PRODUCTION,
    KNOWN,
    PROBLEMS,
    SHIPPED,
    PrintJob,
    PrintJobRequest,
    PrintProvider,
)
from pipeline.providers.print_jobs import REASON_CHARS as _REASON_CHARS

if TYPE_CHECKING:  # served lazily by __getattr__ below
    from pipeline.providers.offline_print import LocalPrintShop, print_shop_stage_seconds  # noqa: F401

TOKEN_PATH = "/auth/realms/glasstree/protocol/openid-connect/token"
# Reads that are safe to send twice: tried again at once on a dropped connection or a 5xx.
RETRIED_OPS = frozenset({"token", "get_job", "find_job"})


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


def _reason(resp: httpx.Response) -> str:
    """Lulu's reason for an error reply, one line, at most 300 characters: Keycloak's
    ``error: error_description``, the validation errors as ``field: message``, or the body's text."""
    try:
        body = resp.json()
    except ValueError:
        text = " ".join(resp.text.split())
        return text[:_REASON_CHARS] or resp.reason_phrase or ""
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
        self._timeout = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
        self._hooks: RequestHooks = hooks if hooks is not None else NoHooks()
        self._allow_file_urls = allow_file_urls
        self._local = threading.local()

    @classmethod
    def from_env(cls, hooks: RequestHooks | None = None, env: Mapping[str, str] | None = None) -> LuluClient:
        """A client from ``LULU_API_URL`` (default https://api.lulu.com), ``LULU_CLIENT_KEY``,
        ``LULU_CLIENT_SECRET``, ``LULU_TIMEOUT`` (s, default 30), ``LULU_CONNECT_TIMEOUT`` (s, default 5)
        and ``LULU_ALLOW_FILE_URLS``; SystemExit("configuration error: ...") for a number out of range."""
        e = os.environ if env is None else env
        return cls(
            e.get("LULU_API_URL", "https://api.lulu.com"), e.get("LULU_CLIENT_KEY", ""),
            e.get("LULU_CLIENT_SECRET", ""), timeout=env_number(e, "LULU_TIMEOUT", 30.0, 0.1, 600.0),
            connect_timeout=env_number(e, "LULU_CONNECT_TIMEOUT", 5.0, 0.1, 600.0), hooks=hooks,
            allow_file_urls=e.get("LULU_ALLOW_FILE_URLS", "") in ("1", "true", "yes"),
        )

    @property
    def webhook_secret(self) -> str:
        """The key Lulu signs webhooks with: the API client secret."""
        return self._secret

    # --- HTTP ---------------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        """This thread's HTTP client (connections are kept alive between calls)."""
        c: httpx.Client | None = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = httpx.Client(
                timeout=self._timeout, follow_redirects=False,
                headers={"User-Agent": "storycreator-workers (+print orders)"})
        return c

    def _send(self, op: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request under the hooks (``_send_once``); the idempotent reads in
        ``RETRIED_OPS`` are tried again at once on a dropped connection or a 5xx
        (pipeline/providers/http_retry.py), each try under the hooks."""
        if op in RETRIED_OPS:
            return retry_transient(lambda: self._send_once(op, method, url, **kwargs), f"lulu {op}")
        return self._send_once(op, method, url, **kwargs)

    def _send_once(self, op: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request under the hooks; transport failures and 429/5xx become
        TransientStepError (RetryableError when one more immediate try may pass). Other statuses
        are returned for the caller to judge."""
        self._hooks.before("lulu", op)
        t0 = time.perf_counter()
        outcome = "ok"
        try:
            resp = self._client().request(method, url, **kwargs)
        except httpx.ConnectTimeout:
            outcome = "timeout"
            raise RetryableError(f"Lulu could not be reached within {self._timeout.connect:g} s ({op})") from None
        except httpx.TimeoutException:
            outcome = "timeout"
            raise TransientStepError(f"Lulu did not answer within {self._timeout.read:g} s ({op})") from None
        except (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as e:
            outcome = "connection_error"
            raise RetryableError(f"Lulu could not be reached ({op}: {type(e).__name__})") from None
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            outcome = "connection_error"
            raise TransientStepError(f"Lulu could not be reached ({op}: {type(e).__name__})") from None
        finally:
            if outcome != "ok":
                self._hooks.after("lulu", op, outcome, time.perf_counter() - t0)
        code = resp.status_code
        if code == 429 or code >= 500:
            self._hooks.after("lulu", op, "throttled" if code == 429 else "server_error", time.perf_counter() - t0)
            retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
            error = RetryableError if retryable_status(code, retry_after) else TransientStepError
            raise error(f"Lulu answered HTTP {code} to {op}: {_reason(resp)}", retry_after=retry_after)
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
        """``POST /cover-dimensions/``: the one-piece cover's (width, height) in points for this
        product and page count. TransientStepError for an unreadable reply."""
        body = self._api("cover_dimensions", "POST", "/cover-dimensions/", ok=(200, 201),
                         json={"pod_package_id": pod_package_id, "interior_page_count": page_count, "unit": "pt"})
        try:
            if str(body.get("unit", "pt")) != "pt":
                raise ValueError(f"unit {body.get('unit')!r}")
            return float(body["width"]), float(body["height"])
        except (AttributeError, KeyError, TypeError, ValueError):
            raise TransientStepError("Lulu sent unreadable cover dimensions") from None

    def find_job(self, external_id: str, line_item_external_id: str) -> PrintJob | None:
        """The newest job whose ``external_id`` is ``external_id`` and that has a line item
        ``line_item_external_id`` (``GET /print-jobs/?search=``, following ``next`` for at most 20
        pages), or None."""
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
        """``POST /print-jobs/`` (Lulu's print job shape: external ids, contact email, shipping level
        and address, one line item with ``printable_normalization`` source URLs and MD5 sums). Not
        retried in the call (not idempotent: ``find_job`` recognises a job created by a lost reply).
        PermanentStepError for non-http(s) file URLs (unless allowed) and Lulu's validation errors."""
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
        """``GET /print-jobs/{id}/`` as a PrintJob; PermanentStepError (HTTP 404) for an unknown id."""
        return self._job("get_job", self._api("get_job", "GET", f"/print-jobs/{job_id}/"))

    def cancel_job(self, job_id: str) -> None:
        """``PUT /print-jobs/{id}/status/`` with ``{"name": "CANCELED"}`` (Lulu cancels only before
        production; it refuses later with an error, raised as PermanentStepError)."""
        self._api("cancel_job", "PUT", f"/print-jobs/{job_id}/status/", json={"name": "CANCELED"})


def __getattr__(name: str) -> Any:
    """``lulu.LocalPrintShop`` and ``lulu.print_shop_stage_seconds`` for callers written before the
    offline print shop moved to pipeline/providers/offline_print.py (issue 11); imported only when
    asked for, so this module does not load the offline shop. AttributeError for anything else."""
    if name in ("LocalPrintShop", "print_shop_stage_seconds"):
        from pipeline.providers import offline_print

        return getattr(offline_print, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
