"""Retention's configuration (README "Personal data"): how long photos, face data and books are kept.

Read from the environment once per process (``retention_settings()``); a bad value is a
configuration error (SystemExit naming the variable and what is allowed), found at boot by
pipeline.operations.boot_check. A blank or unset variable takes its default; ``0`` turns that
retention off.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from pipeline.config import env_float, env_int

MAX_DAYS = 3650.0  # ten years: a longer period is a typo, not a policy


@dataclass(frozen=True)
class RetentionSettings:
    """Each field names its variable; defaults in README "Configuration" and "Personal data"."""

    photo_days: float  # RETENTION_PHOTO_DAYS: the upload + face data, after its stories finished; 0 = keep
    book_days: float  # RETENTION_BOOK_DAYS: pictures, books, texts, print files, after the story finished; 0 = keep
    batch_size: int  # RETENTION_BATCH_SIZE: rows per batch (photos, stories, queued deletions)
    run_seconds: float  # RETENTION_RUN_SECONDS: a sweep stops starting new batches after this long

    @property
    def photos_on(self) -> bool:
        """Is photo retention on (RETENTION_PHOTO_DAYS > 0)?"""
        return self.photo_days > 0

    @property
    def books_on(self) -> bool:
        """Is book retention on (RETENTION_BOOK_DAYS > 0)?"""
        return self.book_days > 0


def read_retention_settings(env: Mapping[str, str]) -> RetentionSettings:
    """RetentionSettings from ``env``. Raises SystemExit("configuration error: NAME ...")."""
    return RetentionSettings(
        photo_days=env_float("RETENTION_PHOTO_DAYS", 30.0, 0.0, MAX_DAYS, env=env, note="days; 0 = never delete"),
        book_days=env_float("RETENTION_BOOK_DAYS", 365.0, 0.0, MAX_DAYS, env=env, note="days; 0 = never delete"),
        batch_size=env_int("RETENTION_BATCH_SIZE", 200, 1, 10000, env=env),
        run_seconds=env_float("RETENTION_RUN_SECONDS", 20.0, 0.1, 600.0, env=env),
    )


@lru_cache(maxsize=1)
def retention_settings() -> RetentionSettings:
    """This process's RetentionSettings (read once). SystemExit("configuration error: ...")."""
    return read_retention_settings(os.environ)
