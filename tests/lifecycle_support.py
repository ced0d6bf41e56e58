"""Families as the pipeline leaves them (rows, and files at the keys the steps write), for the data
lifecycle's tests (tests/test_lifecycle*.py; README "Personal data"). Rows go in by plain SQL as
the external API and the workers would write them; files are written where the steps put theirs."""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import Db


@dataclass
class Family:
    """One family: its user, photo, stories (ids as text), the photo's bytes, and the needles a
    privacy scan looks for: ids, the child's name, the email, face-data markers."""

    user: str
    email: str
    photo: str
    photo_bytes: bytes
    name: str
    face_marker: str
    stories: list[str] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)

    def ids(self) -> list[str]:
        return [self.user, self.photo, *self.stories, *self.orders]

    def needles(self) -> list[str]:
        return [*self.ids(), self.email, self.name, self.face_marker]


def family(db: Db, *, bucket: str | None = None) -> Family:
    """A user with an analysed photo (face data carrying a unique marker) stored under the local
    storage root (``bucket``: a folder under it, as photos.bucket means for local storage)."""
    tag = uuid.uuid4().hex[:10]
    email = f"parent-{tag}@example.com"
    user = str(db.one("INSERT INTO users (email) VALUES (:e) RETURNING id", e=email)["id"])
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(2048)
    photo = db.photo(data, user_id=user, bucket=bucket)
    marker = f"face-{tag}"
    db.exec("""UPDATE photos SET ai_processing_status = 'completed',
                      face_details = CAST(:f AS jsonb), character_profile = CAST(:c AS jsonb),
                      detected_labels = CAST(:l AS jsonb) WHERE id = :p""",
            p=photo, f=json.dumps({"faces": [{"marker": marker, "BoundingBox": [1, 2, 3, 4]}]}),
            c=json.dumps({"version": 1, "faces": [{"hair": marker}]}), l=json.dumps([{"name": "Smile"}]))
    return Family(user, email, photo, data, f"Zelda{tag}", marker)


def story(db: Db, fam: Family, *, status: str = "completed", photo: str | None = None, pages: int = 2,
          redone_page: int | None = None) -> str:
    """A story of ``fam`` (with ``photo``, default the family's own) in ``status``, its pages'
    texts naming the child, its outline with the chosen face, and its files: every page's two
    pictures and the book, plus a second revision of ``redone_page`` and its book."""
    sid = str(db.one("""INSERT INTO stories (user_id, child_name, child_age, story_theme, protagonist_photo_id,
                                             title, status)
                        VALUES (:u, :n, 6, 'pirates', :p, :t, :st) RETURNING id""",
                     u=fam.user, n=fam.name, p=photo or fam.photo, t=f"{fam.name} and the Sea", st=status)["id"])
    root = db.storage
    for n in range(1, pages + 1):
        folder = f"stories/{sid}/pages/{n:02d}"
        db.exec("""INSERT INTO story_pages (story_id, page_number, text, base_image_key, personalized_image_key,
                                            text_generation_status, image_generation_status, personalization_status)
                   VALUES (:s, :n, :t, :b, :p, 'completed', 'completed', 'completed')""",
                s=sid, n=n, t=f"{fam.name} sailed on page {n}.", b=f"{folder}/base.png", p=f"{folder}/personalized.png")
        for kind in ("base", "personalized"):
            _write(root / folder / f"{kind}.png", fam.photo_bytes if kind == "personalized" else os.urandom(64))
        if n == redone_page:
            for kind in ("base", "personalized"):
                _write(root / folder / "r2" / f"{kind}.png", fam.photo_bytes)
    _write(root / f"stories/{sid}/book.pdf", f"%PDF {fam.name}".encode())
    _write(root / f"stories/{sid}/book.html", f"<p>{fam.name}</p>".encode())
    if redone_page:
        _write(root / f"stories/{sid}/r2/book.pdf", f"%PDF {fam.name}".encode())
    db.exec("""INSERT INTO story_outlines (story_id, title, beats, protagonist_face)
               VALUES (:s, :t, CAST(:b AS jsonb), CAST(:f AS jsonb))""",
            s=sid, t=f"{fam.name} and the Sea", b=json.dumps([f"{fam.name} finds a map"]),
            f=json.dumps({"index": 0, "marker": fam.face_marker}))
    fam.stories.append(sid)
    return sid


def order(db: Db, fam: Family, story_id: str, status: str) -> str:
    """An order of ``story_id`` in ``status`` with its print files written under orders/<id>/print/."""
    oid = str(db.one("""INSERT INTO orders (user_id, story_id, product_type, status, amount, currency, shipping_address)
                        VALUES (:u, :s, 'hardcover_book', :st, 2999, 'usd', CAST(:a AS jsonb)) RETURNING id""",
                     u=fam.user, s=story_id, st=status, a=json.dumps({"name": fam.name}))["id"])
    for kind in ("interior", "cover"):
        _write(db.storage / f"orders/{oid}/print/{kind}.pdf", f"%PDF {fam.name}".encode())
    fam.orders.append(oid)
    return oid


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def files_of(root: Path, *ids: str) -> list[str]:
    """Every stored file whose path names one of ``ids`` (relative paths, sorted)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and any(i in str(p.relative_to(root)) for i in ids))


def digest(root: Path, *ids: str) -> dict[str, str]:
    """sha256 of every stored file whose path names one of ``ids``: the before/after check that
    another family's files were not touched."""
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in files_of(root, *ids)}
