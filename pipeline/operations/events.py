"""The operators' view of the events (README "Events (webhooks)"): what `storycreator status`
prints about them, `retry --event ID` (a dead delivery sent again) and what `backfill` does for
them (every pending delivery made due now and a delivery run sent)."""
from __future__ import annotations

from typing import Any

from db import events as db
from db.engine import autocommit, transaction
from pipeline.events.delivery import DELIVER_TASK
from pipeline.events.settings import event_settings
from pipeline.kernel import publish

STATUSES = ("pending", "delivering", "delivered", "dead")


def event_counts() -> dict[str, int]:
    """Deliveries per status (STATUSES, zeros included) and ``events``: the events recorded."""
    with transaction() as conn:
        counts = db.delivery_counts(conn)
    return {st: counts.get(st, 0) for st in ("events", *STATUSES)}


def summary_line(counts: dict[str, int]) -> str:
    """One line for `status`: events recorded and deliveries per status, dead ones pointed at retry."""
    endpoints = event_settings().endpoints()
    where = f"{len(endpoints)} endpoint(s)" if endpoints else "no endpoint configured (WEBHOOK_URLS)"
    line = (f"events          {counts['events']} recorded, deliveries to {where}: "
            + "  ".join(f"{st} {counts[st]}" for st in STATUSES))
    if counts["dead"]:
        line += "  (dead: status <story> or --order lists them; retry --event ID)"
    return line


def story_events(story_id: str | None = None, order_id: str | None = None) -> list[dict[str, Any]]:
    """The events of a story (its pages' and orders' too) or of an order, oldest first, each with
    its deliveries (endpoint, status, attempts, last error)."""
    with transaction() as conn:
        return db.events_of(conn, story_id=story_id, order_id=order_id)


def event_lines(events: list[dict[str, Any]]) -> list[str]:
    """Lines for `status <story>`: each event, its page or order, and how its deliveries stand."""
    lines = [f"  events: {len(events)}"] if events else []
    for e in events:
        data = e["payload"]
        about = f" page {data['page_number']}" if "page_number" in data else ""
        deliveries = ", ".join(f"{d['status']} ({d['attempts']} attempt(s))" + (f": {d['last_error']}"
                                                                                if d["status"] != "delivered"
                                                                                and d["last_error"] else "")
                               for d in e["deliveries"]) or "no delivery"
        lines.append(f"  {e['occurred_at']:%H:%M:%S} {e['type']}{about} {e['id']}: {deliveries}")
    return lines


def retry_event(event_id: str) -> tuple[bool, str]:
    """Make the dead deliveries of ``event_id`` (``evt_...``) pending again (fresh attempts) and
    send a delivery run. Returns (whether any was dead, a line for the operator)."""
    with autocommit() as conn:
        n = db.retry_dead(conn, event_id)
    if not n:
        return False, f"{event_id}: no dead delivery of this event (unknown id, delivered, or still being tried)"
    publish.send(DELIVER_TASK, {})
    return True, f"{event_id}: {n} dead delivery(ies) queued again"


def backfill_events(*, dry_run: bool) -> int:
    """`backfill`: pending deliveries due now (their backoff cut short) and a delivery run sent.
    Returns how many were waiting; nothing changes on a dry run."""
    if dry_run:
        return event_counts()["pending"]
    with autocommit() as conn:
        n = db.make_due(conn)
    if event_settings().endpoints():
        publish.send(DELIVER_TASK, {})
    return n
