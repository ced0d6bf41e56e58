"""Builds the configured providers once per process (thread-safe, fork-aware)."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from pipeline.config import Settings, settings
from pipeline.errors import PermanentStepError
from pipeline.providers.base import Illustrator, PhotoAnalyzer, StoryWriter
from pipeline.storage import LocalStorage, Storage, check_key


@dataclass(frozen=True)
class Providers:
    vision: PhotoAnalyzer
    writer: StoryWriter
    illustrator: Illustrator
    storage: Storage  # where generated images and books are written


class _Slow:
    """Adds a fixed latency to every call of the wrapped provider (benchmarks and tests),
    so a step's duration is dominated by the 'provider', as it is in production."""

    def __init__(self, inner: Any, delay: float) -> None:
        self._inner = inner
        self._delay = delay

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            time.sleep(self._delay)
            return attr(*args, **kwargs)

        return call


_lock = threading.Lock()
_cached: tuple[int, Providers] | None = None


def _build(s: Settings) -> Providers:
    vision: Any
    writer: Any
    illustrator: Any
    if s.vision_provider == "instant":
        from pipeline.providers.instant import InstantAnalyzer

        vision = InstantAnalyzer()
    elif s.vision_provider == "local":
        from pipeline.providers.local_vision import LocalPhotoAnalyzer

        vision = LocalPhotoAnalyzer()
    else:
        raise SystemExit(f"configuration error: vision provider {s.vision_provider!r} is not available")

    if s.text_provider == "instant":
        from pipeline.providers.instant import InstantWriter

        writer = InstantWriter()
    elif s.text_provider == "local":
        from pipeline.providers.local_text import LocalStoryWriter

        writer = LocalStoryWriter()
    else:
        raise SystemExit(f"configuration error: text provider {s.text_provider!r} is not available")

    if s.image_provider == "instant":
        from pipeline.providers.instant import InstantIllustrator

        illustrator = InstantIllustrator()
    elif s.image_provider == "local":
        from pipeline.providers.local_images import LocalIllustrator

        illustrator = LocalIllustrator()
    else:
        raise SystemExit(f"configuration error: image provider {s.image_provider!r} is not available")

    if s.simulated_latency > 0:
        vision, writer, illustrator = (_Slow(p, s.simulated_latency) for p in (vision, writer, illustrator))

    return Providers(vision, writer, illustrator, output_storage())


def output_storage() -> Storage:
    """Where generated images and books go (cheap to build: no provider SDKs are loaded)."""
    s = settings()
    if s.storage_backend != "local":
        raise SystemExit(f"configuration error: storage backend {s.storage_backend!r} is not available")
    return LocalStorage(s.local_storage_root)


def providers() -> Providers:
    global _cached
    pid = os.getpid()
    if _cached is not None and _cached[0] == pid:
        return _cached[1]
    with _lock:
        if _cached is None or _cached[0] != pid:
            _cached = (pid, _build(settings()))
        return _cached[1]


def read_photo(storage_provider: str, bucket: str | None, object_key: str) -> bytes:
    """The uploaded photo's bytes, from wherever its row says it is."""
    provider = (storage_provider or "").strip().lower()
    if provider == "local":
        root = settings().local_storage_root
        if bucket:
            root = LocalStorage(root).path(check_key(bucket))
        return LocalStorage(root).get(object_key)
    raise PermanentStepError(
        f"Unsupported storage provider {storage_provider!r} for the photo "
        "(this deployment reads 'local' photos)."
    )
