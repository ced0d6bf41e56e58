"""schema.sql is applied as-is; the SQLAlchemy models must describe exactly the same tables."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from db.models import Base
from tests.support import Db

SPEC_TABLES = ("photos", "stories", "story_pages", "orders")


def _type_name(t: object) -> str:
    name = type(t).__name__.upper()
    return {"VARCHAR": "STRING", "UUID": "UUID", "TIMESTAMP": "TIMESTAMP"}.get(name, name)


def test_models_match_schema_column_by_column(db: Db) -> None:
    # given the database built from schema.sql
    insp = inspect(db.engine)
    # then every model table exists with the same columns, types, nullability and defaults
    for table in Base.metadata.sorted_tables:
        cols = {c["name"]: c for c in insp.get_columns(table.name)}
        assert set(cols) == {c.name for c in table.columns}, table.name
        for c in table.columns:
            live = cols[c.name]
            assert live["nullable"] == c.nullable, f"{table.name}.{c.name} nullable"
            assert ("identity" in live) == (c.identity is not None), f"{table.name}.{c.name} identity"
            if c.identity is None:
                assert (live["default"] is not None) == (c.server_default is not None), f"{table.name}.{c.name} default"
                if c.server_default is not None:
                    model_default = str(c.server_default.arg).strip("'").lower()
                    assert model_default.split("(")[0] in live["default"].lower(), (
                        f"{table.name}.{c.name}: default {live['default']} vs {model_default}"
                    )
            model_type = c.type.compile(dialect=db.engine.dialect)
            live_type = live["type"].compile(dialect=db.engine.dialect)
            assert model_type.split("(")[0] == live_type.split("(")[0] or (
                {model_type, live_type} <= {"VARCHAR", "VARCHAR(3)"} and model_type == live_type
            ), f"{table.name}.{c.name}: model {model_type} vs schema {live_type}"
            if "(" in model_type or "(" in live_type:
                assert model_type == live_type, f"{table.name}.{c.name} length"
        # same foreign keys (column -> table.column, on delete)
        live_fks = {
            (
                tuple(fk["constrained_columns"]),
                fk["referred_table"],
                (fk["options"].get("ondelete") or "NO ACTION").upper(),
            )
            for fk in insp.get_foreign_keys(table.name)
        }
        model_fks = {
            ((fk.parent.name,), fk.column.table.name, (fk.ondelete or "NO ACTION").upper()) for fk in table.foreign_keys
        }
        assert live_fks == model_fks, table.name
        # same unique constraints and check constraints (by name)
        live_uq = {tuple(u["column_names"]) for u in insp.get_unique_constraints(table.name)}
        model_uq = {
            tuple(c.name for c in con.columns)
            for con in table.constraints
            if con.__class__.__name__ == "UniqueConstraint"
        }
        model_uq |= {(c.name,) for c in table.columns if c.unique}
        assert live_uq == model_uq, table.name
        live_ck = {c["name"] for c in insp.get_check_constraints(table.name)}
        model_ck = {con.name for con in table.constraints if con.__class__.__name__ == "CheckConstraint"}
        assert live_ck == {str(n) for n in model_ck}, table.name
        # every column the model indexes is indexed in the database
        live_ix = {tuple(i["column_names"]) for i in insp.get_indexes(table.name)}
        for ix in table.indexes:
            assert tuple(c.name for c in ix.columns) in live_ix, f"{table.name}: {ix.name}"


def test_spec_indexes_on_fks_statuses_and_gin(db: Db) -> None:
    insp = inspect(db.engine)
    indexed = {t: {tuple(i["column_names"]) for i in insp.get_indexes(t)} for t in SPEC_TABLES}
    for t, cols in {
        "photos": ["user_id", "status", "ai_processing_status"],
        "stories": ["user_id", "story_theme", "protagonist_photo_id", "status"],
        "story_pages": [
            "story_id",
            "page_number",
            "text_generation_status",
            "image_generation_status",
            "personalization_status",
        ],
        "orders": ["user_id", "story_id", "product_type", "status", "pod_order_id"],
    }.items():
        for col in cols:
            assert (col,) in indexed[t], f"{t}.{col} not indexed"
    gin = db.all("SELECT indexname FROM pg_indexes WHERE indexdef ILIKE '%USING gin%'")
    assert {r["indexname"] for r in gin} >= {"ix_photos_detected_labels", "ix_orders_shipping_address"}


def test_schema_applies_twice(db: Db) -> None:
    from db.engine import apply_schema

    # when schema.sql is applied again on a live database
    with db.engine.begin() as c:
        apply_schema(c)
    # then nothing changed or broke
    tables_with_updated_at = db.one(
        "SELECT count(*) AS n FROM information_schema.columns "
        "WHERE table_schema = 'public' AND column_name = 'updated_at'"
    )["n"]
    triggers = db.one("SELECT count(*) AS n FROM pg_trigger WHERE tgname LIKE 'trg_%_updated_at'")["n"]
    assert triggers == tables_with_updated_at  # one each, not two


def test_updated_at_trigger_for_raw_sql(clean_db: Db) -> None:
    # given a photo row, backdated
    photo = clean_db.photo(None)
    clean_db.exec("UPDATE photos SET updated_at = now() - interval '1 day' WHERE id = :p", p=photo)
    before = clean_db.one("SELECT updated_at FROM photos WHERE id = :p", p=photo)["updated_at"]
    # when a plain SQL writer changes another column
    clean_db.exec("UPDATE photos SET filename = 'x.png' WHERE id = :p", p=photo)
    # then updated_at moved to now
    row = clean_db.one(
        "SELECT updated_at, now() - updated_at < interval '1 minute' AS fresh FROM photos WHERE id = :p", p=photo
    )
    assert row["updated_at"] > before and row["fresh"]


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE stories SET status = 'done' WHERE id = :s",
        "INSERT INTO story_pages (story_id, page_number) VALUES (:s, 0)",
        "INSERT INTO story_pages (story_id, page_number) VALUES (:s, 1), (:s, 1)",
        "UPDATE story_pages SET personalization_status = 'almost' WHERE story_id = :s",
        "INSERT INTO orders (user_id, story_id, product_type, amount, currency) "
        "SELECT user_id, id, 'hardcover_book', -1, 'usd' FROM stories WHERE id = :s",
        "INSERT INTO orders (user_id, story_id, product_type, amount, currency) "
        "SELECT user_id, id, 'hardcover_book', 100, 'us' FROM stories WHERE id = :s",
    ],
)
def test_constraints_reject_bad_rows(clean_db: Db, sql: str) -> None:
    story = clean_db.story(clean_db.photo(None))
    clean_db.exec("INSERT INTO story_pages (story_id, page_number) VALUES (:s, 2)", s=story)
    with pytest.raises(IntegrityError):
        clean_db.exec(sql, s=story)


def test_defaults_follow_spec(clean_db: Db) -> None:
    story = clean_db.story(clean_db.photo(None))
    clean_db.exec("INSERT INTO story_pages (story_id, page_number) VALUES (:s, 1)", s=story)
    s = clean_db.story_row(story)
    p = clean_db.pages(story)[0]
    photo = clean_db.one("SELECT * FROM photos WHERE id = :p", p=s["protagonist_photo_id"])
    assert s["status"] == "pending" and s["title"] is None
    assert p["text_generation_status"] == p["image_generation_status"] == p["personalization_status"] == "pending"
    assert photo["ai_processing_status"] == "pending"
    with clean_db.engine.begin() as c:
        d = c.execute(
            text(
                "SELECT column_default FROM information_schema.columns "
                "WHERE table_name = 'photos' AND column_name = 'status'"
            )
        ).scalar()
    assert "pending_upload" in d
