"""Photo analysis transitions (photos.ai_processing_status): pending -> processing ->
completed | failed, each one guarded statement (see db/claims.py).
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, RowMapping

from db.claims import claim_sets, claimable, held

# The start of the failure message for a photo analysed before its upload finished. Such a
# failure is not final: once the row says 'uploaded', the photo may be claimed again.
NOT_UPLOADED_PREFIX = "The photo is not ready to analyse"


def claim_photo(conn: Connection, photo_id: str, lease: float, held: int | None = None) -> RowMapping | None:
    """pending (or a processing claim older than ``lease`` s, or a not-uploaded failure once the
    photo is uploaded) -> processing; returns where the photo is stored, the claim's fencing token
    (``claim_token``: every later write of the analysis names it) and ``takeovers`` (claims taken
    from a silent holder since the analysis last completed); None when not claimed. ``held``: the
    token of the claim the caller's message held when the database went away (resumed at once)."""
    return conn.execute(
        text(
            f"""
            UPDATE photos p SET {claim_sets('ai_processing_status', 'p')}, ai_error_message = NULL
             WHERE id = :id AND status = 'uploaded'
               AND ({claimable('ai_processing_status', 'p.updated_at', 'p.claim_token')}
                    OR (ai_processing_status = 'failed' AND starts_with(ai_error_message, :not_uploaded)))
            RETURNING id, storage_provider, bucket, object_key, content_type, claim_token, takeovers
            """
        ),
        {"id": photo_id, "lease": lease, "not_uploaded": NOT_UPLOADED_PREFIX, "held": held},
    ).mappings().first()


def photo_state(conn: Connection, photo_id: str) -> RowMapping | None:
    """The photo's upload and analysis state, stored faces and location, and ``age`` (an interval:
    time since its row last moved); None when there is no such photo."""
    return conn.execute(
        text(
            """
            SELECT status, COALESCE(ai_processing_status, 'pending') AS ai_status, ai_error_message,
                   face_details, storage_provider, bucket, object_key,
                   now() - updated_at AS age
              FROM photos WHERE id = :id
            """
        ),
        {"id": photo_id},
    ).mappings().first()


def complete_photo(
    conn: Connection, photo_id: str, face_details: Any, labels: Any, objects: Any, token: int,
    character_profile: Any = None,
) -> bool:
    """processing -> completed with the analysis (JSON-serialisable values; ``character_profile``:
    pipeline/providers/character.py, None for none), only under claim ``token``; False when the
    photo was not processing under it (another copy finished or failed it, or took the claim over)."""
    row = conn.execute(
        text(
            f"""
            UPDATE photos
               SET ai_processing_status = 'completed', ai_error_message = NULL,
                   face_details = CAST(:faces AS jsonb), detected_labels = CAST(:labels AS jsonb),
                   detected_objects = CAST(:objects AS jsonb), takeovers = 0,
                   character_profile = CAST(:profile AS jsonb)
             WHERE id = :id AND {held('ai_processing_status')}
            RETURNING id
            """
        ),
        {
            "id": photo_id,
            "faces": json.dumps(face_details),
            "labels": json.dumps(labels),
            "objects": json.dumps(objects),
            "profile": None if character_profile is None else json.dumps(character_profile),
            "token": token,
        },
    ).first()
    return row is not None


def fail_photo(
    conn: Connection, photo_id: str, message: str, *, from_statuses: tuple[str, ...] = ("processing",),
    attempt: int = 0, task_id: str | None = None, token: int | None = None,
) -> bool:
    """processing -> failed (or pending -> failed for a photo that can't be analysed at all); with
    ``token``, only a processing analysis under that claim (a stale holder fails nothing). False
    when nothing was failed."""
    row = conn.execute(
        text(
            """
            WITH p AS (
                UPDATE photos SET ai_processing_status = 'failed', ai_error_message = :msg
                 WHERE id = :id AND COALESCE(ai_processing_status, 'pending') = ANY(:from)
                   AND (CAST(:token AS bigint) IS NULL
                        OR (ai_processing_status = 'processing' AND claim_token = :token))
                RETURNING id
            )
            INSERT INTO step_errors (photo_id, stage, permanent, message, attempt, task_id)
            SELECT id, 'analysis', true, :msg, :attempt, :task FROM p
            RETURNING photo_id
            """
        ),
        {"id": photo_id, "msg": message, "from": list(from_statuses), "attempt": attempt, "task": task_id,
         "token": token},
    ).first()
    return row is not None


def release_photo(conn: Connection, photo_id: str, message: str | None, attempt: int, task_id: str | None,
                  token: int) -> bool:
    """processing -> pending after a transient error, only under claim ``token``: the retried
    message claims it again. False when this claim no longer holds it (nothing written)."""
    return conn.execute(
        text(
            f"""
            WITH p AS (
                UPDATE photos SET ai_processing_status = 'pending'
                 WHERE id = :id AND {held('ai_processing_status')} RETURNING id
            ), e AS (
                INSERT INTO step_errors (photo_id, stage, permanent, message, attempt, task_id)
                SELECT id, 'analysis', false, :msg, :attempt, :task FROM p WHERE CAST(:msg AS text) IS NOT NULL
            )
            SELECT id FROM p
            """
        ),
        {"id": photo_id, "msg": message, "attempt": attempt, "task": task_id, "token": token},
    ).first() is not None



def clear_face_data(conn: Connection, photo_id: str) -> bool:
    """Erase photo ``photo_id``'s face data: ``face_details`` (boxes, landmarks, attributes) and
    ``character_profile`` (hair, skin colour, glasses) together, so neither outlives the other
    (a GDPR erasure of the face data; the labels, the file and the row stay). Pages drawn later
    for a story of this photo fail with "The photo has no analysed face". False when there is no
    such photo."""
    return conn.execute(
        text("UPDATE photos SET face_details = NULL, character_profile = NULL WHERE id = :id RETURNING id"),
        {"id": photo_id},
    ).first() is not None
