"""The external contract as clients in other languages speak it: celery-node (Node.js) on Redis
and RabbitMQ, protocol 1 and 2, positional and keyword arguments, and kombu envelopes built by
hand as a Go, Ruby or PHP client pushes them onto Redis. Every valid form starts the story;
a malformed message is refused with a logged reason and never stops the worker (the story it
may have named stays `pending`, which the sweeper re-sends after STEP_LEASE_SECONDS).

Node.js is part of this machine (CI runs here); celery-node is installed once into var/node
(gitignored) and reused."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support import ROOT, Db, WorkerProcess, astronaut_png, flush_redis, rabbit_answers

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 1}"
RABBIT = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUES = ("celery", "photos", "stories", "text", "images", "personalize", "orders")
NODE_DIR = ROOT / "var" / "node"
CELERY_NODE = "celery-node@0.5.9"  # the npm package's current release (Celery protocol 1 and 2)
SEND_TASK_JS = ROOT / "tests" / "node" / "send_task.js"


# --- clients -------------------------------------------------------------------------------------

def _node_client() -> Path:
    """celery-node under var/node (installed on first use, then reused: a test costs no npm)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are part of this machine (see .ci/run); install nodejs/npm"
    if not (NODE_DIR / "node_modules" / "celery-node" / "package.json").exists():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund", "--silent",
                        CELERY_NODE], check=True, timeout=300, cwd=NODE_DIR)
    return NODE_DIR / "node_modules"


def node_send(broker: str, name: str, *, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None,
              protocol: int = 2) -> None:
    """Publish as a Node.js API does (celery-node), from outside the project."""
    modules = _node_client()
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    subprocess.run(["node", str(SEND_TASK_JS), broker, str(protocol), name, json.dumps(args or []),
                    json.dumps(kwargs or {})], check=True, timeout=60, cwd="/",
                   env={**env, "NODE_PATH": str(modules)})


def envelope(body: Any, *, headers: dict[str, Any] | None = None, content_type: str = "application/json",
             content_encoding: str | None = "utf-8", base64_body: bool = True,
             drop_properties: tuple[str, ...] = ()) -> str:
    """A kombu Redis envelope as a client without kombu builds it (gocelery, PHP/Ruby clients)."""
    raw = json.dumps(body)
    properties: dict[str, Any] = {"delivery_info": {"exchange": "", "routing_key": "celery"},
                                  "delivery_mode": 2, "delivery_tag": str(uuid.uuid4()),
                                  "correlation_id": str(uuid.uuid4())}
    if base64_body:
        properties["body_encoding"] = "base64"
    for p in drop_properties:
        properties.pop(p)
    message: dict[str, Any] = {"body": base64.b64encode(raw.encode()).decode() if base64_body else raw,
                               "content-type": content_type, "headers": headers or {},
                               "properties": properties}
    if content_encoding is not None:
        message["content-encoding"] = content_encoding
    return json.dumps(message)


def v2(task: str, args: Any, kwargs: Any, **kw: Any) -> str:
    """Protocol 2: the task in the headers, the body [args, kwargs, embed]."""
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return envelope([args, kwargs, embed], headers={"lang": "go", "task": task, "id": str(uuid.uuid4())}, **kw)


def v1(task: str, args: Any, kwargs: Any, **kw: Any) -> str:
    """Protocol 1: everything in the body."""
    return envelope({"task": task, "id": str(uuid.uuid4()), "args": args, "kwargs": kwargs}, **kw)


