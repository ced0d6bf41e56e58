"""Object storage: where photos are read from and generated images are written to.

Keys are relative, '/'-separated paths. A key that would leave the storage root (absolute,
'..', NUL, backslashes) is refused: photo keys come from rows written by another service.

``LocalStorage`` reads and writes are tried again at once (tenacity, at most ``ATTEMPTS`` tries,
waits of 0.05-0.5 s) when the filesystem fails for a moment: a shared or network mount (NFS, EFS)
answering EIO, ESTALE, ETIMEDOUT, EAGAIN or EBUSY, or the process briefly out of file descriptors
(EMFILE, ENFILE). A missing file, a folder or a permission error is never retried here.

What still fails after the last try, except a missing object (``ObjectMissing``: the key names
nothing), is the storage unusable: a permission lost, a read-only or full filesystem, a mount gone,
the fault that lasted. It is raised as :class:`StorageUnavailable` (the same OSError: errno, message,
file), which the step layer treats as it treats the database unusable: the claim given back, the
step sent again with the capped outage backoff and no bound, nothing recorded as failed, so the
stories go on by themselves when the storage is back (workers/step_task.py). S3 storage
(pipeline/providers/s3.py) is not retried here: its errors go to the step layer's backoff like
every provider's.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import tenacity

from db.engine import ServiceUnavailable
from pipeline.kernel.errors import PermanentStepError

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 3  # tries in all of one read or write, the first included
# errno values a filesystem gives for a moment (Linux names; see errno(3) and nfs(5)).
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EAGAIN, errno.EBUSY,
                              errno.EMFILE, errno.ENFILE})


class UnsafeKey(PermanentStepError):
    """A storage key that is not a safe relative path (absolute, '..', NUL, backslash, > 1024 chars)."""


class ObjectMissing(PermanentStepError):
    """The stored object asked for does not exist (or is a folder)."""


class StorageUnavailable(ServiceUnavailable, OSError):
    """The local storage could not be read or written at all (every OSError but a missing object,
    after the quick retries): not the step's fault nor its input's. An OSError with the original's
    errno, message and file; db.engine.unavailable is true for it (a ServiceUnavailable)."""

    service = "storage"


# What a read says when the key names no object (not an outage): ObjectMissing.
_NO_OBJECT = frozenset({errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP})


def _unavailable(e: OSError) -> StorageUnavailable:
    return StorageUnavailable(e.errno, e.strerror or str(e), e.filename)


class Storage(Protocol):
    """Where photos are read and generated images and books written (LocalStorage, S3Storage)."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` (a MIME ``content_type``) at ``key``, atomically replacing any object there."""
        ...

    def get(self, key: str) -> bytes:
        """The object's bytes; ObjectMissing if there is none."""
        ...

    def exists(self, key: str) -> bool:
        """Is there an object at ``key``?"""
        ...

    def url(self, key: str, expires_in: int | None = None) -> str:
        """Where a reader finds the object: a presigned https URL (S3, ``expires_in`` seconds,
        default ``presigned_url_seconds()``) or a file: URI (local)."""
        ...

    def delete(self, key: str) -> bool:
        """Remove the object at ``key``; True if one was there. An absent object is not an error
        (deletion is idempotent: a re-run after a crash deletes what is left)."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with ``prefix`` (a folder: it must end with ``/``,
        so ``stories/1/`` never touches ``stories/10/``); returns how many were removed.
        UnsafeKey for a prefix without the trailing slash or leaving the root."""
        ...


def _transient_os_error(exc: BaseException) -> bool:
    return (isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS
            and not isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError))


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    log.info("storage: try %d failed (%s); trying again", state.attempt_number, exc)


