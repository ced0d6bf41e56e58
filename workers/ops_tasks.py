"""Operations tasks (the ``stories`` queue): the periodic stuck-work sweep, run by celery beat
(celeryconfig.beat_schedule)."""
from __future__ import annotations

import json
import logging

from workers.app import app

log = logging.getLogger("storycreator.step")


@app.task(name="ops.sweep", expires=120)
def sweep() -> str:
    """Re-enqueue stuck work (pipeline.operations.sweep), so a story never waits for the broker's
    visibility timeout after a worker dies. Returns "requeued N"."""
    from pipeline.operations.sweep import sweep as run_sweep

    found = run_sweep()
    if found:
        log.warning("sweep %s", json.dumps({"requeued": len(found),
                                            "tasks": sorted({i.task for i in found})}))
    return f"requeued {len(found)}; {privacy_pass()}"


def privacy_pass() -> str:
    """Retention periods and the storage deletion queue (pipeline.operations.sweep.privacy_pass),
    after the stuck work: a failure here is logged (its class only: no keys, no data) and never
    keeps the stuck-work sweep from running. Returns a short summary of the counts."""
    from pipeline.operations.sweep import privacy_pass as run

    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - the next sweep tries again
        log.error("sweep privacy pass failed: %s", type(exc).__name__)
        return f"privacy pass failed ({type(exc).__name__})"
