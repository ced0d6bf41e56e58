"""Replicate image jobs: a base illustration per page, then the child's face swapped in.

Both kinds run as Replicate predictions created without waiting (no ``Prefer: wait``): the
pipeline records the id, polls by re-scheduling the step and copies the output at once,
because Replicate deletes API outputs after about an hour. With REPLICATE_WEBHOOK_URL set, each is
created with a completion webhook (replicate_webhooks.py) and polling is the fallback.

An output can still be gone before it is copied (a backlog, an outage, a worker down for
longer than the hour). Every way that shows is one outcome, ``expired`` (``status()``) or
``OutputExpiredError`` (``download()``), which the pipeline answers with a new prediction:
a succeeded prediction whose ``output`` is null/empty or whose ``data_removed`` is true, a
prediction Replicate no longer has (``GET /v1/predictions/{id}`` -> 404), and an output file
answering 401/403 (an expired signed URL), 404 or 410. How a prediction's JSON is read:
replicate_predictions.py; the prompt, the face crop and output checks: replicate_inputs.py.

Models (each either ``owner/name`` -> ``POST /v1/models/{owner}/{name}/predictions``, which
works for official models, or a version ``owner/name:<hash>`` / ``<hash>`` -> ``POST
/v1/predictions``):

- base: ``black-forest-labs/flux-schnell`` by default. ``base_input`` also carries
  ``negative_prompt``/``width``/``height`` for SDXL-style models; Replicate ignores inputs a model
  does not declare, so one shape serves both families.
- personalize: ``codeplugtech/face-swap`` (pinned version) by default, whose inputs are
  ``input_image`` (the picture to change) and ``swap_image`` (the face to put in). Models with
  another shape (``target_image``/``source_image``, InstantID's ``image``/``face_image``...) are
  configured with the two key names. Face-swap models find the face themselves; the face box is
  used to send only the face (``face_photo_data_uri``), not the whole photo.

Retries belong to the pipeline: the SDK's own transport retries (GETs on 429/503/504, up to 10
times with sleeps honouring ``Retry-After``) are switched off, and its create (which otherwise
runs with no timeout at all) gets the configured one, so each API call here is exactly one HTTP
request bounded by the timeout (httpx's: per connect/read/write, not a total deadline). The one
exception is copying an output file (``download``, an idempotent GET on the file host): a dropped
connection, a connect timeout, a 500/502/503/504 or a body cut short is tried again at once, at
most 3 tries and 1 s of waiting in all (pipeline/providers/http_retry.py, tenacity), before the
step layer's own backoff takes over.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

import httpx
from replicate.client import Client
from replicate.exceptions import ReplicateError

from pipeline.kernel import usage
from pipeline.kernel.errors import PermanentStepError, TransientStepError
from pipeline.providers import usage_calls
from pipeline.providers.base import Face, JobStatus, NoHooks, PageRequest, RequestHooks
from pipeline.providers.http_retry import RetryableError, retry_transient
from pipeline.providers.replicate_http import HTTPStatusError, TooLarge, raise_for_status, status_error, status_outcome
from pipeline.providers.replicate_inputs import (
    as_png,
    base_input,
    decode_data_uri,
)
from pipeline.providers.replicate_predictions import (
    REASON_CHARS,
    UNUSABLE,
    ModelTarget,
    OutputExpiredError,
    as_utc,
    canonical,
    output_gone_reason,
    parse_time,
    prediction_status,
    target_from_env,
)
from pipeline.providers.replicate_webhooks import WebhookConfig, webhook_config

log = logging.getLogger(__name__)

PROVIDER = "replicate"
DEFAULT_BASE_URL = "https://api.replicate.com/v1"
DEFAULT_BASE_MODEL = "black-forest-labs/flux-schnell"
DEFAULT_PERSONALIZE_VERSION = (
    "codeplugtech/face-swap:278a81e7ebb22db98bcba54de985d22cc1abeead2754eb1f2af717247be69b34"
)
DEFAULT_IMAGE_KEY = "input_image"
DEFAULT_FACE_KEY = "swap_image"
DEFAULT_TIMEOUT = 30.0
MAX_DOWNLOAD_BYTES = 25 * 1024 * 1024
MAX_LIST_PAGES = 20  # find() stops here even if created_after is further back (cost bound)

T = TypeVar("T")


# --- the adapter ------------------------------------------------------------------------------


class ReplicateImageJobs:
    """ImageJobs on Replicate via the official SDK; one HTTP request per call, no waiting."""

    name = "replicate"

    def __init__(
        self,
        api_token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        base: ModelTarget | str = DEFAULT_BASE_MODEL,
        personalize: ModelTarget | str = DEFAULT_PERSONALIZE_VERSION,
        image_key: str = DEFAULT_IMAGE_KEY,
        face_key: str = DEFAULT_FACE_KEY,
        timeout: float = DEFAULT_TIMEOUT,
        hooks: RequestHooks | None = None,
        max_download_bytes: int = MAX_DOWNLOAD_BYTES,
        max_list_pages: int = MAX_LIST_PAGES,
        webhook: WebhookConfig | None = None,
    ) -> None:
        if not api_token:
            raise ValueError("api_token is required")
        self._token = api_token
        self._hooks: RequestHooks = hooks or NoHooks()
        self._targets = {
            "base": base if isinstance(base, ModelTarget) else ModelTarget.parse(base, "base"),
            "personalize": (
                personalize if isinstance(personalize, ModelTarget)
                else ModelTarget.parse(personalize, "personalize")
            ),
        }
        self._image_key = image_key
        self._face_key = face_key
        self._max_download_bytes = max_download_bytes
        self._max_list_pages = max_list_pages
        self.webhook = webhook  # completion webhooks (replicate_webhooks.py); None: polling only
        self._create_params: dict[str, Any] = webhook.create_params() if webhook is not None else {}
        http_timeout = httpx.Timeout(timeout)
        # The SDK appends "/v1/..." to its base URL itself; we accept the API root with /v1 (as
        # Replicate documents it) or without (as the SDK's own REPLICATE_BASE_URL means it).
        root = base_url.rstrip("/")
        root = root[: -len("/v1")] if root.endswith("/v1") else root
        timeouts = http_timeout.as_dict()

        def enforce_timeout(request: httpx.Request) -> None:
            # The SDK's create passes timeout=None to httpx unless it sends "Prefer: wait", and
            # httpx reads None as "no timeout at all": a hung create would hold a worker slot forever.
            request.extensions = {**request.extensions, "timeout": timeouts}

        self._sdk = Client(
            api_token=api_token,
            base_url=root,
            timeout=http_timeout,
            event_hooks={"request": [enforce_timeout], "response": [raise_for_status]},
        )
        # Build the httpx client now (the SDK builds it lazily, racily under worker threads) and
        # turn off the SDK's RetryTransport: it would re-send GETs on 429/503/504 up to 10 times,
        # sleeping Retry-After seconds in a worker slot. The pipeline owns retries.
        transport: Any = getattr(self._sdk._client, "_transport", None)
        if not hasattr(transport, "max_attempts"):
            raise RuntimeError("replicate SDK changed: cannot switch off its transport retries")
        transport.max_attempts = 1
        if not callable(getattr(self._sdk, "_request", None)):
            raise RuntimeError("replicate SDK changed: Client._request is gone")
        # Outputs are fetched without our token: they live on another host (replicate.delivery).
        self._http = httpx.Client(
            timeout=http_timeout, follow_redirects=True, max_redirects=5,
            event_hooks={"response": [raise_for_status]},
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 hooks: RequestHooks | None = None) -> ReplicateImageJobs:
        """Configured from REPLICATE_* variables; SystemExit with the reason if they are wrong."""
        env = os.environ if environ is None else environ
        token = env.get("REPLICATE_API_TOKEN", "").strip()
        if not token:
            raise SystemExit(
                "configuration error: REPLICATE_API_TOKEN is not set (IMAGE_PROVIDER=replicate needs an API "
                "token from https://replicate.com/account/api-tokens)"
            )
        raw_timeout = env.get("REPLICATE_TIMEOUT", "").strip() or str(DEFAULT_TIMEOUT)
        try:
            timeout = float(raw_timeout)
            if not 0 < timeout <= 600:
                raise ValueError
        except ValueError:
            raise SystemExit(
                f"configuration error: REPLICATE_TIMEOUT={raw_timeout!r} must be seconds in (0, 600]"
            ) from None
        try:
            base = target_from_env(env, "BASE", DEFAULT_BASE_MODEL, "REPLICATE_BASE_MODEL")
            personalize = target_from_env(env, "PERSONALIZE", DEFAULT_PERSONALIZE_VERSION,
                                           "REPLICATE_PERSONALIZE_VERSION")
        except ValueError as exc:
            raise SystemExit(f"configuration error: {exc}") from None
        return cls(
            token,
            base_url=env.get("REPLICATE_BASE_URL", "").strip() or DEFAULT_BASE_URL,
            base=base,
            personalize=personalize,
            image_key=env.get("REPLICATE_PERSONALIZE_IMAGE_KEY", "").strip() or DEFAULT_IMAGE_KEY,
            face_key=env.get("REPLICATE_PERSONALIZE_FACE_KEY", "").strip() or DEFAULT_FACE_KEY,
            timeout=timeout,
            hooks=hooks,
            webhook=webhook_config(env),  # SystemExit: a URL without its signing secret
        )

    def close(self) -> None:
        """Close the SDK's and the download client's connections."""
        self._sdk._client.close()
        self._http.close()

    # --- inputs (deterministic for a page, so find() can recognise an earlier create) ------------

    def base_input(self, req: PageRequest) -> dict[str, Any]:
        """The page's base illustration input (``replicate_inputs.base_input``)."""
        return base_input(req)

    def personalize_input(self, base_ref: str, photo_ref: str, face: Face, req: PageRequest) -> dict[str, Any]:
        """``photo_ref`` is best ``face_photo_data_uri(photo, face)``: the swap model detects the
        face itself, so the box is applied by sending only the protagonist's face."""
        return {self._image_key: base_ref, self._face_key: photo_ref}

    # --- jobs ------------------------------------------------------------------------------------

    def create(self, kind: str, model_input: dict[str, Any]) -> str:
        """``POST /v1/models/{owner}/{name}/predictions`` (a model) or ``POST /v1/predictions``
        (a pinned version), without waiting (with ``webhook`` when configured); returns the
        prediction id. One request, never retried in the call (``find`` recognises a job whose
        reply was lost)."""
        target = self._target(kind)
        if target.version is not None:
            version = target.version

            def send() -> Any:
                return self._sdk.predictions.create(version=version, input=model_input, **self._create_params)
        else:
            model = target.model or ""

            def send() -> Any:
                return self._sdk.models.predictions.create(model=model, input=model_input, **self._create_params)

        usage_calls.replicate_hold()  # BudgetReached: nothing sent
        try:
            prediction = self._call("create", send, target=target)
        except Exception:
            usage.release("replicate")  # no prediction: nothing to pay (a lost reply's job is found later)
            raise
        log.info("replicate %s prediction %s created (%s)", kind, prediction.id, target.spec)
        return str(prediction.id)

    def find(self, kind: str, model_input: dict[str, Any], created_after: Any,
             exclude: Collection[str] = ()) -> str | None:
        """Newest prediction of this target with exactly this input, created at or after
        ``created_after``, that is not in ``exclude``, has not failed, been canceled or aborted,
        and whose output is not gone (those would only fail or re-create again; a new
        prediction is what a fresh run would make). Allow for clock skew between us and
        Replicate in ``created_after``. ``GET /v1/predictions`` (newest first, ``next`` cursor)."""
        target = self._target(kind)
        want = canonical(model_input)
        since = as_utc(created_after)
        skip = set(exclude)
        path = "/v1/predictions"
        for _ in range(self._max_list_pages):
            page = self._call("list", functools.partial(self._get_json, path))
            results = page.get("results")
            if not isinstance(results, list):
                raise TransientStepError("Replicate sent a malformed reply (list: no results).")
            for p in results:
                if not isinstance(p, dict):
                    continue
                created = parse_time(p.get("created_at"))
                if since is not None and created is not None and created < since:
                    return None  # newest first: everything further on is older still
                if (p.get("id") in skip or p.get("status") in UNUSABLE
                        or not target.matches(p.get("model"), p.get("version"))):
                    continue
                if p.get("status") == "succeeded" and output_gone_reason(p) is not None:
                    continue
                if canonical(p.get("input")) == want:
                    return str(p["id"])
            nxt = page.get("next")
            if not nxt or not isinstance(nxt, str):
                return None
            path = nxt
        log.warning("replicate find(%s): gave up after %d pages of predictions", kind, self._max_list_pages)
        return None

    def status(self, job_id: str) -> JobStatus:
        """``GET /v1/predictions/{id}`` as a JobStatus (see ``prediction_status``); a prediction
        Replicate no longer has (404: purged or deleted) is ``expired`` like a removed output."""
        try:
            p = self._call("get", functools.partial(self._get_json, f"/v1/predictions/{job_id}"), job_id=job_id)
        except OutputExpiredError as exc:
            return JobStatus("expired", error=str(exc))
        st = prediction_status(p)
        usage_calls.replicate_record(p)  # once it has ended: its metrics.predict_time
        return JobStatus(st.state, st.output_url, self._safe(st.error) if st.error else None, st.seconds)

    def cancel(self, job_id: str) -> None:
        """``POST /v1/predictions/{id}/cancel``; the time the prediction ran is recorded from the
        reply (usage_calls.replicate_canceled: nobody looks at it again)."""
        reply = self._call("cancel", lambda: self._sdk.predictions.cancel(job_id), job_id=job_id)
        usage_calls.replicate_canceled(reply, job_id)

    def download(self, url: str) -> bytes:
        """The output's bytes as PNG (at most ``max_download_bytes``). OutputExpiredError if
        the file is gone (401/403: an expired signed URL; 404/410: deleted); TransientStepError
        for a timeout, a broken connection, 429/5xx or a truncated image (the same download may
        pass; a dropped connection, a connect timeout, a 500/502/503/504 or a truncated image is
        first tried again here, at most 3 tries); PermanentStepError for something that is not
        an image."""
        if url.startswith("data:"):
            return as_png(decode_data_uri(url))
        if not url.startswith(("https://", "http://")):
            raise PermanentStepError(f"The image service returned an output that is not a URL: {url[:80]!r}")

        def fetch() -> bytes:
            with self._http.stream("GET", url) as r:
                declared = r.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self._max_download_bytes:
                    raise TooLarge(declared)
                buf = bytearray()
                for chunk in r.iter_bytes():
                    buf += chunk
                    if len(buf) > self._max_download_bytes:
                        raise TooLarge(str(len(buf)))
                return bytes(buf)

        # An idempotent GET of a file: tried again at once on a hiccup (http_retry.py), each try
        # a whole download under the hooks; gone (401/403/404/410) or too large is never retried.
        return retry_transient(lambda: as_png(self._call("download", fetch)), "replicate download")

    # --- plumbing --------------------------------------------------------------------------------

    def _get_json(self, path: str) -> dict[str, Any]:
        """One GET through the SDK's client (its auth, base URL, timeouts and our hooks), as JSON.
        ``path`` is API-relative or a ``next`` URL the API gave."""
        data = self._sdk._request("GET", path).json()
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data

    def _target(self, kind: str) -> ModelTarget:
        try:
            return self._targets[kind]
        except KeyError:
            raise ValueError(f"unknown image job kind {kind!r}; expected 'base' or 'personalize'") from None

    def _safe(self, text: str) -> str:
        """Provider text made safe to store and show: never the token, at most ~300 chars."""
        return text.replace(self._token, "[redacted]")

    def _call(self, op: str, fn: Callable[[], T], *, target: ModelTarget | None = None,
              job_id: str | None = None) -> T:
        """One HTTP request with hooks around it; every failure as a StepError."""
        self._hooks.before(PROVIDER, op)  # may raise TransientStepError (quota): nothing was sent
        t0 = time.monotonic()
        outcome = "client_error"  # for anything unforeseen below
        try:
            result = fn()
            outcome = "ok"
            return result
        except HTTPStatusError as exc:
            outcome = status_outcome(exc.status)
            raise status_error(op, exc.status, self._safe(exc.reason), exc.retry_after, target, job_id) from exc
        except ReplicateError as exc:  # only if an error response ever bypassed our hook
            status = exc.status or 500
            outcome = status_outcome(status)
            reason = ": ".join(str(p) for p in (exc.title, exc.detail) if p)
            raise status_error(op, status, self._safe(reason), None, target, job_id) from exc
        except httpx.ConnectTimeout as exc:
            outcome = "timeout"
            raise RetryableError(f"Replicate did not answer in time ({op}: {type(exc).__name__}).") from exc
        except httpx.TimeoutException as exc:
            outcome = "timeout"
            raise TransientStepError(f"Replicate did not answer in time ({op}: {type(exc).__name__}).") from exc
        except httpx.UnsupportedProtocol as exc:
            outcome = "client_error"
            raise PermanentStepError(f"REPLICATE_BASE_URL or the output URL is not http(s) ({op}).") from exc
        except (httpx.TransportError, httpx.DecodingError) as exc:
            # Connection refused/reset, a response cut short, a broken gzip stream.
            outcome = "connection_error"
            raise RetryableError(
                self._safe(f"Could not reach Replicate ({op}: {type(exc).__name__}: {exc})")[:REASON_CHARS]
            ) from exc
        except TooLarge as exc:
            outcome = "malformed"
            raise PermanentStepError(
                f"The image from the image service is larger than {self._max_download_bytes // (1024 * 1024)} MB."
            ) from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # A 2xx whose body is not the JSON object the SDK expects (truncated by a gateway...).
            outcome = "malformed"
            raise TransientStepError(f"Replicate sent a malformed reply ({op}: {type(exc).__name__}).") from exc
        finally:
            self._hooks.after(PROVIDER, op, outcome, time.monotonic() - t0)
