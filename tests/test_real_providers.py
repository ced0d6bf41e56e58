"""The four real adapters together (Rekognition, S3, OpenAI, Replicate through their SDKs),
pointed at local fake servers that speak each provider's HTTP protocol, in real worker
processes; and the shared quota holding across two worker processes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.fakes.openai_server import DEFAULT_KEY, FakeOpenAI
from tests.fakes.rekognition_server import FakeRekognition
from tests.fakes.replicate_server import FakeReplicate
from tests.support import ROOT, Db, WorkerProcess, astronaut_png, external_send, flush_redis, peak_in_window

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
BROKER = f"{REDIS}/{int(os.environ.get('TEST_REDIS_DB', '11')) + 1}"
REPLICATE_TOKEN = "r8_e2e_token_0123456789"
AWS = {"AWS_ACCESS_KEY_ID": "AKIAE2ETESTKEY000000", "AWS_SECRET_ACCESS_KEY": "e2e/secret/never/shown/0000000000000000",
       "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "AWS_TIMEOUT": "10"}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    fakes = {"openai": FakeOpenAI().start(), "rekognition": FakeRekognition().start(),
             "replicate": FakeReplicate(REPLICATE_TOKEN, run_seconds=0.3).start(),
             "s3": f"http://{host}:{port}"}
    yield fakes
    for key in ("openai", "rekognition", "replicate"):
        fakes[key].stop()
    moto.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _s3(servers: dict[str, Any]) -> Any:
    return boto3.client("s3", endpoint_url=servers["s3"], region_name="us-east-1",
                        aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"], aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"])


def _real_env(servers: dict[str, Any], bucket: str) -> dict[str, str]:
    return {
        **AWS, "CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER,
        "VISION_PROVIDER": "rekognition", "AWS_ENDPOINT_URL_REKOGNITION": servers["rekognition"].url,
        "STORAGE_BACKEND": "s3", "S3_BUCKET": bucket, "AWS_ENDPOINT_URL_S3": servers["s3"],
        "TEXT_PROVIDER": "openai", "OPENAI_API_KEY": DEFAULT_KEY, "OPENAI_BASE_URL": servers["openai"].base_url,
        "IMAGE_PROVIDER": "replicate", "REPLICATE_API_TOKEN": REPLICATE_TOKEN,
        "REPLICATE_BASE_URL": servers["replicate"].base_url, "JOB_POLL_INTERVAL": "0.2",
    }


@pytest.mark.timeout(240)
def test_a_story_completes_with_all_four_real_adapters(clean_db: Db, servers: dict[str, Any], tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    flush_redis(BROKER)
    s3 = _s3(servers)
    uploads, books = f"uploads-{uuid.uuid4().hex[:8]}", f"books-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=uploads)
    s3.create_bucket(Bucket=books)
    # given a photo the external API stored in S3, and a story row pointing at it
    key = f"photos/{uuid.uuid4()}.png"
    s3.put_object(Bucket=uploads, Key=key, Body=astronaut_png(), ContentType="image/png")
    photo = clean_db.photo(None, storage_provider="s3", bucket=uploads, object_key=key)
    story = clean_db.story(photo, name="Ada", age=5, theme="space_adventure")
    n_openai = len(servers["openai"].requests)
    # when a worker configured for the real providers runs it
    port = _free_port()
    env = {**_real_env(servers, books), "METRICS_PORT": str(port)}
    worker = WorkerProcess(tmp_path / "worker.log", env=env, concurrency=8)
    request.addfinalizer(worker.stop)
    worker.start()
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story, timeout=180)
    # then the story completed, every artefact in S3, each provider asked what it should be
    assert row["status"] == "completed", (row["error_message"], worker.tail())
    photo_row = clean_db.one("SELECT * FROM photos WHERE id = :p", p=photo)
    assert photo_row["ai_processing_status"] == "completed"
    assert "aws-rekognition" in str(photo_row["face_details"])
    pages = clean_db.pages(story)
    assert row["title"] and all(p["text"] and "Ada" in " ".join(q["text"] for q in pages) for p in pages)
    stored = {o["Key"] for o in s3.list_objects_v2(Bucket=books).get("Contents", [])}
    for p in pages:
        assert p["base_image_key"] in stored and p["personalized_image_key"] in stored
    pdf = s3.get_object(Bucket=books, Key=f"stories/{story}/book.pdf")["Body"].read()
    assert pdf.startswith(b"%PDF")
    assert len(servers["openai"].requests) - n_openai == 1 + len(pages)  # outline + one per page
    assert any(r.target.endswith("DetectFaces") for r in servers["rekognition"].requests)
    # and the operator's status command hands out a time-limited link to the book
    status = subprocess.run([sys.executable, "-m", "pipeline.operations.cli", "status", story, "--json"], cwd=ROOT,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    link = json.loads(status.stdout)["book"]["pdf"]
    assert "X-Amz-Expires=900" in link  # PRESIGNED_URL_SECONDS' default: short-lived
    with urllib.request.urlopen(link, timeout=10) as r:
        assert r.read().startswith(b"%PDF")
    # and the worker's Prometheus metrics count each provider's requests by outcome, with latency
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    for provider, operation in (("openai", "chat"), ("rekognition", "DetectFaces"), ("replicate", "create"),
                                ("replicate", "get"), ("s3", "PutObject")):
        line = (f'storycreator_provider_requests_total{{operation="{operation}",outcome="ok",'
                f'provider="{provider}"}}')
        assert line in metrics, (provider, operation)
    assert 'storycreator_provider_request_duration_seconds_count{operation="chat",provider="openai"}' in metrics
    # and no secret reached the logs
    log = worker.log.read_text(errors="replace")
    for secret in (AWS["AWS_SECRET_ACCESS_KEY"], DEFAULT_KEY, REPLICATE_TOKEN):
        assert secret not in log


@pytest.mark.timeout(240)
def test_the_shared_quota_holds_across_two_worker_processes(clean_db: Db, servers: dict[str, Any], tmp_path: Path,
                                                           request: pytest.FixtureRequest) -> None:
    flush_redis(BROKER)
    fake: FakeOpenAI = servers["openai"]
    # given two worker processes (8 threads each) sharing a limit of 4 OpenAI requests a second
    env = {"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "TEXT_PROVIDER": "openai",
           "OPENAI_API_KEY": DEFAULT_KEY, "OPENAI_BASE_URL": fake.base_url, "QUOTA_OPENAI_RPS": "4",
           "QUOTA_OPENAI_RPM": "0", "VISION_PROVIDER": "instant", "IMAGE_PROVIDER": "instant"}
    workers = [WorkerProcess(tmp_path / f"w{i}.log", env=env, concurrency=8) for i in range(2)]
    for w in workers:
        request.addfinalizer(w.stop)
        w.start()
    # when 4 stories (4 outlines + 16 pages = 20 requests) run at once
    start = len(fake.requests)
    stories = [clean_db.story(clean_db.photo(astronaut_png())) for _ in range(4)]
    for s in stories:
        external_send(BROKER, "stories.generate", {"story_id": s})
    for s in stories:
        assert clean_db.wait_story(s, timeout=120)["status"] == "completed"
    # then the provider never saw more than 4 requests in any one-second window
    times = [r["t"] for r in fake.requests[start:]]
    assert len(times) == 20
    peak = peak_in_window(times)
    print(f"\nshared quota: peak {peak} requests in any 1 s window, limit 4, "
          f"{len(times)} requests over {max(times) - min(times):.2f} s")
    assert peak <= 4, peak
    # and both processes did part of the work (the limit is shared, not per process)
    assert all("stage" in w.log.read_text() for w in workers)


@pytest.mark.timeout(120)
def test_a_slow_provider_does_not_block_other_stages(clean_db: Db, servers: dict[str, Any], tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    flush_redis(BROKER)
    fake: FakeOpenAI = servers["openai"]
    # given OpenAI hanging on every call, and a worker of 4 threads that lets at most 2 wait on it
    fake.script([("hang", 3.0)] * 12)
    request.addfinalizer(lambda: fake.script([]))
    env = {"CELERY_BROKER_URL": BROKER, "REDIS_URL": BROKER, "TEXT_PROVIDER": "openai",
           "OPENAI_API_KEY": DEFAULT_KEY, "OPENAI_BASE_URL": fake.base_url, "OPENAI_TIMEOUT": "2.5",
           "QUOTA_OPENAI_CONCURRENT": "2", "QUOTA_MAX_INLINE_WAIT": "0.1"}
    worker = WorkerProcess(tmp_path / "w.log", env=env, concurrency=4)
    request.addfinalizer(worker.stop)
    worker.start()
    first_request = len(fake.requests)  # the fake serves the whole module
    # when four stories start (their outlines all want OpenAI) and then a photo is uploaded
    for _ in range(4):
        external_send(BROKER, "stories.generate", {"story_id": clean_db.story(clean_db.photo(astronaut_png()))})
    time.sleep(1.0)
    photo = clean_db.photo(astronaut_png())
    t0 = time.monotonic()
    external_send(BROKER, "photos.analyze", {"photo_id": photo})
    row = clean_db.wait_photo(photo, timeout=30)
    # then the photo is analysed while text generation is still stuck behind the slow provider
    outlines = clean_db.one("SELECT count(*) AS n FROM story_outlines")["n"]
    assert row["ai_processing_status"] == "completed" and outlines == 0
    assert time.monotonic() - t0 < 10
    # and never more than 2 threads waited on OpenAI at once (each call lasts its 2.5 s timeout,
    # so requests arriving within 2.4 s of each other were all in flight together)
    times = [r["t"] for r in fake.requests[first_request:]]
    in_flight = max(sum(1 for u in times if t - 2.4 < u <= t) for t in times)
    assert in_flight <= 2, in_flight
