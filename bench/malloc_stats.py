"""glibc's allocator statistics and trim for the memory bench (bench/bench_memory.py), imported by the
worker's probe (bench/mem_probe_app.py)."""
from __future__ import annotations

import ctypes


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


# malloc_trim(0) after a second's sleep, as source for the builtin exec (bench/mem_probe_app.py
# sends it to each CPU process, which cannot import this package).
TRIM_AFTER_1S = "import ctypes, time; time.sleep(1.0); ctypes.CDLL('libc.so.6').malloc_trim(0)"
