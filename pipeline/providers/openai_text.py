"""A StoryWriter on OpenAI's Chat Completions API with structured outputs (the official SDK).

Every call sends a strict JSON schema (``response_format=json_schema``), and the reply is
still validated here: it crosses a network and maybe a gateway, so it is untrusted.

Safety by construction
----------------------
- The system prompt is fixed per call kind and child's age: it sets the audience (a picture
  book for a child of N years) and the content rules. Nothing a parent typed goes into it.
- The child's name and the theme are *data*: they travel in the user message as one JSON
  object (``json.dumps``), and the system prompt says its fields are used literally, never
  obeyed. A name like "Ignore previous instructions..." is then just a (strange) name.
- Page text is bounded by the prompt (1-4 short sentences by age), by ``max_completion_tokens``,
  and after the reply by a character limit per age band.

Errors
------
Retries belong to the pipeline (backoff, jitter, ``Retry-After``, a cap per step), so the SDK
is built with ``max_retries=0``. The SDK's exception classes map to TransientStepError (429,
5xx, timeouts, connection errors, malformed replies) or PermanentStepError (400/401/403/404/
422, quota exhausted, refusals, content filter, cut off at the length limit). Messages quote
the provider's reason (truncated) and the HTTP status, never the API key.
"""
from __future__ import annotations

import json
import os
import re
import time
import unicodedata
from collections.abc import Mapping
from typing import Any, NoReturn

import openai
from openai.types.chat import ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from pipeline.config import env_number
from pipeline.kernel.errors import PermanentStepError, StepError, TransientStepError, retry_after_seconds
from pipeline.providers import usage_calls
from pipeline.providers.base import NoHooks, Outline, PageRequest, RequestHooks, StoryRequest
from pipeline.providers.names import capitalize_name, title_with_name
from pipeline.providers.text_prompts import (
    PAGE_SCHEMA,
    outline_schema,
    outline_system_prompt,
    page_band,
    page_system_prompt,
)
from pipeline.providers.themes import resolve_theme

PROVIDER = "openai"
OPERATION = "chat"

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_TOKENS = 1200

REASON_CHARS = 300  # how much of the provider's own reason an error message quotes
MAX_NAME_CHARS = 80  # upstream allows 40; this only bounds what a bug upstream could send
MAX_TITLE_CHARS = 100
MAX_STYLE_CHARS = 300
MAX_BEAT_CHARS = 300
MAX_HINT_CHARS = 200  # a redo's hint (pipeline/stories/redo.py HINT_MAX_CHARS)


# --------------------------------------------------------------------------------------
# Text hygiene
# --------------------------------------------------------------------------------------

_KEEP_FORMAT = {"\u200c", "\u200d"}  # ZWNJ/ZWJ spell some scripts' names correctly (Persian, Hindi)
_SECRETISH = re.compile(r"\b(sk-[A-Za-z0-9_\-]{2})[A-Za-z0-9_\-*.]{6,}")


def clean_text(value: str, limit: int | None = None) -> str:
    """One line of plain text: control, format (bidi overrides) and unassigned characters
    removed, all whitespace runs made one space, optionally cut to ``limit`` characters."""
    out: list[str] = []
    for ch in value:
        cat = unicodedata.category(ch)
        if ch.isspace() or cat in ("Zl", "Zp"):
            out.append(" ")
        elif cat in ("Cc", "Cs", "Co", "Cn") or (cat == "Cf" and ch not in _KEEP_FORMAT):
            continue
        else:
            out.append(ch)
    text = " ".join("".join(out).split())
    return text[:limit] if limit is not None else text


NAME_PLACEHOLDER = "[the child's name]"


def without_name(error: StepError, name: str) -> StepError:
    """``error`` with the child's name (whole, and each part of 3+ letters, any case) replaced
    by NAME_PLACEHOLDER. A provider's own words (a refusal, a 400's reason) often quote the
    request, and these messages reach step_errors, the step's log line and Celery's: logs carry
    ids, never names."""
    parts = [name.strip()] + [p for p in name.split() if len(p) >= 3]
    message = str(error)
    for part in sorted(dict.fromkeys(p for p in parts if p), key=len, reverse=True):
        message = re.sub(rf"(?<!\w){re.escape(part)}(?!\w)", NAME_PLACEHOLDER, message, flags=re.IGNORECASE)
    if message == str(error):
        return error
    if isinstance(error, TransientStepError):
        return TransientStepError(message, retry_after=error.retry_after)
    return type(error)(message)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """The provider's wait hint in seconds: ``retry-after-ms`` (OpenAI's, more precise), then
    ``Retry-After`` as seconds or an HTTP date. None when absent or unusable."""
    ms = retry_after_seconds(headers.get("retry-after-ms"))
    return ms / 1000 if ms is not None else retry_after_seconds(headers.get("retry-after"))


