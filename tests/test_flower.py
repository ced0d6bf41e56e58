"""Operators watch the pipeline in Flower: our task names and ids readable through its API,
behind basic auth (as the Procfile runs it)."""
from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import ROOT, Db, WorkerProcess, astronaut_png, external_send

BROKER = os.environ["CELERY_BROKER_URL"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, auth: str | None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_flower_shows_our_tasks_behind_basic_auth(clean_db: Db, worker: WorkerProcess, tmp_path: Path,
                                                  request: pytest.FixtureRequest) -> None:
    # given Flower started as the Procfile starts it, with basic auth
    port, auth = _free_port(), "ops:s3cret-pass"
    log = open(tmp_path / "flower.log", "wb")
    flower = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "workers.app", "flower", f"--port={port}",
         "--address=127.0.0.1", f"--basic-auth={auth}"],
        cwd=ROOT, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT)
    request.addfinalizer(lambda: (flower.terminate(), flower.wait(10), log.close()))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if _get(f"{base}/healthcheck", None)[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, (tmp_path / "flower.log").read_text()
        time.sleep(0.2)
    time.sleep(1.0)  # its event receiver connects
    # when a story runs
    story = clean_db.story(clean_db.photo(astronaut_png()))
    external_send(BROKER, "stories.generate", {"story_id": story})
    assert clean_db.wait_story(story)["status"] == "completed"
    # then without credentials Flower refuses, with them it lists our tasks by name and state
    assert _get(f"{base}/api/tasks", None)[0] == 401
    deadline = time.monotonic() + 20
    while True:
        status, body = _get(f"{base}/api/tasks?limit=1000", auth)
        assert status == 200
        tasks = json.loads(body)
        names = {t.get("name") for t in tasks.values() if story in (t.get("kwargs") or "")}
        if {"stories.generate"} <= names and sum(
                1 for t in tasks.values() if t.get("name") == "pages.personalize"
                and t.get("state") == "SUCCESS") >= 1:
            break
        assert time.monotonic() < deadline, names
        time.sleep(0.5)
    gen = next(t for t in tasks.values() if t.get("name") == "stories.generate" and story in (t.get("kwargs") or ""))
    assert gen["state"] == "SUCCESS" and gen["result"].strip("'\"").startswith("done")


def test_flower_finds_every_task_of_a_story_by_its_id(clean_db: Db, worker: WorkerProcess, tmp_path: Path) -> None:
    """An operator searching Flower for a story id finds all of its tasks: the page steps too, also
    when the sweeper re-sent them (issue 10: it found 2 of 38). Flower started by the Procfile line."""
    from pipeline.operations import ops
    from tests.test_procfile import AUTH, Proc, procfile
    from tests.test_sweep import _stuck_story

    pages = int(os.environ["STORY_PAGE_COUNT"])
    port = _free_port()
    flower = Proc(procfile()["flower"], tmp_path / "flower.log",
                  {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
                   "PORT": str(port), "FLOWER_BASIC_AUTH": AUTH})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"{base}/api/workers", AUTH)[0] == 200:
                    break
            except OSError:
                pass
            assert flower.p.poll() is None and time.monotonic() < deadline, flower.text()[-3000:]
            time.sleep(0.2)
        time.sleep(1.0)  # its event receiver connects
        # given a story run through the external contract
        sent = clean_db.story(clean_db.photo(astronaut_png()))
        external_send(BROKER, "stories.generate", {"story_id": sent})
        assert clean_db.wait_story(sent)["status"] == "completed"
        # and a story whose messages were lost, re-sent by the sweeper
        swept, _ = _stuck_story(clean_db)
        assert ops.sweep()
        assert clean_db.wait_story(swept)["status"] == "completed"
        expected = {sent: 2 + 3 * pages, swept: 3 * pages + 1}  # (generate,) pages x 3 steps, finish
        for story, least in expected.items():
            page_ids = {str(p["id"]) for p in clean_db.pages(story)}
            deadline = time.monotonic() + 20
            while True:
                # when the operator searches Flower for the story id
                status, body = _get(f"{base}/api/tasks?limit=5000&search={story}", AUTH)
                assert status == 200
                found = json.loads(body)
                if len(found) >= least or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            # then every task of that story is there: each one Flower has that names the story or one
            # of its pages (retries included), and nothing else
            everything = json.loads(_get(f"{base}/api/tasks?limit=5000", AUTH)[1])
            mine = {tid for tid, t in everything.items()
                    if story in (t.get("kwargs") or "") or any(p in (t.get("kwargs") or "") for p in page_ids)}
            missing = sorted((everything[t]["name"], everything[t]["kwargs"]) for t in mine - set(found))
            assert set(found) == mine, missing
            names = sorted(t["name"] for t in found.values())
            assert len(found) >= least, names
            assert {"pages.write_text", "pages.draw_base", "pages.personalize", "stories.finish"} <= set(names)
    finally:
        flower.stop()
