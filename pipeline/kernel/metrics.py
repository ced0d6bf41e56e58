"""Prometheus metrics of the worker: per-step counts, outcomes and latency, per-provider latency.

Served by the worker itself on ``METRICS_PORT`` (workers/app.py starts the server at boot; the
threads pool is one process, so one registry sees every step). Labels are bounded: stage,
outcome and provider role, never ids.
"""
from __future__ import annotations

import os

from prometheus_client import Counter, Histogram, start_http_server

STEPS = Counter("storycreator_steps_total", "Pipeline steps run, by stage and outcome",
                ["stage", "outcome"])
STEP_SECONDS = Histogram("storycreator_step_duration_seconds", "Wall time of a step, by stage",
                         ["stage"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
PROVIDER_SECONDS = Histogram("storycreator_provider_duration_seconds",
                             "Time in the provider call of a step, by stage",
                             ["stage"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))


def observe(stage: str, outcome: str, seconds: float, phases: dict[str, float] | None) -> None:
    STEPS.labels(stage, outcome).inc()
    STEP_SECONDS.labels(stage).observe(seconds)
    if phases and "provider" in phases:
        PROVIDER_SECONDS.labels(stage).observe(phases["provider"] / 1000)


def metrics_port() -> int | None:
    """METRICS_PORT (1–65535) or None when unset. Raises SystemExit("configuration error: …")."""
    from pipeline.config import env_int

    return env_int("METRICS_PORT", 0, 1, 65535) if os.environ.get("METRICS_PORT", "").strip() else None


def serve(port: int) -> None:
    start_http_server(port, addr="0.0.0.0")


PROVIDER_REQUESTS = Counter("storycreator_provider_requests_total",
                            "HTTP requests to providers, by provider, operation and outcome",
                            ["provider", "operation", "outcome"])
PROVIDER_REQUEST_SECONDS = Histogram("storycreator_provider_request_duration_seconds",
                                     "Latency of one HTTP request to a provider",
                                     ["provider", "operation"],
                                     buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
QUOTA_WAITS = Counter("storycreator_quota_waits_total",
                      "Steps re-scheduled because a provider's shared quota was spent", ["provider"])
STEP_RETRIES = Counter("storycreator_step_retries_total",
                       "Steps re-scheduled after a transient error, by stage", ["stage"])


def provider_request(provider: str, operation: str, outcome: str, seconds: float) -> None:
    PROVIDER_REQUESTS.labels(provider, operation, outcome).inc()
    PROVIDER_REQUEST_SECONDS.labels(provider, operation).observe(seconds)


# What each book costs (pipeline/kernel/usage.py; README "What each book costs"): counted once per
# recorded provider call (a re-run that sees the same call counts nothing).
PROVIDER_COST = Counter("storycreator_provider_cost_microcents_total",
                        "Cost of provider calls at the configured prices, micro-cents (1e-6 of a cent)",
                        ["provider", "stage"])
PROVIDER_USAGE = Counter("storycreator_provider_usage_total",
                         "Units of provider calls: calls, input_tokens, output_tokens, seconds", ["provider", "unit"])
BUDGET_STOPS = Counter("storycreator_budget_stops_total",
                       "Story steps stopped because the next paid call would pass the story's budget", ["stage"])


def usage(provider: str, stage: str, microcents: int, *, calls: int, input_tokens: int, output_tokens: int,
          seconds: float) -> None:
    """Count one recorded provider call: its cost (micro-cents) and units (zero units are not added)."""
    PROVIDER_COST.labels(provider, stage).inc(microcents)
    for unit, n in (("calls", calls), ("input_tokens", input_tokens), ("output_tokens", output_tokens),
                    ("seconds", seconds)):
        if n or unit == "calls":
            PROVIDER_USAGE.labels(provider, unit).inc(n)


# Completion webhooks of remote jobs (pipeline/stories/webhook_follows.py): each delivery once, by what
# became of it (woken: the page step's follow sent at once; duplicate/done: a no-op; unknown: no
# such job of ours; signature/expired/headers/malformed/unconfigured: rejected, nothing done).
JOB_WEBHOOKS = Counter("storycreator_job_webhooks_total",
                       "Completion webhooks of remote jobs received, by provider and outcome", ["provider", "outcome"])