# --------------------------------------------------------------------------------------
# The writer
# --------------------------------------------------------------------------------------


class OpenAIStoryWriter:
    """StoryWriter on OpenAI Chat Completions with structured outputs.

    ``timeout`` is per HTTP request (connect, and each wait for data); ``max_tokens`` bounds
    each reply (``max_completion_tokens``); ``seed`` is the story's, for best-effort
    determinism when a step is re-run.
    """

    def __init__(
        self,
        api_key: str,
        *,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        timeout: float = DEFAULT_TIMEOUT,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        hooks: RequestHooks | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is empty")
        self._api_key = api_key
        self.model = model
        self.base_url = base_url
        self.temperature = temperature
        self.timeout = timeout
        self.max_tokens = max_tokens
        self._hooks: RequestHooks = hooks if hooks is not None else NoHooks()
        # max_retries=0: the pipeline owns retries (backoff with jitter, Retry-After, a cap per
        # step, each attempt recorded). SDK retries would multiply with ours (2 x 5 = 10 calls
        # per step) and hide attempts from the step's record and the rate-limit hooks.
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)

    def __repr__(self) -> str:  # never the key
        return f"OpenAIStoryWriter(model={self.model!r}, base_url={self.base_url!r})"

    @classmethod
    def from_env(cls, hooks: RequestHooks | None = None, env: Mapping[str, str] | None = None) -> OpenAIStoryWriter:
        """Built from OPENAI_* variables; a missing key or a bad value stops the process
        (SystemExit) with what to fix, as other configuration errors do."""
        e = os.environ if env is None else env
        key = e.get("OPENAI_API_KEY", "").strip()
        if not key:
            raise SystemExit("configuration error: OPENAI_API_KEY is not set (TEXT_PROVIDER=openai needs it)")
        model = e.get("OPENAI_MODEL", "").strip() or DEFAULT_MODEL
        base_url = e.get("OPENAI_BASE_URL", "").strip() or None
        temperature = env_number(e, "OPENAI_TEMPERATURE", DEFAULT_TEMPERATURE, 0.0, 2.0)
        timeout = env_number(e, "OPENAI_TIMEOUT", DEFAULT_TIMEOUT, 0.1, 3600.0)
        max_tokens = env_number(e, "OPENAI_MAX_TOKENS", DEFAULT_MAX_TOKENS, 16, 100_000)
        if max_tokens != int(max_tokens):
            raise SystemExit("configuration error: OPENAI_MAX_TOKENS must be a whole number")
        return cls(key, model=model, base_url=base_url, temperature=temperature, timeout=timeout,
                   max_tokens=int(max_tokens), hooks=hooks)

    # --- StoryWriter ---------------------------------------------------------------------

    def write_outline(self, req: StoryRequest) -> Outline:
        """Title, one visual style line and exactly ``page_count`` beats."""
        data = self._story_data(req)
        reply = self._chat("story_outline", outline_schema(req.page_count),
                           outline_system_prompt(req.child_age), data, req.seed)
        if set(reply) != {"title", "style", "beats"}:
            self._malformed(f"outline fields {sorted(reply)[:5]}")
        title = self._field(reply["title"], "title", MAX_TITLE_CHARS)
        style = self._field(reply["style"], "style", MAX_STYLE_CHARS)
        beats = reply["beats"]
        if not isinstance(beats, list):
            self._malformed("beats is not a list")
        if len(beats) != req.page_count:
            self._malformed(f"{len(beats)} beats for {req.page_count} pages")
        title = title_with_name(title, data["child_name"])  # "mia" -> "Mia and the ..."
        return Outline(title=title, style=style,
                       beats=tuple(self._field(b, f"beat {i}", MAX_BEAT_CHARS) for i, b in enumerate(beats, 1)))

    def write_page(self, req: PageRequest) -> str:
        """The text of one page, sized to the child's age; depends only on the request."""
        beats = req.outline.beats
        if not 1 <= req.page_number <= len(beats):
            raise ValueError(f"page_number {req.page_number} is outside 1..{len(beats)}")
        i = req.page_number - 1
        data = self._story_data(req.story)
        # The outline came from a model too: it is data like the name, cleaned and bounded.
        data.update(
            title=clean_text(req.outline.title, MAX_TITLE_CHARS),
            page_number=req.page_number,
            page_count=len(beats),
            beat=clean_text(beats[i], MAX_BEAT_CHARS),
            previous_beat=clean_text(beats[i - 1], MAX_BEAT_CHARS) if i > 0 else None,
            next_beat=clean_text(beats[i + 1], MAX_BEAT_CHARS) if i + 1 < len(beats) else None,
        )
        if req.hint:  # a redo's wish from the parent: data in the user message, like the name
            data["parent_wish"] = clean_text(req.hint, MAX_HINT_CHARS)
        system = page_system_prompt(req.story.child_age, redo=bool(req.hint))
        # A redone page asks again with another seed: the same request would give the same page.
        seed = req.story.seed if req.revision <= 1 else req.story.seed + req.revision
        reply = self._chat("story_page", PAGE_SCHEMA, system, data, seed)
        if set(reply) != {"text"}:
            self._malformed(f"page fields {sorted(reply)[:5]}")
        band = page_band(req.story.child_age)
        text = capitalize_name(self._field(reply["text"], "text", None), data["child_name"])
        if len(text) > band.max_chars:
            # Too long for the age band: a model's variance, another try usually fits.
            self._malformed(f"page text of {len(text)} characters (at most {band.max_chars} for ages {band.ages})")
        return text

    # --- internals -------------------------------------------------------------------------

    @staticmethod
    def _story_data(req: StoryRequest) -> dict[str, Any]:
        """What the parent chose, as data for the user message (never for the system prompt)."""
        theme = resolve_theme(req.theme or "")
        return {
            "child_name": clean_text(req.child_name or "", MAX_NAME_CHARS),
            "child_age": req.child_age,
            "theme": theme.title if theme else clean_text(req.theme or "", 60),
            "setting": theme.setting if theme else "",
            "page_count": req.page_count,
        }

    def _field(self, value: object, what: str, limit: int | None) -> str:
        if not isinstance(value, str):
            self._malformed(f"{what} is {type(value).__name__}, not text")
        text = clean_text(value)
        if not text:
            self._malformed(f"{what} is empty")
        if limit is not None and len(text) > limit:
            self._malformed(f"{what} of {len(text)} characters (at most {limit})")
        return text

    def _malformed(self, detail: str) -> NoReturn:
        raise TransientStepError(f"OpenAI sent a malformed reply: {self._safe(detail)}")

    def _safe(self, text: str, limit: int | None = None) -> str:
        """Text for an error message: our key (or anything key-shaped) removed, one line, cut."""
        text = text.replace(self._api_key, "[redacted]")
        text = _SECRETISH.sub(r"\1…[redacted]", text)
        text = clean_text(text)
        if limit is not None and len(text) > limit:
            text = text[: limit - 1] + "…"
        return text

    def _chat(self, name: str, schema: dict[str, Any], system: str, data: dict[str, Any], seed: int) -> dict[str, Any]:
        """One Chat Completions request; the reply's JSON object, or a StepError."""
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": system},
            # Only the JSON object, nothing around it: the data cannot close a quote or add a line.
            {"role": "user", "content": (user := json.dumps(data, ensure_ascii=False))},
        ]
        response_format: ResponseFormatJSONSchema = {
            "type": "json_schema",
            "json_schema": {"name": name, "strict": True, "schema": schema},
        }
        usage_calls.openai_hold(system, user, self.max_tokens)  # BudgetReached: nothing sent
        self._hooks.before(PROVIDER, OPERATION)  # may raise TransientStepError: let it propagate
        started = time.monotonic()
        outcome = "client_error"
        error: StepError | None = None
        reply: dict[str, Any] = {}
        body: str | None = None
        try:
            raw = self._client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=messages,
                response_format=response_format,
                temperature=self.temperature,
                max_completion_tokens=self.max_tokens,
                seed=seed,
                n=1,
            )
            body = raw.http_response.text
        except openai.APIStatusError as e:
            outcome, error = self._status_error(e)
        except openai.APITimeoutError:
            outcome = "timeout"
            error = TransientStepError(f"OpenAI did not answer within {self.timeout:g} s (timeout).")
        except openai.APIConnectionError as e:
            outcome = "connection_error"
            cause = e.__cause__
            detail = f"{type(cause).__name__}: {cause}" if cause else e.message
            error = TransientStepError(f"Could not reach OpenAI: {self._safe(detail, REASON_CHARS)}")
        else:
            try:
                reply = self._parse(body)
                outcome = "ok"
            except PermanentStepError as e:
                outcome, error = "client_error", e
            except TransientStepError as e:
                outcome, error = "malformed", e
        finally:
            self._hooks.after(PROVIDER, OPERATION, outcome, time.monotonic() - started)
            usage_calls.openai_record(body)  # the reply's usage (tokens are billed even for a bad reply)
        if error is not None:
            # Raised outside the except blocks on purpose: no __context__ chain to the SDK's
            # exception, whose request object carries the Authorization header.
            raise without_name(error, str(data.get("child_name") or ""))
        return reply

    def _parse(self, body: str) -> dict[str, Any]:
        """The structured content of a 200 reply, after checking the envelope."""
        try:
            envelope = json.loads(body)
        except (ValueError, RecursionError):
            self._malformed(f"the body is not JSON ({len(body)} bytes)")
        choices = envelope.get("choices") if isinstance(envelope, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            self._malformed("no choices")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            self._malformed("no message")
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal.strip():
            raise PermanentStepError(
                f"OpenAI declined to write this story: {self._safe(refusal, REASON_CHARS)}"
            )
        finish = choice.get("finish_reason")
        if finish == "content_filter":
            raise PermanentStepError(
                "OpenAI's content filter stopped this story's text (finish_reason content_filter); "
                "a retry would be filtered again. Try another theme or name."
            )
        if finish == "length":
            raise PermanentStepError(
                f"OpenAI's reply was cut off at the length limit ({self.max_tokens} tokens); "
                "raise OPENAI_MAX_TOKENS."
            )
        if finish != "stop":
            self._malformed(f"finish_reason {str(finish)[:40]!r}")
        content = message.get("content")
        if not isinstance(content, str):
            self._malformed("no content")
        try:
            reply = json.loads(content)
        except (ValueError, RecursionError):
            self._malformed("the content is not JSON")
        if not isinstance(reply, dict):
            self._malformed("the content is not a JSON object")
        return reply

    def _status_error(self, e: openai.APIStatusError) -> tuple[str, StepError]:
        """(hooks outcome, error) for an HTTP error status."""
        status = e.status_code
        raw_reason = e.body.get("message") if isinstance(e.body, dict) else None
        reason = self._safe(raw_reason if isinstance(raw_reason, str) and raw_reason else e.message, REASON_CHARS)
        said = f"(HTTP {status}): {reason}"
        if isinstance(e, openai.RateLimitError) or status == 429:
            if e.code == "insufficient_quota" or e.type == "insufficient_quota":
                # Billing, not throttling: waiting will not bring credit back.
                return "client_error", PermanentStepError(
                    f"The OpenAI account is out of credit {said} Add credit or raise the project's budget."
                )
            return "throttled", TransientStepError(
                f"OpenAI rate limit {said}", retry_after=_retry_after(e.response.headers)
            )
        if isinstance(e, openai.AuthenticationError | openai.PermissionDeniedError):
            return "client_error", PermanentStepError(
                f"OpenAI refused the credentials {said} Check OPENAI_API_KEY (and the project's access to "
                f"model {self.model!r})."
            )
        if isinstance(e, openai.NotFoundError):
            return "client_error", PermanentStepError(
                f"OpenAI does not know the model {self.model!r} {said} Check OPENAI_MODEL (and OPENAI_BASE_URL)."
            )
        if isinstance(e, openai.BadRequestError | openai.UnprocessableEntityError) and e.code == \
                "content_policy_violation":
            return "client_error", PermanentStepError(f"OpenAI's content policy rejected this story {said}")
        if status >= 500 or status in (408, 409):
            # 408/409 are retried by OpenAI's own SDKs too: the request itself was fine.
            return "server_error", TransientStepError(
                f"OpenAI server error {said}", retry_after=_retry_after(e.response.headers)
            )
        return "client_error", PermanentStepError(f"OpenAI rejected the request {said}")
