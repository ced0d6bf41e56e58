"""Personal data's lifecycle through real processes (README "Personal data"): two families' stories
made by a real worker; one family deleted by hand with SQL; the sweeper's task (``ops.sweep``, sent
by name as celery beat sends it) deletes every file of that family and nothing of the other; and
what operators can read (the worker's Prometheus metrics, Flower's ``/metrics``, ``/healthcheck``
and its task API, the worker's log) names no child and no parent."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.lifecycle_support import digest, files_of
from tests.privacy_scan import scan_storage
from tests.support import ROOT, Db, WorkerProcess, astronaut_png, external_send, flush_redis
from tests.test_metrics import _free_port, _sample

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 3}"  # test_metrics' own: one module at a time
AUTH = "ops:lifecycle-pass"


def _get(url: str, auth: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _flower(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    port = _free_port()
    log = open(tmp_path / "flower.log", "wb")
    flower = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "workers.app", "flower", f"--port={port}",
         "--address=127.0.0.1", f"--basic-auth={AUTH}"],
        cwd=ROOT, env={**os.environ, "CELERY_BROKER_URL": BROKER}, stdout=log, stderr=subprocess.STDOUT)
    request.addfinalizer(lambda: (flower.terminate(), flower.wait(10), log.close()))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if _get(f"{base}/healthcheck")[0] == 200:
                return base
        except OSError:
            pass
        assert time.monotonic() < deadline, (tmp_path / "flower.log").read_text()
        time.sleep(0.2)


def _family(db: Db, name: str) -> tuple[str, str, str, str]:
    """(user, email, photo, story) of a family whose child is ``name``, its story sent to the worker."""
    email = f"{name.lower()}.parent@example.com"
    user = str(db.one("INSERT INTO users (email) VALUES (:e) RETURNING id", e=email)["id"])
    photo = db.photo(astronaut_png(), user_id=user)
    story = db.story(photo, name=name)
    external_send(BROKER, "stories.generate", {"story_id": story})
    return user, email, photo, story


def test_a_family_deleted_by_sql_loses_every_file_to_the_sweeper_and_operators_see_no_names(
        clean_db: Db, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # given a worker serving metrics, Flower with basic auth, and two families' finished stories
    flush_redis(BROKER)
    port = _free_port()
    w = WorkerProcess(tmp_path / "worker.log", env={"CELERY_BROKER_URL": BROKER, "METRICS_PORT": str(port)})
    request.addfinalizer(w.stop)
    w.start()
    flower = _flower(tmp_path, request)
    time.sleep(1.0)  # Flower's event receiver connects
    # (the storage root is this test process's: earlier tests' uploads of the sample photo stay)
    before = {f.where for f in scan_storage(clean_db.storage, [], [astronaut_png()])}
    a_user, a_email, a_photo, a_story = _family(clean_db, "Quintessa")
    b_user, b_email, b_photo, b_story = _family(clean_db, "Bartholomew")
    for story in (a_story, b_story):
        assert clean_db.wait_story(story, timeout=120)["status"] == "completed"
    a_key = clean_db.one("SELECT object_key FROM photos WHERE id = :p", p=a_photo)["object_key"]
    b_key = clean_db.one("SELECT object_key FROM photos WHERE id = :p", p=b_photo)["object_key"]
    a_files = files_of(clean_db.storage, a_story)
    assert len(a_files) >= 2 * int(os.environ["STORY_PAGE_COUNT"]) + 2  # every page's two pictures, the book
    b_files = digest(clean_db.storage, b_story, b_key)

    # when family A's user is deleted by hand, and the sweeper runs
    clean_db.exec("DELETE FROM users WHERE id = :u", u=a_user)
    external_send(BROKER, "ops.sweep", {})
    # then every file of A is gone (the upload, every picture, the book), and none of B's changed
    deadline = time.monotonic() + 30
    while files_of(clean_db.storage, a_story) or (clean_db.storage / a_key).exists():
        assert time.monotonic() < deadline, (files_of(clean_db.storage, a_story), w.tail())
        time.sleep(0.2)
    # (both families uploaded the same sample photo: its bytes are left only in B's upload)
    assert {f.where for f in scan_storage(clean_db.storage, [], [astronaut_png()])} - before == {b_key}
    assert scan_storage(clean_db.storage, [a_story, a_user, a_photo, "Quintessa"]) == []
    assert digest(clean_db.storage, b_story, b_key) == b_files
    # each queued row had its first pass; the second waits for the lease (a late writer's file)
    rows = clean_db.all("SELECT key, passes FROM storage_deletions ORDER BY key")
    assert sorted(r["key"] for r in rows) == sorted([a_key, f"stories/{a_story}/"])
    assert {r["passes"] for r in rows} == {1}

    # and the worker's metrics counted it
    deadline = time.monotonic() + 10
    while True:
        _, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        if _sample(metrics, "storycreator_storage_deletions_total", outcome="rechecked") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert _sample(metrics, "storycreator_storage_deletions_total", outcome="rechecked") == 2
    objects = [line for line in metrics.splitlines() if line.startswith("storycreator_storage_objects_deleted_total ")]
    assert objects and float(objects[0].split()[1]) == len(a_files) + 1

    # and nothing an operator reads names a child or a parent: the worker's metrics, Flower's
    # metrics and health check (open without credentials, as Prometheus scrapes them), Flower's
    # task API (behind basic auth: ids, never names), the worker's log
    flower_metrics = _get(f"{flower}/metrics")
    assert flower_metrics[0] == 200 and "flower_events_total" in flower_metrics[1]
    health = _get(f"{flower}/healthcheck")
    assert _get(f"{flower}/api/tasks")[0] == 401
    status, tasks = _get(f"{flower}/api/tasks?limit=1000", AUTH)
    assert status == 200 and json.loads(tasks)
    personal = ["Quintessa", "Bartholomew", a_email, b_email, "example.com"]
    for where, body in (("worker /metrics", metrics), ("flower /metrics", flower_metrics[1]),
                        ("flower /healthcheck", health[1]), ("flower /api/tasks", tasks),
                        ("worker log", w.log.read_text())):
        assert not [p for p in personal if p.lower() in body.lower()], where
    # (and the metrics carry no ids at all: their labels are bounded words)
    for body in (metrics, flower_metrics[1]):
        assert not [i for i in (a_user, a_story, b_user, b_story, a_photo, b_photo) if i in body]


def test_a_family_deleted_by_sql_mid_pipeline_leaves_no_file_and_the_worker_goes_on(
        clean_db: Db, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from datetime import datetime, timedelta

    from pipeline.privacy.drain import drain

    # given a worker whose provider calls take a while, and a story half made
    flush_redis(BROKER)
    w = WorkerProcess(tmp_path / "worker.log", env={"CELERY_BROKER_URL": BROKER, "STEP_LEASE_SECONDS": "3",
                                                    "SIMULATED_PROVIDER_LATENCY": "0.4"})
    request.addfinalizer(w.stop)
    w.start()
    user, _, photo, story = _family(clean_db, "Ottoline")
    key = clean_db.one("SELECT object_key FROM photos WHERE id = :p", p=photo)["object_key"]
    deadline = time.monotonic() + 60
    while not clean_db.one("SELECT count(*) AS n FROM story_pages WHERE story_id = :s "
                           "AND personalization_status = 'completed'", s=story)["n"]:
        assert time.monotonic() < deadline, w.tail()
        time.sleep(0.05)
    assert clean_db.story_row(story)["status"] == "processing"
    # when the family is deleted by SQL while its other pages' steps are in flight
    clean_db.exec("DELETE FROM users WHERE id = :u", u=user)
    time.sleep(3.0)  # every step in flight ends (each provider call takes 0.4 s)
    # then, drained now and once more after the recheck delay, no file of it is left
    while drain().claimed:
        pass
    later = datetime.now().astimezone() + timedelta(hours=1)
    while drain(now=later).claimed:
        pass
    assert files_of(clean_db.storage, story) == [] and not (clean_db.storage / key).exists()
    assert clean_db.one("SELECT count(*) AS n FROM storage_deletions")["n"] == 0
    # and the worker stopped those steps cleanly and goes on with the next family's story
    assert w.proc is not None and w.proc.poll() is None
    assert "Traceback" not in w.log.read_text()
    _, _, _, other = _family(clean_db, "Leopold")
    assert clean_db.wait_story(other, timeout=120)["status"] == "completed"
