"""glibc's allocator statistics and trim for the memory bench (bench/bench_memory.py), imported by the
worker's probe (bench/mem_probe_app.py) and run in its CPU processes: no project imports here, so a
spawned CPU process can unpickle :func:`trim_after` cheaply."""
from __future__ import annotations

import ctypes
import time


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]


def mallinfo() -> dict[str, float]:
    """glibc's heap totals over all arenas, MB: ``arena`` (bytes sbrk/mmap'ed as heap), ``in_use``
    (uordblks), ``free`` (fordblks: kept by malloc, not returned), ``mmap`` (hblkhd: large blocks)."""
    try:
        f = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return {}
    f.restype = _Mallinfo2
    m = f()
    mb = 1024 * 1024
    return {"arena": m.arena / mb, "in_use": m.uordblks / mb, "free": m.fordblks / mb, "mmap": m.hblkhd / mb}


def malloc_trim() -> bool:
    """glibc's ``malloc_trim(0)``: free memory at the top of each arena and whole free pages inside
    them go back to the kernel. True when some was released."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def trim_after(seconds: float) -> bool:
    """:func:`malloc_trim` after sleeping ``seconds`` (so each of a pool's processes takes one call)."""
    time.sleep(seconds)
    return malloc_trim()
