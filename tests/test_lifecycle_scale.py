"""Retention and the deletion queue stay cheap on a big database (README "Personal data"): each
batch's query runs on its partial index, oldest first, never reading photos, stories or the queue
from end to end (EXPLAIN on 100,000 photos and stories, production-shaped: most old ones already
expired, recent ones kept), and schema.sql migrates an existing database's foreign keys."""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from db import lifecycle as q
from db.engine import apply_schema, ensure_database, make_engine
from db.url import database_url
from tests.support import Db

ROWS = 100_000
BIG = {"photos", "stories", "orders", "storage_deletions"}


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


@pytest.fixture(scope="module")
def big() -> Iterator[Any]:
    url = database_url(os.environ["DATABASE_URL"]).set(database=f"storycreator_lifecycle_{uuid.uuid4().hex[:8]}")
    ensure_database(url.render_as_string(hide_password=False))
    engine = make_engine(url)
    with engine.begin() as c:
        c.execute(text("INSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 1000) g"))
        # photos over two years; those older than 60 days already expired (status 'deleted')
        c.execute(text(f"""
            INSERT INTO photos (user_id, storage_provider, object_key, filename, content_type, status, updated_at)
            SELECT (SELECT id FROM users ORDER BY id OFFSET g % 1000 LIMIT 1), 'local', 'uploads/' || g || '.png',
                   'c.png', 'image/png',
                   CASE WHEN g % 730 > 60 THEN 'deleted' ELSE 'uploaded' END, now() - make_interval(days => g % 730)
              FROM generate_series(1, {ROWS}) g"""))
        c.execute(text("""
            INSERT INTO stories (user_id, child_name, child_age, story_theme, protagonist_photo_id, status,
                                 updated_at, files_deleted_at)
            SELECT user_id, '', 5, 'pirates', id, 'completed', updated_at,
                   CASE WHEN status = 'deleted' AND updated_at < now() - interval '400 days' THEN now() END
              FROM photos"""))
        c.execute(text("""
            INSERT INTO orders (user_id, story_id, product_type, status, amount, currency)
            SELECT user_id, id, 'hardcover_book', 'shipped', 2999, 'usd' FROM stories
             WHERE hashtext(id::text) % 10 = 0"""))
        c.execute(text("""
            INSERT INTO storage_deletions (storage, key, is_prefix, reason, not_before)
            SELECT 'output', 'stories/' || g || '/', true, 'stories', now() + make_interval(secs => g)
              FROM generate_series(1, 20000) g"""))
        c.execute(text("ANALYZE"))
    yield engine
    engine.dispose()
    admin = make_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("name,sql,params,index", [
    ("photos due", q.DUE_PHOTOS, {"days": 30, "n": 200, "now": None}, "ix_photos_retention"),
    ("stories due", q.DUE_STORIES, {"days": 365, "n": 200, "now": None}, "ix_stories_retention"),
    ("queue claim", q.CLAIM_DELETIONS, {"n": 200, "lease": 300, "now": None}, "ix_storage_deletions_not_before"),
])
def test_each_batch_runs_on_its_index(big: Any, name: str, sql: str, params: dict[str, Any], index: str) -> None:
    with big.connect() as c, c.begin() as t:  # EXPLAIN ANALYZE runs the statement: rolled back
        plan = c.execute(text("EXPLAIN (ANALYZE, FORMAT JSON) " + sql), params).scalar()
        t.rollback()
    nodes = list(_nodes((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]))
    seq = [n.get("Relation Name") for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in BIG]
    assert not seq, (name, seq)
    assert index in {n.get("Index Name") for n in nodes}, (name, [(n["Node Type"], n.get("Index Name")) for n in nodes])


def test_an_existing_database_s_cascade_is_migrated_once(db: Db) -> None:
    def action() -> tuple[int, str]:
        row = c.execute(text("""SELECT oid, confdeltype FROM pg_constraint
                                 WHERE conname = 'stories_protagonist_photo_id_fkey'""")).one()
        return int(row[0]), str(row[1])

    # in one transaction, rolled back: the test database is left as it was
    with db.engine.connect() as c, c.begin() as t:
        # given a database made before: the constraint said ON DELETE CASCADE
        c.execute(text("ALTER TABLE stories DROP CONSTRAINT stories_protagonist_photo_id_fkey"))
        c.execute(text("ALTER TABLE stories ADD CONSTRAINT stories_protagonist_photo_id_fkey FOREIGN KEY "
                       "(protagonist_photo_id) REFERENCES photos (id) ON DELETE CASCADE"))
        assert action()[1] == "c"
        # when schema.sql is applied, then it is NO ACTION ...
        apply_schema(c)
        migrated = action()
        assert migrated[1] == "a"
        # ... and applying it again leaves that constraint alone (not dropped and re-added)
        apply_schema(c)
        assert action() == migrated
        t.rollback()
