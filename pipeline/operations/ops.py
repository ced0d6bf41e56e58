"""Operator actions on the pipeline's rows. Every change is a guarded transition (only failed
steps go back to pending; completed work is kept), and tasks are enqueued after commit."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import text

from db.engine import transaction


@dataclass
class RetryPlan:
    story_id: str
    ok: bool
    message: str
    reset_pages: int = 0
    reset_photo: bool = False


def retry_story(story_id: str, *, force: bool = False, dry_run: bool = False) -> RetryPlan:
    """failed story -> pending, its failed steps -> pending, then stories.generate again."""
    with transaction() as c:
        row = c.execute(text(
            """SELECT s.status, s.error_message, p.id AS photo_id, p.ai_processing_status AS photo_status,
                      p.user_id = s.user_id AS own_photo,
                      p.ai_error_message, p.updated_at > COALESCE(
                        (SELECT max(created_at) FROM step_errors e WHERE e.photo_id = p.id), '-infinity')
                        AS photo_changed
                 FROM stories s JOIN photos p ON p.id = s.protagonist_photo_id
                WHERE s.id = :id FOR UPDATE OF s"""), {"id": story_id}).mappings().first()
        if row is None:
            return RetryPlan(story_id, False, "no such story")
        if row["status"] != "failed":
            return RetryPlan(story_id, False, f"story is {row['status']}, not failed: nothing to retry")
        if not row["own_photo"]:
            # Never, not even with --force: the story would be made with another family's child
            # (and the reset below would touch that family's photo). The worker refuses it too.
            return RetryPlan(story_id, False,
                             f"not retried: the story's photo {row['photo_id']} belongs to another user; "
                             "the story must name one of its own user's photos")
        photo_failed = row["photo_status"] == "failed"
        if photo_failed and not force and not row["photo_changed"] and "face" in (row["ai_error_message"] or ""):
            return RetryPlan(story_id, False,
                             f"not retried: the photo failed for a reason a retry cannot fix "
                             f"({row['ai_error_message']}); upload a new photo, or use --force")
        if dry_run:
            n = c.execute(text(
                """SELECT count(*) FROM story_pages WHERE story_id = :id AND 'failed' IN
                   (text_generation_status, image_generation_status, personalization_status)"""),
                {"id": story_id}).scalar() or 0
            return RetryPlan(story_id, True, "would retry", int(n), photo_failed)
        if photo_failed:
            c.execute(text("""UPDATE photos SET ai_processing_status = 'pending', ai_error_message = NULL
                              WHERE id = :p AND ai_processing_status = 'failed'"""), {"p": row["photo_id"]})
        n = c.execute(text(
            """UPDATE story_pages SET
                   text_generation_status = CASE WHEN text_generation_status = 'failed' THEN 'pending'
                                                 ELSE text_generation_status END,
                   image_generation_status = CASE WHEN image_generation_status = 'failed' THEN 'pending'
                                                  ELSE image_generation_status END,
                   personalization_status = CASE WHEN personalization_status = 'failed' THEN 'pending'
                                                 ELSE personalization_status END
             WHERE story_id = :id AND 'failed' IN
                   (text_generation_status, image_generation_status, personalization_status)"""),
            {"id": story_id}).rowcount
        c.execute(text("""UPDATE stories SET status = 'pending', error_message = NULL
                          WHERE id = :id AND status = 'failed'"""), {"id": story_id})
    from workers.tasks import generate_story

    generate_story.apply_async(kwargs={"story_id": story_id})
    return RetryPlan(story_id, True, "retried", n, photo_failed)


# --- stuck work ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stuck:
    """One step that should be moving and is not, and the task that moves it."""

    task: str  # Celery task name
    kwargs: dict[str, str]
    why: str


# Each query finds one kind of stuck work. "processing" older than the lease: the worker holding
# it died (its message may only come back after the broker's visibility timeout). "pending"
# older than :pending_after with everything it needs done: its message was lost (enqueue failed
# after commit, a broker restart, a row inserted by a backfill of old data).
#
# At 100,000+ stories almost every row is finished, so each query is driven by a partial index
# that holds only unfinished rows (schema.sql: ix_*_unfinished) and pages through it by id
# (keyset: "id > :after ORDER BY id LIMIT :limit"), which is what lets a backfill resume where
# it stopped. Each WHERE repeats its index's predicate word for word, so the planner can use it.
_UNFINISHED = {
    "text_generation_status": "p.text_generation_status IS DISTINCT FROM 'completed'",
    "image_generation_status": "p.image_generation_status IS DISTINCT FROM 'completed'",
    "personalization_status": "p.personalization_status IS DISTINCT FROM 'completed'",
}
_STUCK_QUERIES: tuple[tuple[str, str, str], ...] = (
    ("photos.analyze", "photo_id", """
        SELECT id FROM photos
         WHERE ai_processing_status IS DISTINCT FROM 'completed' AND id > :after AND status = 'uploaded'
           AND ((ai_processing_status = 'processing' AND updated_at < now() - make_interval(secs => :lease))
             OR (COALESCE(ai_processing_status, 'pending') = 'pending'
                 AND updated_at < now() - make_interval(secs => :pending_after)))
         ORDER BY id LIMIT :limit"""),
    ("stories.generate", "story_id", """
        SELECT s.id FROM stories s
         WHERE s.status IN ('pending', 'processing') AND s.id > :after
           AND ((s.status = 'pending' AND s.updated_at < now() - make_interval(secs => :pending_after)
                 -- not while it waits for its photo's upload (its message looks again by itself);
                 -- once the photo is uploaded, or the wait is over, a lost message is re-sent
                 AND NOT EXISTS (SELECT 1 FROM photos ph WHERE ph.id = s.protagonist_photo_id
                                    AND ph.status = 'pending_upload'
                                    AND s.updated_at >= now() - make_interval(secs => :upload_wait)))
             OR (s.status = 'processing' AND s.updated_at < now() - make_interval(secs => :lease)
                 AND NOT EXISTS (SELECT 1 FROM story_pages p WHERE p.story_id = s.id)))
         ORDER BY s.id LIMIT :limit"""),
    *(
        (task, "page_id", f"""
        SELECT p.id, p.story_id FROM story_pages p JOIN stories s ON s.id = p.story_id
         WHERE {_UNFINISHED[col]} AND p.id > :after
           AND s.status = 'processing' {f"AND p.{prereq} = 'completed'" if prereq else ""}
           AND ((p.{col} = 'processing' AND p.updated_at < now() - make_interval(secs => :lease))
             OR (COALESCE(p.{col}, 'pending') = 'pending'
                 AND p.updated_at < now() - make_interval(secs => :pending_after)))
         ORDER BY p.id LIMIT :limit""")
        for task, col, prereq in (
            ("pages.write_text", "text_generation_status", None),
            ("pages.draw_base", "image_generation_status", "text_generation_status"),
            ("pages.personalize", "personalization_status", "image_generation_status"),
        )
    ),
    # Every page done, the story not: the personalization that should have enqueued the finish
    # died first (or its message was lost).
    ("stories.finish", "story_id", """
        SELECT s.id FROM stories s
         WHERE s.status IN ('pending', 'processing') AND s.id > :after AND s.status = 'processing'
           AND s.updated_at < now() - make_interval(secs => :pending_after)
           AND EXISTS (SELECT 1 FROM story_pages p WHERE p.story_id = s.id)
           AND NOT EXISTS (SELECT 1 FROM story_pages p WHERE p.story_id = s.id
                            AND (p.personalization_status IS DISTINCT FROM 'completed'
                                 OR p.updated_at > now() - make_interval(secs => :pending_after)))
         ORDER BY s.id LIMIT :limit"""),
)
NO_CURSOR = "00000000-0000-0000-0000-000000000000"


def stuck_batch(kind: int, *, lease: float, pending_after: float, limit: int,
                after: str = NO_CURSOR) -> list[Stuck]:
    """Up to ``limit`` stuck steps of one kind (an index into _STUCK_QUERIES), after id ``after``."""
    from pipeline.kernel.config import settings

    task, key, sql = _STUCK_QUERIES[kind]
    with transaction() as c:
        rows = c.execute(text(sql), {"lease": lease, "pending_after": pending_after, "limit": limit,
                                     "after": after, "upload_wait": settings().photo_upload_wait_seconds})
        # The id first (backfill resumes from it); page tasks also name their story (Flower's search).
        return [Stuck(task, {key: str(r[0]), **({"story_id": str(r[1])} if len(r) > 1 else {})}, "stale")
                for r in rows]


def find_stuck(*, lease: float, pending_after: float, limit: int = 500) -> list[Stuck]:
    """What should be moving and is not (read-only): up to ``limit`` of each kind."""
    return [item for kind in range(len(_STUCK_QUERIES))
            for item in stuck_batch(kind, lease=lease, pending_after=pending_after, limit=limit)]


def sweep(*, lease: float | None = None, pending_after: float | None = None, limit: int = 500,
          dry_run: bool = False) -> list[Stuck]:
    """Re-enqueue stuck work (the periodic sweep: one bounded pass). Safe beside live workers
    and safe to run twice: each step's own guarded claim decides (a stale claim is taken over,
    a live or finished one is left alone), so a duplicate message is a no-op, never duplicate
    work."""
    from pipeline.kernel.config import settings
    from workers.app import app

    s = settings()
    stuck = find_stuck(lease=lease if lease is not None else s.step_lease_seconds,
                       pending_after=pending_after if pending_after is not None else s.step_lease_seconds,
                       limit=limit)
    if not dry_run:
        for item in stuck:
            app.send_task(item.task, kwargs=item.kwargs)
    return stuck


@dataclass
class BackfillProgress:
    enqueued: int = 0
    batches: int = 0
    resumed: bool = False
    done: bool = False
    items: list[Stuck] = field(default_factory=list)  # dry runs only: what would be sent


CURSOR_KEY = "storycreator:backfill:cursor"


def backfill(*, lease: float, pending_after: float, batch_size: int = 200, rate: float = 100.0,
             max_items: int | None = None, dry_run: bool = False, restart: bool = False,
             on_batch: Callable[[BackfillProgress, str, int], None] | None = None) -> BackfillProgress:
    """Re-enqueue all stuck work, one kind after another, in batches of ``batch_size`` and at no
    more than ``rate`` messages a second (a backfill over old rows must not flood the queues
    that live stories use).

    Resumable: after each batch the position (the last id, per kind of stuck work) is saved in
    Redis; an interrupted run (Ctrl-C, a lost terminal, ``max_items`` reached) continues from
    there when run again with the same thresholds, and a finished run clears it; ``restart``
    starts over. Safe beside live workers and when run twice at once, as ``sweep`` is."""
    import redis

    from pipeline.kernel.config import settings
    from workers.app import app

    r = redis.Redis.from_url(settings().redis_url, decode_responses=True)
    signature = f"lease={lease}|pending_after={pending_after}"
    saved: dict[str, str] = {} if (restart or dry_run) else dict(r.hgetall(CURSOR_KEY))  # type: ignore[arg-type]
    cursor = saved if saved.get("signature") == signature else {}
    progress = BackfillProgress(resumed=bool(cursor))
    interval = 1.0 / rate if rate > 0 else 0.0
    next_send = time.monotonic()
    for kind, (task, _, _) in enumerate(_STUCK_QUERIES):
        after = cursor.get(str(kind), NO_CURSOR)
        while after != "done":
            room = batch_size if max_items is None else min(batch_size, max_items - progress.enqueued)
            if room <= 0:
                return progress
            batch = stuck_batch(kind, lease=lease, pending_after=pending_after, limit=room, after=after)
            for item in batch:
                if dry_run:
                    progress.items.append(item)
                    continue
                if interval:
                    time.sleep(max(0.0, next_send - time.monotonic()))
                    next_send = max(next_send, time.monotonic()) + interval
                app.send_task(item.task, kwargs=item.kwargs)
            progress.enqueued += len(batch)
            progress.batches += 1
            after = next(iter(batch[-1].kwargs.values())) if len(batch) == room else "done"
            if not dry_run:
                r.hset(CURSOR_KEY, mapping={"signature": signature, str(kind): after})
            if on_batch is not None and batch:
                on_batch(progress, task, len(batch))
    if not dry_run:
        r.delete(CURSOR_KEY)
    progress.done = True
    return progress


# --- submitting, as the external API does ------------------------------------------------------

_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif",
               "image/heic": "heic", "image/heif": "heic", "image/avif": "avif"}


def submit_story(photo: bytes, content_type: str, filename: str, name: str, age: int, theme: str,
                 *, email: str = "cli@localhost") -> str:
    """Store the photo, insert user/photo/story rows and publish stories.generate by name:
    exactly what the external API does (the same validation happens in the worker)."""
    import uuid

    from pipeline.kernel.config import settings
    from pipeline.kernel.storage import LocalStorage
    from workers.app import app

    key = f"uploads/{uuid.uuid4()}.{_EXTENSIONS.get(content_type.split(';')[0].strip().lower(), 'bin')}"
    LocalStorage(settings().local_storage_root).put(key, photo, content_type)
    with transaction() as c:
        user = c.execute(text(
            """INSERT INTO users (email) VALUES (:e)
               ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING id"""), {"e": email}).scalar()
        photo_id = c.execute(text(
            """INSERT INTO photos (user_id, storage_provider, object_key, filename, content_type, status)
               VALUES (:u, 'local', :k, :f, :ct, 'uploaded') RETURNING id"""),
            {"u": user, "k": key, "f": filename, "ct": content_type}).scalar()
        story = str(c.execute(text(
            """INSERT INTO stories (user_id, child_name, child_age, story_theme, protagonist_photo_id)
               VALUES (:u, :n, :a, :t, :p) RETURNING id"""),
            {"u": user, "n": name, "a": age, "t": theme, "p": photo_id}).scalar())
    app.send_task("stories.generate", kwargs={"story_id": story})  # after the commit
    return story


# --- the whole picture -------------------------------------------------------------------------

_SUMMARY = (
    ("photo analysis", "SELECT COALESCE(ai_processing_status, 'pending'), count(*) FROM photos GROUP BY 1"),
    ("story", "SELECT status, count(*) FROM stories GROUP BY 1"),
    ("text", "SELECT COALESCE(text_generation_status, 'pending'), count(*) FROM story_pages GROUP BY 1"),
    ("image", "SELECT COALESCE(image_generation_status, 'pending'), count(*) FROM story_pages GROUP BY 1"),
    ("personalization",
     "SELECT COALESCE(personalization_status, 'pending'), count(*) FROM story_pages GROUP BY 1"),
)


def summary() -> dict[str, dict[str, int]]:
    """Counts per stage and status."""
    with transaction() as c:
        return {stage: {str(k): int(v) for k, v in c.execute(text(sql)).all()} for stage, sql in _SUMMARY}


def failed_stories(*, page: str | None = None, photo: str | None = None, since_seconds: float | None = None,
                   stage: str | None = None, theme: str | None = None, limit: int = 1000) -> list[str]:
    """Failed stories selected by a page, a photo, or by when/where they failed.

    A story is the unit of retry: retrying it resets all of its failed steps (a story with a
    failed page can only complete once every page does)."""
    where = ["s.status = 'failed'"]
    params: dict[str, object] = {"limit": limit}
    if page is not None:
        where.append("s.id = (SELECT story_id FROM story_pages WHERE id = :page)")
        params["page"] = page
    if photo is not None:
        where.append("s.protagonist_photo_id = :photo")
        params["photo"] = photo
    if theme is not None:
        where.append("s.story_theme = :theme")
        params["theme"] = theme
    if since_seconds is not None or stage is not None:
        # The failure that stopped the story: its latest permanent error (story's own or its photo's).
        cond = ["e.permanent"]
        if since_seconds is not None:
            cond.append("e.created_at >= now() - make_interval(secs => :since)")
            params["since"] = since_seconds
        if stage is not None:
            cond.append("e.stage = :stage")
            params["stage"] = stage
        where.append(f"""EXISTS (SELECT 1 FROM step_errors e
                                 WHERE (e.story_id = s.id OR e.photo_id = s.protagonist_photo_id)
                                   AND {' AND '.join(cond)})""")
    sql = f"SELECT s.id FROM stories s WHERE {' AND '.join(where)} ORDER BY s.updated_at LIMIT :limit"
    with transaction() as c:
        return [str(r[0]) for r in c.execute(text(sql), params)]
