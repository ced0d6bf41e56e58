"""The CPU process pool (pipeline/kernel/cpu.py): registered warmers run in each process as it
starts, and calls run in those processes; the kernel imports no domain module to warm them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.kernel import cpu


def _mark_started() -> None:
    """A warmer: leaves this process's id in the folder named by CPU_POOL_TEST_DIR."""
    (Path(os.environ["CPU_POOL_TEST_DIR"]) / str(os.getpid())).write_text("warm")


def _book_is_importable() -> str:
    import sys

    return "yes" if "pipeline.stories.book" in sys.modules else "no"


def test_warmers_run_in_each_process_and_the_book_is_warm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.stories.finish as finish

    assert finish.warm_up_book in cpu._warmers  # the story flow registered its warm-up on import
    monkeypatch.setenv("CPU_PROCESSES", "1")
    monkeypatch.setenv("CPU_POOL_TEST_DIR", str(tmp_path))
    monkeypatch.setattr(cpu, "_warmers", [*cpu._warmers])
    cpu.shutdown()
    cpu.warm_with(_mark_started)
    cpu.warm_with(_mark_started)  # once is enough
    try:
        cpu.warm_up()
        pid = cpu.run(os.getpid)
        assert pid != os.getpid()
        assert [p.name for p in tmp_path.iterdir()] == [str(pid)]
        assert cpu.run(_book_is_importable) == "yes"  # warm_up_book ran there first
    finally:
        cpu.shutdown()


def test_the_kernel_imports_no_story_module() -> None:
    src = Path(cpu.__file__).read_text()
    assert "import pipeline.stories" not in src and "from pipeline.stories" not in src
