"""Builds the configured providers once per process (thread-safe, fork-aware)."""
from __future__ import annotations

import base64
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from pipeline.config import Settings, settings
from pipeline.kernel.errors import PermanentStepError
from pipeline.kernel.storage import LocalStorage, Storage, check_key
from pipeline.providers.base import Face, Illustrator, ImageJobs, PageRequest, PhotoAnalyzer, StoryWriter


@dataclass(frozen=True)
class Providers:
    """The configured providers of this process (VISION_PROVIDER, TEXT_PROVIDER,
    IMAGE_PROVIDER, STORAGE_BACKEND), built once by ``providers()``."""

    vision: PhotoAnalyzer
    writer: StoryWriter
    illustrator: Illustrator
    storage: Storage  # where generated images and books are written
    # Set when images come from a remote job provider (Replicate): the image steps then create,
    # follow and collect jobs (pipeline.stories.steps._job_step) instead of calling ``illustrator``.
    image_jobs: ImageJobs | None = None


class _RemoteJobsOnly:
    """The Illustrator slot when images are remote jobs: nothing may call it synchronously."""

    def draw_base(self, req: PageRequest) -> bytes:
        raise RuntimeError("images are remote jobs here (IMAGE_PROVIDER=replicate)")

    def personalize(self, base: bytes, photo: bytes, face: Face, req: PageRequest) -> bytes:
        raise RuntimeError("images are remote jobs here (IMAGE_PROVIDER=replicate)")


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


class _Quoted:
    """Runs each call of the wrapped simulated provider under the shared quota ``quota`` (its
    concurrent cap and rate limits: pipeline/kernel/quota.py QuotaHooks), as a real adapter's
    request runs; QuotaWait when the quota is not free within QUOTA_MAX_INLINE_WAIT."""

    def __init__(self, inner: Any, quota: str) -> None:
        from pipeline.kernel.quota import QuotaHooks

        self._inner = inner
        self._quota = quota
        self._hooks = QuotaHooks()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in _COUNTED:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._hooks.before(self._quota, name)
            t0, outcome = time.monotonic(), "error"
            try:
                result = attr(*args, **kwargs)
                outcome = "ok"
                return result
            finally:
                self._hooks.after(self._quota, name, outcome, time.monotonic() - t0)

        return call


def _quoted(provider: Any, role: str) -> Any:
    """``provider`` under the quota SIMULATED_<ROLE>_QUOTA names (e.g. "openai" for the text a
    simulated writer stands in for: QUOTA_OPENAI_* apply), or as it is when that is unset, empty
    or "none" (the default: offline runs are not throttled unless asked)."""
    quota = os.environ.get(f"SIMULATED_{role}_QUOTA", "").strip().lower()
    if quota in ("", "none") or isinstance(provider, _RemoteJobsOnly):
        return provider
    return _Quoted(provider, quota)


_COUNTED = ("analyze_photo", "write_outline", "write_page", "draw_base", "personalize")  # the providers' calls


class _Counted:
    """Records each call of the wrapped offline provider (pipeline/kernel/usage.py): one call, its
    wall seconds, cost 0, under the running step's meter."""

    def __init__(self, inner: Any, provider: str) -> None:
        self._inner = inner
        self._provider = provider

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in _COUNTED:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            from pipeline.providers.usage_calls import offline_record

            t0 = time.monotonic()
            result = attr(*args, **kwargs)
            offline_record(self._provider, name, time.monotonic() - t0)
            return result

        return call


_lock = threading.Lock()
_cached: tuple[int, Providers] | None = None


def _build(s: Settings) -> Providers:
    vision: Any
    writer: Any
    illustrator: Any
    image_jobs: ImageJobs | None = None
    if s.vision_provider == "instant":
        from pipeline.providers.instant import InstantAnalyzer

        vision = InstantAnalyzer()
    elif s.vision_provider == "local":
        from pipeline.providers.local_vision import LocalPhotoAnalyzer

        vision = LocalPhotoAnalyzer()
    elif s.vision_provider == "rekognition":
        from pipeline.kernel.quota import QuotaHooks
        from pipeline.providers.rekognition import RekognitionAnalyzer

        vision = RekognitionAnalyzer.from_env(hooks=QuotaHooks())
    else:
        raise SystemExit(f"configuration error: vision provider {s.vision_provider!r} is not available")

    if s.text_provider == "instant":
        from pipeline.providers.instant import InstantWriter

        writer = InstantWriter()
    elif s.text_provider == "local":
        from pipeline.providers.offline_text import LocalStoryWriter

        writer = LocalStoryWriter()
    elif s.text_provider == "openai":
        from pipeline.kernel.quota import QuotaHooks
        from pipeline.providers.openai_text import OpenAIStoryWriter

        writer = OpenAIStoryWriter.from_env(hooks=QuotaHooks())
    else:
        raise SystemExit(f"configuration error: text provider {s.text_provider!r} is not available")

    if s.image_provider == "instant":
        from pipeline.providers.instant import InstantIllustrator

        illustrator = InstantIllustrator()
    elif s.image_provider == "local":
        from pipeline.providers.offline_images import LocalIllustrator

        illustrator = LocalIllustrator()
    elif s.image_provider == "replicate":
        from pipeline.kernel.quota import QuotaHooks
        from pipeline.providers.replicate_images import ReplicateImageJobs

        # The cap on concurrent predictions is held by the step for each job's life, not per call.
        image_jobs = ReplicateImageJobs.from_env(hooks=QuotaHooks(concurrent_calls=False))
        illustrator = _RemoteJobsOnly()
    elif s.image_provider == "simulated":
        from pipeline.providers.simulated_jobs import SimulatedImageJobs

        image_jobs = SimulatedImageJobs.from_env(s.redis_url)  # offline images as remote jobs
        illustrator = _RemoteJobsOnly()
    else:
        raise SystemExit(f"configuration error: image provider {s.image_provider!r} is not available")

    if s.simulated_latency > 0:
        vision, writer, illustrator = (_Slow(p, s.simulated_latency) for p in (vision, writer, illustrator))
    # Offline providers under the shared quotas when configured (SIMULATED_<ROLE>_QUOTA): a slot is
    # held while the simulated latency runs, as a real provider's call holds it.
    if s.vision_provider in ("local", "instant"):
        vision = _quoted(vision, "VISION")
    if s.text_provider in ("local", "instant"):
        writer = _quoted(writer, "TEXT")
    if s.image_provider in ("local", "instant"):
        illustrator = _quoted(illustrator, "IMAGE")
    # Offline providers cost nothing but are counted (calls, seconds; README "What each book costs").
    if s.vision_provider in ("local", "instant"):
        vision = _Counted(vision, s.vision_provider)
    if s.text_provider in ("local", "instant"):
        writer = _Counted(writer, s.text_provider)
    if s.image_provider in ("local", "instant"):
        illustrator = _Counted(illustrator, s.image_provider)

    return Providers(vision, writer, illustrator, output_storage(), image_jobs)


