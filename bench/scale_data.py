"""A production-shaped data set for checking the operator queries at scale (tests, bench).

Most stories are long finished; a few are failed, running, stuck or waiting, as on a live
system. Generated in SQL (generate_series), so 100,000 stories take seconds, not minutes.
"""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

# Shares of the stories, by what happened to them (the rest completed).
FAILED, RUNNING, STUCK, PENDING = 0.03, 0.01, 0.002, 0.003


def populate(conn: Connection, stories: int = 100_000, pages_per_story: int = 12, users: int = 20_000) -> None:
    conn.execute(text("SET LOCAL synchronous_commit = off"))
    conn.execute(text(
        """INSERT INTO users (email)
           SELECT 'scale-' || g || '@example.com' FROM generate_series(1, :n) g"""), {"n": users})
    # One photo per story, analysed long ago (failed for the failed stories' share).
    conn.execute(text(
        """
        CREATE TEMP TABLE scale_ids ON COMMIT DROP AS
        SELECT g AS n, gen_random_uuid() AS story_id, gen_random_uuid() AS photo_id,
               u.ids[1 + g % array_length(u.ids, 1)] AS user_id,
               CASE WHEN g % 1000 < :failed * 1000 THEN 'failed'
                    WHEN g % 1000 < (:failed + :running) * 1000 THEN 'processing'
                    WHEN g % 1000 < (:failed + :running + :stuck) * 1000 THEN 'stuck'
                    WHEN g % 1000 < (:failed + :running + :stuck + :pending) * 1000 THEN 'pending'
                    ELSE 'completed' END AS fate,
               now() - make_interval(mins => g % 525600) AS born
          FROM generate_series(1, :n) g,
               (SELECT array_agg(id) AS ids FROM users WHERE email LIKE 'scale-%') u
        """), {"n": stories, "failed": FAILED, "running": RUNNING, "stuck": STUCK,
               "pending": PENDING})
    conn.execute(text(
        """
        INSERT INTO photos (id, user_id, storage_provider, object_key, filename, content_type, status,
                            ai_processing_status, created_at, updated_at)
        SELECT photo_id, user_id, 'local', 'uploads/' || photo_id || '.png', 'child.png', 'image/png',
               'uploaded', CASE fate WHEN 'pending' THEN 'pending' ELSE 'completed' END, born, born
          FROM scale_ids
        """))
    conn.execute(text(
        """
        INSERT INTO stories (id, user_id, child_name, child_age, story_theme, protagonist_photo_id,
                             status, title, error_message, created_at, updated_at)
        SELECT story_id, user_id, 'Child ' || n, 3 + n % 8,
               (ARRAY['space_adventure','underwater_kingdom','enchanted_forest','dinosaur_discovery',
                      'pirate_treasure','superhero_city'])[1 + n % 6],
               photo_id,
               CASE fate WHEN 'stuck' THEN 'processing' ELSE fate END,
               CASE WHEN fate <> 'pending' THEN 'A story for child ' || n END,
               CASE WHEN fate = 'failed' THEN 'Page 3 (illustration): provider said no' END,
               born,
               CASE WHEN fate IN ('processing') THEN now() ELSE born END
          FROM scale_ids
        """))
    conn.execute(text(
        """
        INSERT INTO story_pages (story_id, page_number, text, base_image_key, personalized_image_key,
                                 text_generation_status, image_generation_status, personalization_status,
                                 created_at, updated_at)
        SELECT i.story_id, p, 'Page text.', 'k/base.png', 'k/pers.png',
               CASE WHEN i.fate = 'pending' THEN 'pending' ELSE 'completed' END,
               CASE WHEN i.fate = 'pending' THEN 'pending'
                    WHEN i.fate = 'failed' AND p = 3 THEN 'failed'
                    WHEN i.fate IN ('processing', 'stuck') AND p % 3 = 0 THEN 'processing'
                    ELSE 'completed' END,
               CASE WHEN i.fate = 'completed' OR (i.fate = 'failed' AND p <> 3) THEN 'completed'
                    WHEN i.fate IN ('processing', 'stuck') AND p % 3 = 1 THEN 'processing'
                    ELSE 'pending' END,
               i.born,
               CASE i.fate WHEN 'processing' THEN now() ELSE i.born END
          FROM scale_ids i CROSS JOIN generate_series(1, :pages) p
         WHERE i.fate <> 'pending'
        """), {"pages": pages_per_story})
    conn.execute(text(
        """
        INSERT INTO step_errors (story_id, page_id, stage, permanent, message, created_at)
        SELECT p.story_id, p.id, 'image', true, 'provider said no', p.updated_at
          FROM story_pages p WHERE p.image_generation_status = 'failed'
        """))
    # Orders for a fifth of the completed stories, almost all shipped, a few paid or at the printer;
    # and the events' deliveries, almost all delivered, a few dead (the exporter's gauges read both).
    conn.execute(text(
        """
        INSERT INTO orders (user_id, story_id, product_type, status, amount, currency, paid_at, fulfilled_at,
                            shipped_at, created_at, updated_at)
        SELECT user_id, story_id, 'hardcover',
               CASE WHEN n % 1000 < 5 THEN 'paid' WHEN n % 1000 < 20 THEN 'fulfilled' ELSE 'shipped' END,
               2999, 'usd', born, born, born, born, born
          FROM scale_ids WHERE fate = 'completed' AND n % 5 = 0
        """))
    conn.execute(text(
        """
        INSERT INTO outbox_events (type, ordering_key, story_id, payload, occurred_at)
        SELECT 'story.completed', 'story:' || story_id, story_id, '{}', born
          FROM scale_ids WHERE fate = 'completed' AND n % 5 = 0
        """))
    conn.execute(text(
        """
        INSERT INTO event_deliveries (event_seq, endpoint, ordering_key, status, attempts, delivered_at, created_at)
        SELECT seq, 'https://app.example/hooks', ordering_key,
               CASE WHEN seq % 400 = 0 THEN 'dead' ELSE 'delivered' END, 1, occurred_at, occurred_at
          FROM outbox_events WHERE type = 'story.completed' AND payload = '{}'::jsonb
        """))
