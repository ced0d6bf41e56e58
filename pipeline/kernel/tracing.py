"""Traces: one per story across all its tasks (OpenTelemetry), off unless configured.

Settings are OpenTelemetry's own environment variables, as its specification names them
("Environment Variable Specification",
https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/), read by the
SDK and the OTLP exporter themselves; this module only decides whether tracing is on and refuses
what it cannot honour:

- on when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``, or both, comma
  separated), or when an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT``, to which the
  exporter appends ``/v1/traces``, or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, used as is): then
  ``otlp``. Unlike the SDK's default (``otlp`` to ``localhost:4318``), nothing set means off;
- off when ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``, whatever else is set;
- OTLP over HTTP with protobuf only (``opentelemetry-exporter-otlp-proto-http``):
  ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` other than ``http/protobuf`` is a configuration error;
- ``OTEL_SERVICE_NAME`` (default ``storycreator-worker``), ``OTEL_RESOURCE_ATTRIBUTES``,
  ``OTEL_TRACES_SAMPLER[_ARG]`` (parent-based: a story's first task decides for all of it),
  ``OTEL_BSP_*`` (batching) and ``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``/``_TIMEOUT`` as the SDK
  reads them.

Off, nothing of OpenTelemetry is imported and :data:`ON` stays False: the step layer's one check
of it is the whole cost on the hot path. The Celery side (spans per task run and per publish, the
trace context in each message's headers) is ``workers/app.py``'s, per worker process.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

EXPORTERS = ("otlp", "console")
PROTOCOL = "http/protobuf"
SERVICE_NAME = "storycreator-worker"
# The task kwargs put on a step's span: ids only (README "Personal data": never a child's name).
ID_KWARGS = ("story_id", "page_id", "photo_id", "order_id")

ON = False  # True once this process exports traces (read on every step: keep it a plain flag)
_provider: Any = None
_pid: int | None = None
_lock = threading.Lock()
log = logging.getLogger("storycreator.tracing")


@dataclass(frozen=True)
class TraceSettings:
    """Tracing switched on: the exporters to use, each one of :data:`EXPORTERS`."""

    exporters: tuple[str, ...]


def _fail(message: str) -> SystemExit:
    return SystemExit(f"configuration error: {message}")


def trace_settings(env: Mapping[str, str] | None = None) -> TraceSettings | None:
    """The tracing settings from ``env`` (default ``os.environ``), or None when tracing is off (see
    the module's docstring). Raises SystemExit("configuration error: NAME ...") for an exporter or
    protocol this build cannot honour, or an endpoint that is not an http(s) URL."""
    e = os.environ if env is None else env
    disabled = e.get("OTEL_SDK_DISABLED", "").strip().lower()
    if disabled == "true":
        return None
    if disabled not in ("", "false"):  # the specification: anything but "true" is false, with a warning
        log.warning("OTEL_SDK_DISABLED=%r is not 'true' or 'false': read as false", disabled[:40])
    endpoints = [n for n in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
                 if e.get(n, "").strip()]
    raw = e.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    if "none" in names or (not names and not endpoints):
        return None
    names = names or ("otlp",)
    if unknown := [n for n in names if n not in EXPORTERS]:
        raise _fail(f"OTEL_TRACES_EXPORTER={raw[:60]!r}: {unknown[0]!r} is not one of {', '.join(EXPORTERS)} or none")
    if "otlp" in names:
        for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = e.get(name, "").strip()
            if protocol:
                if protocol != PROTOCOL:
                    raise _fail(f"{name}={protocol[:40]!r}: only {PROTOCOL} is installed")
                break
        for name in endpoints:
            parts = urlsplit(e[name].strip())
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise _fail(f"{name} must be an http(s) URL (got {e[name].strip()[:60]!r})")
    return TraceSettings(names)


def start() -> Any:
    """Start exporting this process's spans when tracing is on: a TracerProvider (set as
    OpenTelemetry's global one) with a batching processor per exporter. Returns the provider the
    first time in this process (the caller instruments Celery with it), None when tracing is off or
    was already started here. Call it in each process that runs tasks, after any fork (a batching
    processor's thread does not survive one). SystemExit as :func:`trace_settings`."""
    global ON, _provider, _pid
    cfg = trace_settings()
    if cfg is None:
        return None
    with _lock:
        if _pid == os.getpid():
            return None
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

        resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
        provider = TracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER[_ARG]
        for name in cfg.exporters:
            exporter: SpanExporter
            if name == "otlp":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                exporter = OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT/HEADERS/TIMEOUT
            else:
                exporter = ConsoleSpanExporter()
            provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*
        trace.set_tracer_provider(provider)
        _provider, _pid, ON = provider, os.getpid(), True
        log.info("traces exported with %s", ", ".join(cfg.exporters))
        return provider


def stop() -> None:
    """Export what is batched and stop (at a worker's or a pool process's shutdown). Bounded by
    the exporter's timeout (``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s by default); never raises."""
    global ON
    with _lock:
        provider = _provider if _pid == os.getpid() else None
        ON = False
    if provider is not None:
        try:
            provider.shutdown()
        except Exception:  # noqa: BLE001 - traces are for people watching; the shutdown goes on
            log.warning("could not flush the last spans", exc_info=True)


def annotate(stage: str, kwargs: Mapping[str, Any], outcome: str | None = None) -> None:
    """Label the current span (a task's run span) with the step's ``stage``, the ids among its
    task ``kwargs`` (:data:`ID_KWARGS`, UUID strings; anything else is left out) and, once known,
    its ``outcome``, as ``storycreator.*`` attributes; a ``failed`` outcome also sets the span's
    status to ERROR (no description: a reason may quote what a parent wrote). Only when :data:`ON`;
    never raises."""
    if not ON:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if not span.is_recording():
        return
    from pipeline.kernel.step import valid_uuid

    attributes = {"storycreator.stage": stage}
    for key in ID_KWARGS:
        if (ident := valid_uuid(kwargs.get(key))) is not None:
            attributes[f"storycreator.{key}"] = str(ident)
    if outcome is not None:
        attributes["storycreator.outcome"] = outcome
    span.set_attributes(attributes)
    if outcome == "failed":
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR))
