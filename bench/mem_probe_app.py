"""The story worker (workers.app, unchanged) plus one remote-control command, ``bench_mem_probe``, that
reports where the worker process's memory is (bench/bench_memory.py asks it at each checkpoint):

- live objects the cyclic collector tracks, counted by type (``gc.get_objects()``: objects made
  since workers.app's ``gc.freeze()`` at boot, i.e. what the stories left behind);
- glibc's malloc statistics (bench/malloc_stats.py) (``mallinfo2``, glibc >= 2.33): bytes in use vs free bytes kept in
  the arenas, which separates memory Python holds from memory the allocator keeps;
- with ``BENCH_TRACEMALLOC=<frames>`` set, a ``tracemalloc`` snapshot compared with the first
  probe's: the source lines whose allocations grew most. Tracing starts when the worker is ready
  (after boot) and slows every allocation: a diagnostic, not the run whose RSS is reported.

    celery -A bench.mem_probe_app worker ...   (as bench/bench_pipeline.py start_worker starts it)
"""
from __future__ import annotations

import collections
import gc
import os
import sys
import tracemalloc
from typing import Any

from celery import signals
from celery.worker.control import control_command

from bench.malloc_stats import TRIM_AFTER_1S, mallinfo, malloc_trim
from workers.app import app

__all__ = ["app"]

_first: list[tracemalloc.Snapshot] = []


@signals.worker_ready.connect
def _start_tracing(**_: Any) -> None:
    frames = int(os.environ.get("BENCH_TRACEMALLOC", "0") or 0)
    if frames > 0:
        tracemalloc.start(frames)


@control_command(args=[("top", int), ("trim", int)], signature="[top=15] [trim=0]")
def bench_mem_probe(state: Any, top: int = 15, trim: int = 0) -> dict[str, Any]:
    """Counts by type of gc-tracked objects, Python's allocated blocks (``sys.getallocatedblocks``:
    every live object, tracked by the gc or not), malloc totals and (when tracing) the top ``top``
    tracemalloc growths since the first probe (size in KB, count). ``trim=1``: only
    :func:`malloc_trim`, then the malloc totals (what the allocator had kept but could give back)."""
    if trim:
        # The CPU processes too: one call each (each sleeps first, so neither process takes both).
        # Sent as source for the builtin exec: a spawned process cannot import the bench package.
        from pipeline.kernel import cpu

        if cpu.processes() > 0:
            pool = cpu._get_pool()
            for f in [pool.submit(exec, TRIM_AFTER_1S) for _ in range(cpu.processes())]:
                f.result(timeout=60)
        return {"pid": os.getpid(), "trimmed": malloc_trim(), "malloc": mallinfo()}
    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    out: dict[str, Any] = {"pid": os.getpid(), "objects": sum(counts.values()), "types": dict(counts.most_common(top)),
                           "blocks": sys.getallocatedblocks(), "malloc": mallinfo(), "gc_garbage": len(gc.garbage)}
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        if not _first:
            _first.append(snap)
        out["traced_mb"] = tracemalloc.get_traced_memory()[0] / 2**20
        out["growth"] = [(str(s.traceback[0]), round(s.size_diff / 1024, 1), s.count_diff)
                         for s in snap.compare_to(_first[0], "lineno")[:top]]
    return out
