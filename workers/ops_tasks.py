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
    return f"requeued {len(found)}"
