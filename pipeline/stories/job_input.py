"""What a page step's remote job is given (pipeline/stories/remote_jobs.py): the model input, built
only once the job's slot is held, and its digest (provider_jobs.input_sha256)."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Any

from db.pages import PageClaim
from pipeline.kernel.step import Timer
from pipeline.providers import registry
from pipeline.stories.page_step import page_request, story_face


def job_input(stage: str, claim: PageClaim, timer: Timer) -> dict[str, Any]:
    """The model input of the claimed page step ``stage`` ("image": the page's request;
    "personalization": the base picture's reference and the child's face crop, cached per photo
    for CROP_CACHE_SECONDS). Reads the photo (the "read" phase of ``timer``); raises the storage's
    and the provider's errors (PermanentStepError for a photo that cannot be read)."""
    p = registry.providers()
    jobs = p.image_jobs
    assert jobs is not None
    req = page_request(claim)
    if stage == "image":
        return jobs.base_input(req)
    assert claim.photo is not None and claim.base_image_key
    face = story_face(claim)
    from pipeline.providers.replicate_inputs import face_photo_data_uri

    with timer.phase("read"):
        base_ref = registry.image_ref(p.storage, claim.base_image_key, "image/png")
        where = (claim.photo["storage_provider"], claim.photo["bucket"], claim.photo["object_key"])
        crop = _crops.get((*where, face.box))
        if crop is None:
            # Only the child's face leaves us, cropped (not the whole family photo), and the swap
            # model cannot pick a sibling's face.
            crop = face_photo_data_uri(registry.read_photo(*where), face)
            _crops.put((*where, face.box), crop)
    return jobs.personalize_input(base_ref, crop, face, req)


class _CropCache:
    """The face crops of the last few photos, for ``CROP_CACHE_SECONDS`` (every page of a story
    sends the same crop; decoding the photo again is what a freed slot would wait for)."""

    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._items: dict[tuple[Any, ...], tuple[float, str]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> str | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None or time.monotonic() - hit[0] > CROP_CACHE_SECONDS:
                return None
            return hit[1]

    def put(self, key: tuple[Any, ...], crop: str) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), crop)
            while len(self._items) > self._size:
                self._items.pop(next(iter(self._items)))


CROP_CACHE_SECONDS = 60.0
_crops = _CropCache()


def input_sha(model_input: dict[str, Any], revision: int = 1) -> str:
    """The hex SHA-256 of ``model_input`` as canonical JSON, with the page's ``revision`` mixed in
    from the second on (provider_jobs.input_sha256)."""
    # A redone page's revision is part of what the job is for (provider_jobs.input_sha256): a new
    # revision's job is never mistaken for the previous one's, even when the model input is the
    # same (a personalization redone from its own stage has the same picture and face).
    keyed = model_input if revision <= 1 else {**model_input, "_revision": revision}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
