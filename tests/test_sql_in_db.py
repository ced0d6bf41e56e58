"""All SQL lives in db/: the domain packages listed in SQL_FREE neither build SQL text nor run it
through sqlalchemy's ``text()``; they call the db/ functions (db/photos.py, db/stories.py,
db/pages.py, db/provider_jobs.py, ...). Service-free: it reads the source.

SQL_FREE is the list of folders held to this: every domain package (``pipeline``), the Celery
layer (``workers``) and the operators' scripts (``scripts``: the demo reads its progress through
db/operations.py and db/order_repair.py). Left out on purpose: ``bench/`` (measuring tools that
seed bulk rows and time raw queries; they are not shipped code, nothing imports them) and
``tests/`` (the suite checks rows directly, by design).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The folders under the repository root that must hold no SQL (bench/ and tests/ may: see above).
SQL_FREE: list[str] = ["pipeline", "workers", "scripts"]

# Upper-case SQL statement shapes (English prose in lower case is not SQL).
SQL_SHAPES = [
    re.compile(r"\bSELECT\b[\s\S]*\bFROM\b"),
    re.compile(r"\bUPDATE\s+\w+(\s+\w+)?\s+SET\b"),
    re.compile(r"\bINSERT\s+INTO\b"),
    re.compile(r"\bDELETE\s+FROM\b"),
]


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes (documentation may name a statement; it is never run)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                out.add(id(body[0].value))
    return out


def sql_findings(source: str, name: str = "<source>") -> list[str]:
    """Where ``source`` (Python) builds or runs SQL: imports of sqlalchemy's ``text``, calls of
    ``<sqlalchemy module>.text(...)``, and string literals (f-string parts included) shaped like
    SQL statements. Each finding is ``"name:line: what"``."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    found: list[str] = []
    sa_modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            for alias in node.names:
                if alias.name == "text":
                    found.append(f"{name}:{node.lineno}: imports sqlalchemy's text()")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sqlalchemy"):
                    sa_modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "text":
            base = node.func.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in sa_modules:
                found.append(f"{name}:{node.lineno}: calls {base.id}...text()")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            for shape in SQL_SHAPES:
                if shape.search(node.value):
                    found.append(f"{name}:{node.lineno}: SQL in a string ({shape.pattern})")
                    break
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_no_sql_outside_db_in_the_listed_packages() -> None:
    checked = 0
    findings: list[str] = []
    for package in SQL_FREE:
        files = _modules(package)
        assert files, f"{package}: no modules found (renamed? update SQL_FREE)"
        for path in files:
            checked += 1
            findings += sql_findings(path.read_text(), str(path.relative_to(ROOT)))
    assert checked >= 10
    assert not findings, "SQL outside db/ (move it into a db/ function):\n" + "\n".join(findings)


def test_the_check_finds_sql_where_it_is() -> None:
    # db/ is where SQL belongs: the same check finds it there, so it is not blind.
    for module in ("db/photos.py", "db/stories.py", "db/pages.py", "db/provider_jobs.py"):
        hits = sql_findings((ROOT / module).read_text(), module)
        assert any("imports sqlalchemy's text()" in h for h in hits), module
        assert any("SQL in a string" in h for h in hits), module
    sample = '''
import sqlalchemy as sa
from sqlalchemy import text as t

def f(conn, col):
    """Runs UPDATE pages SET x = 1 (documentation only: not a finding)."""
    conn.execute(sa.text("SELECT 1"))
    conn.execute(t(f"UPDATE story_pages p SET {col} = 'pending' WHERE id = :id"))
    conn.execute(t("INSERT INTO step_errors (message) VALUES (:m)"))
    conn.execute(t("DELETE FROM photos WHERE id = :id"))
    return "select the photo from the list"
'''
    hits = sql_findings(sample)
    assert sum("imports sqlalchemy's text()" in h for h in hits) == 1
    assert sum("calls sa...text()" in h for h in hits) == 1
    assert sum("SQL in a string" in h for h in hits) == 3, hits  # UPDATE, INSERT, DELETE; not the prose


def test_column_names_from_callers_are_checked_against_the_schema() -> None:
    # db/ builds SQL from the column names the flow's table passes it: only story_pages' status
    # columns are accepted, and they are exactly the story flow's page steps' columns.
    import pytest

    from db.operations import reset_failed_story
    from db.pages import PAGE_STATUS_COLUMNS, page_column
    from pipeline.stories.stages import PAGE_STAGES

    assert {s.status_column for s in PAGE_STAGES} == PAGE_STATUS_COLUMNS
    assert page_column("image_generation_status") == "image_generation_status"
    for bad in ("status", "text", "text_generation_status = 'x'; --", ""):
        with pytest.raises(ValueError):
            page_column(bad)
    with pytest.raises(ValueError):  # checked before any statement runs (no connection needed)
        reset_failed_story(None, "00000000-0000-0000-0000-000000000000", ["updated_at"])  # type: ignore[arg-type]
