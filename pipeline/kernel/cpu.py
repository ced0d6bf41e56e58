"""CPU-bound work off the threads pool's GIL: a small process pool per worker process.

I/O-bound steps run on a threads pool (high concurrency on 2 cores); a CPU-heavy call inside
one of them (assembling a PDF book) would hold the GIL and stall every other thread. Such calls
go to a few spawned processes instead; the calling thread just waits, like on any I/O.
``CPU_PROCESSES=0`` runs them inline (tests, tools).
"""
from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from pipeline.kernel.errors import TransientStepError

T = TypeVar("T")

_lock = threading.Lock()
_pool: tuple[int, ProcessPoolExecutor] | None = None


def processes() -> int:
    """CPU_PROCESSES: spawned processes per worker for CPU-heavy work; 0 runs it inline;
    default min(2, cores). Raises SystemExit("configuration error: …") outside 0–64."""
    from pipeline.kernel.config import env_int

    return env_int("CPU_PROCESSES", min(2, os.cpu_count() or 1), 0, 64)


def _get_pool() -> ProcessPoolExecutor:
    global _pool
    pid = os.getpid()
    with _lock:
        if _pool is None or _pool[0] != pid:
            # spawn, not fork: forking a process with live threads can copy held locks.
            ctx = multiprocessing.get_context("spawn")
            _pool = (pid, ProcessPoolExecutor(max_workers=processes(), mp_context=ctx,
                                              initializer=_child_init))
        return _pool[1]


def _child_init() -> None:
    """Render a one-page book once: imports, font discovery and the per-process font
    templates (~0.5 s) are paid here, not by the first story's completion."""
    import io

    from PIL import Image

    import pipeline.stories.steps  # noqa: F401  (what the calls are pickled against: ~0.5 s of imports)
    from pipeline.stories.book import Book, BookPage, render_pdf

    buf = io.BytesIO()
    Image.new("RGB", (8, 6), "white").save(buf, "PNG")
    render_pdf(Book("Warm-up", "Mia", "Warm-up", [BookPage(1, "Mia.", buf.getvalue())]))


def run(fn: Callable[..., T], *args: Any, timeout: float = 120) -> T:
    """fn(*args) in a CPU process (fn and args must pickle: plain data and module functions)."""
    if processes() == 0:
        return fn(*args)
    try:
        return _get_pool().submit(fn, *args).result(timeout=timeout)
    except BrokenProcessPool:
        shutdown()  # a child died (OOM kill): the next call starts a fresh pool
        raise TransientStepError("a CPU worker process died") from None


def warm_up() -> None:
    """Start the processes now (spawn + imports take a second), not in a story's critical path."""
    if processes() > 0:
        pool = _get_pool()
        # Any call starts the processes; each runs _child_init as it starts.
        for f in [pool.submit(os.getpid) for _ in range(processes())]:
            f.result(timeout=120)


def shutdown() -> None:
    global _pool
    with _lock:
        if _pool is not None and _pool[0] == os.getpid():
            _pool[1].shutdown(wait=False, cancel_futures=True)
        _pool = None
