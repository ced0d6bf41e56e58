"""Replicate image jobs: a base illustration per page, then the child's face swapped in.

Both kinds run as Replicate predictions created without waiting (no ``Prefer: wait``): the
pipeline records the id, polls by re-scheduling the step and copies the output at once,
because Replicate deletes API outputs after about an hour.

An output can still be gone before it is copied (a backlog, an outage, a worker down for
longer than the hour). Every way that shows is one outcome, ``expired`` (``status()``) or
``OutputExpiredError`` (``download()``), which the pipeline answers with a new prediction:
a succeeded prediction whose ``output`` is null/empty or whose ``data_removed`` is true, a
prediction Replicate no longer has (``GET /v1/predictions/{id}`` -> 404), and an output file
answering 401/403 (an expired signed URL), 404 or 410. Sources: prediction statuses
https://replicate.com/docs/topics/predictions/lifecycle (``starting``, ``processing``,
``succeeded``, ``failed``, ``canceled``, ``aborted``); data retention
https://replicate.com/docs/topics/predictions/data-retention ("input parameters, output values,
output files, and logs are automatically removed after an hour").

Predictions are read as Replicate's JSON, not through the SDK's ``Prediction`` model: the SDK
(1.0.7) rejects the documented ``aborted`` status (a pydantic error on an otherwise good reply,
and on a whole page of ``list``) and drops ``data_removed``.

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
runs with no timeout at all) gets the configured one, so each call here is exactly one HTTP
request bounded by the timeout (httpx's: per connect/read/write, not a total deadline).
"""
from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from PIL import Image, UnidentifiedImageError
from replicate.client import Client
from replicate.exceptions import ReplicateError

from pipeline.errors import (
    OutputGoneError,
    PermanentStepError,
    StepError,
    TransientStepError,
    retry_after_seconds,
)
from pipeline.providers.base import Face, JobStatus, NoHooks, PageRequest, RequestHooks
from pipeline.themes import THEMES, resolve_theme

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
MAX_OUTPUT_PIXELS = 40_000_000  # far above any model's output; stops a decompression bomb
MAX_LIST_PAGES = 20  # find() stops here even if created_after is further back (cost bound)
REASON_CHARS = 300

WIDTH, HEIGHT = 960, 720  # the offline illustrator's page size; multiples of 16 for diffusion models
ASPECT_RATIO = "4:3"
# One look for every page, and a face the swap model can find: frontal, uncovered, lit.
CHARACTER = (
    "a cheerful {who} in a red jumper and blue trousers, facing the viewer, "
    "whole face clearly visible, uncovered and evenly lit, no hat, no helmet, no mask"
)
NEGATIVE_PROMPT = (
    "text, letters, words, caption, watermark, signature, logo, photo, photorealistic, scary, violent, "
    "blood, weapon, nudity, deformed, extra limbs, extra fingers, blurry face, face covered, helmet visor, "
    "mask, back view, cropped head"
)
DEFAULT_STYLE = "soft watercolour children's book illustration, warm colours, gentle light"

_CONTENT_POLICY = re.compile(r"nsfw|content polic|safety|sensitive content|flagged|moderation", re.I)
_RETRYABLE_FAILURE = re.compile(
    r"interrupted|please retry|out of memory|cuda error|timed out|timeout|temporarily|unavailable|aborted", re.I
)
RUNNING = ("starting", "processing")
# Ended without an output worth following: find() never picks these up again.
UNUSABLE = ("failed", "canceled", "aborted")
_HEX_VERSION = re.compile(r"[0-9a-f]{64}")
_OWNER_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")

T = TypeVar("T")


class OutputExpiredError(OutputGoneError):
    """The prediction's output is gone (Replicate deletes API outputs after about an hour):
    its file answered 401/403/404/410, or the prediction itself is gone (404).

    Retrying the same download cannot help; the step must create a new prediction (and not
    ``find`` the old one again: pass its id in ``exclude``)."""