def output_storage() -> Storage:
    """Where generated images and books go (cheap to build: no provider SDKs are loaded)."""
    s = settings()
    if s.storage_backend == "s3":
        from pipeline.kernel.quota import QuotaHooks
        from pipeline.providers.s3 import S3Storage

        storage: Any = S3Storage.from_env(hooks=QuotaHooks())
    else:
        storage = LocalStorage(s.local_storage_root)
    if s.simulated_storage_latency > 0:
        storage = _Slow(storage, s.simulated_storage_latency)
    return storage  # type: ignore[no-any-return]


def providers() -> Providers:
    """This process's providers, built on first use from the settings and rebuilt after a fork
    (thread-safe). SystemExit("configuration error: ...") for an unknown or misconfigured provider."""
    global _cached
    pid = os.getpid()
    if _cached is not None and _cached[0] == pid:
        return _cached[1]
    with _lock:
        if _cached is None or _cached[0] != pid:
            _cached = (pid, _build(settings()))
        return _cached[1]


def _photo_place(storage_provider: str, bucket: str | None) -> tuple[Any, str | None]:
    """Where a photo row's object lives: (LocalStorage under the local root, None) for 'local' (its
    ``bucket``, if any, a folder there), or (the S3 reader, bucket) for 's3'. PermanentStepError for
    an 's3' row without a bucket or a storage this deployment does not know."""
    provider = (storage_provider or "").strip().lower()
    if provider == "local":
        root = settings().local_storage_root
        if bucket:
            root = LocalStorage(root).path(check_key(bucket))
        return LocalStorage(root), None
    if provider == "s3":
        if not bucket:
            raise PermanentStepError("The photo row says storage 's3' but names no bucket.")
        return _s3_reader(), bucket
    raise _unsupported(storage_provider)


def photo_place_problem(storage_provider: str, bucket: str | None) -> str | None:
    """Why a photo row's object cannot be reached by this deployment (an unknown storage, an 's3'
    row without a bucket, S3 not configured), or None when it can (``_photo_place``)."""
    try:
        _photo_place(storage_provider, bucket)
    except (PermanentStepError, SystemExit, ValueError) as exc:
        return str(exc)
    return None


def read_photo(storage_provider: str, bucket: str | None, object_key: str) -> bytes:
    """The uploaded photo's bytes, from wherever its row says it is."""
    place, s3_bucket = _photo_place(storage_provider, bucket)
    if s3_bucket is None:
        return place.get(object_key)  # type: ignore[no-any-return]
    return place.read_object(s3_bucket, object_key)  # type: ignore[no-any-return]


def delete_photo(storage_provider: str, bucket: str | None, object_key: str) -> bool:
    """Delete the uploaded photo's object wherever its row says it is (``read_photo``'s places);
    True if it was there, False if it was already gone (idempotent). PermanentStepError for a
    storage this deployment does not know."""
    place, s3_bucket = _photo_place(storage_provider, bucket)
    if s3_bucket is None:
        return place.delete(object_key)  # type: ignore[no-any-return]
    return place.delete_object(s3_bucket, object_key)  # type: ignore[no-any-return]


def _unsupported(storage_provider: str) -> PermanentStepError:
    return PermanentStepError(
        f"Unsupported storage provider {storage_provider!r} for the photo "
        "(this deployment reads 'local' and 's3' photos)."
    )


_s3: tuple[int, Any] | None = None


def _s3_reader() -> Any:
    """An S3 client for photos in any bucket (the uploads bucket need not be our output one)."""
    global _s3
    if _s3 is None or _s3[0] != os.getpid():
        from pipeline.kernel.quota import QuotaHooks
        from pipeline.providers.s3 import S3Objects

        _s3 = (os.getpid(), S3Objects.from_env(hooks=QuotaHooks()))
    return _s3[1]


def _data_uri(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def image_ref(storage: Storage, key: str, content_type: str) -> str:
    """How a remote provider reads one of our images: a time-limited URL where the storage can
    sign one (S3; valid for JOB_MAX_SECONDS + 60 s, as long as the job that reads it may run, at
    most 7 days), else the bytes inline as a data: URI (local storage, demo and tests)."""
    url = getattr(storage, "url", None)
    if callable(url):
        return str(url(key, min(7 * 24 * 3600, int(settings().job_max_seconds) + 60)))
    return _data_uri(storage.get(key), content_type)
