"""Forgetting a family through real processes (README "Forgetting a family"): a family whose two
stories a real worker made (one with a page redone from a hint, one ordered, paid and shipped by
the offline print shop), another family beside it; ``storycreator forget`` run as an operator runs
it (the installed entry point, a process of its own), then the schema-blind scan of the database
and the storage (tests/privacy_scan.py) finds nothing of the family, the other family is
unchanged, and the order's accounting is there. And the task ``users.forget``, sent by name as
the web app sends it, while the family's story is mid-pipeline: the steps in flight stop, and
nothing they do afterwards re-creates a row or leaves a file."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from pipeline.orders import stripe_events as se
from tests.lifecycle_support import digest
from tests.privacy_scan import scan_database, scan_storage
from tests.support import ROOT, Db, WorkerProcess, astronaut_png, external_send, flush_redis

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 1}"
HINT = "give her the red kite from grandpa Evander"
ADDRESS = {"name": "Rosalind Parent", "street1": "42 Wistful Vista", "city": "Raleigh", "state_code": "NC",
           "postcode": "27601", "country_code": "US", "phone_number": "+1 919 555 0142"}


def _reencoded(fmt: str = "PNG", **opts: Any) -> bytes:
    """The sample photo with bytes of its own (a random text chunk or comment; the same child: a
    face the analysis finds), so the scan for them finds no other test's upload."""
    out = io.BytesIO()
    image = Image.open(io.BytesIO(astronaut_png())).convert("RGB")
    if fmt == "PNG":
        info = PngInfo()
        info.add_text("Comment", uuid.uuid4().hex)
        image.save(out, fmt, pnginfo=info, **opts)
    else:
        image.save(out, fmt, comment=uuid.uuid4().hex.encode(), **opts)
    return out.getvalue()


def _wait(what: str, fn: Any, w: WorkerProcess, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}\n{w.tail()}"
        time.sleep(0.1)