def retry_filesystem(fn: Callable[[], T]) -> T:
    """``fn()`` (one local read or write), tried again while it raises a transient OSError
    (``TRANSIENT_ERRNOS``), at most ``ATTEMPTS`` tries; the last error is raised unchanged."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(ATTEMPTS),
        wait=tenacity.wait_exponential(multiplier=0.05, min=0.05, max=0.5) + tenacity.wait_random(0, 0.05),
        retry=tenacity.retry_if_exception(_transient_os_error),
        reraise=True,
        before_sleep=_log_retry,
    )
    return retrying(fn)


def check_key(key: str) -> str:
    """The key itself if it is a safe relative path; UnsafeKey otherwise."""
    if not key or "\x00" in key or "\\" in key or key.startswith("/") or len(key) > 1024:
        raise UnsafeKey(f"Refusing unsafe storage key {key[:80]!r}.")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafeKey(f"Refusing unsafe storage key {key[:80]!r}.")
    return key


def check_prefix(prefix: str) -> str:
    """``prefix`` itself if it is a safe folder prefix (a safe key followed by ``/``); UnsafeKey
    otherwise (an empty prefix would name the whole store)."""
    if not prefix.endswith("/"):
        raise UnsafeKey(f"Refusing storage prefix {prefix[:80]!r}: a prefix must end with '/'.")
    check_key(prefix[:-1])
    return prefix


class LocalStorage:
    """Files under one root directory; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, key: str) -> Path:
        """The file for ``key`` under the root; UnsafeKey if it (or a symlink on the way) leaves it."""
        p = (self.root / check_key(key)).resolve()
        # Symlinks inside the root could still point outside it.
        if not p.is_relative_to(self.root):
            raise UnsafeKey(f"Refusing storage key {key[:80]!r}: it leaves the storage root.")
        return p

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write ``data`` at ``key`` atomically (temp file + rename); transient filesystem errors
        are tried again (module doc). UnsafeKey for a key leaving the root; StorageUnavailable for a
        write that still fails."""
        target = self.path(key)
        try:
            retry_filesystem(lambda: self._put(target, data))
        except OSError as e:  # what lasted past the retries: the storage, not this write
            raise _unavailable(e) from e

    @staticmethod
    def _put(target: Path, data: bytes) -> None:
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
        """The file's bytes; ObjectMissing if there is none (or it is a folder), transient
        filesystem errors tried again (module doc), UnsafeKey for a key leaving the root,
        StorageUnavailable for a read that still fails otherwise."""
        p = self.path(key)
        try:
            return retry_filesystem(p.read_bytes)
        except IsADirectoryError:
            raise ObjectMissing(f"The stored key {key!r} is a folder, not a file.") from None
        except OSError as e:
            if e.errno in _NO_OBJECT:
                raise ObjectMissing(f"The stored file {key!r} does not exist.") from None
            raise _unavailable(e) from e

    def exists(self, key: str) -> bool:
        """Is there a file at ``key``?"""
        return self.path(key).is_file()

    def url(self, key: str, expires_in: int | None = None) -> str:
        """The file's ``file:`` URI (``expires_in`` does not apply: local files do not expire)."""
        return self.path(key).as_uri()

    def delete(self, key: str) -> bool:
        """Unlink the file (transient errors tried again); True if it was there. Emptied parent
        folders up to the root are removed too. StorageUnavailable for an unlink that still fails."""
        p = self.path(key)

        def unlink() -> bool:
            try:
                p.unlink()
            except (FileNotFoundError, NotADirectoryError):
                return False
            return True

        try:
            gone = retry_filesystem(unlink)
        except IsADirectoryError:
            return False
        except OSError as e:
            raise _unavailable(e) from e
        self._prune(p.parent)
        return gone

    def delete_prefix(self, prefix: str) -> int:
        """Remove the folder ``prefix`` (ending in ``/``) and every file under it; the count of
        files removed. Symlinks are removed, never followed."""
        folder = self.path(check_prefix(prefix).rstrip("/"))
        if not folder.is_dir():
            return 0
        count = 0
        for dirpath, dirnames, filenames in os.walk(folder, topdown=False):
            for name in filenames:
                try:
                    retry_filesystem(functools.partial(os.unlink, os.path.join(dirpath, name)))
                    count += 1
                except FileNotFoundError:
                    pass
                except OSError as e:
                    raise _unavailable(e) from e
            for name in dirnames:
                d = os.path.join(dirpath, name)
                if os.path.islink(d):
                    os.unlink(d)
                else:
                    with contextlib.suppress(OSError):
                        os.rmdir(d)
        with contextlib.suppress(OSError):
            folder.rmdir()
        self._prune(folder.parent)
        return count

    def _prune(self, folder: Path) -> None:
        """Remove empty folders from ``folder`` up to (not including) the root."""
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


PRESIGNED_URL_DEFAULT = 900  # seconds: 15 minutes
# SigV4 presigned URLs cannot live longer (S3 User Guide, "Sharing objects with presigned URLs")
PRESIGNED_URL_MAX = 7 * 24 * 3600


def presigned_url_seconds() -> int:
    """PRESIGNED_URL_SECONDS: how long a link to a stored object lives when the caller does not say
    (default 900 s; 1 s to 7 days, SigV4's limit). Raises SystemExit("configuration error: ...")."""
    from pipeline.config import env_int

    return env_int("PRESIGNED_URL_SECONDS", PRESIGNED_URL_DEFAULT, 1, PRESIGNED_URL_MAX)


def page_image_key(story_id: str, page_number: int, kind: str, revision: int = 1) -> str:
    """Deterministic: a re-run of a step overwrites its own object, never adds a second. Revision
    1 (the story as first made) keeps ``stories/<id>/pages/<NN>/<kind>.png``; a redone page's
    revision ``r`` goes to ``stories/<id>/pages/<NN>/r<r>/<kind>.png``, so the previous picture
    stays readable until the page row points at the new one (README "Redoing a page")."""
    folder = f"stories/{story_id}/pages/{page_number:02d}"
    return f"{folder}/{kind}.png" if revision <= 1 else f"{folder}/r{revision}/{kind}.png"


def book_key(story_id: str, ext: str, revision: int = 1) -> str:
    """Where a story's book goes (ext "pdf" or "html"): ``stories/<id>/book.<ext>`` for revision 1,
    ``stories/<id>/r<revision>/book.<ext>`` for a book rebuilt after a redo (a new key: the
    previous book stays readable until stories.book_pdf_key / book_html_key name the new one)."""
    return f"stories/{story_id}/book.{ext}" if revision <= 1 else f"stories/{story_id}/r{revision}/book.{ext}"
