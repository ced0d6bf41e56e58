"""Object storage: where photos are read from and generated images are written to.

Keys are relative, '/'-separated paths. A key that would leave the storage root (absolute,
'..', NUL, backslashes) is refused: photo keys come from rows written by another service.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

from pipeline.kernel.errors import PermanentStepError


class UnsafeKey(PermanentStepError):
    pass


class ObjectMissing(PermanentStepError):
    pass


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def url(self, key: str, expires_in: int = 3600) -> str: ...


def check_key(key: str) -> str:
    """The key itself if it is a safe relative path; UnsafeKey otherwise."""
    if not key or "\x00" in key or "\\" in key or key.startswith("/") or len(key) > 1024:
        raise UnsafeKey(f"Refusing unsafe storage key {key[:80]!r}.")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafeKey(f"Refusing unsafe storage key {key[:80]!r}.")
    return key


class LocalStorage:
    """Files under one root directory; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, key: str) -> Path:
        p = (self.root / check_key(key)).resolve()
        # Symlinks inside the root could still point outside it.
        if not p.is_relative_to(self.root):
            raise UnsafeKey(f"Refusing storage key {key[:80]!r}: it leaves the storage root.")
        return p

    def put(self, key: str, data: bytes, content_type: str) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Atomic replace: a reader (or a concurrent re-run of the same step) never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        p = self.path(key)
        try:
            return p.read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(f"The stored file {key!r} does not exist.") from None
        except IsADirectoryError:
            raise ObjectMissing(f"The stored key {key!r} is a folder, not a file.") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def url(self, key: str, expires_in: int = 3600) -> str:
        return self.path(key).as_uri()


def page_image_key(story_id: str, page_number: int, kind: str) -> str:
    """Deterministic: a re-run of a step overwrites its own object, never adds a second."""
    return f"stories/{story_id}/pages/{page_number:02d}/{kind}.png"


def book_key(story_id: str, ext: str) -> str:
    return f"stories/{story_id}/book.{ext}"
