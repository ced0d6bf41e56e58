"""Deleting stored objects (pipeline/kernel/storage.py, pipeline/providers/s3.py): what erasure and
retention build on. A folder prefix never reaches a neighbour (``stories/1/`` is not ``stories/10/``),
a missing object is not an error, and S3's listing pages and 1,000-key delete batches are walked
through to the end (moto's server speaks the S3 API as boto3 sends it)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from pipeline.kernel.storage import LocalStorage, UnsafeKey
from pipeline.providers.s3 import S3Storage


def test_local_delete_prefix_removes_the_folder_and_nothing_beside_it(tmp_path: Path) -> None:
    s = LocalStorage(tmp_path)
    for key in ("stories/1/book.pdf", "stories/1/pages/01/base.png", "stories/1/pages/01/r2/base.png",
                "stories/10/book.pdf", "stories/1x/book.pdf"):
        s.put(key, b"x", "application/octet-stream")
    assert s.delete_prefix("stories/1/") == 3
    assert not (tmp_path / "stories" / "1").exists()
    assert s.exists("stories/10/book.pdf") and s.exists("stories/1x/book.pdf")
    assert s.delete_prefix("stories/1/") == 0  # again: nothing left, no error


def test_local_delete_is_idempotent_and_prunes_empty_folders(tmp_path: Path) -> None:
    s = LocalStorage(tmp_path)
    s.put("uploads/u/p.jpg", b"x", "image/jpeg")
    assert s.delete("uploads/u/p.jpg") is True
    assert s.delete("uploads/u/p.jpg") is False
    assert not (tmp_path / "uploads").exists() and tmp_path.exists()


def test_local_delete_prefix_never_follows_a_symlink_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"keep")
    s = LocalStorage(tmp_path / "root")
    s.put("stories/9/book.pdf", b"x", "application/pdf")
    os.symlink(outside, tmp_path / "root" / "stories" / "9" / "link")
    assert s.delete_prefix("stories/9/") == 1
    assert (outside / "keep.txt").read_bytes() == b"keep"


@pytest.mark.parametrize("prefix", ["", "stories/1", "/stories/1/", "stories/../", "../x/"])
def test_a_prefix_that_is_not_a_safe_folder_is_refused(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(UnsafeKey):
        LocalStorage(tmp_path).delete_prefix(prefix)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_s3_delete_prefix_walks_every_page_and_batch(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1",
                        "AWS_ENDPOINT_URL": moto_url, "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    client.create_bucket(Bucket="books")
    s = S3Storage("books", prefix="env", client=client)
    for i in range(1005):  # two list pages, two DeleteObjects batches
        client.put_object(Bucket="books", Key=f"env/stories/1/pages/{i:04d}.png", Body=b"x")
    s.put("stories/10/book.pdf", b"x", "application/pdf")
    client.put_object(Bucket="books", Key="stories/1/outside-the-prefix.png", Body=b"x")
    assert s.delete_prefix("stories/1/") == 1005
    left = sorted(o["Key"] for o in client.list_objects_v2(Bucket="books").get("Contents", []))
    assert left == ["env/stories/10/book.pdf", "stories/1/outside-the-prefix.png"]
    assert s.delete("stories/10/book.pdf") is True
    assert s.delete("stories/10/book.pdf") is False
