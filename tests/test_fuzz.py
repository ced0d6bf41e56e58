"""Bad input, fuzzed: task arguments of every wrong type and rows with odd contents. Each ends
with a clear failure (a message in the row, or a rejected task in the log), and the worker keeps
serving: a good story submitted after all of it still completes."""
from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import time
import uuid

import redis

from tests.support import ROOT, Db, WorkerProcess, astronaut_png, external_send

BROKER = os.environ["CELERY_BROKER_URL"]
TASK_QUEUES = ("celery", "photos", "stories", "text", "images", "personalize")
TASKS = {"photos.analyze": "photo_id", "stories.generate": "story_id", "pages.write_text": "page_id",
         "pages.draw_base": "page_id", "pages.personalize": "page_id", "stories.finish": "story_id"}


def _bad_values(rng: random.Random) -> list[object]:
    fixed: list[object] = [None, 0, -1, 3.5, True, "", " ", "not-a-uuid", str(uuid.uuid4()), [], {},
                           [str(uuid.uuid4())], {"$ne": None},
                           "00000000-0000-0000-0000-000000000000'; DROP TABLE stories; --",
                           "\u202e\u0000\ufeff", "🙂" * 500, "x" * 100_000, 2**70]
    randoms = ["".join(chr(rng.randrange(1, 0x2FFFF)) for _ in range(rng.randrange(1, 60))) for _ in range(6)]
    return fixed + randoms


def test_malformed_task_arguments_are_rejected_and_the_worker_keeps_serving(
        clean_db: Db, worker: WorkerProcess) -> None:
    rng = random.Random(20261126)
    # given every task called with every kind of wrong argument, plus unknown and missing ones
    calls: list[tuple[str, dict[str, object]]] = []
    for name, key in TASKS.items():
        for value in _bad_values(rng):
            calls.append((name, {key: value}))
        calls.append((name, {}))
        calls.append((name, {key: str(uuid.uuid4()), "unexpected": 1}))
        calls.append((name, {key: str(uuid.uuid4()), "tries": "many"}))
    script = ROOT / "tests" / "external_client.py"
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    by_name: dict[str, list[str]] = {}
    for name, kwargs in calls:
        by_name.setdefault(name, []).append(json.dumps(kwargs))
    for name, payloads in by_name.items():
        subprocess.run([sys.executable, str(script), BROKER, name, *payloads], cwd="/", check=True, timeout=60, env=env)
    # when a good story comes after all of them
    story = clean_db.story(clean_db.photo(astronaut_png()))
    external_send(BROKER, "stories.generate", {"story_id": story})
    # then it completes; the worker is alive; nothing was written for the bad calls
    assert clean_db.wait_story(story, timeout=120)["status"] == "completed"
    assert worker.proc is not None and worker.proc.poll() is None
    assert clean_db.one("SELECT count(*) AS n FROM stories")["n"] == 1
    # and each bad call was answered and acknowledged (no crash loop, no endless redelivery)
    time.sleep(1.0)
    log = worker.log.read_text(errors="replace")
    assert log.count("needs kwargs") >= len(_bad_values(rng)) // 2
    # (only this test's task names: an earlier test on the same session worker may have left an
    # order's status poll waiting for its countdown, which is in Redis' unacked set until due)
    r = redis.Redis.from_url(BROKER)
    left = [json.loads(m)["headers"]["task"] for q in TASK_QUEUES for m in r.lrange(q, 0, -1)]  # type: ignore[union-attr]
    left += [json.loads(m)[0]["headers"]["task"] for m in r.hvals("unacked")]  # type: ignore[union-attr]
    assert not [t for t in left if t in TASKS], left


def _png(w: int, h: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 180, 160)).save(buf, "PNG")
    return buf.getvalue()


def test_odd_rows_fail_clearly_or_complete(clean_db: Db, worker: WorkerProcess) -> None:
    face = astronaut_png()
    cases = {
        # name, age, theme, photo bytes -> expected ("completed" or a phrase of the failure)
        "rtl+zero-width name": ("\u202eAmira\u200d", 5, "space", face, None),
        "emoji name": ("Zoë 🦖", 4, "dinosaurs", face, "emoji or symbols"),  # no font: refused up front
        "CJK name": ("小明", 6, "pirates", face, "completed"),
        # (NUL itself cannot reach us: PostgreSQL text refuses it at the external API's insert)
        "control characters": ("Mia\x07\x1b", 6, "space", face, "control characters"),
        "huge name": ("N" * 5000, 6, "space", face, "too long"),
        "negative age": ("Sam", -3, "space", face, "age must be between"),
        "theme injection": ("Sam", 5, "space'; DROP TABLE stories; --", face, "Unknown story theme"),
        "non-image bytes": ("Sam", 5, "space", b"%PDF-1.4 this is not a photo", "could not be used"),
        "empty file": ("Sam", 5, "space", b"", "could not be used"),
        "huge image": ("Sam", 5, "space", _png(12000, 12000), "could not be used"),
    }
    ids = {}
    for label, (name, age, theme, image, _) in cases.items():
        ids[label] = clean_db.story(clean_db.photo(image), name=name, age=age, theme=theme)
        external_send(BROKER, "stories.generate", {"story_id": ids[label]})
    for label, (_, _, _, _, expected) in cases.items():
        row = clean_db.wait_story(ids[label], timeout=120)
        if expected == "completed":
            assert row["status"] == "completed", (label, row["error_message"])
        elif expected is not None:
            assert row["status"] == "failed" and expected in row["error_message"], (label, row["error_message"])
        else:
            assert row["status"] == "completed" or row["error_message"], label
    # nothing left half-done
    stuck = clean_db.one("""SELECT count(*) AS n FROM story_pages WHERE 'processing' IN
                            (text_generation_status, image_generation_status, personalization_status)""")
    assert stuck["n"] == 0
