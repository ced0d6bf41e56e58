"""What each book costs (README "What each book costs"; pipeline/kernel/usage.py, db/usage.py):
usage parsed from the providers' own reply shapes, priced in integer micro-cents, recorded once per
call however often an at-least-once step re-runs, a budget that stops a story with its reason and
is lifted per story, and the cost shown by ``status`` and the metrics."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion
from prometheus_client import REGISTRY
from sqlalchemy import text

from db.engine import get_engine
from pipeline.config import cost_settings
from pipeline.kernel import usage
from pipeline.kernel.quota import QuotaWait
from pipeline.operations.cli import main as cli
from pipeline.providers import usage_calls
from pipeline.providers.lulu_jobs import parse_job
from tests.fakes.openai_server import DEFAULT_KEY, FakeOpenAI
from tests.support import Db, WorkerProcess, astronaut_png, external_send, flush_redis

REDIS = os.environ["CELERY_BROKER_URL"].rsplit("/", 1)[0]
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 1}"  # this module's worker only

# A chat.completion as the API returns it (https://platform.openai.com/docs/api-reference/chat/object)
COMPLETION = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion", "created": 1741569952,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "{\"text\": \"Mia flew.\"}",
                                         "refusal": None, "annotations": []},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1234, "completion_tokens": 321, "total_tokens": 1555,
              "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
    "service_tier": "default", "system_fingerprint": "fp_06737a9306",
}
# A prediction as GET /v1/predictions/{id} returns it (https://replicate.com/docs/reference/http#predictions.get)
PREDICTION = {
    "id": "gm3qorzdhgbfurvjtvhg6dckhu", "model": "black-forest-labs/flux-schnell", "version": "dp-4d0bcc01",
    "input": {"prompt": "a page"}, "logs": "", "output": ["https://replicate.delivery/xezq/out-0.webp"],
    "data_removed": False, "error": None, "status": "succeeded", "created_at": "2024-11-27T17:21:17.561Z",
    "started_at": "2024-11-27T17:21:17.570Z", "completed_at": "2024-11-27T17:21:21.819Z",
    "urls": {"cancel": "https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu/cancel",
             "get": "https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu"},
    "metrics": {"image_count": 1, "predict_time": 4.249, "total_time": 4.258},
}


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- what the providers' replies say, and its price -----------------------------------------------

def test_openai_usage_is_read_from_the_sdk_completion_and_priced_in_whole_micro_cents() -> None:
    # Given a reply as the official SDK types it
    completion = ChatCompletion.model_validate(COMPLETION)
    # Then its id and token counts are read, from the object or its JSON text alike
    assert usage_calls.openai_usage(completion) == ("chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", 1234, 321)
    assert usage_calls.openai_usage(json.dumps(COMPLETION)) == usage_calls.openai_usage(completion)
    assert usage_calls.openai_usage({"id": "x"}) is None
    # and priced at 15¢ / 60¢ per 1M tokens: 1234 * 15 + 321 * 60 micro-cents, an exact integer
    assert usage.cost_microcents("openai", input_tokens=1234, output_tokens=321) == 1234 * 15 + 321 * 60


def test_replicate_predict_time_is_read_from_the_prediction_and_priced_per_second() -> None:
    assert usage_calls.predict_time(PREDICTION) == 4.249
    assert usage_calls.predict_time({**PREDICTION, "status": "processing", "metrics": {}}) is None
    # 4.249 s at 0.14¢ a second = 0.59486¢ = 594860 micro-cents
    assert usage.cost_microcents("replicate", seconds=4.249) == 594_860
    assert usage.cost_microcents("rekognition") == 100_000 and usage.cost_microcents("local", calls=3) == 0


def test_lulu_print_job_costs_are_read_tax_included() -> None:
    job = parse_job({"id": 81, "status": {"name": "UNPAID"}, "line_items": [],
                     "costs": {"total_cost_incl_tax": "12.34", "total_cost_excl_tax": "10.00", "currency": "USD"}})
    assert (job.cost_microcents, job.cost_currency) == (1234 * 1_000_000, "usd")
    unpriced = parse_job({"id": 82, "status": {"name": "CREATED"},
                          "costs": {"total_cost_incl_tax": None, "total_cost_excl_tax": None, "currency": "USD"}})
    assert unpriced.cost_microcents is None


def test_prices_are_checked_with_the_variable_named() -> None:
    assert cost_settings({}).story_budget_cents == 500
    with pytest.raises(SystemExit, match="PRICE_OPENAI_INPUT_TOKENS='cheap' is not a number"):
        cost_settings({"PRICE_OPENAI_INPUT_TOKENS": "cheap"})
    with pytest.raises(SystemExit, match="STORY_BUDGET_CENTS='-1' is out of range"):
        cost_settings({"STORY_BUDGET_CENTS": "-1"})
    with pytest.raises(SystemExit, match="COST_CURRENCY='dollars'"):
        cost_settings({"COST_CURRENCY": "dollars"})


# --- recorded once, held, stopped ----------------------------------------------------------------

def _story(db: Db) -> str:
    return db.story(db.photo(None))


def _shipped_order(db: Db, story: str) -> tuple[str, str]:
    user = str(db.one("SELECT user_id FROM stories WHERE id = :s", s=story)["user_id"])
    order = db.one("INSERT INTO orders (user_id, story_id, product_type, amount, currency, status) "
                   "VALUES (:u, :s, 'hardcover', 2999, 'usd', 'shipped') RETURNING id", u=user, s=story)
    return user, str(order["id"])


def test_a_call_is_recorded_once_however_often_its_step_runs_again(clean_db: Db) -> None:
    story = _story(clean_db)
    before = _sample("storycreator_provider_cost_microcents_total", {"provider": "openai", "stage": "text"})
    # When a text step records the same OpenAI response twice (a redelivered message re-reads it)
    for _ in range(2):
        with usage.metered("text", f"page:text:a0:{uuid.uuid4()}", story_id=story, page_number=2):
            usage.record("openai", "chat", call_id="chatcmpl-1", input_tokens=1000, output_tokens=500)
    # and an offline provider's call is recorded by two runs of the same try of the same step
    for _ in range(2):
        with usage.metered("image", "page:image:r1:a0", story_id=story, page_number=2):
            usage.record("local", "draw_base", seconds=0.25, cost=0)
    # Then each call has one row, priced once, the metrics counted once
    rows = clean_db.all("SELECT provider, input_tokens, output_tokens, seconds, calls, cost_microcents, page_number "
                        "FROM provider_usage WHERE story_id = :s ORDER BY provider", s=story)
    assert [(r["provider"], r["calls"], r["cost_microcents"], r["page_number"]) for r in rows] == [
        ("local", 1, 0, 2), ("openai", 1, 1000 * 15 + 500 * 60, 2)]
    assert float(rows[0]["seconds"]) == 0.25 and (rows[1]["input_tokens"], rows[1]["output_tokens"]) == (1000, 500)
    after = _sample("storycreator_provider_cost_microcents_total", {"provider": "openai", "stage": "text"})
    assert after - before == 45_000
    assert _sample("storycreator_provider_usage_total", {"provider": "local", "unit": "seconds"}) >= 0.25


def test_a_hold_past_the_budget_stops_with_the_commands_that_lift_it(clean_db: Db,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    story = _story(clean_db)
    assert cli(["budget", "--story", story, "--cents", "1"]) == 0  # 1¢
    with usage.metered("text", "t:a0", story_id=story, page_number=1):
        usage.record("openai", "chat", call_id="chatcmpl-9", input_tokens=20_000, output_tokens=10_000)  # 0.9¢
    stops = _sample("storycreator_budget_stops_total", {"stage": "text"})
    # When the next call's estimate would pass the budget
    with usage.metered("text", "t:a1", story_id=story, page_number=2), pytest.raises(usage.BudgetReached) as e:
        usage.hold("openai", 200_000)  # 0.2¢
    # Then it stops saying what was spent, of what, and how an operator lifts it
    assert str(e.value).startswith("Budget reached: this story has spent 0.90¢ of its 1.00¢ budget (USD)")
    assert f"storycreator budget --story {story} --cents N (or --unlimited), then storycreator retry --story {story}" \
        in str(e.value)
    assert _sample("storycreator_budget_stops_total", {"stage": "text"}) == stops + 1
    assert clean_db.one("SELECT count(*) AS n FROM budget_holds")["n"] == 0
    # When an operator lifts it, the hold is taken, shown, and settled by the call's record
    assert cli(["budget", "--story", story, "--unlimited"]) == 0
    with usage.metered("text", "t:a2", story_id=story, page_number=2):
        usage.hold("openai", 200_000)
        held = clean_db.one("SELECT cost_microcents AS m FROM budget_holds WHERE story_id = :s", s=story)
        assert held["m"] == 200_000
        capsys.readouterr()
        assert cli(["status", story]) == 0
        assert "cost: 0.90¢ (+0.20¢ held for calls in flight) of budget unlimited" in capsys.readouterr().out
        usage.record("openai", "chat", call_id="chatcmpl-10", input_tokens=100, output_tokens=100)
    assert clean_db.one("SELECT count(*) AS n FROM budget_holds")["n"] == 0
    assert cli(["budget", "--story", story, "--default", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["budget_cents"], out["budget_is_default"], out["total_microcents"]) == (500, True, 900_000 + 7_500)


def test_a_re_run_of_a_call_site_is_not_held_twice_against_the_budget(clean_db: Db) -> None:
    story = _story(clean_db)
    assert cli(["budget", "--story", story, "--cents", "1"]) == 0  # 1¢
    # Given a text step that held its call, then stopped before sending it (a quota wait: its
    # hold stays until the lease ends)
    with usage.metered("text", "p:text:r1:a0", story_id=story, page_number=3):
        usage.hold("openai", 600_000)  # 0.6¢
    # When the step runs again, its call site holds the same call once more: it replaces its own
    # hold (put_hold), so it must not be counted against itself
    with usage.metered("text", "p:text:r1:a1", story_id=story, page_number=3):
        usage.hold("openai", 600_000)
    held = clean_db.all("SELECT cost_microcents AS m FROM budget_holds WHERE story_id = :s", s=story)
    assert [h["m"] for h in held] == [600_000]
    # while another page's call, on top of that live hold, still stops at the budget
    with usage.metered("text", "q:text:r1:a0", story_id=story, page_number=4), pytest.raises(usage.BudgetReached):
        usage.hold("openai", 600_000)


def test_a_budget_lock_held_by_a_stopped_worker_gives_the_step_back_instead_of_parking_it(clean_db: Db) -> None:
    """Found by tests/test_nemesis.py under load: a worker stopped inside its hold's transaction keeps
    the story's budget lock until PostgreSQL ends its session (idle_in_transaction_session_timeout,
    at least 10 s), and every other paid call of that story waited that long in its thread, past its
    claim's lease (counted as crashes, the story failed). Now the wait is bounded and the step is
    given back as a quota wait (no try used, nothing recorded)."""
    story = _story(clean_db)
    wait = usage.budget_lock_wait()
    # Given another session inside its hold, the story's budget lock taken and not let go
    with get_engine().connect() as other:
        other.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('budget:' || :s, 0))"), {"s": story})
        t0 = time.monotonic()
        # When a paid call of the same story holds its estimate
        with usage.metered("text", "b:text:r1:a0", story_id=story, page_number=1), \
                pytest.raises(QuotaWait) as e:
            usage.hold("openai", 1_000)
        took = time.monotonic() - t0
        other.rollback()
    # Then it waited the bound, not the lock holder's session, and nothing was held
    assert e.value.provider == "budget" and "being decided by another run" in str(e.value)
    assert wait * 0.9 <= took < wait + 1.5, took
    assert clean_db.one("SELECT count(*) AS n FROM budget_holds WHERE story_id = :s", s=story)["n"] == 0
    # and once the lock is free, the same call holds at once
    with usage.metered("text", "b:text:r1:a1", story_id=story, page_number=1):
        usage.hold("openai", 1_000)
    assert clean_db.one("SELECT count(*) AS n FROM budget_holds WHERE story_id = :s", s=story)["n"] == 1


def test_a_page_stopped_by_the_budget_fails_with_the_reason_on_the_page_and_the_story(clean_db: Db) -> None:
    from pipeline.kernel.step import FIRST_TRY
    from pipeline.stories.page_step import run_page_step
    from pipeline.stories.start import generate_story

    story = clean_db.story(clean_db.photo(astronaut_png()))
    assert generate_story(story).outcome.value == "done"  # offline providers: counted, nothing held
    page = clean_db.one("SELECT id FROM story_pages WHERE story_id = :s AND page_number = 2", s=story)["id"]
    assert cli(["budget", "--story", story, "--cents", "0"]) == 0

    def paid_text(claim: object, timer: object) -> dict[str, str]:
        usage.hold("openai", 1)  # the text step's paid call, 1 micro-cent over a 0¢ budget
        raise AssertionError("the call was made")

    # When the page's text step comes to its paid call
    result = run_page_step(str(page), "text", FIRST_TRY, paid_text)
    # Then the page's step failed (not retried), its reason recorded for the page and on the story
    assert result.outcome.value == "failed" and result.detail.startswith("Budget reached: this story has spent")
    row = clean_db.story_row(story)
    assert row["status"] == "failed" and row["error_message"].startswith("Page 2 (story text): Budget reached: ")
    err = clean_db.one("SELECT e.message, e.permanent FROM step_errors e JOIN story_pages g ON g.id = e.page_id "
                       "WHERE g.id = :p", p=page)
    assert err["permanent"] and err["message"] == result.detail
    assert clean_db.one("SELECT text_generation_status AS s FROM story_pages WHERE id = :p", p=page)["s"] == "failed"
    # and the offline calls of the start were counted at 0: the photo's analysis and the outline
    counted = clean_db.all("SELECT stage, provider, cost_microcents FROM provider_usage WHERE story_id = :s", s=story)
    assert sorted((c["stage"], c["provider"], c["cost_microcents"]) for c in counted) == [
        ("analysis", "local", 0), ("outline", "local", 0)]


def test_status_shows_a_story_an_order_and_the_days_with_their_parts(clean_db: Db,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.orders.print_job import record_print_cost

    story = _story(clean_db)
    user, order = _shipped_order(clean_db, story)
    with usage.metered("text", "s:a0", story_id=story, page_number=1):
        usage.record("openai", "chat", call_id="c-1", input_tokens=600, output_tokens=200)
    with usage.metered("image", "s:i:a0", story_id=story, page_number=1):
        usage.record("replicate", "prediction", call_id=str(PREDICTION["id"]), seconds=4.249)
    job = parse_job({"id": 90, "status": {"name": "SHIPPED"},
                     "costs": {"total_cost_incl_tax": "7.50", "currency": "USD"}})
    record_print_cost(order, "lulu", job)
    record_print_cost(order, "lulu", job)  # the webhook and the poll both saw it: once
    capsys.readouterr()
    # The story's parts: per provider and stage, with their units
    assert cli(["status", story]) == 0
    text = capsys.readouterr().out
    assert "  cost: 0.62¢ of budget 500¢ (the default, STORY_BUDGET_CENTS)" in text, text
    assert "openai       text             1 call, 600 in + 200 out tokens: 0.02¢" in text
    assert "replicate    image            1 call, 4.2 s: 0.59¢" in text
    assert cli(["status", story, "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)["cost"]
    assert cost["total_microcents"] == 600 * 15 + 200 * 60 + 594_860
    assert {(p["provider"], p["stage"], p["cost_microcents"]) for p in cost["parts"]} == {
        ("openai", "text", 21_000), ("replicate", "image", 594_860)}
    # The order's: its print job at Lulu's price
    assert cli(["status", "--order", order]) == 0
    assert "cost: 750.00¢\n    lulu         print_job        1 call: 750.00¢" in capsys.readouterr().out
    # The summary: today's total
    assert cli(["status", "--json"]) == 0
    days = json.loads(capsys.readouterr().out)["cost_per_day"]
    assert len(days) == 1 and days[0]["cost_microcents"] == 750_000_000 + 615_860 and days[0]["calls"] == 3
    assert cli(["status"]) == 0
    assert f"cost {days[0]['day']}  750.62¢ USD, 3 calls, 1 story" in capsys.readouterr().out


def test_forgetting_a_family_keeps_the_money_and_drops_the_link(clean_db: Db) -> None:
    from pipeline.orders.print_job import record_print_cost
    from pipeline.privacy.forget import forget

    story = _story(clean_db)
    user, order = _shipped_order(clean_db, story)
    with usage.metered("text", "f:a0", story_id=story, page_number=1):
        usage.record("openai", "chat", call_id="c-1", input_tokens=600, output_tokens=200)
    record_print_cost(order, "lulu", parse_job({"id": 91, "status": {"name": "SHIPPED"},
                                                 "costs": {"total_cost_incl_tax": "7.50", "currency": "USD"}}))
    forget(user, "cli")
    rows = clean_db.all("SELECT story_id, order_id, provider, cost_microcents FROM provider_usage ORDER BY provider")
    kept = clean_db.one("SELECT id, story_id FROM orders")
    # The money stays; the story's call names nobody; the print job follows the kept (re-keyed) order
    assert [(r["provider"], r["cost_microcents"]) for r in rows] == [("lulu", 750_000_000), ("openai", 21_000)]
    assert rows[1]["story_id"] is None and rows[1]["order_id"] is None
    assert (rows[0]["order_id"], rows[0]["story_id"]) == (kept["id"], kept["story_id"]) and str(kept["id"]) != order
    assert not clean_db.all("SELECT * FROM provider_usage WHERE CAST(story_id AS text) = :s "
                            "OR CAST(order_id AS text) = :o", s=story, o=order)


def test_a_prediction_is_held_while_it_runs_and_settled_to_its_predict_time(clean_db: Db) -> None:
    import time

    from pipeline.providers.replicate_images import ReplicateImageJobs
    from tests.fakes.replicate_server import FakeReplicate

    fake = FakeReplicate("r8_test", run_seconds=0.4).start()
    try:
        jobs = ReplicateImageJobs("r8_test", base_url=fake.base_url, timeout=5.0)
        story = _story(clean_db)
        # When a page's image job is created (one run) and followed until it ends (later runs)
        with usage.metered("image", "p:image:a0", story_id=story, page_number=3):
            job = jobs.create("base", {"prompt": "a page", "seed": 3})
        held = clean_db.one("SELECT provider, cost_microcents AS m FROM budget_holds WHERE story_id = :s", s=story)
        assert (held["provider"], held["m"]) == ("replicate", 10 * 140_000)  # COST_ESTIMATE_REPLICATE_SECONDS
        for attempt in range(1, 100):
            with usage.metered("image", f"p:image:a{attempt}", story_id=story, page_number=3):
                if jobs.status(job).state != "running":
                    jobs.status(job)  # a redelivered look sees it ended again
                    break
            time.sleep(0.05)
    finally:
        fake.stop()
    # Then it is recorded once, at the seconds Replicate reports, and its hold is gone
    rows = clean_db.all("SELECT stage, page_number, seconds, cost_microcents FROM provider_usage "
                        "WHERE story_id = :s AND provider = 'replicate'", s=story)
    seconds = fake.prediction(job)["metrics"]["predict_time"]
    assert [(r["stage"], r["page_number"], float(r["seconds"])) for r in rows] == [("image", 3, seconds)]
    assert rows[0]["cost_microcents"] == usage.cost_microcents("replicate", seconds=seconds)
    assert not clean_db.all("SELECT * FROM budget_holds WHERE story_id = :s", s=story)



def test_a_cancelled_prediction_is_recorded_from_the_cancel_reply(clean_db: Db) -> None:
    """A job past JOB_MAX_SECONDS (or an orphan) is cancelled and never looked at again: the time
    it ran is recorded from the cancel's reply, not lost with its expired hold."""
    from pipeline.providers.replicate_images import ReplicateImageJobs
    from tests.fakes.replicate_server import FakeReplicate

    story = _story(clean_db)
    fake = FakeReplicate("r8_test", run_seconds=1.0).start()
    try:
        jobs = ReplicateImageJobs("r8_test", base_url=fake.base_url, timeout=5.0)
        with usage.metered("image", "c:image:a0", story_id=story, page_number=5):
            job = jobs.create("base", {"prompt": "a page", "seed": 5})
        time.sleep(0.5)  # started (the fake starts a quarter in), still running
        # When a later run gives up on it and cancels it
        with usage.metered("image", "c:image:a1", story_id=story, page_number=5):
            jobs.cancel(job)
    finally:
        fake.stop()
    # Then its time is recorded once and its hold is settled
    rows = clean_db.all("SELECT seconds FROM provider_usage WHERE story_id = :s AND provider = 'replicate'", s=story)
    assert len(rows) == 1 and float(rows[0]["seconds"]) > 0, rows
    assert not clean_db.all("SELECT * FROM budget_holds WHERE story_id = :s", s=story)
    # and a reply without metrics yet is billed from started_at to completed_at
    story2 = _story(clean_db)
    with usage.metered("image", "d:image:a0", story_id=story2, page_number=1):
        usage_calls.replicate_canceled({**PREDICTION, "status": "canceled", "metrics": {}}, PREDICTION["id"])
    got = clean_db.one("SELECT seconds FROM provider_usage WHERE story_id = :s", s=story2)
    assert abs(float(got["seconds"]) - 4.249) < 1e-6

