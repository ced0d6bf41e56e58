"""A simulated remote-job image provider (IMAGE_PROVIDER=simulated): the offline illustrator run as
jobs, so the remote-job path (pipeline/stories/remote_jobs.py), its concurrency quota and its
polling can be measured and tested without a network.

``create`` records a job in Redis and returns its id; ``status`` says ``running`` until the job's
simulated duration (SIMULATED_JOB_SECONDS, default 1) has passed on Redis's clock (so every worker
agrees), then ``succeeded`` with an output URL ``simulated://<id>``; ``download`` draws the picture
then with the offline illustrator (SIMULATED_JOB_IMAGES: ``local``, the default, or ``instant``).
``cancel`` ends a running job as canceled; ``find`` looks through the recent jobs of a kind for
the same input, like Replicate's list. Jobs are kept 2 hours.

Its jobs hold slots of the quota named by SIMULATED_IMAGE_QUOTA (default ``replicate``, the provider
it stands in for: QUOTA_REPLICATE_CONCURRENT caps them); ``provider_jobs.provider`` says
``simulated``. Each job's record (created, seconds, kind) stays readable for benchmarks
(:func:`job_records`).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from collections.abc import Collection
from typing import Any

import redis

from pipeline.kernel.errors import OutputGoneError, PermanentStepError, TransientStepError
from pipeline.providers.base import BoundingBox, Face, JobStatus, Outline, PageRequest, StoryRequest
from pipeline.providers.profile import CharacterProfile

PREFIX = "storycreator:simjobs"
KEEP_SECONDS = 7200


def _env_float(name: str, default: float, lo: float, hi: float) -> float:
    from pipeline.config import env_float

    return env_float(name, default, lo, hi)


def request_json(req: PageRequest) -> dict[str, Any]:
    """A PageRequest as JSON (deterministic for a page), read back by :func:`request_from_json`."""
    st = req.story
    return {"story": {"child_name": st.child_name, "child_age": st.child_age, "theme": st.theme,
                      "page_count": st.page_count, "seed": st.seed,
                      "character": st.character.to_json() if st.character is not None else None},
            "outline": {"title": req.outline.title, "beats": list(req.outline.beats), "style": req.outline.style},
            "page_number": req.page_number, "hint": req.hint, "revision": req.revision}


def request_from_json(d: dict[str, Any]) -> PageRequest:
    """The PageRequest :func:`request_json` wrote."""
    st = d["story"]
    story = StoryRequest(st["child_name"], int(st["child_age"]), st["theme"], int(st["page_count"]), int(st["seed"]),
                         CharacterProfile.from_json(st["character"]) if st["character"] else None)
    o = d["outline"]
    return PageRequest(story, Outline(o["title"], tuple(o["beats"]), o["style"]), int(d["page_number"]),
                       d["hint"], int(d["revision"]))


def _uri_bytes(uri: str) -> bytes:
    """The bytes a job input refers to: a base64 data: URI or a file: URI (local storage, which the
    simulated provider shares with the workers). PermanentStepError for anything else."""
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        try:
            with open(unquote(urlparse(uri).path), "rb") as fh:
                return fh.read()
        except OSError as e:
            raise TransientStepError(f"the simulated provider could not read its input: {e}") from None
    header, sep, payload = uri.partition(",")
    if not uri.startswith("data:") or not sep or not header.endswith(";base64"):
        raise PermanentStepError("The simulated image jobs read data: and file: URIs only (local storage).")
    return base64.b64decode(payload)


def check_env() -> list[str]:
    """SIMULATED_JOB_SECONDS and SIMULATED_JOB_IMAGES read as the provider reads them (SystemExit
    naming a bad one); returns the quota names simulated providers take (SIMULATED_IMAGE_QUOTA,
    SIMULATED_VISION_QUOTA, SIMULATED_TEXT_QUOTA), for their QUOTA_<NAME>_* to be checked too."""
    _env_float("SIMULATED_JOB_SECONDS", 1.0, 0.01, 3600.0)
    images = os.environ.get("SIMULATED_JOB_IMAGES", "local").strip().lower() or "local"
    if images not in ("local", "instant"):
        raise SystemExit(f"configuration error: SIMULATED_JOB_IMAGES={images!r} must be local or instant")
    names = [os.environ.get(f"SIMULATED_{role}_QUOTA", "").strip().lower() for role in ("IMAGE", "VISION", "TEXT")]
    return [n for n in names if n and n != "none"]


class SimulatedImageJobs:
    """ImageJobs whose jobs run on Redis's clock (see the module's docstring)."""

    name = "simulated"

    def __init__(self, client: redis.Redis, *, seconds: float = 1.0, quota: str = "replicate",
                 images: str = "local") -> None:
        self._redis = client
        self.seconds = seconds  # each job's simulated duration
        self.quota = quota  # the concurrency quota its jobs hold slots of (remote_jobs.py)
        if images == "instant":
            from pipeline.providers.instant import InstantIllustrator

            self._illustrator: Any = InstantIllustrator()
        else:
            from pipeline.providers.offline_images import LocalIllustrator

            self._illustrator = LocalIllustrator()

    @classmethod
    def from_env(cls, redis_url: str) -> SimulatedImageJobs:
        """From SIMULATED_JOB_SECONDS (0.01-3600, default 1), SIMULATED_IMAGE_QUOTA (default
        "replicate") and SIMULATED_JOB_IMAGES (local|instant); SystemExit for a bad value."""
        images = os.environ.get("SIMULATED_JOB_IMAGES", "local").strip().lower() or "local"
        if images not in ("local", "instant"):
            raise SystemExit(f"configuration error: SIMULATED_JOB_IMAGES={images!r} must be local or instant")
        quota = os.environ.get("SIMULATED_IMAGE_QUOTA", "replicate").strip().lower() or "replicate"
        client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        return cls(client, seconds=_env_float("SIMULATED_JOB_SECONDS", 1.0, 0.01, 3600.0), quota=quota,
                   images=images)

    # --- inputs ----------------------------------------------------------------------------------

    def base_input(self, req: PageRequest) -> dict[str, Any]:
        """The page's request as JSON (deterministic for a page)."""
        return {"page": request_json(req)}

    def personalize_input(self, base_ref: str, photo_ref: str, face: Face, req: PageRequest) -> dict[str, Any]:
        """The base picture and the face crop (data: URIs) and the page's request."""
        return {"image": base_ref, "face_image": photo_ref, "page": request_json(req)}

    # --- jobs ------------------------------------------------------------------------------------

    def _do(self, fn: Any) -> Any:
        try:
            return fn()
        except redis.RedisError as e:
            raise TransientStepError(f"the simulated image jobs' store (Redis) failed: {type(e).__name__}") from None

    def _now_ms(self) -> int:
        t: Any = self._redis.time()
        sec, usec = t
        return int(sec) * 1000 + int(usec) // 1000

    def create(self, kind: str, model_input: dict[str, Any]) -> str:
        """Start a job of ``kind`` ("base" or "personalize"); returns its id."""
        if kind not in ("base", "personalize"):
            raise ValueError(f"unknown image job kind {kind!r}")
        job_id = uuid.uuid4().hex
        body = json.dumps(model_input, sort_keys=True, separators=(",", ":"))

        def go() -> None:
            now = self._now_ms()
            pipe = self._redis.pipeline()
            pipe.hset(f"{PREFIX}:{job_id}", mapping={"kind": kind, "input": body, "created_ms": now,
                                                      "seconds": self.seconds, "state": "running",
                                                      "sha": hashlib.sha256(body.encode()).hexdigest()})
            pipe.expire(f"{PREFIX}:{job_id}", KEEP_SECONDS)
            pipe.zadd(f"{PREFIX}:recent:{kind}", {job_id: now})
            pipe.zadd(f"{PREFIX}:all", {job_id: now})
            pipe.zremrangebyscore(f"{PREFIX}:all", "-inf", now - KEEP_SECONDS * 1000)
            pipe.zremrangebyscore(f"{PREFIX}:recent:{kind}", "-inf", now - KEEP_SECONDS * 1000)
            pipe.execute()

        self._do(go)
        return job_id

    def find(self, kind: str, model_input: dict[str, Any], created_after: Any,
             exclude: Collection[str] = ()) -> str | None:
        """The newest running or succeeded job of ``kind`` with exactly this input created since
        ``created_after`` (a datetime), other than those in ``exclude``; None if none."""
        from pipeline.providers.replicate_predictions import as_utc

        since = as_utc(created_after)
        floor = int(since.timestamp() * 1000) if since is not None else 0
        sha = hashlib.sha256(json.dumps(model_input, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

        def look() -> str | None:
            ids: Any = self._redis.zrevrangebyscore(f"{PREFIX}:recent:{kind}", "+inf", floor)
            for raw in ids:
                jid = raw.decode()
                if jid in exclude:
                    continue
                rec: Any = self._redis.hmget(f"{PREFIX}:{jid}", "sha", "state")
                if rec[0] is not None and rec[0].decode() == sha and rec[1] != b"canceled":
                    return jid
            return None

        return self._do(look)  # type: ignore[no-any-return]

    def status(self, job_id: str) -> JobStatus:
        """``running`` until the job's duration has passed, then ``succeeded`` (``seconds`` set);
        ``canceled`` if canceled; ``expired`` when the job is no longer kept."""
        def look() -> JobStatus:
            rec: Any = self._redis.hmget(f"{PREFIX}:{job_id}", "created_ms", "seconds", "state")
            if rec[0] is None:
                return JobStatus("expired", error=f"the simulated provider no longer has job {job_id}")
            if rec[2] == b"canceled":
                return JobStatus("canceled", error="The image job was canceled.")
            seconds, now = float(rec[1]), self._now_ms()
            if now < int(rec[0]) + seconds * 1000:
                return JobStatus("running")
            self._redis.hsetnx(f"{PREFIX}:{job_id}", "seen_ms", now)  # when its end was first seen
            return JobStatus("succeeded", output_url=f"simulated://{job_id}", seconds=seconds)

        return self._do(look)  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> None:
        """End a running job as canceled (a finished one stays finished)."""
        def go() -> None:
            rec: Any = self._redis.hmget(f"{PREFIX}:{job_id}", "created_ms", "seconds")
            if rec[0] is not None and self._now_ms() < int(rec[0]) + float(rec[1]) * 1000:
                self._redis.hset(f"{PREFIX}:{job_id}", mapping={"state": "canceled",
                                                                 "seconds": (self._now_ms() - int(rec[0])) / 1000})

        self._do(go)

    def download(self, url: str) -> bytes:
        """The finished job's picture, drawn now by the offline illustrator (PNG bytes).
        OutputGoneError when the job is no longer kept."""
        job_id = url.removeprefix("simulated://")
        rec = self._do(lambda: self._redis.hmget(f"{PREFIX}:{job_id}", "kind", "input"))
        if rec[0] is None:
            raise OutputGoneError(f"the simulated provider no longer has job {job_id}")
        model_input = json.loads(rec[1])
        req = request_from_json(model_input["page"])
        if rec[0] == b"base":
            return bytes(self._illustrator.draw_base(req))
        # A face-swap model gets only the face: the whole crop is the face's box.
        face = Face(BoundingBox(0.27, 0.27, 0.46, 0.46), 99.0)  # face_photo_data_uri's margins
        return bytes(self._illustrator.personalize(_uri_bytes(model_input["image"]),
                                                   _uri_bytes(model_input["face_image"]), face, req))


def job_records(client: redis.Redis) -> list[dict[str, float]]:
    """Every kept job as ``{"created": epoch seconds, "seconds": its duration, "kind": 0 base / 1
    personalize, "seen": when a look first saw it ended (epoch seconds; 0: never)}`` (benchmarks:
    the provider's busy time, and how late its end was noticed)."""
    out = []
    ids: Any = client.zrange(f"{PREFIX}:all", 0, -1)
    for raw in ids:
        rec: Any = client.hmget(f"{PREFIX}:{raw.decode()}", "created_ms", "seconds", "kind", "seen_ms")
        if rec[0] is not None:
            out.append({"created": int(rec[0]) / 1000, "seconds": float(rec[1]),
                        "kind": 0.0 if rec[2] == b"base" else 1.0,
                        "seen": int(rec[3]) / 1000 if rec[3] is not None else 0.0})
    return out
