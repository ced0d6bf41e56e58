"""ReplicateImageJobs with the real ``replicate`` SDK against an in-process fake Replicate API."""
from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline.kernel.errors import OutputGoneError, PermanentStepError, StepError, TransientStepError
from pipeline.providers.base import Face, JobStatus, Outline, PageRequest, StoryRequest
from pipeline.providers.local_vision import LocalPhotoAnalyzer
from pipeline.providers.offline_text import LocalStoryWriter
from pipeline.providers.replicate_images import OutputExpiredError, ReplicateImageJobs, prediction_status
from pipeline.providers.replicate_inputs import data_uri, face_photo_data_uri
from pipeline.providers.replicate_predictions import is_retryable_failure
from tests.fakes.replicate_server import FakeReplicate, problem
from tests.support import astronaut_png, faceless_png

TOKEN = "r8_TESTtokenDoNotLeak0123456789abcdef"
SWAP = "codeplugtech/face-swap:" + "a" * 64
STORY = StoryRequest("Sam", 6, "space_adventure", 4, 4242)


class RecordingHooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.refuse = False

    def before(self, provider: str, operation: str) -> None:
        self.calls.append(("before", provider, operation))
        if self.refuse:
            raise TransientStepError("quota full", retry_after=2)

    def after(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        assert seconds >= 0
        self.calls.append(("after", provider, operation, outcome))

    def outcomes(self) -> list[tuple[str, str]]:
        return [(c[2], c[3]) for c in self.calls if c[0] == "after"]


@pytest.fixture
def fake() -> Iterator[FakeReplicate]:
    server = FakeReplicate(TOKEN, run_seconds=0.3, versions={SWAP.split(":")[1]: SWAP.split(":")[0]}).start()
    yield server
    server.stop()


@pytest.fixture
def hooks() -> RecordingHooks:
    return RecordingHooks()


@pytest.fixture
def jobs(fake: FakeReplicate, hooks: RecordingHooks) -> Iterator[ReplicateImageJobs]:
    # 5 s: the fake draws outputs in the test's own process, which a loaded machine slows down;
    # the timeout tests use ``quick``.
    adapter = ReplicateImageJobs(TOKEN, base_url=fake.base_url, personalize=SWAP, timeout=5.0, hooks=hooks)
    yield adapter
    adapter.close()


@pytest.fixture
def quick(fake: FakeReplicate, hooks: RecordingHooks) -> Iterator[ReplicateImageJobs]:
    """An adapter with a 0.5 s timeout, for answers that never come."""
    adapter = ReplicateImageJobs(TOKEN, base_url=fake.base_url, personalize=SWAP, timeout=0.5, hooks=hooks)
    yield adapter
    adapter.close()


@pytest.fixture(scope="module")
def outline() -> Outline:
    return LocalStoryWriter().write_outline(STORY)


@pytest.fixture(scope="module")
def photo() -> bytes:
    return astronaut_png()


@pytest.fixture(scope="module")
def face(photo: bytes) -> Face:
    found = LocalPhotoAnalyzer().analyze_photo(photo).primary_face
    assert found is not None
    return found


def page(outline: Outline, n: int = 2) -> PageRequest:
    return PageRequest(STORY, outline, n)


def wait_done(jobs: ReplicateImageJobs, job_id: str, limit: float = 5.0) -> JobStatus:
    deadline = time.monotonic() + limit
    while (st := jobs.status(job_id)).state == "running":
        assert time.monotonic() < deadline, "prediction never finished"
        time.sleep(0.05)
    return st


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size


def assert_clean(exc: BaseException) -> None:
    """No secret in anything a StepError carries (message, repr, cause chain)."""
    seen: BaseException | None = exc
    while seen is not None:
        assert TOKEN not in str(seen) and TOKEN not in repr(seen)
        seen = seen.__cause__


# --- inputs -----------------------------------------------------------------------------------


def test_base_input_is_deterministic_private_and_shares_the_story_seed(jobs: ReplicateImageJobs,
                                                                       outline: Outline) -> None:
    assert any("Sam" in b for b in outline.beats)  # the writer's beats do name the child
    p2 = jobs.base_input(page(outline, 2))
    assert p2 == jobs.base_input(page(outline, 2))
    for n in range(1, STORY.page_count + 1):
        inp = jobs.base_input(page(outline, n))
        assert "Sam" not in str(inp)
        assert inp["seed"] == STORY.seed and inp["num_outputs"] == 1 and inp["output_format"] == "png"
        assert outline.style in inp["prompt"] and "among the stars" in inp["prompt"]
    assert jobs.base_input(page(outline, 1))["prompt"] != p2["prompt"]
    with pytest.raises(PermanentStepError, match="Unknown story theme"):
        jobs.base_input(PageRequest(StoryRequest("Sam", 6, "zombies", 4, 1), outline, 1))


# --- happy paths ------------------------------------------------------------------------------


def test_base_create_poll_download_gives_a_real_png(jobs: ReplicateImageJobs, fake: FakeReplicate,
                                                    hooks: RecordingHooks, outline: Outline) -> None:
    inp = jobs.base_input(page(outline))
    job_id = jobs.create("base", inp)
    assert jobs.status(job_id) == JobStatus("running")  # returned at once, no waiting
    done = wait_done(jobs, job_id)
    assert done.state == "succeeded" and done.output_url
    png = jobs.download(done.output_url)
    assert png_size(png) == (960, 720)

    create = fake.requests_to("POST", "/v1/")
    assert [r["path"] for r in create] == ["/v1/models/black-forest-labs/flux-schnell/predictions"]
    assert create[0]["json"] == {"input": inp}
    assert create[0]["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert "prefer" not in create[0]["headers"]
    download = fake.requests_to("GET", "/files/")
    assert len(download) == 1 and "authorization" not in download[0]["headers"]  # token stays at the API
    ops = hooks.outcomes()
    assert ops[0] == ("create", "ok") and ops[-1] == ("download", "ok")
    assert {op for op, _ in ops} == {"create", "get", "download"}
    assert len([c for c in hooks.calls if c[0] == "before"]) == len(ops) == len(fake.requests)


def test_version_target_posts_to_predictions(fake: FakeReplicate, outline: Outline) -> None:
    version = "b" * 64
    adapter = ReplicateImageJobs(TOKEN, base_url=fake.root, base=f"stability-ai/sdxl:{version}", timeout=5.0)
    try:
        inp = adapter.base_input(page(outline))
        job_id = adapter.create("base", inp)
        assert fake.requests_to("POST", "/v1/predictions")[0]["json"] == {"version": version, "input": inp}
        assert adapter.find("base", inp, datetime.now(UTC) - timedelta(minutes=1)) == job_id
    finally:
        adapter.close()


def test_personalize_with_data_uris_composites_the_face(jobs: ReplicateImageJobs, outline: Outline,
                                                        photo: bytes, face: Face) -> None:
    base = jobs.download(wait_done(jobs, jobs.create("base", jobs.base_input(page(outline)))).output_url or "")
    inp = jobs.personalize_input(data_uri(base), data_uri(photo), face, page(outline))
    assert inp == {"input_image": data_uri(base), "swap_image": data_uri(photo)}
    done = wait_done(jobs, jobs.create("personalize", inp))
    assert done.state == "succeeded", done
    out = jobs.download(done.output_url or "")
    assert png_size(out) == png_size(base)
    assert out != base
    with Image.open(io.BytesIO(out)) as a, Image.open(io.BytesIO(base)) as b:
        diff = np.asarray(a.convert("RGB"), dtype=np.int16) - np.asarray(b.convert("RGB"), dtype=np.int16)
    changed = int(np.count_nonzero(np.abs(diff).sum(axis=2)))
    assert changed > 5000  # a face, not a few stray pixels


def test_personalize_from_output_url_and_face_crop(fake: FakeReplicate, jobs: ReplicateImageJobs,
                                                   outline: Outline, photo: bytes, face: Face) -> None:
    base_done = wait_done(jobs, jobs.create("base", jobs.base_input(page(outline, 3))))
    crop = face_photo_data_uri(photo, face)
    assert crop.startswith("data:image/jpeg;base64,") and len(crop) < len(data_uri(photo)) / 4
    inp = jobs.personalize_input(base_done.output_url or "", crop, face, page(outline, 3))
    done = wait_done(jobs, jobs.create("personalize", inp))
    assert done.state == "succeeded", done
    assert jobs.download(done.output_url or "") != jobs.download(base_done.output_url or "")
    assert fake.created[-1]["version"] == "a" * 64 and fake.created[-1]["model"] == "codeplugtech/face-swap"


def test_swap_image_without_a_face_fails_the_job(jobs: ReplicateImageJobs, outline: Outline) -> None:
    base = jobs.download(wait_done(jobs, jobs.create("base", jobs.base_input(page(outline)))).output_url or "")
    inp = jobs.personalize_input(data_uri(base), data_uri(faceless_png()), Face(box=_box(), confidence=90),
                                 page(outline))
    done = wait_done(jobs, jobs.create("personalize", inp))
    assert done.state == "failed" and "No face" in (done.error or "")


def _box() -> Any:
    from pipeline.providers.base import BoundingBox

    return BoundingBox(0.4, 0.4, 0.2, 0.2)


# --- find -------------------------------------------------------------------------------------


def test_find_recognises_the_same_input_only_since_created_after(jobs: ReplicateImageJobs,
                                                                 hooks: RecordingHooks, outline: Outline) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    inp = jobs.base_input(page(outline, 1))
    job_id = jobs.create("base", inp)
    assert jobs.find("base", dict(reversed(list(inp.items()))), before) == job_id  # key order is irrelevant
    assert jobs.find("base", jobs.base_input(page(outline, 2)), before) is None
    assert jobs.find("base", inp, datetime.now(UTC) + timedelta(seconds=1)) is None
    assert jobs.find("personalize", inp, before) is None  # another model
    assert jobs.find("base", inp, before.timestamp()) == job_id
    assert ("list", "ok") in hooks.outcomes()


def test_find_follows_pages_and_stops_at_older_predictions(fake: FakeReplicate, jobs: ReplicateImageJobs,
                                                           outline: Outline) -> None:
    fake.page_size = 2
    inputs = [jobs.base_input(page(outline, 1)) | {"seed": k} for k in range(8)]
    for inp in inputs[:4]:  # made before the cutoff: never recognised
        jobs.create("base", inp)
    time.sleep(0.05)
    cutoff = datetime.now(UTC)
    time.sleep(0.05)
    ids = [jobs.create("base", inp) for inp in inputs[4:]]
    # Newest first, 2 a page: [7, 6] [5, 4] [3, 2] [1, 0].
    lists = lambda: len(fake.requests_to("GET", "/v1/predictions"))  # noqa: E731
    assert jobs.find("base", inputs[4], cutoff) == ids[0]
    assert lists() == 2
    assert jobs.find("base", inputs[0], cutoff) is None  # exists, but from before the cutoff
    assert lists() == 2 + 3  # stopped at the first older prediction, page 3 of 4
    assert jobs.find("base", inputs[6], cutoff - timedelta(hours=1)) == ids[2]
    assert jobs.find("base", inputs[0] | {"seed": 99}, 0) is None  # follows every page when asked to
    assert lists() == 2 + 3 + 1 + 4


def test_find_skips_failed_predictions(fake: FakeReplicate, jobs: ReplicateImageJobs, outline: Outline) -> None:
    fake.next_outcome("failed", error="Prediction interrupted; please retry (code: PA)")
    inp = jobs.base_input(page(outline))
    job_id = jobs.create("base", inp)
    assert wait_done(jobs, job_id).state == "failed"
    assert jobs.find("base", inp, datetime.now(UTC) - timedelta(minutes=1)) is None


# --- job outcomes -----------------------------------------------------------------------------


def test_content_policy_failure_is_explained_and_not_retryable(fake: FakeReplicate, jobs: ReplicateImageJobs,
                                                               outline: Outline) -> None:
    fake.next_outcome("failed", error="NSFW content detected. Try running it again with a different prompt.")
    st = wait_done(jobs, jobs.create("base", jobs.base_input(page(outline))))
    assert st.state == "failed" and st.output_url is None
    assert "content filter" in (st.error or "") and "NSFW content detected" in (st.error or "")
    assert not is_retryable_failure(st)

    fake.next_outcome("failed", error="Prediction interrupted; please retry (code: PA)")
    st = wait_done(jobs, jobs.create("base", jobs.base_input(page(outline, 3))))
    assert st.state == "failed" and is_retryable_failure(st)


def test_canceled_outcome(fake: FakeReplicate, jobs: ReplicateImageJobs, outline: Outline) -> None:
    fake.next_outcome("canceled")
    st = wait_done(jobs, jobs.create("base", jobs.base_input(page(outline))))
    assert st.state == "canceled" and st.output_url is None


def test_cancel_stops_a_running_prediction(fake: FakeReplicate, jobs: ReplicateImageJobs, hooks: RecordingHooks,
                                           outline: Outline) -> None:
    job_id = jobs.create("base", jobs.base_input(page(outline)))
    jobs.cancel(job_id)
    assert [r["path"] for r in fake.requests_to("POST", f"/v1/predictions/{job_id}")] == [
        f"/v1/predictions/{job_id}/cancel"]
    assert ("cancel", "ok") in hooks.outcomes()
    time.sleep(0.35)
    assert jobs.status(job_id).state == "canceled"
    assert fake.prediction(job_id)["output"] is None


def test_expired_output_is_output_gone_on_download_and_expired_in_status(
        jobs: ReplicateImageJobs, fake: FakeReplicate, hooks: RecordingHooks, outline: Outline) -> None:
    fake.output_ttl = 0.4
    job_id = jobs.create("base", jobs.base_input(page(outline)))
    done = wait_done(jobs, job_id)
    time.sleep(0.5)
    with pytest.raises(OutputExpiredError, match="HTTP 404") as info:
        jobs.download(done.output_url or "")
    assert isinstance(info.value, OutputGoneError) and isinstance(info.value, PermanentStepError)
    assert hooks.outcomes()[-1] == ("download", "client_error")
    # After the hour, Replicate shows the prediction with its output (and input, logs) removed:
    # that is "expired" (make a new one), not a failed model run.
    later = jobs.status(job_id)
    assert later == JobStatus("expired", error="Replicate removed the output (data_removed)")
    shown = fake.prediction(job_id)
    assert shown["data_removed"] is True and shown["output"] is None and shown["input"] == {}


# Replicate's statuses (https://replicate.com/docs/topics/predictions/lifecycle) and the ways a
# succeeded prediction's output can be gone (data retention: removed after about an hour).
URL = "https://replicate.delivery/xezq/abc/out-0.png"


@pytest.mark.parametrize(("prediction", "state", "retryable"), [
    ({"status": "starting", "output": None}, "running", False),
    ({"status": "processing", "output": None}, "running", False),
    ({"status": "succeeded", "output": [URL], "data_removed": False}, "succeeded", False),
    ({"status": "succeeded", "output": URL}, "succeeded", False),
    ({"status": "succeeded", "output": None, "data_removed": True}, "expired", False),
    ({"status": "succeeded", "output": [URL], "data_removed": True}, "expired", False),
    ({"status": "succeeded", "output": None}, "expired", False),
    ({"status": "succeeded", "output": []}, "expired", False),
    ({"status": "succeeded", "output": [""]}, "expired", False),
    ({"status": "succeeded", "output": ""}, "expired", False),
    ({"status": "succeeded", "output": {"image": 3}}, "expired", False),
    ({"status": "failed", "error": "NSFW content detected"}, "failed", False),
    ({"status": "failed", "error": "CUDA out of memory"}, "failed", True),
    ({"status": "failed", "error": None}, "failed", False),
    ({"status": "aborted", "error": None}, "failed", True),
    ({"status": "canceled"}, "canceled", False),
])
def test_prediction_status_classifies_every_outcome(prediction: dict[str, Any], state: str,
                                                    retryable: bool) -> None:
    st = prediction_status(prediction)
    assert st.state == state
    assert (st.output_url == URL) == (state == "succeeded")
    assert is_retryable_failure(st) == retryable
    if state in ("expired", "failed", "canceled"):
        assert st.error  # always a reason for the operator


@pytest.mark.parametrize("status", [None, "queued", 7])
def test_prediction_status_without_a_known_status_is_transient(status: Any) -> None:
    with pytest.raises(TransientStepError, match="unknown status"):
        prediction_status({"status": status})


@pytest.mark.parametrize("code", [401, 403, 404, 410])
def test_output_file_gone_codes_are_output_expired_not_credentials(fake: FakeReplicate, jobs: ReplicateImageJobs,
                                                                   code: int) -> None:
    """The output host is asked without our token: a 401/403 there is an expired signed URL."""
    fake.script([("status", code, {}, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message>")])
    with pytest.raises(OutputExpiredError, match=f"HTTP {code}") as info:
        jobs.download(f"{fake.root}/files/abc.png")
    assert "REPLICATE_API_TOKEN" not in str(info.value)


@pytest.mark.parametrize(("step", "tries"), [(("status", 500, {}, "oops"), 3), (("status", 429, {}, "slow down"), 1),
                                             (("close",), 3), (("hang", 2.0), 1)])
def test_output_download_hiccups_stay_transient(fake: FakeReplicate, quick: ReplicateImageJobs,
                                                step: tuple[Any, ...], tries: int) -> None:
    """Not gone, just not now: the same download is tried again, no new prediction. (A 5xx or a
    dropped connection is first tried 3 times in the call; throttling and a read timeout once.)"""
    fake.script([step] * tries)
    with pytest.raises(TransientStepError):
        quick.download(f"{fake.root}/files/abc.png")
    assert len(fake.requests_to("GET", "/files/")) == tries


def test_purged_prediction_is_expired_and_never_found(fake: FakeReplicate, jobs: ReplicateImageJobs,
                                                      outline: Outline) -> None:
    fake.next_retention(purge_after=0.0)
    inp = jobs.base_input(page(outline))
    job_id = jobs.create("base", inp)
    time.sleep(0.4)
    st = jobs.status(job_id)
    assert st.state == "expired" and job_id in (st.error or "") and "404" in (st.error or "")
    assert jobs.find("base", inp, datetime.now(UTC) - timedelta(minutes=1)) is None


def test_find_skips_expired_and_excluded_predictions(fake: FakeReplicate, jobs: ReplicateImageJobs,
                                                     outline: Outline) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    inp = jobs.base_input(page(outline))
    fake.next_retention(output_ttl=0.0)
    gone = jobs.create("base", inp)
    assert wait_done(jobs, gone).state == "expired"
    assert jobs.find("base", inp, since) is None  # the output is gone: finding it would not help
    fake.next_retention(file_ttl=0.0)  # the prediction still lists its URL; the file is gone
    listed = jobs.create("base", inp)
    assert wait_done(jobs, listed).state == "succeeded"
    assert jobs.find("base", inp, since) == listed
    assert jobs.find("base", inp, since, exclude=[listed]) is None  # an earlier job of the same step


def test_aborted_prediction_is_read_despite_the_sdk_model(fake: FakeReplicate, jobs: ReplicateImageJobs,
                                                          outline: Outline) -> None:
    """The SDK's Prediction model rejects ``aborted``; we read Replicate's JSON ourselves, in get
    and in list (one aborted prediction must not break a page of results)."""
    fake.next_outcome("aborted")
    inp = jobs.base_input(page(outline))
    job_id = jobs.create("base", inp)
    st = wait_done(jobs, job_id)
    assert st.state == "failed" and "aborted" in (st.error or "") and is_retryable_failure(st)
    other = jobs.create("base", jobs.base_input(page(outline, 3)))
    assert jobs.find("base", jobs.base_input(page(outline, 3)), datetime.now(UTC) - timedelta(minutes=1)) == other
    assert jobs.find("base", inp, datetime.now(UTC) - timedelta(minutes=1)) is None


# --- faults on the API --------------------------------------------------------------------------


def test_429_on_create_is_transient_with_retry_after_and_one_request(jobs: ReplicateImageJobs,
                                                                     fake: FakeReplicate, hooks: RecordingHooks,
                                                                     outline: Outline) -> None:
    fake.script([("status", 429, {"Retry-After": "7"},
                  problem(429, "Request was throttled", "Request was throttled. Expected available in 7 seconds."))])
    with pytest.raises(TransientStepError, match="429") as info:
        jobs.create("base", jobs.base_input(page(outline)))
    assert info.value.retry_after == 7
    assert len(fake.requests) == 1 and fake.created == []
    assert hooks.outcomes() == [("create", "throttled")]
    assert_clean(info.value)


@pytest.mark.parametrize("code", [429, 503, 504])
def test_retryable_status_on_get_is_not_retried_by_the_sdk(jobs: ReplicateImageJobs, fake: FakeReplicate,
                                                           outline: Outline, code: int) -> None:
    job_id = jobs.create("base", jobs.base_input(page(outline)))
    fake.script([("status", code, {"Retry-After": "1"}, problem(code, "Busy", "try later"))])
    t0 = time.monotonic()
    with pytest.raises(TransientStepError, match=str(code)) as info:
        jobs.status(job_id)
    assert time.monotonic() - t0 < 0.5  # no sleep for Retry-After inside the SDK
    assert len(fake.requests_to("GET", "/v1/predictions/")) == 1
    assert info.value.retry_after == 1
    assert_clean(info.value)


@pytest.mark.parametrize("code", [500, 502, 503])
def test_5xx_on_create_is_transient(jobs: ReplicateImageJobs, fake: FakeReplicate, hooks: RecordingHooks,
                                    outline: Outline, code: int) -> None:
    fake.script([("status", code, {}, "<html>upstream broke</html>")])
    with pytest.raises(TransientStepError, match=f"HTTP {code}.*upstream broke") as info:
        jobs.create("base", jobs.base_input(page(outline)))
    assert len(fake.requests) == 1
    assert hooks.outcomes() == [("create", "server_error")]
    assert_clean(info.value)


@pytest.mark.parametrize("op", ["create", "get", "list", "cancel"])
def test_hang_past_timeout_is_transient_after_one_request(quick: ReplicateImageJobs, fake: FakeReplicate,
                                                          hooks: RecordingHooks, outline: Outline, op: str) -> None:
    jobs = quick
    inp = jobs.base_input(page(outline))
    job_id = jobs.create("base", inp) if op != "create" else ""
    n = len(fake.requests)
    fake.script([("hang", 2.0)])
    t0 = time.monotonic()
    with pytest.raises(TransientStepError, match="in time") as info:
        if op == "create":
            jobs.create("base", inp)
        elif op == "get":
            jobs.status(job_id)
        elif op == "list":
            jobs.find("base", inp, 0)
        else:
            jobs.cancel(job_id)
    assert 0.4 < time.monotonic() - t0 < 1.5
    assert len(fake.requests) == n + 1
    assert hooks.outcomes()[-1] == (op, "timeout")
    assert_clean(info.value)


def test_connection_closed_without_answer_is_transient(jobs: ReplicateImageJobs, fake: FakeReplicate,
                                                       hooks: RecordingHooks, outline: Outline) -> None:
    fake.script([("close",)])
    with pytest.raises(TransientStepError, match="Could not reach Replicate"):
        jobs.create("base", jobs.base_input(page(outline)))
    assert len(fake.requests) == 1
    assert hooks.outcomes() == [("create", "connection_error")]


def test_connection_refused_is_transient(outline: Outline) -> None:
    dead = FakeReplicate(TOKEN).start()
    url = dead.base_url
    dead.stop()
    adapter = ReplicateImageJobs(TOKEN, base_url=url, timeout=0.5)
    with pytest.raises(TransientStepError, match="Could not reach Replicate") as info:
        adapter.create("base", adapter.base_input(page(outline)))
    assert_clean(info.value)


@pytest.mark.parametrize("op", ["create", "get", "list"])
def test_malformed_json_is_transient(jobs: ReplicateImageJobs, fake: FakeReplicate, hooks: RecordingHooks,
                                     outline: Outline, op: str) -> None:
    inp = jobs.base_input(page(outline))
    job_id = jobs.create("base", inp) if op != "create" else ""
    fake.script([("malformed",)])
    with pytest.raises(TransientStepError, match="malformed"):
        if op == "create":
            jobs.create("base", inp)
        elif op == "get":
            jobs.status(job_id)
        else:
            jobs.find("base", inp, 0)
    assert hooks.outcomes()[-1] == (op, "malformed")


def test_wrong_token_is_permanent_and_never_quoted(fake: FakeReplicate, outline: Outline) -> None:
    wrong = "r8_WRONGtokenAlsoSecret9876543210"
    hooks = RecordingHooks()
    adapter = ReplicateImageJobs(wrong, base_url=fake.base_url, timeout=0.5, hooks=hooks)
    with pytest.raises(PermanentStepError, match="REPLICATE_API_TOKEN") as info:
        adapter.create("base", adapter.base_input(page(outline)))
    assert "401" in str(info.value)
    assert wrong not in str(info.value) and wrong not in repr(info.value)
    assert hooks.outcomes() == [("create", "client_error")]
    fake.script([("status", 403, {}, problem(403, "Forbidden", "You do not have permission"))])
    with pytest.raises(PermanentStepError, match="REPLICATE_API_TOKEN"):
        ReplicateImageJobs(TOKEN, base_url=fake.base_url, timeout=0.5).status("abc")


def test_provider_text_echoing_the_token_is_redacted(jobs: ReplicateImageJobs, fake: FakeReplicate,
                                                     outline: Outline) -> None:
    fake.script([("status", 500, {}, problem(500, "Internal error", f"bad header Bearer {TOKEN}"))])
    with pytest.raises(TransientStepError, match="redacted") as info:
        jobs.create("base", jobs.base_input(page(outline)))
    assert_clean(info.value)
    fake.next_outcome("failed", error=f"could not authenticate {TOKEN}")
    st = wait_done(jobs, jobs.create("base", jobs.base_input(page(outline))))
    assert st.state == "failed" and TOKEN not in (st.error or "")


def test_422_is_permanent_with_the_provider_detail(jobs: ReplicateImageJobs, fake: FakeReplicate,
                                                   hooks: RecordingHooks) -> None:
    with pytest.raises(PermanentStepError, match="HTTP 422.*prompt is required") as info:
        jobs.create("base", {"seed": 1})
    assert len(fake.requests) == 1 and fake.created == []
    assert hooks.outcomes() == [("create", "client_error")]
    assert_clean(info.value)


def test_unknown_model_is_permanent_and_names_the_env_var(outline: Outline) -> None:
    server = FakeReplicate(TOKEN, known={"black-forest-labs/flux-schnell"}).start()
    try:
        adapter = ReplicateImageJobs.from_env({"REPLICATE_API_TOKEN": TOKEN, "REPLICATE_BASE_URL": server.base_url,
                                               "REPLICATE_BASE_MODEL": "someone/no-such-model",
                                               "REPLICATE_TIMEOUT": "0.5"})
        with pytest.raises(PermanentStepError, match="REPLICATE_BASE_MODEL.*404") as info:
            adapter.create("base", adapter.base_input(page(outline)))
        assert "someone/no-such-model" in str(info.value)
        assert_clean(info.value)
        # Replicate no longer has it (purged, or deleted from the dashboard): only a new one helps.
        assert adapter.status("doesnotexist").state == "expired"
    finally:
        server.stop()


def test_hooks_before_can_refuse_and_nothing_is_sent(jobs: ReplicateImageJobs, fake: FakeReplicate,
                                                     hooks: RecordingHooks, outline: Outline) -> None:
    hooks.refuse = True
    with pytest.raises(TransientStepError, match="quota full"):
        jobs.create("base", jobs.base_input(page(outline)))
    assert fake.requests == [] and hooks.outcomes() == []


# --- downloads ----------------------------------------------------------------------------------


def test_download_checks_what_it_gets(fake: FakeReplicate, outline: Outline) -> None:
    adapter = ReplicateImageJobs(TOKEN, base_url=fake.base_url, timeout=0.5, max_download_bytes=200_000)
    url = f"{fake.root}/files/scripted.png"
    fake.script([("status", 200, {"Content-Type": "text/html"}, "<html>not an image</html>")])
    with pytest.raises(PermanentStepError, match="not a PNG"):
        adapter.download(url)
    png = Image.new("RGB", (64, 48), (10, 200, 30))
    buf = io.BytesIO()
    png.save(buf, "PNG")
    # (a truncated image is tried 3 times in the call before it is the step's to retry)
    fake.script([("status", 200, {"Content-Type": "image/png"}, buf.getvalue()[:60])] * 3)
    with pytest.raises(TransientStepError, match="incomplete"):
        adapter.download(url)
    fake.script([("status", 200, {}, b"\x89PNG\r\n\x1a\n" + b"\0" * 300_000)])
    with pytest.raises(PermanentStepError, match="larger than"):
        adapter.download(url)
    jpeg = io.BytesIO()
    png.save(jpeg, "JPEG")
    fake.script([("status", 200, {"Content-Type": "image/jpeg"}, jpeg.getvalue())])
    assert png_size(adapter.download(url)) == (64, 48)  # a JPEG output is stored as PNG
    fake.script([("status", 503, {}, "busy")] * 3)
    with pytest.raises(TransientStepError, match="503"):
        adapter.download(url)
    with pytest.raises(OutputExpiredError):
        adapter.download(f"{fake.root}/files/never-existed.png")
    assert adapter.download(data_uri(buf.getvalue())) == buf.getvalue()


def test_a_download_hiccup_is_tried_again_at_once_and_the_output_copied(
        fake: FakeReplicate, jobs: ReplicateImageJobs, hooks: RecordingHooks, outline: Outline) -> None:
    """tenacity inside download(): a 503, a dropped connection, then the file (a real HTTP server)."""
    done = wait_done(jobs, jobs.create("base", jobs.base_input(page(outline))))
    fake.script([("status", 503, {}, "busy"), ("close",)])
    t0 = time.monotonic()
    png = jobs.download(done.output_url or "")
    assert png_size(png) == (960, 720)
    assert len(fake.requests_to("GET", "/files/")) == 3 and time.monotonic() - t0 < 3.0
    assert [o for o in hooks.outcomes() if o[0] == "download"] == [
        ("download", "server_error"), ("download", "connection_error"), ("download", "ok")]


def test_a_download_gives_up_after_three_tries_and_never_retries_a_gone_file(
        fake: FakeReplicate, jobs: ReplicateImageJobs, outline: Outline) -> None:
    done = wait_done(jobs, jobs.create("base", jobs.base_input(page(outline))))
    fake.script([("status", 502, {}, "bad gateway")] * 3)
    with pytest.raises(TransientStepError, match="HTTP 502"):
        jobs.download(done.output_url or "")
    assert len(fake.requests_to("GET", "/files/")) == 3  # the bound: then the step layer retries
    fake.script([("status", 410, {}, "Gone")])
    with pytest.raises(OutputExpiredError):
        jobs.download(done.output_url or "")
    assert len(fake.requests_to("GET", "/files/")) == 4
    fake.script([("status", 503, {"Retry-After": "20"}, "maintenance")])
    with pytest.raises(TransientStepError, match="HTTP 503") as info:
        jobs.download(done.output_url or "")
    assert info.value.retry_after == 20.0 and len(fake.requests_to("GET", "/files/")) == 5  # a long wait: the step's


# --- configuration --------------------------------------------------------------------------------


def test_from_env_requires_a_token_and_validates() -> None:
    with pytest.raises(SystemExit, match="REPLICATE_API_TOKEN is not set"):
        ReplicateImageJobs.from_env({})
    with pytest.raises(SystemExit, match="REPLICATE_TIMEOUT"):
        ReplicateImageJobs.from_env({"REPLICATE_API_TOKEN": TOKEN, "REPLICATE_TIMEOUT": "soon"})
    with pytest.raises(SystemExit, match="REPLICATE_PERSONALIZE_VERSION") as info:
        ReplicateImageJobs.from_env({"REPLICATE_API_TOKEN": TOKEN, "REPLICATE_PERSONALIZE_VERSION": "nope"})
    assert TOKEN not in str(info.value)


def test_from_env_key_names_and_version_precedence(fake: FakeReplicate, outline: Outline, photo: bytes,
                                                   face: Face) -> None:
    adapter = ReplicateImageJobs.from_env({
        "REPLICATE_API_TOKEN": TOKEN, "REPLICATE_BASE_URL": fake.root,
        "REPLICATE_PERSONALIZE_MODEL": "someone/instant-id",
        "REPLICATE_PERSONALIZE_VERSION": "c" * 64,
        "REPLICATE_PERSONALIZE_IMAGE_KEY": "image", "REPLICATE_PERSONALIZE_FACE_KEY": "face_image",
    })
    inp = adapter.personalize_input("https://x/base.png", "data:image/png;base64,AA==", face, page(outline))
    assert inp == {"image": "https://x/base.png", "face_image": "data:image/png;base64,AA=="}
    adapter.create("personalize", inp)
    assert fake.requests_to("POST", "/v1/")[0]["json"] == {"version": "c" * 64, "input": inp}


def test_errors_are_step_errors() -> None:
    # The task layer decides retry vs fail from the type alone.
    assert issubclass(OutputExpiredError, PermanentStepError) and issubclass(PermanentStepError, StepError)
