"""Operations tasks (the ``stories`` queue): the periodic stuck-work sweep, run by celery beat
(celeryconfig.beat_schedule)."""
from __future__ import annotations

import json
import logging
from datetime import UTC

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


@app.task(name="users.forget", expires=None)
def forget_user(user_id: object = None, **extra: object) -> dict[str, object] | str:
    """Contract task (README "The external contract", "Forgetting a family"): forget a family,
    kwargs ``{"user_id": "<uuid>"}`` (pipeline.privacy.forget, the same code path as
    ``storycreator forget``). At-least-once safe: a redelivered or duplicate message resumes or
    finds the erasure done. Once the rows and files are deleted, the second pass over the files is
    sent to itself for when it is due (``countdown``). Returns the outcome (status, counts,
    erasure id; no names); a refusal (orders in flight) is recorded in ``erasures``."""
    from pipeline.kernel.publish import send
    from pipeline.kernel.step import valid_uuid
    from pipeline.privacy.forget import forget

    user = valid_uuid(user_id)
    if extra or user is None:
        log.error("users.forget needs kwargs {'user_id': '<uuid>'} (got %s)", sorted(["user_id", *extra]))
        return "rejected: kwargs must be {'user_id': '<uuid>'}"
    result = forget(user, "task")
    if result.status == "busy":
        send("users.forget", {"user_id": user}, countdown=30)
    elif result.status == "rechecking" and result.recheck_at is not None:
        from datetime import datetime

        wait = (result.recheck_at - datetime.now(UTC)).total_seconds()
        send("users.forget", {"user_id": user}, countdown=max(1.0, wait + 1.0))
    log.info("users.forget %s", json.dumps({"status": result.status, "erasure": result.erasure_id}))
    return {"status": result.status, "erasure_id": result.erasure_id, "counts": result.counts,
            "message": result.message}
