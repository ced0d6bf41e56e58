"""Prometheus metrics of the worker: per-step counts, outcomes and latency, per-provider latency.

Served by the worker itself on ``METRICS_PORT`` (workers/app.py starts the server at boot; the
threads pool is one process, so one registry sees every step). Labels are bounded: stage,
outcome and provider role, never ids.
"""
from __future__ import annotations

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


def serve(port: int) -> None:
    start_http_server(port, addr="0.0.0.0")
