"""Forgetting a family on request (GDPR Art. 17; README "Forgetting a family"): one code path for
``storycreator forget --user ID`` and the contract task ``users.forget``.

What goes: the users row, its photos (rows, face data, the uploaded objects), its stories with
their pages (texts), outlines (the chosen face), redo requests (the parent's hints), step errors
and remote jobs, every stored object under ``stories/<id>/`` (every revision's pictures and books)
and ``orders/<id>/`` (print files), and the outbox events (with their deliveries and attempts)
that name any of its ids. Another family's story that used its photo is failed with a clear
message and its pictures deleted; its row stays. What stays: each order's accounting columns,
re-keyed under an anonymous placeholder (db/erasure_rows.py says why and how), and the audit
record ``erasures`` (who asked, when, counts per kind: no ids once completed).

Refused, changing nothing, while an order is in flight (pending_payment, paid or fulfilled: a
book being paid for, printed or shipped cannot be un-printed, and its files are still needed):
the refusal is recorded (status 'refused') and names the blocking orders to the caller.

Phases, each a short transaction, each idempotent, so a run killed anywhere is completed by the
next (the ``erasures`` row remembers the user and the storage targets until the end):
  1. open      the audit record with the counts and the storage targets (status running)
  2. others    other families' stories that used the photo: failed, re-pointed to a placeholder
  3. orders    kept orders re-keyed (new ids, accounting columns only)
  4. rows      events and the users row deleted (the cascade takes the rest); in-flight steps'
               guarded writes now find no row: they stop, write nothing (README "At least once")
  5. files     every target deleted (first pass); status rechecking, due in STEP_LEASE_SECONDS +
               60 s (pipeline.privacy.drain.recheck_after) if a step that writes files was in flight
               when the rows went (db.erasure_rows.steps_in_flight), else due at once: with no step
               in flight none can write later, so the same run completes and no id is kept
  6. recheck   when due: every target deleted again (a step in flight at phase 4 that wrote a
               picture or book afterwards: its lease bounds how long it can take), the storage
               deletion queue's rows for them removed, the record's user id and targets cleared
               (status completed).
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from db import erasure as q
from db import erasure_rows as rows
from db.engine import autocommit, transaction
from db.lifecycle import ORDERS_IN_FLIGHT
from pipeline.config import settings
from pipeline.privacy.drain import recheck_after

log = logging.getLogger("storycreator.privacy")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PHASES = ("open", "others", "orders", "rows", "files", "recheck")


@dataclass
class ForgetResult:
    """The outcome. ``status``: 'dry_run' (nothing changed; ``counts`` and ``targets`` say what
    would go), 'not_found' (no such user and no unfinished erasure), 'busy' (another run holds
    this user's erasure), 'refused' (``blocking``: the orders in flight, each ``id`` and
    ``status``), 'rechecking' (all deleted once; ``recheck_at``: when the second pass is due) or
    'completed'. ``counts``: rows per kind (users, photos, stories, pages, outlines, page_redos,
    step_errors, provider_jobs, order_events, outbox_events, face_data, orders_kept,
    other_stories_failed) and ``objects_deleted``. ``targets``: the storage objects and folders
    (``storage``: 'output' or the photo's provider, ``bucket``, ``key``, ``prefix``)."""

    user_id: str
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    blocking: list[dict[str, str]] = field(default_factory=list)
    erasure_id: str | None = None
    recheck_at: datetime | None = None
    message: str = ""

    def as_json(self) -> dict[str, Any]:
        """The result as JSON-ready values (the CLI's ``--json``, the task's return)."""
        return {"user_id": self.user_id, "status": self.status, "counts": self.counts, "targets": self.targets,
                "blocking": self.blocking, "erasure_id": self.erasure_id, "message": self.message,
                "recheck_at": self.recheck_at.isoformat() if self.recheck_at else None}


def targets_of(fam: dict[str, Any]) -> list[dict[str, Any]]:
    """The storage targets of a family (db.erasure.family's shape): its photos' uploads, its
    stories' and orders' folders (``owner`` 'family'), and the folders of other families' stories
    that used its photo and of their orders' print files (``owner`` 'other'); an order printed by
    the offline print shop: its jobs there (``storage`` 'printshop', ``key`` the order id)."""
    out: list[dict[str, Any]] = [
        {"storage": p["storage_provider"], "bucket": p["bucket"], "key": p["object_key"], "prefix": False,
         "owner": "family"} for p in fam["photos"]]
    out += [{"storage": "output", "bucket": None, "key": f"stories/{s}/", "prefix": True, "owner": "family"}
            for s in fam["stories"]]
    out += [{"storage": "output", "bucket": None, "key": f"orders/{o['id']}/", "prefix": True, "owner": "family"}
            for o in fam["orders"]]
    # the offline print shop's jobs (their titles may name the child); Lulu's copy is Lulu's (README)
    out += [{"storage": "printshop", "bucket": None, "key": o["id"], "prefix": False, "owner": "family"}
            for o in fam["orders"] if o.get("pod_provider") == "local"]
    out += [{"storage": "output", "bucket": None, "key": f"stories/{s}/", "prefix": True, "owner": "other"}
            for s in fam["other_stories"]]
    out += [{"storage": "output", "bucket": None, "key": f"orders/{o}/print/", "prefix": True, "owner": "other"}
            for o in fam["other_orders"]]
    return out


@contextmanager
def _user_lock(user_id: str) -> Iterator[bool]:
    """A session advisory lock on this user's erasure, held on a connection of its own for the
    whole run (no transaction stays open): True if taken, False if another run holds it."""
    with autocommit() as conn:
        got = q.try_lock(conn, user_id)
        try:
            yield got
        finally:
            if got:
                q.unlock(conn, user_id)


def _delete_targets(targets: list[dict[str, Any]]) -> int:
    """Delete every target (absent ones are no error); how many objects were removed. Raises what
    the storage raises (the erasure stays unfinished: the next run deletes what is left)."""
    from pipeline.config import settings
    from pipeline.orders.offline_print_shop import LocalPrintShop
    from pipeline.providers.registry import delete_photo, output_storage

    output = output_storage()
    n = 0
    for t in targets:
        if t["storage"] == "printshop":
            n += LocalPrintShop(settings().local_storage_root).erase_order(t["key"])
        elif t["storage"] == "output":
            n += output.delete_prefix(t["key"]) if t["prefix"] else int(output.delete(t["key"]))
        else:
            n += int(delete_photo(t["storage"], t["bucket"], t["key"]))
    return n


def _family_ids(user_id: str, fam: dict[str, Any] | None, targets: list[dict[str, Any]]) -> dict[str, Any]:
    """The family's ids for finding its events: the user, the family's current rows and every id
    named in its own targets' keys (orders already re-keyed keep their old ids only there)."""
    named = {i for t in targets if t.get("owner") == "family" for i in _UUID.findall(t["key"])}
    fam = fam or {"photos": [], "stories": [], "orders": []}
    return {"photos": [{"id": p["id"]} for p in fam["photos"]],
            "stories": sorted(set(fam["stories"]) | named), "orders": [{"id": o["id"]} for o in fam["orders"]]}


def forget(user_id: str, requested_by: str, *, dry_run: bool = False, now: datetime | None = None,
           after_phase: Callable[[str], None] | None = None) -> ForgetResult:
    """Forget ``user_id`` (a canonical UUID string) as the module docstring says, resuming its
    unfinished erasure if there is one. ``requested_by``: 'cli' or 'task' (the audit record).
    ``dry_run``: change nothing, report what would go. ``now``: the clock deciding whether the
    second pass is due (tests; None: the database's). ``after_phase``: called with each phase's
    name (PHASES) once it committed (tests make a run crash there). Raises database and storage
    errors (nothing is lost: the next run resumes)."""
    with _user_lock(user_id) as got:
        if not got:
            return ForgetResult(user_id, "busy", message="another erasure of this user is running; try again later")
        return _forget(user_id, requested_by, dry_run, now, after_phase or (lambda _phase: None))


def _forget(user_id: str, by: str, dry_run: bool, now: datetime | None, hook: Callable[[str], None]) -> ForgetResult:
    with transaction() as c:
        erasure = q.open_for(c, user_id)
        fam = q.family(c, user_id)
        counts = q.row_counts(c, user_id, fam) if fam is not None else {}
        placeholder = q.is_placeholder(c, user_id)
    if erasure is None and fam is None:
        return ForgetResult(user_id, "not_found", message=f"no user {user_id} (and no unfinished erasure of it)")
    targets = targets_of(fam) if fam is not None else []
    if erasure is None and placeholder:
        return ForgetResult(user_id, "refused", message=(
            f"not forgotten: {user_id} is the anonymous placeholder holding an erasure's kept orders "
            "(no personal data; its audit record points at it)"))
    unreachable = _unreachable(targets) if erasure is None else []
    if unreachable and not dry_run:
        return _refuse(user_id, by, [], counts, targets, message=(
            f"not forgotten: {len(unreachable)} stored photo(s) this deployment cannot reach, so their "
            f"files could not be deleted ({'; '.join(sorted(set(unreachable)))[:300]}); nothing was deleted. "
            "Configure that storage (or delete those objects by hand and set the photo rows' storage) "
            "and ask again."))
    if dry_run:
        blocking = [{"id": o["id"], "status": o["status"]} for o in (fam or {}).get("in_flight", [])]
        return ForgetResult(user_id, "dry_run", counts, targets, blocking=blocking,
                            erasure_id=str(erasure["id"]) if erasure else None,
                            message="dry run: nothing deleted" + (
                                f"; it would be refused: {len(blocking)} order(s) in flight" if blocking else ""))
    if erasure is None and fam is not None and fam["in_flight"]:
        blocking = [{"id": o["id"], "status": o["status"]} for o in fam["in_flight"]]
        return _refuse(user_id, by, blocking, counts, targets)
    if fam is not None:
        with transaction() as c:
            erasure = q.open_erasure(c, user_id, by, counts, targets)
            q.add_targets(c, str(erasure["id"]), targets)
            erasure = q.open_for(c, user_id)
        hook("open")
    assert erasure is not None
    eid = str(erasure["id"])
    all_targets: list[dict[str, Any]] = list(erasure["targets"] or [])
    if fam is not None:
        try:
            _rows(eid, user_id, fam, all_targets, hook)
        except _InFlight as busy:
            message = _refusal_message(busy.blocking)
            with transaction() as c:
                q.refuse_open(c, eid, message)
            log.warning("forget %s", json.dumps({"erasure": eid, "status": "refused",
                                                 "orders_in_flight": len(busy.blocking)}))
            return ForgetResult(user_id, "refused", counts, all_targets, blocking=busy.blocking, erasure_id=eid,
                                message=message)
    if erasure["status"] == "running":
        objects = _delete_targets(all_targets)
        with transaction() as c:
            q.add_count(c, eid, "objects_deleted", objects)
            # no step was in flight when the rows went: none can write later, so the second pass
            # is due at once and this run completes, the record keeping no ids
            # (db.erasure_rows.steps_in_flight; a record without the count: as if in flight)
            once = not q.state(c, eid)["counts"].get("steps_in_flight", 1)
            q.set_status(c, eid, "rechecking", 0.0 if once else recheck_after())
        hook("files")
    with transaction() as c:
        row = q.state(c, eid, now)
    if not row["due"]:
        return ForgetResult(user_id, "rechecking", dict(row["counts"]), all_targets, erasure_id=eid,
                            recheck_at=row["recheck_at"],
                            message="deleted; a second pass over the files is due at the time given "
                                    "(for a step that was in flight)")
    objects = _delete_targets(all_targets)
    with transaction() as c:
        q.add_count(c, eid, "objects_deleted", objects)
        q.complete(c, eid, user_id, [t["key"] for t in all_targets])
        final = q.state(c, eid)["counts"]
    hook("recheck")
    log.info("forget %s", json.dumps({"erasure": eid, "status": "completed", "counts": final}))
    return ForgetResult(user_id, "completed", dict(final), all_targets, erasure_id=eid, message="forgotten")


class _InFlight(Exception):
    """An order of the family is in flight (found under the deletion's locks): the erasure is
    refused, its rows left as they are."""

    def __init__(self, blocking: list[dict[str, str]]) -> None:
        super().__init__(f"{len(blocking)} order(s) in flight")
        self.blocking = blocking


def _refusal_message(blocking: list[dict[str, str]]) -> str:
    statuses = sorted({o["status"] for o in blocking})
    return (f"not forgotten: {len(blocking)} order(s) still in flight ({', '.join(statuses)}): a book being "
            "paid for, printed or shipped cannot be un-printed. Try again once each has shipped or failed "
            "(an abandoned pending_payment order: once the web app marks it failed).")


def _unreachable(targets: list[dict[str, Any]]) -> list[str]:
    """Why each photo target's storage cannot be reached (registry.photo_place_problem)."""
    from pipeline.providers.registry import photo_place_problem

    out = []
    for t in targets:
        if t["storage"] not in ("output", "printshop"):
            problem = photo_place_problem(t["storage"], t["bucket"])
            if problem:
                out.append(problem)
    return out


def _refuse(user_id: str, by: str, blocking: list[dict[str, str]], counts: dict[str, int],
            targets: list[dict[str, Any]], message: str | None = None) -> ForgetResult:
    message = message or _refusal_message(blocking)
    with transaction() as c:
        eid = q.record_refusal(c, user_id, by, message)
    log.warning("forget %s", json.dumps({"erasure": eid, "status": "refused", "orders_in_flight": len(blocking)}))
    return ForgetResult(user_id, "refused", counts, targets, blocking=blocking, erasure_id=eid, message=message)


def _rows(eid: str, user_id: str, fam: dict[str, Any], targets: list[dict[str, Any]],
          hook: Callable[[str], None]) -> None:
    """Phases 2-4 (others, orders, rows) for a family whose users row still exists."""
    kept: dict[str, str] | None = None
    if fam["other_stories"] or fam["orders"]:
        with transaction() as c:
            kept = rows.placeholders(c, eid)
    lease = settings().step_lease_seconds
    if fam["other_stories"]:
        assert kept is not None
        with transaction() as c:
            # counted before they are fenced: a step of theirs in flight may still write a file
            q.add_count(c, eid, "steps_in_flight",
                        rows.steps_in_flight(c, None, fam["other_stories"], lease, fam["other_orders"]))
            rows.fail_other_stories(c, fam["other_stories"], kept["photo"])
    hook("others")
    done = [o["id"] for o in fam["orders"] if o["status"] not in ORDERS_IN_FLIGHT]
    if done:
        assert kept is not None
        with transaction() as c:
            q.add_count(c, eid, "steps_in_flight", rows.steps_in_flight(c, None, [], lease, done))
            rows.rekey_orders(c, done, kept)
    hook("orders")
    with transaction() as c:
        if rows.lock_family(c, user_id):
            current = q.family(c, user_id)
            assert current is not None
            if current["in_flight"]:  # an order paid for since the plan (or a resumed run): refused
                raise _InFlight([{"id": o["id"], "status": o["status"]} for o in current["in_flight"]])
            more = [t for t in targets_of(current) if t not in targets]  # added since the plan
            if more:
                q.add_targets(c, eid, more)
                targets.extend(more)
            late = [o["id"] for o in current["orders"]]  # finished orders made since the plan
            q.add_count(c, eid, "steps_in_flight", rows.steps_in_flight(
                c, user_id, current["other_stories"], lease, late + current["other_orders"]))
            if current["other_stories"] or late:
                kept = rows.placeholders(c, eid)
                rows.fail_other_stories(c, current["other_stories"], kept["photo"])
                rows.rekey_orders(c, late, kept)
            rows.delete_family(c, user_id, q.family_events(c, user_id, _family_ids(user_id, current, targets)))
    hook("rows")


def finish_due(limit: int = 100) -> int:
    """The sweeper's part: every erasure whose second pass is due, or whose run died (still
    running STEP_LEASE_SECONDS after it was asked for), carried on (``forget`` again,
    requested_by 'task'). Returns how many completed; errors are logged (class only) and left
    for the next sweep."""
    from pipeline.config import settings

    with transaction() as c:
        users = q.due_rechecks(c, settings().step_lease_seconds, limit)
    done = 0
    for user in users:
        try:
            done += forget(user, "task").status == "completed"
        except Exception as exc:  # noqa: BLE001 - the next sweep tries again
            log.error("forget second pass failed: %s", type(exc).__name__)
    return done