@dataclass(frozen=True)
class ModelTarget:
    """Which model a kind of job runs, and where that came from (for error messages)."""

    spec: str  # as configured: "owner/name", "owner/name:<hash>" or "<hash>"
    source: str  # the env var (or argument) that set it
    model: str | None  # "owner/name" when known
    version: str | None  # the version hash when running a pinned version

    @classmethod
    def parse(cls, spec: str, source: str) -> ModelTarget:
        spec = spec.strip()
        name, sep, version = spec.partition(":")
        if sep:
            if not _OWNER_NAME.fullmatch(name) or not version:
                raise ValueError(f"{source}={spec!r} is not 'owner/name:version'")
            return cls(spec, source, name, version)
        if _HEX_VERSION.fullmatch(spec):
            return cls(spec, source, None, spec)
        if _OWNER_NAME.fullmatch(spec):
            return cls(spec, source, spec, None)
        raise ValueError(f"{source}={spec!r} is neither 'owner/name', 'owner/name:version' nor a version id")

    def matches(self, model: str | None, version: str | None) -> bool:
        """A listed prediction ran this target (a version id is unique on its own)."""
        if self.version is not None:
            return version == self.version
        return model == self.model


class _HTTPStatus(Exception):
    """An HTTP error response, raised from httpx's response hook (before the SDK sees it) so
    the status, the provider's reason and Retry-After survive; ReplicateError drops headers."""

    def __init__(self, status: int, reason: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class _TooLarge(Exception):
    pass


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code >= 400:
        response.read()
        raise _HTTPStatus(response.status_code, _reason(response), _retry_after(response.headers))


def _reason(response: httpx.Response) -> str:
    """Replicate's problem details (title: detail), or the start of whatever body came back."""
    try:
        data = response.json()
    except ValueError:
        return " ".join(response.text.split())[:REASON_CHARS]
    if not isinstance(data, dict):
        return json.dumps(data)[:REASON_CHARS]
    detail = data.get("detail")
    if detail is not None and not isinstance(detail, str):
        detail = json.dumps(detail)
    parts = [str(p) for p in (data.get("title"), detail) if p]
    return (": ".join(parts) or json.dumps(data))[:REASON_CHARS]


def _retry_after(headers: httpx.Headers) -> float | None:
    return retry_after_seconds(headers.get("retry-after"))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _as_utc(value: Any) -> datetime | None:
    """created_after as an aware UTC datetime: datetime (naive = UTC), ISO string or epoch seconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str):
        return _as_utc(datetime.fromisoformat(value))
    raise TypeError(f"created_after must be a datetime, ISO string or epoch seconds, not {type(value).__name__}")


def _parse_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return _as_utc(datetime.fromisoformat(raw))
    except ValueError:
        return None


def _first_url(output: Any) -> str | None:
    """Models return one URL or a list of them (flux returns a list even for one image)."""
    if isinstance(output, str):
        return output or None
    if isinstance(output, list):
        return next((o for o in output if isinstance(o, str) and o), None)
    return None


def output_gone_reason(prediction: Mapping[str, Any]) -> str | None:
    """Why a ``succeeded`` prediction's output can no longer be copied, or None if it can:
    ``data_removed`` (Replicate's cleanup after about an hour) or no usable URL in ``output``
    (null, empty, a list of nothing)."""
    if prediction.get("data_removed") is True:
        return "Replicate removed the output (data_removed)"
    if _first_url(prediction.get("output")) is None:
        return "the output was empty"
    return None


def prediction_status(prediction: Mapping[str, Any]) -> JobStatus:
    """A prediction (Replicate's JSON: ``status``, ``output``, ``error``, ``data_removed``) as a
    JobStatus. ``starting``/``processing`` -> running; ``succeeded`` with an output URL ->
    succeeded; ``succeeded`` whose output is gone -> expired; ``failed`` -> failed with the
    model's reason; ``aborted`` (its deadline passed before it started) -> failed, retryable;
    ``canceled`` -> canceled. TransientStepError for a reply without a known status (a gateway's
    page, a status added after this was written): bounded by the step's tries, never a guess.

    Statuses: https://replicate.com/docs/topics/predictions/lifecycle."""
    status = prediction.get("status")
    if status in RUNNING:
        return JobStatus("running")
    if status == "succeeded":
        gone = output_gone_reason(prediction)
        if gone is not None:
            return JobStatus("expired", error=gone)
        return JobStatus("succeeded", output_url=_first_url(prediction.get("output")))
    if status == "canceled":
        return JobStatus("canceled", error="The image job was canceled.")
    if status == "aborted":
        return JobStatus("failed", error=(
            "Replicate aborted the prediction before it started (its deadline passed)."))
    if status == "failed":
        error = prediction.get("error")
        return JobStatus("failed", error=failure_message(error if isinstance(error, str) else None))
    raise TransientStepError(f"Replicate sent a prediction with an unknown status {str(status)[:40]!r}.")


def failure_message(reason: str | None) -> str:
    """A failed prediction's reason, for a parent or an operator."""
    text = (reason or "no reason given").strip()[:REASON_CHARS]
    if _CONTENT_POLICY.search(text):
        return f"The picture for this page was blocked by the image service's content filter ({text})."
    return f"The image service could not make this picture: {text}"


def is_retryable_failure(status: JobStatus) -> bool:
    """A ``failed`` job whose reason says a new prediction may pass (an interrupted or
    out-of-memory run); content-policy refusals and bad inputs are not."""
    if status.state != "failed" or not status.error:
        return False
    return not _CONTENT_POLICY.search(status.error) and bool(_RETRYABLE_FAILURE.search(status.error))


# --- prompts ----------------------------------------------------------------------------------


def _scrub_name(text: str, name: str) -> str:
    """Remove the child's name (full, then each part) from text bound for the image model.

    Case-sensitive on purpose: a child called "Sky" must not turn "night sky" into nonsense;
    names in beats are written capitalised."""
    parts = [name.strip()] + [p for p in name.split() if len(p) > 1]
    for part in dict.fromkeys(p for p in parts if p):
        for variant in dict.fromkeys((part, part.title(), part.upper())):
            text = re.sub(rf"(?<!\w){re.escape(variant)}(?!\w)", "the child", text)
    return text


def _scene(beat: str) -> str:
    """The page's main event: a short leading label ("Opening: ...") and a parenthetical
    list of other events are dropped; diffusion models follow one clear scene best."""
    head, sep, rest = beat.partition(": ")
    if sep and len(head.split()) <= 4 and rest:
        beat = rest
    beat = re.sub(r"\s*\((also|and)\b[^)]*\)\s*$", "", beat).strip()
    if len(beat) > 240:
        beat = beat[:240].rsplit(" ", 1)[0]
    return beat


def _who(age: int) -> str:
    if age <= 3:
        return "toddler"
    if age <= 8:
        return "young child"
    return "child"


def data_uri(image: bytes) -> str:
    """A data: URI for encoded image bytes (PNG/JPEG/WebP by their magic bytes)."""
    return f"data:{_mime(image) or 'application/octet-stream'};base64,{base64.b64encode(image).decode()}"


def face_photo_data_uri(photo: bytes, face: Face, max_side: int = 512, margin: float = 0.6) -> str:
    """The protagonist's face (with hair and chin) cropped from the photo as a JPEG data: URI.

    Only the face leaves our storage, the swap model cannot pick a sibling in a group photo,
    and the input stays far below Replicate's data: URI size limit."""
    from pipeline.providers.photo_decode import decode_photo

    decoded = decode_photo(photo, target_long_side=2048, exact=False)  # EXIF-upright, like the box
    img = decoded.image
    w, h = img.size
    box = face.box
    cx, cy = (box.left + box.width / 2) * w, (box.top + box.height / 2) * h
    side = min(max(box.width * w, box.height * h) * (1 + 2 * margin), w, h)
    x0 = min(max(cx - side / 2, 0.0), w - side)
    y0 = min(max(cy - side / 2, 0.0), h - side)
    out = min(max_side, max(1, int(side)))
    crop = img.resize((out, out), Image.Resampling.LANCZOS, box=(x0, y0, x0 + side, y0 + side))
    buf = io.BytesIO()
    crop.save(buf, "JPEG", quality=90)
    return data_uri(buf.getvalue())


def _mime(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _as_png(data: bytes) -> bytes:
    """The downloaded output checked to be a whole image, as PNG (our storage keys say .png)."""
    mime = _mime(data)
    if mime is None:
        raise PermanentStepError(
            f"The image service returned something that is not a PNG, JPEG or WebP image ({len(data)} bytes)."
        )
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_OUTPUT_PIXELS:
                raise PermanentStepError(f"The image service returned an oversized image ({im.width}x{im.height}).")
            im.load()
            if mime == "image/png":
                return data
            buf = io.BytesIO()
            im.convert("RGBA" if "A" in im.getbands() else "RGB").save(buf, "PNG", compress_level=3)
            return buf.getvalue()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        # Right magic bytes but undecodable: a truncated transfer; the next copy may be whole.
        raise TransientStepError(f"The image from the image service was incomplete ({len(data)} bytes).") from exc


def _decode_data_uri(uri: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep or not header.endswith(";base64"):
        raise PermanentStepError("The image service returned a data: URI that is not base64.")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PermanentStepError("The image service returned a malformed data: URI.") from exc


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
            event_hooks={"request": [enforce_timeout], "response": [_raise_for_status]},
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
            event_hooks={"response": [_raise_for_status]},
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
            base = _target_from_env(env, "BASE", DEFAULT_BASE_MODEL, "REPLICATE_BASE_MODEL")
            personalize = _target_from_env(env, "PERSONALIZE", DEFAULT_PERSONALIZE_VERSION,
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
        )

    def close(self) -> None:
        self._sdk._client.close()
        self._http.close()

    # --- inputs (deterministic for a page, so find() can recognise an earlier create) ------------

    def base_input(self, req: PageRequest) -> dict[str, Any]:
        theme = resolve_theme(req.story.theme)
        if theme is None:
            raise PermanentStepError(
                f"Unknown story theme {req.story.theme[:60]!r}. Choose one of: {', '.join(sorted(THEMES))}."
            )
        if not 1 <= req.page_number <= len(req.outline.beats):
            raise PermanentStepError(
                f"Page {req.page_number} has no beat in the outline ({len(req.outline.beats)} beats)."
            )
        # The child's name never goes into an image prompt: the provider does not need it (privacy),
        # and diffusion models paint names as garbled lettering on the picture.
        name = req.story.child_name
        scene = _scrub_name(_scene(req.outline.beats[req.page_number - 1]), name)
        style = _scrub_name(req.outline.style.strip(), name) or DEFAULT_STYLE
        character = CHARACTER.format(who=_who(req.story.child_age))
        prompt = (
            f"Children's picture-book illustration, {theme.setting}. Scene: {scene}. "
            f"Main character: {character}. Style: {style}. No text or lettering anywhere in the picture."
        )
        return {
            "prompt": prompt,
            "negative_prompt": NEGATIVE_PROMPT,
            "width": WIDTH,
            "height": HEIGHT,
            "aspect_ratio": ASPECT_RATIO,
            # One seed for every page of a story: the same character and palette throughout.
            "seed": req.story.seed,
            "num_outputs": 1,
            "output_format": "png",
            # flux's fp8 fast path is not deterministic even with a seed.
            "go_fast": False,
        }

    def personalize_input(self, base_ref: str, photo_ref: str, face: Face, req: PageRequest) -> dict[str, Any]:
        """``photo_ref`` is best ``face_photo_data_uri(photo, face)``: the swap model detects the
        face itself, so the box is applied by sending only the protagonist's face."""
        return {self._image_key: base_ref, self._face_key: photo_ref}

    # --- jobs ------------------------------------------------------------------------------------

    def create(self, kind: str, model_input: dict[str, Any]) -> str:
        target = self._target(kind)
        if target.version is not None:
            version = target.version

            def send() -> Any:
                return self._sdk.predictions.create(version=version, input=model_input)
        else:
            model = target.model or ""

            def send() -> Any:
                return self._sdk.models.predictions.create(model=model, input=model_input)

        prediction = self._call("create", send, target=target)
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
        want = _canonical(model_input)
        since = _as_utc(created_after)
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
                created = _parse_time(p.get("created_at"))
                if since is not None and created is not None and created < since:
                    return None  # newest first: everything further on is older still
                if (p.get("id") in skip or p.get("status") in UNUSABLE
                        or not target.matches(p.get("model"), p.get("version"))):
                    continue
                if p.get("status") == "succeeded" and output_gone_reason(p) is not None:
                    continue
                if _canonical(p.get("input")) == want:
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
        return JobStatus(st.state, st.output_url, self._safe(st.error) if st.error else None)

    def cancel(self, job_id: str) -> None:
        self._call("cancel", lambda: self._sdk.predictions.cancel(job_id), job_id=job_id)

    def download(self, url: str) -> bytes:
        """The output's bytes as PNG (at most ``max_download_bytes``). OutputExpiredError if
        the file is gone (401/403: an expired signed URL; 404/410: deleted); TransientStepError
        for a timeout, a broken connection, 429/5xx or a truncated image (the same download may
        pass); PermanentStepError for something that is not an image."""
        if url.startswith("data:"):
            return _as_png(_decode_data_uri(url))
        if not url.startswith(("https://", "http://")):
            raise PermanentStepError(f"The image service returned an output that is not a URL: {url[:80]!r}")

        def fetch() -> bytes:
            with self._http.stream("GET", url) as r:
                declared = r.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self._max_download_bytes:
                    raise _TooLarge(declared)
                buf = bytearray()
                for chunk in r.iter_bytes():
                    buf += chunk
                    if len(buf) > self._max_download_bytes:
                        raise _TooLarge(str(len(buf)))
                return bytes(buf)

        return _as_png(self._call("download", fetch))

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
        except _HTTPStatus as exc:
            outcome = _status_outcome(exc.status)
            raise self._status_error(op, exc.status, exc.reason, exc.retry_after, target, job_id) from exc
        except ReplicateError as exc:  # only if an error response ever bypassed our hook
            status = exc.status or 500
            outcome = _status_outcome(status)
            reason = ": ".join(str(p) for p in (exc.title, exc.detail) if p)
            raise self._status_error(op, status, reason, None, target, job_id) from exc
        except httpx.TimeoutException as exc:
            outcome = "timeout"
            raise TransientStepError(f"Replicate did not answer in time ({op}: {type(exc).__name__}).") from exc
        except httpx.UnsupportedProtocol as exc:
            outcome = "client_error"
            raise PermanentStepError(f"REPLICATE_BASE_URL or the output URL is not http(s) ({op}).") from exc
        except (httpx.TransportError, httpx.DecodingError) as exc:
            # Connection refused/reset, a response cut short, a broken gzip stream.
            outcome = "connection_error"
            raise TransientStepError(
                self._safe(f"Could not reach Replicate ({op}: {type(exc).__name__}: {exc})")[:REASON_CHARS]
            ) from exc
        except _TooLarge as exc:
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

    def _status_error(self, op: str, status: int, reason: str, retry_after: float | None,
                      target: ModelTarget | None, job_id: str | None) -> StepError:
        reason = self._safe(reason or "no details")[:REASON_CHARS]
        if status == 429:
            return TransientStepError(f"Replicate is rate-limiting requests (HTTP 429, {op}): {reason}",
                                      retry_after=retry_after)
        if status >= 500 or status in (408, 425):
            return TransientStepError(f"Replicate had a server error (HTTP {status}, {op}): {reason}",
                                      retry_after=retry_after)
        if op == "download" and status in (401, 403, 404, 410):
            # The output host is asked without our token: 401/403 is an expired signed URL, not
            # our credentials; 404/410 a deleted file.
            return OutputExpiredError(f"the output file answered HTTP {status}")
        if op == "get" and status == 404 and job_id is not None:
            return OutputExpiredError(f"Replicate no longer has prediction {job_id} (HTTP 404)")
        if status in (401, 403):
            return PermanentStepError(
                f"Replicate refused our credentials (HTTP {status}, {op}): {reason}. Check REPLICATE_API_TOKEN."
            )
        if status == 404 and op == "create" and target is not None:
            return PermanentStepError(
                f"Replicate does not know the model {target.spec!r} set in {target.source} (HTTP 404): {reason}"
            )
        if status == 404 and job_id is not None:
            return PermanentStepError(f"Replicate has no prediction {job_id!r} (HTTP 404, {op}): {reason}")
        if status == 422:
            what = f" for {target.spec}" if target is not None else ""
            return PermanentStepError(f"Replicate rejected the input{what} (HTTP 422): {reason}")
        return PermanentStepError(f"Replicate refused the request (HTTP {status}, {op}): {reason}")


def _status_outcome(status: int) -> str:
    if status == 429:
        return "throttled"
    if status >= 500:
        return "server_error"
    return "client_error"


def _target_from_env(env: Mapping[str, str], kind: str, default: str, default_source: str) -> ModelTarget:
    """REPLICATE_<KIND>_VERSION wins over REPLICATE_<KIND>_MODEL; the default only if neither is set."""
    for var in (f"REPLICATE_{kind}_VERSION", f"REPLICATE_{kind}_MODEL"):
        value = env.get(var, "").strip()
        if value:
            return ModelTarget.parse(value, var)
    return ModelTarget.parse(default, f"{default_source} (default)")