def push(raw: str) -> None:
    r = redis.Redis.from_url(BROKER)
    r.lpush("celery", raw)
    r.close()


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis_worker(db: Db, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    flush_redis(BROKER)
    w = WorkerProcess(tmp_path_factory.mktemp("outside") / "worker.log",
                      env={"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER})
    w.start()
    yield w
    w.stop()


def _story(db: Db, **kw: Any) -> str:
    return db.story(db.photo(astronaut_png(), **kw))


def _broker_empty(timeout: float = 5.0) -> bool:
    """Nothing queued on ``celery`` and nothing unacknowledged, within ``timeout`` seconds (the
    worker writes its acks a few milliseconds after them: pipeline/kernel/redis_transport.py)."""
    r = redis.Redis.from_url(BROKER)
    try:
        deadline = time.monotonic() + timeout
        while not (empty := r.llen("celery") == 0 and r.hlen("unacked") == 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        return empty
    finally:
        r.close()


def _alive(w: WorkerProcess) -> None:
    assert w.proc is not None and w.proc.poll() is None, f"the worker died:\n{w.tail()}"


def _wait_log(w: WorkerProcess, needle: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in w.log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not logged within {timeout}s:\n{w.tail()}")


# --- Node.js (celery-node) -----------------------------------------------------------------------

@pytest.mark.timeout(240)
@pytest.mark.parametrize("protocol", [1, 2])
def test_celery_node_client_on_redis_positional_and_keyword(clean_db: Db, redis_worker: WorkerProcess,
                                                            protocol: int) -> None:
    """celery-node's `client.createTask("stories.generate").applyAsync([id])` and kwargs alike."""
    positional, keyword = _story(clean_db), _story(clean_db)
    photo = clean_db.photo(astronaut_png())
    node_send(BROKER, "stories.generate", args=[positional], protocol=protocol)
    node_send(BROKER, "stories.generate", kwargs={"story_id": keyword}, protocol=protocol)
    node_send(BROKER, "photos.analyze", args=[photo], protocol=protocol)
    for story in (positional, keyword):
        assert clean_db.wait_story(story, timeout=120)["status"] == "completed"
    assert clean_db.wait_photo(photo)["ai_processing_status"] == "completed"
    _alive(redis_worker)


@pytest.mark.timeout(240)
def test_celery_node_client_on_rabbitmq(clean_db: Db, tmp_path: Path) -> None:
    """celery-node on RabbitMQ publishes to the default exchange with the queue's name as routing
    key and declares the queue itself (durable, no arguments), before or after our worker."""
    if not rabbit_answers(RABBIT):
        if os.environ.get("CI"):
            raise AssertionError(f"RabbitMQ does not answer at {RABBIT}")
        pytest.skip(f"RabbitMQ does not answer at {RABBIT}")
    from kombu import Connection

    with Connection(RABBIT) as conn:  # a clean slate: nothing left from an earlier run
        channel = conn.channel()
        for q in QUEUES:
            try:
                channel.queue_delete(q)
            except Exception:  # noqa: BLE001 - the queue does not exist yet (the channel closes)
                channel = conn.channel()
    early = _story(clean_db)
    node_send(RABBIT, "stories.generate", args=[early], protocol=2)  # before any worker declared it
    w = WorkerProcess(tmp_path / "worker.log", env={"CELERY_BROKER_URL": RABBIT})
    w.start()
    try:
        late = [_story(clean_db) for _ in range(2)]
        node_send(RABBIT, "stories.generate", kwargs={"story_id": late[0]}, protocol=1)
        node_send(RABBIT, "stories.generate", args=[late[1]], protocol=2)
        for story in (early, *late):
            assert clean_db.wait_story(story, timeout=120)["status"] == "completed"
        _alive(w)
    finally:
        w.stop()


# --- envelopes built by hand (Redis) -------------------------------------------------------------

VALID: dict[str, Any] = {
    "protocol 2, keyword": lambda s: v2("stories.generate", [], {"story_id": s}),
    "protocol 2, positional": lambda s: v2("stories.generate", [s], {}),
    "protocol 1, keyword": lambda s: v1("stories.generate", [], {"story_id": s}),
    "protocol 1, positional": lambda s: v1("stories.generate", [s], {}),
    "body as plain JSON (no body_encoding)": lambda s: v2("stories.generate", [], {"story_id": s}, base64_body=False),
    "no content-encoding": lambda s: v2("stories.generate", [], {"story_id": s}, content_encoding=None),
    "content-encoding UTF-8": lambda s: v2("stories.generate", [], {"story_id": s}, content_encoding="UTF-8"),
    "upper-case UUID": lambda s: v2("stories.generate", [], {"story_id": s.upper()}),
}


@pytest.mark.timeout(240)
def test_hand_built_envelopes_that_are_valid_start_the_story(clean_db: Db, redis_worker: WorkerProcess) -> None:
    stories = {name: _story(clean_db) for name in VALID}
    for name, build in VALID.items():
        push(build(stories[name]))
    for name, story in stories.items():
        row = clean_db.wait_story(story, timeout=120)
        assert row["status"] == "completed", (name, row["error_message"])
    _alive(redis_worker)


# Each: the message, and what the worker logs about it (its reason).
MALFORMED: dict[str, tuple[Any, str]] = {
    # celery.worker.request unpacks [args, kwargs, embed]: a ValueError outside Celery's guards
    # stopped the worker ("Unrecoverable error"), and the message, restored at shutdown, stopped
    # every restarted worker the same way.
    "protocol 2 body of two items": (
        lambda s: envelope([[], {"story_id": s}], headers={"task": "stories.generate", "id": str(uuid.uuid4())}),
        "Received invalid task message: not enough values to unpack"),
    # A KeyError, which kombu counts as a Redis connection error: "connection lost", reconnect,
    # and the message back from `unacked` after the visibility timeout, again and again.
    "protocol 2 headers without id": (
        lambda s: envelope([[], {"story_id": s}, {}], headers={"task": "stories.generate"}),
        "Received invalid task message: 'id'"),
    "pickle": (lambda s: v2("stories.generate", [], {"story_id": s}, content_type="application/x-python-serialize"),
               "Refusing to deserialize untrusted content of type pickle"),
    "unknown task name": (lambda s: v2("stories.Generate", [], {"story_id": s}),
                          "Received unregistered task of type 'stories.Generate'"),
    # Not a kombu envelope: kombu's Redis transport fails to read it before Celery sees it. The
    # worker stopped ("Unrecoverable error") or reported a lost connection (the KeyErrors).
    "not JSON": (lambda s: f"stories.generate {s}", "not a kombu envelope (JSONDecodeError"),
    "a JSON array": (lambda s: json.dumps(["stories.generate", s]), "not a kombu envelope (TypeError: list indices"),
    "no properties": (lambda s: json.dumps({"body": base64.b64encode(json.dumps([[s], {}, {}]).encode()).decode(),
                                            "headers": {"task": "stories.generate", "id": str(uuid.uuid4())}}),
                      "not a kombu envelope (KeyError: 'properties')"),
    "no delivery_tag": (lambda s: v2("stories.generate", [], {"story_id": s}, drop_properties=("delivery_tag",)),
                        "not a kombu envelope (KeyError: 'delivery_tag')"),
    "body not base64": (lambda s: json.loads(v2("stories.generate", [], {"story_id": s})) | {"body": "story"},
                        "not a kombu envelope (Error: Invalid base64"),
    "keyword arguments not an object": (lambda s: v2("stories.generate", [s], None),
                                        "Task keyword arguments is not a mapping"),
}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_message_is_refused_with_its_reason_and_the_worker_goes_on(
        clean_db: Db, redis_worker: WorkerProcess, case: str) -> None:
    build, reason = MALFORMED[case]
    bad = _story(clean_db)
    message = build(bad)
    start = len(redis_worker.log.read_bytes())
    push(message if isinstance(message, str) else json.dumps(message))
    _wait_log(redis_worker, reason)
    good = _story(clean_db)  # the next story, behind the bad message
    push(v2("stories.generate", [], {"story_id": good}))
    assert clean_db.wait_story(good, timeout=120)["status"] == "completed"
    _alive(redis_worker)
    # Refused, not lost: the story it named is still pending (the sweeper re-sends it after
    # STEP_LEASE_SECONDS), and no copy of the message is left to come back.
    assert clean_db.story_row(bad)["status"] == "pending"
    # In one line, never the body (Celery's own reports quote it: it can hold personal data).
    log = redis_worker.log.read_bytes()[start:].decode(errors="replace")
    # (Keyword arguments that are not an object pass the consumer and are refused by the task's
    # tracer: Celery logs the task's failure with its arguments and a RuntimeWarning with its
    # traceback. Not the consumer's report, so not this rule.)
    if case != "keyword arguments not an object":
        assert sum(reason in line for line in log.splitlines()) == 1, log
        assert bad not in log, log
    assert "full contents of the message body" not in log and "\nbody: " not in log, log
    assert _broker_empty(), "a copy of the message is left in the broker"


@pytest.mark.timeout(240)
def test_a_message_that_is_not_a_task_is_refused_in_one_line_without_its_body(
        clean_db: Db, redis_worker: WorkerProcess) -> None:
    """A body published with kombu and no task headers ("hello": Celery's "unknown message"):
    Celery logged a multi-line WARNING quoting the body, which can hold personal data."""
    from kombu import Connection

    secret = f"hello from Mia Example {uuid.uuid4().hex}"
    start = len(redis_worker.log.read_bytes())
    with Connection(BROKER) as conn:
        conn.Producer().publish(secret, routing_key="celery", serializer="json")
    _wait_log(redis_worker, "Received and deleted unknown message")
    # the worker goes on: a valid story behind it completes
    good = _story(clean_db)
    push(v2("stories.generate", [], {"story_id": good}))
    assert clean_db.wait_story(good, timeout=120)["status"] == "completed"
    _alive(redis_worker)
    log = redis_worker.log.read_bytes()[start:].decode(errors="replace")
    assert secret not in log and "Mia Example" not in log, log
    lines = [line for line in log.splitlines() if "unknown message" in line]
    assert len(lines) == 1 and " ERROR " in lines[0], log
    size = len(json.dumps(secret).encode())
    assert f"queue=celery size={size}b content_type=application/json" in lines[0], lines
    assert "full contents of the message body" not in log and "Wrong destination" not in log, log
    assert _broker_empty(), "a copy of the message is left in the broker"
