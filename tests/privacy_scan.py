"""Where does a family's data still live? A scan of the whole database and the whole storage for
given needles (ids, names, emails, image bytes), for the erasure and retention tests (README
"Personal data"): it knows nothing of the schema, so a table or column added later is scanned too.

Database: every column of every table in the ``public`` schema whose type is textual, UUID or JSON
(``text``, ``varchar``, ``char``, ``uuid``, ``json``, ``jsonb``, arrays of them), compared as text,
case-insensitively (``position(lower(needle) in lower(col::text))``). Storage: every file under the
root, its path and its bytes (a needle's UTF-8 bytes inside the file; an image needle: the whole
file's bytes equal, or the needle contained in the file).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from tests.support import Db

_SCANNED_TYPES = ("text", "character varying", "character", "uuid", "json", "jsonb", "ARRAY")


@dataclass(frozen=True)
class Finding:
    """One needle found: ``where`` is ``table.column`` (database) or a storage path."""

    needle: str
    where: str
    sample: str


def scan_database(db: Db, needles: list[str]) -> list[Finding]:
    """Every (needle, table.column) where some row's value contains the needle (case-insensitive).
    ``sample`` is up to 120 characters of one such value."""
    found: list[Finding] = []
    needles = [n for n in needles if n]
    with db.engine.begin() as c:
        cols = c.execute(text(
            "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
            "JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
            "ORDER BY c.table_name, c.ordinal_position")).all()
        for table, column, data_type in cols:
            if data_type not in _SCANNED_TYPES:
                continue
            for needle in needles:
                row = c.execute(text(
                    f'SELECT left("{column}"::text, 120) FROM "{table}" '
                    f'WHERE position(lower(:n) in lower("{column}"::text)) > 0 LIMIT 1'), {"n": needle}).first()
                if row is not None:
                    found.append(Finding(needle, f"{table}.{column}", row[0]))
    return found


def scan_storage(root: Path, needles: list[str], images: list[bytes] = ()) -> list[Finding]:  # type: ignore[assignment]
    """Every (needle, file) where the file's path relative to ``root`` or its bytes contain a
    textual needle, or its bytes equal or contain one of ``images`` (needle shown as
    ``image#<index>``)."""
    found: list[Finding] = []
    if not root.exists():
        return found
    low = [(n, n.lower().encode()) for n in needles if n]
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        data = path.read_bytes()
        lowered = data.lower()
        for needle, encoded in low:
            if needle.lower() in rel.lower() or encoded in lowered:
                found.append(Finding(needle, rel, rel))
        for i, image in enumerate(images):
            if image and (data == image or image in data):
                found.append(Finding(f"image#{i}", rel, rel))
    return found
