"""Configuration from the environment. Defaults work on a machine of this kind (local services).

Read once per process through ``settings()``; tests and the demo set variables before workers
start, so nothing here is cached across processes.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _allowed(lo: float, hi: float, whole: bool) -> str:
    kind = "a whole number" if whole else "a number"
    if hi == math.inf:
        return f"{kind} >= {lo:g}"
    return f"{kind} from {lo:g} to {hi:g}"


def parse_number(name: str, raw: str | None, default: float, lo: float, hi: float, *, whole: bool = False,
                 note: str = "") -> Any:
    """The one parser of numeric settings: ``raw`` (a variable's text, None when unset) as a
    number within [lo, hi]; ``default`` (returned as given) when unset or blank.

    ``whole``: an int, written as one ("5", not "5.0" or "5e0"); else a float (NaN refused;
    infinities only inside the range, i.e. ``hi=math.inf``). Surrounding spaces are ignored.
    ``note`` adds what a value means ("0 = no limit") to the error. Raises SystemExit with one
    line naming the variable, its value (first 40 characters) and what is allowed:
    ``configuration error: CPU_PROCESSES='two' is not a whole number; allowed: a whole number
    from 0 to 64``."""
    text = (raw or "").strip()
    if not text:
        return default
    allowed = _allowed(lo, hi, whole) + (f" ({note})" if note else "")
    try:
        value: float = int(text) if whole else float(text)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise SystemExit(f"configuration error: {name}={text[:40]!r} is not {kind}; allowed: {allowed}") from None
    if math.isnan(value) or not lo <= value <= hi:
        raise SystemExit(f"configuration error: {name}={text[:40]!r} is out of range; allowed: {allowed}")
    return value


def env_number(env: Mapping[str, str], name: str, default: float, lo: float, hi: float, *,
               whole: bool = False, note: str = "") -> Any:
    """A number from ``env`` (the adapters' own variables and the boot check read a mapping, so
    tests can pass one) within [lo, hi]: ``parse_number`` of ``env[name]``; SystemExit naming the
    variable, its value and the allowed range otherwise."""
    return parse_number(name, env.get(name), default, lo, hi, whole=whole, note=note)


def env_int(name: str, default: int, lo: int, hi: int, *, env: Mapping[str, str] | None = None) -> int:
    """A whole-number setting ``name`` (os.environ, or ``env``) within [lo, hi], ``default`` when
    unset or blank. Raises SystemExit("configuration error: …") naming the variable (parse_number)."""
    return int(parse_number(name, (os.environ if env is None else env).get(name), default, lo, hi, whole=True))


def env_float(name: str, default: float, lo: float, hi: float, *, env: Mapping[str, str] | None = None,
              note: str = "") -> float:
    """A numeric setting ``name`` (os.environ, or ``env``) within [lo, hi] (NaN refused), ``default``
    when unset or blank. Raises SystemExit("configuration error: …") naming the variable (parse_number)."""
    return float(parse_number(name, (os.environ if env is None else env).get(name), default, lo, hi, note=note))


# The names steps used before the parser was one (pipeline/orders/steps.py still imports them).
_int = env_int
_float = env_float


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, "").strip().lower() or default
    if value not in choices:
        raise SystemExit(f"configuration error: {name}={value!r}; choose one of {', '.join(choices)}")
    return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_bool(name: str, raw: str | None, default: bool) -> bool:
    """A yes/no setting: ``raw`` (a variable's text, None when unset) as a bool; ``default`` when
    unset or blank. Accepts true/false, 1/0, yes/no, on/off in any case. Raises SystemExit with
    one line naming the variable: ``configuration error: FAIR_PRIORITY='maybe' is not a yes/no
    value; allowed: true/false, 1/0, yes/no``."""
    text = (raw or "").strip().lower()
    if not text:
        return default
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise SystemExit(f"configuration error: {name}={text[:40]!r} is not a yes/no value; "
                     "allowed: true/false, 1/0, yes/no")


def env_bool(name: str, default: bool, *, env: Mapping[str, str] | None = None) -> bool:
    """A yes/no setting ``name`` (os.environ, or ``env``): :func:`parse_bool` of its value."""
    return parse_bool(name, (os.environ if env is None else env).get(name), default)


def log_level() -> str:
    """LOG_LEVEL as a logging level name (DEBUG, INFO, WARNING, ERROR, CRITICAL; any case).

    Raises SystemExit("configuration error: …") for another word."""
    raw = os.environ.get("LOG_LEVEL", "").strip().upper() or "INFO"
    if raw not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise SystemExit(f"configuration error: LOG_LEVEL={raw[:40]!r}; choose one of DEBUG, INFO, WARNING, "
                         "ERROR, CRITICAL")
    return raw



@dataclass(frozen=True)
class Settings:
    database_url: str
    broker_url: str
    redis_url: str  # for what only Redis does here (quotas, locks), whatever the broker is
    local_storage_root: Path
    page_count: int
    # Provider choice per role. "local" draws/writes/detects offline; "instant" does the least
    # possible work (orchestration benchmarks); the real SDK adapters come with their own names.
    vision_provider: str
    text_provider: str
    image_provider: str
    storage_backend: str
    simulated_latency: float  # seconds added to each offline provider call (benchmarks, tests)
    simulated_storage_latency: float  # seconds added to each storage call (fault tests: a slow S3)
    # A claimed step whose row has not moved for this long is presumed dead and may be taken
    # over by a redelivered copy. Must exceed the longest healthy step (provider timeouts bound it).
    step_lease_seconds: float
    # A step whose claim had to be taken over from a silent holder (its worker crashed, was
    # killed, or stalled past the lease) this many times in a row is failed, not claimed again:
    # a poison step (a photo that crashes a C library, a book that exhausts memory) would
    # otherwise take down one worker after another for ever. An operator's retry resets the count.
    max_takeovers: int
    visibility_timeout: int  # Redis broker: an unacked message comes back after this long
    # Redis broker: which queue a worker's fetch reads first. "round_robin" (the default, kombu's):
    # each queue in turn; "priority": the first non-empty one in celeryconfig.QUEUES' order (a
    # story's later stages first: feeds the providers' slots during a burst, but lengthens story
    # latency under a threads-bound load; README "Queue order"). kombu's Redis transport option
    # queue_order_strategy.
    queue_order: str
    max_retries: int  # transient provider errors, per step
    sweep_interval: float  # seconds between stuck-work sweeps (celery beat)
    retry_backoff_cap: float
    db_retry_backoff_max: float  # seconds: cap of the backoff of a step the database kept from running
    job_poll_interval: float  # remote image jobs: seconds between looks (a re-scheduled task each)
    job_max_seconds: float  # a remote job still running after this long is canceled and failed
    # new remote jobs a page step makes, in a row, when a job's output expired before it was
    # copied (Replicate deletes outputs after about an hour); then the step fails
    job_output_recreations: int
    min_child_age: int
    max_child_age: int
    # A story sent before its photo's upload was confirmed (photos.status 'pending_upload') waits
    # this long, counted from when the story became pending (stories.updated_at: its insert or
    # an operator's retry), then fails; looks at the photo at most every upload_poll_interval s.
    photo_upload_wait_seconds: float
    photo_upload_poll_interval: float
    # Fair turns between families (README "Fair turns between families"): at most this many of one
    # account's stories in flight (stories.status 'processing') at once, across every worker; the
    # rest wait 'pending' and start as slots free. 0: no cap.
    user_stories_in_flight: int
    # Pages of an account's later stories go to the broker with a lower priority (Redis), so a
    # small story's pages are not queued behind a large batch's.
    fair_priority: bool


def job_webhooks_configured(env: Mapping[str, str] | None = None) -> bool:
    """Do remote jobs report their end by webhook (IMAGE_PROVIDER=replicate with REPLICATE_WEBHOOK_URL
    set; pipeline/providers/replicate_webhooks.py checks the rest)? Then polling is the fallback."""
    e = os.environ if env is None else env
    return (e.get("IMAGE_PROVIDER", "").strip().lower() == "replicate"
            and bool(e.get("REPLICATE_WEBHOOK_URL", "").strip()))


@lru_cache(maxsize=1)
def settings() -> Settings:
    broker = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    st = Settings(
        database_url=os.environ.get(
            "DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/storycreator"
        ),
        broker_url=broker,
        redis_url=os.environ.get(
            "REDIS_URL", broker if broker.startswith(("redis://", "rediss://", "unix://")) else "redis://127.0.0.1:6379/0"
        ),
        local_storage_root=Path(
            os.environ.get("LOCAL_STORAGE_ROOT", str(PROJECT_ROOT / "var" / "storage"))
        ).resolve(),
        page_count=_int("STORY_PAGE_COUNT", 12, 1, 24),
        vision_provider=_choice("VISION_PROVIDER", "local", ("local", "instant", "rekognition")),
        text_provider=_choice("TEXT_PROVIDER", "local", ("local", "instant", "openai")),
        image_provider=_choice("IMAGE_PROVIDER", "local", ("local", "instant", "replicate", "simulated")),
        storage_backend=_choice("STORAGE_BACKEND", "local", ("local", "s3")),
        simulated_latency=_float("SIMULATED_PROVIDER_LATENCY", 0.0, 0.0, 600.0),
        simulated_storage_latency=_float("SIMULATED_STORAGE_LATENCY", 0.0, 0.0, 600.0),
        step_lease_seconds=_float("STEP_LEASE_SECONDS", 300.0, 0.5, 86400.0),
        max_takeovers=_int("STEP_MAX_TAKEOVERS", 3, 1, 100),
        visibility_timeout=_int("BROKER_VISIBILITY_TIMEOUT", 900, 1, 86400),
        queue_order=_choice("BROKER_QUEUE_ORDER", "round_robin", ("round_robin", "priority")),
        max_retries=_int("STEP_MAX_RETRIES", 5, 0, 50),
        sweep_interval=_float("SWEEP_INTERVAL", 60.0, 1.0, 86400.0),
        retry_backoff_cap=_float("STEP_RETRY_BACKOFF_CAP", 120.0, 0.1, 3600.0),
        db_retry_backoff_max=_float("DB_RETRY_BACKOFF_MAX", 60.0, 0.1, 3600.0),
        # Default: every 3 s (every 30 s when Replicate's completion webhooks say when a job ended:
        # then polling is only the fallback), or more often under a short lease (tests use 3 s leases).
        job_poll_interval=_float("JOB_POLL_INTERVAL",
                                 min(30.0 if job_webhooks_configured() else 3.0,
                                     _float("STEP_LEASE_SECONDS", 300.0, 0.5, 86400.0) / 4), 0.05, 600.0),
        job_max_seconds=_float("JOB_MAX_SECONDS", 900.0, 1.0, 86400.0),
        job_output_recreations=_int("JOB_OUTPUT_RECREATIONS", 2, 0, 10),
        min_child_age=0,
        max_child_age=14,
        photo_upload_wait_seconds=_float("PHOTO_UPLOAD_WAIT_SECONDS", 900.0, 0.0, 7 * 86400.0),
        photo_upload_poll_interval=_float("PHOTO_UPLOAD_POLL_INTERVAL", 15.0, 0.1, 600.0),
        user_stories_in_flight=_int("USER_STORIES_IN_FLIGHT", 8, 0, 100_000),
        fair_priority=env_bool("FAIR_PRIORITY", True),
    )
    if st.job_poll_interval * 2 >= st.step_lease_seconds:
        # Each look at a running job renews the page's lease; looks further apart than the lease
        # would let the sweeper take a healthy job for a dead worker's.
        raise SystemExit(f"configuration error: JOB_POLL_INTERVAL ({st.job_poll_interval}) must be under half "
                         f"of STEP_LEASE_SECONDS ({st.step_lease_seconds})")
    return st


# --- What each book costs (README "What each book costs") ----------------------------------------

@dataclass(frozen=True)
class CostSettings:
    """Prices of provider calls, in cents (of ``currency``) per unit, and the per-story budget.

    Defaults: gpt-4o-mini's list price, $0.15 / $0.60 per 1M input / output tokens
    (https://openai.com/api/pricing/, as of 2024-07); Replicate's A100 (80GB) hardware, $0.0014 per
    second (https://replicate.com/pricing); Amazon Rekognition Image, $0.001 per image for the first
    million a month (https://aws.amazon.com/rekognition/pricing/). Change them to your contracts."""

    openai_input_per_m: float  # ¢ per 1M input (prompt) tokens
    openai_output_per_m: float  # ¢ per 1M output (completion) tokens
    replicate_second: float  # ¢ per second of a prediction's predict_time
    replicate_prediction: float  # ¢ per prediction (a model priced per output)
    rekognition_call: float  # ¢ per API call (DetectFaces, DetectLabels)
    currency: str  # ISO 4217, lower case ("usd"), like orders.currency
    estimate_replicate_seconds: float  # a prediction's hold before it runs
    story_budget_cents: int  # default budget of a story, in cents (0: every paid call stops)


def _currency(env: Mapping[str, str]) -> str:
    raw = (env.get("COST_CURRENCY") or "").strip().lower() or "usd"
    if len(raw) != 3 or not raw.isascii() or not raw.isalpha():
        raise SystemExit(f"configuration error: COST_CURRENCY={raw[:40]!r} is not a currency code; allowed: three "
                         "letters (ISO 4217, e.g. usd, eur)")
    return raw


def cost_settings(env: Mapping[str, str] | None = None) -> CostSettings:
    """The prices and the default budget from the environment (or ``env``); each variable is
    checked (SystemExit "configuration error: …" naming it and what is allowed). Prices are
    cents per unit, >= 0 (the OpenAI prices per 1M tokens)."""
    e = os.environ if env is None else env
    return CostSettings(
        openai_input_per_m=env_float("PRICE_OPENAI_INPUT_TOKENS", 15.0, 0.0, 1e6, env=e, note="¢ per 1M tokens"),
        openai_output_per_m=env_float("PRICE_OPENAI_OUTPUT_TOKENS", 60.0, 0.0, 1e6, env=e, note="¢ per 1M tokens"),
        replicate_second=env_float("PRICE_REPLICATE_SECOND", 0.14, 0.0, 1e4, env=e, note="¢ per second"),
        replicate_prediction=env_float("PRICE_REPLICATE_PREDICTION", 0.0, 0.0, 1e4, env=e, note="¢ per prediction"),
        rekognition_call=env_float("PRICE_REKOGNITION_CALL", 0.1, 0.0, 1e4, env=e, note="¢ per call"),
        currency=_currency(e),
        estimate_replicate_seconds=env_float("COST_ESTIMATE_REPLICATE_SECONDS", 10.0, 0.0, 86400.0, env=e),
        story_budget_cents=env_int("STORY_BUDGET_CENTS", 500, 0, 10**9, env=e),
    )
