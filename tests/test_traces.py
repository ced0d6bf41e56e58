"""One trace per story (README "Traces"): a real worker exporting with OTLP/HTTP to a receiver in
this process, which decodes the requests (opentelemetry-proto) and keeps the spans in memory; and
the settings that switch tracing on, off, or refuse to start."""
from __future__ import annotations

import gzip
import os
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.kernel import tracing
from tests.support import Db, WorkerProcess, astronaut_png, external_send, flush_redis

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
TRACES_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "11")) + 2
PAGES = int(os.environ["STORY_PAGE_COUNT"])
STEPS = ("stories.generate", "pages.write_text", "pages.draw_base", "pages.personalize", "stories.finish")


class OtlpReceiver(ThreadingHTTPServer):
    """An OTLP/HTTP (protobuf) trace receiver on 127.0.0.1: every span it is sent, as a dict
    (trace_id, span_id, parent_id as hex; name; attributes as strings), in :attr:`spans`."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OtlpHandler)
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _OtlpHandler(BaseHTTPRequestHandler):
    server: OtlpReceiver

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = []
        for rs in request.resource_spans:
            service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attributes = {a.key: str(getattr(a.value, a.value.WhichOneof("value") or "string_value"))
                                  for a in s.attributes}
                    spans.append({"trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                                  "parent_id": s.parent_span_id.hex(), "name": s.name, "service": service,
                                  "error": s.status.code == s.status.STATUS_CODE_ERROR, "attributes": attributes})
        with self.server.lock:
            self.server.spans.extend(spans)
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture()
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    threading.Thread(target=r.serve_forever, daemon=True).start()
    yield r
    r.shutdown()
    r.server_close()


def test_one_story_is_one_trace(clean_db: Db, tmp_path: Path, receiver: OtlpReceiver,
                                request: pytest.FixtureRequest) -> None:
    # given a worker exporting traces with OTLP to our receiver (in batches every 5 s: the SDK's default)
    broker = f"{REDIS}/{TRACES_REDIS_DB}"
    flush_redis(broker)
    w = WorkerProcess(tmp_path / "worker.log", env={
        "CELERY_BROKER_URL": broker, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "storycreator-test"})
    request.addfinalizer(w.stop)
    w.start()
    # when the external API starts one story (its message carries no trace context)
    name = "Zéphyrine"
    photo = clean_db.photo(astronaut_png())
    story = clean_db.story(photo, name=name, age=6, theme="underwater")
    # (and another story, which fails at once: an unknown theme)
    bad = clean_db.story(clean_db.photo(astronaut_png()), theme="zombies")
    external_send(broker, "stories.generate", {"story_id": story})
    external_send(broker, "stories.generate", {"story_id": bad})
    assert clean_db.wait_story(story)["status"] == "completed"
    assert clean_db.wait_story(bad)["status"] == "failed"
    w.stop()  # a warm shutdown exports what is still batched
    with receiver.lock:
        spans = list(receiver.spans)
    failed = [s for s in spans if s["attributes"].get("storycreator.story_id") == bad]
    runs = [s for s in spans if s["name"].startswith("run/") and s not in failed]
    # then the failed story is a trace of its own, its one step an error
    assert [(s["name"], s["attributes"]["storycreator.outcome"], s["error"]) for s in failed] \
        == [("run/stories.generate", "failed", True)]
    # and every step of the good story ran under one trace, started by stories.generate's run (the
    # completion may run twice: each personalization that finds every page done sends it, and
    # the later copy stops)
    counts = {step: sum(s["name"] == f"run/{step}" for s in runs) for step in STEPS}
    assert counts["stories.finish"] >= 1, counts
    assert {**counts, "stories.finish": 1} == {"stories.generate": 1, "pages.write_text": PAGES,
                                               "pages.draw_base": PAGES, "pages.personalize": PAGES,
                                               "stories.finish": 1}, counts
    assert len({s["trace_id"] for s in runs}) == 1, sorted((s["name"], s["trace_id"]) for s in runs)
    assert failed[0]["trace_id"] != runs[0]["trace_id"] and not any(s["error"] for s in runs)
    root = next(s for s in runs if s["name"] == "run/stories.generate")
    assert root["parent_id"] == "" and root["service"] == "storycreator-test"
    by_id = {s["span_id"]: s for s in spans}
    # and each step hangs from the publish span of the task that sent it (the context travelled in
    # the message): a page's text from the story's fan-out, its picture from its text, ...
    sent_by = {"pages.write_text": "stories.generate", "pages.draw_base": "pages.write_text",
               "pages.personalize": "pages.draw_base", "stories.finish": "pages.personalize"}
    for s in runs:
        if s is root:
            continue
        publish = by_id[s["parent_id"]]
        assert publish["name"] == f"apply_async/{s['name'].removeprefix('run/')}", publish
        assert by_id[publish["parent_id"]]["name"] == f"run/{sent_by[s['name'].removeprefix('run/')]}"
    # and the step spans carry the ids (the story's on every one), never the child's name
    for s in runs:
        assert s["attributes"]["storycreator.story_id"] == story, s
        assert s["attributes"]["storycreator.outcome"] in (("done", "stopped") if "finish" in s["name"] else ("done",))
        if s["name"].startswith("run/pages."):
            assert s["attributes"]["storycreator.page_id"], s
    assert [s for s in runs if s["name"] == "run/stories.finish" and s["attributes"]["storycreator.outcome"] == "done"]
    for s in spans:
        assert not any(name.lower() in f"{k}={v}".lower() for k, v in s["attributes"].items()), s
        assert name.lower() not in s["name"].lower()


# --- settings ------------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("env, exporters", [
    ({}, None),  # off by default (the SDK's own default would be otlp to localhost)
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("otlp",)),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c.example/v1/traces"}, ("otlp",)),
    ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
    ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ("otlp", "console")),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, None),
    ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, None),
    ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, ("otlp",)),
])
def test_settings_switch_tracing(env: dict[str, str], exporters: tuple[str, ...] | None) -> None:
    cfg = tracing.trace_settings(env)
    assert (cfg.exporters if cfg else None) == exporters


@pytest.mark.unit
@pytest.mark.parametrize("env, named", [
    ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
     "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
])
def test_settings_it_cannot_honour_stop_the_worker_at_boot(env: dict[str, str], named: str) -> None:
    with pytest.raises(SystemExit, match=f"configuration error: {named}"):
        tracing.trace_settings(env)


@pytest.mark.unit
def test_tracing_off_installs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # given no OpenTelemetry setting at all
    for var in [v for v in os.environ if v.startswith("OTEL_")]:
        monkeypatch.delenv(var)
    from celery import signals

    from workers.app import start_traces

    loaded = set(sys.modules)
    # when a worker process starts its traces
    start_traces()
    # then nothing is installed: no OpenTelemetry module loaded, no receiver on Celery's signals
    # (the publish and run hooks are where an instrumented worker pays), the step layer's flag off
    assert not [m for m in set(sys.modules) - loaded if m.startswith("opentelemetry")]
    for signal in (signals.before_task_publish, signals.after_task_publish, signals.task_prerun,
                   signals.task_postrun, signals.task_failure, signals.task_retry):
        assert not [r for r in signal.receivers if "opentelemetry" in repr(r)], signal.name
    assert tracing.ON is False
