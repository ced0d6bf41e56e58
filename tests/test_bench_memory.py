"""The memory bench's pure parts (bench/bench_memory.py): its checkpoints, the verdict's rule, the
worker's processes by role (a real spawned child, read from /proc) and the allocator probe
(bench/malloc_stats.py: glibc's mallinfo2 and malloc_trim in this process). The bench itself
starts a worker and runs for many minutes: run it by hand (README, Benchmarks)."""
from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

import pytest

from bench import bench_memory as bm

pytestmark = pytest.mark.unit


def test_checkpoints_default_and_given() -> None:
    assert bm.checkpoints(2000) == [50, 250, 500, 1000, 1500, 2000]
    assert bm.checkpoints(200) == [25, 50, 100, 150, 200]
    # Given ones are sorted, deduplicated, kept within the run, and always end at the total.
    assert bm.checkpoints(1000, "500,50,50,1500") == [50, 500, 1000]


@pytest.mark.parametrize(("mb", "word"), [
    ([500.0, 530.0, 540.0, 548.0, 550.0, 552.0], "flat"),          # last half +4 MB: under 2 % of 500
    ([500.0, 560.0, 600.0, 640.0, 650.0, 660.0], "levels off"),    # +20 in the last half vs +140 before
    ([500.0, 520.0, 540.0, 580.0, 620.0, 660.0], "grows"),         # as much in the last half as before
    ([500.0, 520.0, 540.0, 560.0, 530.0, 500.0], "falls"),
    ([500.0, 490.0, 480.0, 470.0, 480.0, 490.0], "grows"),         # +20 after shrinking: not levelling off
])
def test_verdict(mb: list[float], word: str) -> None:
    text = bm.verdict([50, 250, 500, 1000, 1500, 2000], mb)
    assert text.endswith(f"-> {word}") or f"-> {word} (" in text
    assert f"{mb[0]:.1f} MB at 50" in text and f"{mb[-1]:.1f} at 2000" in text


def _sleep(started: Any) -> None:
    started.set()
    time.sleep(30)


def test_processes_finds_a_spawned_child() -> None:
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    child = ctx.Process(target=_sleep, args=(started,), daemon=True)
    child.start()
    try:
        assert started.wait(60)  # the interpreter is up: its RSS is more than a bare fork's
        roles = bm.processes(os.getpid())
        assert roles["main"] == [os.getpid()]
        assert child.pid in roles["cpu"]
        assert bm.rss_mb(os.getpid()) > 10 and bm.rss_mb(child.pid) > 1
    finally:
        child.kill()
        child.join()
    assert bm.rss_mb(child.pid) == 0.0


def test_malloc_probe_reads_this_process() -> None:
    from bench import malloc_stats as mem_probe_app

    before = mem_probe_app.mallinfo()
    if not before:
        pytest.skip("glibc without mallinfo2 (< 2.33)")
    assert before["in_use"] > 1 and before["arena"] >= before["in_use"]
    kept = [bytearray(1000) for _ in range(20_000)]  # ~20 MB of small blocks, then freed
    assert mem_probe_app.mallinfo()["in_use"] > before["in_use"] + 10
    del kept
    mem_probe_app.malloc_trim()
    assert mem_probe_app.mallinfo()["in_use"] < before["in_use"] + 10
