"""The events queue (``events``): delivery runs of the outbox's events (pipeline/events/delivery.py),
sent by a kick after a step that may have written events, by a run for its own follow-up, and by
celery beat every EVENTS_POLL_INTERVAL (celeryconfig.beat_schedule)."""
from __future__ import annotations

import json
import logging

from workers.app import app

log = logging.getLogger("storycreator.events")


# expires: a run queued behind a long backlog is worth nothing once a newer one ran (beat sends more).
@app.task(name="events.deliver", expires=300)
def deliver() -> str:
    """One delivery run. Returns a summary ("sent N, failed M, dead D" or "busy")."""
    from pipeline.events.delivery import run

    report = run()
    if report.busy:
        return "busy"
    if report.sent or report.failed:
        log.info("events %s", json.dumps({"sent": report.sent, "failed": report.failed, "dead": report.dead}))
    return f"sent {report.sent}, failed {report.failed}, dead {report.dead}"