# --- one real worker: a story stopped by its budget, lifted, completed ------------------------------

@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def openai_worker(db: Db, fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    flush_redis(BROKER)
    w = WorkerProcess(tmp_path_factory.mktemp("costs") / "worker.log", env={
        "CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "TEXT_PROVIDER": "openai",
        "OPENAI_API_KEY": DEFAULT_KEY, "OPENAI_BASE_URL": fake.base_url,
        "VISION_PROVIDER": "instant", "IMAGE_PROVIDER": "instant"})
    w.start()
    yield w
    w.stop()


def test_a_story_over_its_budget_stops_with_its_reason_and_completes_once_lifted(
        clean_db: Db, fake: FakeOpenAI, openai_worker: WorkerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a story whose budget is 0¢
    story = clean_db.story(clean_db.photo(astronaut_png()))
    assert cli(["budget", "--story", story, "--cents", "0"]) == 0
    sent = len(fake.requests)
    # When it runs, its first paid call (the outline) stops it, with the reason and the way out
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story, timeout=60)
    assert row["status"] == "failed"
    assert row["error_message"].startswith("Budget reached: this story has spent 0.00¢ of its 0.00¢ budget")
    assert f"storycreator budget --story {story}" in row["error_message"]
    assert len(fake.requests) == sent  # nothing was sent to OpenAI
    # When an operator lifts it and retries, it completes
    assert cli(["budget", "--story", story, "--cents", "500"]) == 0
    env = {**os.environ, "CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER}
    r = subprocess.run([sys.executable, "-m", "pipeline.operations.cli", "retry", "--story", story], env=env,
                       cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    row = clean_db.wait_story(story, timeout=90)
    assert row["status"] == "completed", row["error_message"]
    # Then every OpenAI call is recorded with the fake's usage, priced; offline calls counted at 0
    calls = clean_db.all("SELECT stage, provider, input_tokens, output_tokens, cost_microcents FROM provider_usage "
                         "WHERE story_id = :s", s=story)
    paid = [c for c in calls if c["provider"] == "openai"]
    pages = len(clean_db.pages(story))
    assert sorted(c["stage"] for c in paid) == ["outline"] + ["text"] * pages
    assert all(c["input_tokens"] == 100 and c["cost_microcents"] == 1500 + 60 * c["output_tokens"] for c in paid)
    offline = [c for c in calls if c["provider"] == "instant"]
    assert sorted(c["stage"] for c in offline) == ["analysis"] + ["image"] * pages + ["personalization"] * pages
    assert all(c["cost_microcents"] == 0 for c in offline)
    capsys.readouterr()
    assert cli(["status", story, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cost"]["total_microcents"] == sum(c["cost_microcents"] for c in paid)
