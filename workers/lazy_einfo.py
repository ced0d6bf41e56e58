"""A retry without the price of a pickled traceback's instruction table.

Celery turns every ``Retry`` (a step re-scheduled: a remote job not finished yet, a quota's line,
a lease) into a ``billiard.einfo.ExceptionInfo`` (celery/app/trace.py, ``TraceInfo.handle_retry``),
whose ``Traceback`` copies each frame's code object into a picklable ``_Code`` (billiard 4.3,
billiard/einfo.py). On Python 3.11+ (this project's) that copy lists ``code.co_positions()``: one 4-tuple per
bytecode instruction of each function on the traceback, 2,341 for Celery's own ``trace_task``
(about 0.2 ms of copying for that frame alone), done while holding the GIL. Profiled (py-spy ``--gil``) in
a worker following 16 slots of 0.5 s remote jobs (``bench/bench_quota.py``), ``_Code.__init__``
was 19.7 % of the GIL's time. With the threads pool the copy is never pickled: Celery formats the
real traceback for its log line and the task-retried event before (``ExceptionInfo.traceback``).
Measured (2026-12-01, a quiet 2-core machine): Celery's tracer (``celery.app.trace.build_tracer``)
running a task that raises ``Retry``, 2,000 times a mode, interleaved: 0.20 ms a retry with this,
0.66-0.74 ms without (the ``ExceptionInfo`` alone: 0.16 vs 0.61-0.68 ms). In ``bench_quota`` at 16
slots x 0.5 s it took ``_Code.__init__`` out of the profile, but the busy fraction did not move on
that quiet machine (0.826 vs 0.827 side by side): the worker there was not short of CPU.

:class:`LazyCode` keeps what ``_Code`` keeps but reads the positions from the code object only
when asked (a traceback formatted from the copy) or pickled (a process pool's result): pickled, it
is billiard's own ``_Code`` again, with the same attributes, so the other side needs nothing of
ours. It is put in place through billiard's own hook, the ``_Frame.Code`` class attribute
(:func:`install`, from workers.app). A code object is no frame: holding it keeps no locals alive.
"""
from __future__ import annotations

import types
from typing import Any

from billiard import einfo


class LazyCode(einfo._Code):  # type: ignore[misc,name-defined]
    """billiard's picklable copy of a code object, with ``co_positions`` read on demand.

    Same attributes as ``billiard.einfo._Code`` (billiard 4.3); ``co_positions()`` iterates the
    original code object's positions (4-tuples: start line, end line, start column, end column);
    pickled, it becomes a ``_Code`` holding them as a list."""

    def __init__(self, code: types.CodeType) -> None:  # noqa: D107 - the class says it
        # billiard's _Code.__init__, minus the list of positions (kept: the code object itself)
        self.co_filename = code.co_filename
        self.co_name = code.co_name
        self.co_argcount = code.co_argcount
        self.co_cellvars = ()
        self.co_firstlineno = code.co_firstlineno
        self.co_flags = code.co_flags
        self.co_freevars = ()
        self.co_code = b""
        self.co_lnotab = b""
        self.co_names = code.co_names
        self.co_nlocals = code.co_nlocals
        self.co_stacksize = code.co_stacksize
        self.co_varnames = ()
        self.co_qualname = code.co_qualname
        self._code = code

    @property
    def co_positions(self) -> Any:
        """The original's ``co_positions`` (a callable, as on a code object)."""
        return self._code.co_positions

    def __reduce__(self) -> tuple[Any, ...]:
        state = {k: v for k, v in self.__dict__.items() if k != "_code"}
        state["_co_positions"] = list(self._code.co_positions())
        return einfo._Code.__new__, (einfo._Code,), state


def install() -> None:
    """Make billiard's tracebacks copy code objects with :class:`LazyCode` (its ``_Frame.Code``
    hook). Idempotent; a billiard without that hook is left as it is."""
    frame = getattr(einfo, "_Frame", None)
    if frame is not None and getattr(frame, "Code", None) is einfo._Code:
        frame.Code = LazyCode