def _cli(*args: str) -> tuple[int, dict[str, Any]]:
    """``storycreator ARGS --json`` as an operator runs it: a process of its own, the command
    ``./run cli`` runs (``python -m pipeline.operations.cli``) in this checkout."""
    r = subprocess.run([sys.executable, "-m", "pipeline.operations.cli", *args, "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout)


def _snapshot(db: Db, user: str, *ids: str) -> dict[str, Any]:
    q = {"users": "SELECT * FROM users WHERE id = :u",
         "photos": "SELECT * FROM photos WHERE user_id = :u ORDER BY id",
         "stories": "SELECT * FROM stories WHERE user_id = :u ORDER BY id",
         "pages": "SELECT g.* FROM story_pages g JOIN stories s ON s.id = g.story_id WHERE s.user_id = :u "
                  "ORDER BY g.id",
         "events": "SELECT * FROM outbox_events WHERE payload ->> 'user_id' = :u ORDER BY seq"}
    out: dict[str, Any] = {k: [dict(r) for r in db.all(sql, u=user)] for k, sql in q.items()}
    out["files"] = digest(db.storage, *ids)
    return out


def _story(db: Db, user: str, photo: str, name: str) -> str:
    sid = str(db.one("""INSERT INTO stories (user_id, child_name, child_age, story_theme, protagonist_photo_id)
                        VALUES (:u, :n, 6, 'space_adventure', :p) RETURNING id""", u=user, n=name, p=photo)["id"])
    external_send(BROKER, "stories.generate", {"story_id": sid})
    return sid


@pytest.fixture()
def worker(clean_db: Db, tmp_path: Path, request: pytest.FixtureRequest) -> WorkerProcess:
    flush_redis(BROKER)
    w = WorkerProcess(tmp_path / "worker.log", env={
        "CELERY_BROKER_URL": BROKER, "LOCAL_PRINT_SHOP_STAGE_SECONDS": "0.05", "ORDER_POLL_INTERVAL": "0.3",
        "STRIPE_MODE": "test"})
    request.addfinalizer(w.stop)
    w.start()
    return w


def test_forget_through_the_cli_leaves_nothing_of_the_family_and_keeps_the_accounting(
        clean_db: Db, worker: WorkerProcess) -> None:
    db, w = clean_db, worker
    # given family A: two photos, a story with a page redone from a hint, a story ordered and shipped
    email = f"rosalind-{uuid.uuid4().hex[:6]}@example.com"
    user = str(db.one("INSERT INTO users (email) VALUES (:e) RETURNING id", e=email)["id"])
    bytes1, bytes2 = _reencoded(), _reencoded(compress_level=1)
    photo1, photo2 = db.photo(bytes1, user_id=user), db.photo(bytes2, user_id=user)
    s1, s2 = _story(db, user, photo1, "Rosalind"), _story(db, user, photo2, "Rosalind")
    # and family B beside it (the same child's picture, other bytes)
    b_email = f"other-{uuid.uuid4().hex[:6]}@example.com"
    b_user = str(db.one("INSERT INTO users (email) VALUES (:e) RETURNING id", e=b_email)["id"])
    b_photo = db.photo(_reencoded("JPEG", quality=92), user_id=b_user)
    b_story = _story(db, b_user, b_photo, "Tobias")
    for s in (s1, s2, b_story):
        assert db.wait_story(s, timeout=180)["status"] == "completed", db.story_row(s)["error_message"]
    external_send(BROKER, "stories.redo_page", {"story_id": s1, "page_number": 2, "from_stage": "image",
                                                "hint": HINT, "request_id": "r1"})
    _wait("redo", lambda: db.one("SELECT 1 AS x FROM page_redos WHERE story_id = :s AND status = 'completed'",
                                 s=s1), w)
    pi = f"pi_test_{uuid.uuid4().hex[:18]}"
    oid = str(db.one("""INSERT INTO orders (user_id, story_id, product_type, amount, currency, shipping_address,
                                            payment_provider, payment_intent_id)
                        VALUES (:u, :s, 'hardcover_book', 3499, 'usd', CAST(:a AS jsonb), 'stripe', :pi)
                        RETURNING id""", u=user, s=s2, a=json.dumps(ADDRESS), pi=pi)["id"])
    event = json.loads(se.event_payload(f"evt_{uuid.uuid4().hex[:16]}", se.PAYMENT_SUCCEEDED, {
        "id": pi, "object": "payment_intent", "amount": 3499, "amount_received": 3499, "currency": "usd",
        "metadata": {"order_id": oid}}))
    external_send(BROKER, "orders.confirm_payment", {"order_id": oid, "event": event})
    shipped = _wait("shipped", lambda: db.one("SELECT * FROM orders WHERE id = :o AND status = 'shipped'", o=oid),
                    w, timeout=180)
    assert shipped["tracking_number"] and db.one("SELECT count(*) AS n FROM order_events WHERE order_id = :o",
                                                 o=oid)["n"]
    accounting = {k: shipped[k] for k in ("amount", "currency", "status", "product_type", "payment_intent_id",
                                          "pod_order_id", "paid_at", "fulfilled_at", "shipped_at", "created_at")}
    ids = [user, photo1, photo2, s1, s2, oid]
    needles = [*ids, email, "Rosalind", HINT, "Evander", "Wistful Vista", shipped["tracking_number"]]
    assert scan_database(db, needles) and scan_storage(db.storage, needles, [bytes1, bytes2])
    before = _snapshot(db, b_user, b_user, b_photo, b_story)

    # when an operator lists what would go, then forgets the family
    code, plan = _cli("forget", "--user", user, "--dry-run")
    assert code == 0 and plan["status"] == "dry_run" and plan["counts"]["stories"] == 2
    assert {f"stories/{s1}/", f"stories/{s2}/", f"orders/{oid}/"} <= {t["key"] for t in plan["targets"]}
    assert db.one("SELECT count(*) AS n FROM stories WHERE user_id = :u", u=user)["n"] == 2
    code, done = _cli("forget", "--user", user)
    # (every story was finished: no step in flight, so no second pass to wait for)
    assert code == 0 and done["status"] == "completed", done

    # then the scan finds nothing of family A in any table or file
    assert scan_database(db, needles) == []
    assert scan_storage(db.storage, needles, [bytes1, bytes2]) == []
    # and family B is row for row and byte for byte the same
    assert _snapshot(db, b_user, b_user, b_photo, b_story) == before
    # and the order's accounting is kept, under an anonymous placeholder
    kept = db.one("""SELECT o.*, u.email FROM orders o JOIN users u ON u.id = o.user_id
                      WHERE o.payment_intent_id = :pi""", pi=pi)
    assert {k: kept[k] for k in accounting} == accounting
    assert kept["shipping_address"] is None and kept["tracking_number"] is None
    assert kept["email"].startswith("erased-") and kept["email"].endswith("@invalid")
    audit = db.one("SELECT * FROM erasures WHERE status = 'completed'")
    assert audit["counts"]["photos"] == 2 and audit["counts"]["page_redos"] == 1 and audit["user_id"] is None
    assert "Traceback" not in w.log.read_text()


def test_forget_sent_by_name_mid_pipeline_stops_the_steps_and_nothing_comes_back(
        clean_db: Db, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    db = clean_db
    # given a worker whose provider calls take a while, and a family's story half made
    flush_redis(BROKER)
    w = WorkerProcess(tmp_path / "worker.log", env={"CELERY_BROKER_URL": BROKER, "STEP_LEASE_SECONDS": "3",
                                                    "SIMULATED_PROVIDER_LATENCY": "0.4"})
    request.addfinalizer(w.stop)
    w.start()
    email = f"marguerite-{uuid.uuid4().hex[:6]}@example.com"
    user = str(db.one("INSERT INTO users (email) VALUES (:e) RETURNING id", e=email)["id"])
    data = _reencoded()
    photo = db.photo(data, user_id=user)
    story = _story(db, user, photo, "Marguerite")
    _wait("a page made", lambda: db.one("SELECT count(*) AS n FROM story_pages WHERE story_id = :s "
                                        "AND personalization_status = 'completed'", s=story)["n"], w)
    assert db.story_row(story)["status"] == "processing"
    page_ids = [str(p["id"]) for p in db.pages(story)]

    # when the web app sends users.forget by name while the other pages' steps are in flight
    external_send(BROKER, "users.forget", {"user_id": user})
    # (rechecking while a step was in flight when the rows went; completed at once if none was)
    _wait("rows deleted", lambda: db.one("SELECT 1 AS x FROM erasures WHERE status IN ('rechecking', 'completed')"),
          w, timeout=60)
    time.sleep(4.0)  # every step in flight ends (0.4 s per provider call; the lease is 3 s)

    # then no step re-created a row: only the unfinished erasure (to finish it) and the storage
    # deletion queue (the second pass) still name the family
    needles = [user, photo, story, *page_ids, email, "Marguerite"]
    left = {f.where.split(".")[0] for f in scan_database(db, needles)}
    assert left <= {"erasures", "storage_deletions"}, scan_database(db, needles)
    # and when the second pass is due (the task sent itself for then; the time passes here), it
    # deletes whatever a late step wrote, and nothing of the family is left anywhere
    db.exec("UPDATE erasures SET recheck_at = now() - interval '1 second' WHERE status = 'rechecking'")
    external_send(BROKER, "users.forget", {"user_id": user})
    _wait("completed", lambda: db.one("SELECT 1 AS x FROM erasures WHERE status = 'completed'"), w, timeout=60)
    assert scan_database(db, needles) == []
    assert scan_storage(db.storage, needles, [data]) == []
    assert db.one("SELECT requested_by FROM erasures")["requested_by"] == "task"
    # and the worker stopped those steps cleanly and goes on with the next family's story
    assert w.proc is not None and w.proc.poll() is None
    assert "Traceback" not in w.log.read_text()
    other = db.story(db.photo(astronaut_png()), name="Leopold")
    external_send(BROKER, "stories.generate", {"story_id": other})
    assert db.wait_story(other, timeout=120)["status"] == "completed"


def test_a_forget_killed_mid_run_is_completed_by_the_next(clean_db: Db) -> None:
    from sqlalchemy import text

    from tests.lifecycle_support import family, order, story

    db = clean_db
    fam = family(db)
    sid = story(db, fam, redone_page=1)
    order(db, fam, sid, "shipped")
    # given the operator's forget blocked at its deletion phase (a row lock held elsewhere) ...
    with db.engine.connect() as holder:
        tx = holder.begin()
        holder.execute(text("SELECT id FROM users WHERE id = :u FOR UPDATE"), {"u": fam.user})
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.operations.cli", "forget", "--user", fam.user],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        # (its orders re-keyed: it waits for the users row)
        while not db.one("SELECT 1 AS x FROM orders o JOIN users u ON u.id = o.user_id WHERE u.email LIKE 'erased-%'"):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        # ... when it is killed there (SIGKILL: no cleanup at all)
        proc.kill()
        proc.wait(10)
        tx.rollback()
    assert db.one("SELECT status FROM erasures")["status"] == "running"
    assert db.one("SELECT count(*) AS n FROM users WHERE id = :u", u=fam.user)["n"] == 1
    # then running it again completes it (nothing was in flight: no second pass to wait for)
    code, done = _cli("forget", "--user", fam.user)
    assert code == 0 and done["status"] == "completed"
    assert scan_database(db, fam.needles()) == []
    assert scan_storage(db.storage, fam.needles(), [fam.photo_bytes]) == []
    assert db.one("SELECT count(*) AS n FROM orders")["n"] == 1
    assert db.one("SELECT count(*) AS n FROM users WHERE email LIKE 'erased-%'")["n"] == 1
