"""workers/lazy_einfo.py: a retry's traceback copy reads the instruction positions only when asked,
and is still billiard's own copy where one is pickled or formatted."""
from __future__ import annotations

import pickle
import sys
import traceback
from typing import Any

from billiard import einfo

import workers.app  # noqa: F401  (installs the hook, as a worker does)
from workers.lazy_einfo import LazyCode, install


def _raise_deep(n: int) -> None:
    if n == 0:
        raise ValueError("the step's own error")
    _raise_deep(n - 1)


def _exc_info() -> Any:
    try:
        _raise_deep(3)
    except ValueError:
        return sys.exc_info()
    raise AssertionError("unreachable")


def test_the_worker_copies_code_objects_lazily_and_install_is_idempotent() -> None:
    assert einfo._Frame.Code is LazyCode
    install()
    assert einfo._Frame.Code is LazyCode


def test_the_copy_keeps_billiards_attributes_and_the_same_positions() -> None:
    code = _raise_deep.__code__
    lazy, eager = LazyCode(code), einfo._Code(code)
    shared = {k for k in vars(eager) if k != "_co_positions"}
    assert {k: getattr(lazy, k) for k in shared} == {k: getattr(eager, k) for k in shared}
    assert lazy.__class__ is eager.__class__  # both pose as types.CodeType
    assert list(lazy.co_positions()) == list(eager.co_positions()) == list(code.co_positions())


def test_pickled_it_is_billiards_code_with_its_positions_and_no_code_object() -> None:
    info = einfo.ExceptionInfo(_exc_info())
    frame = info.tb.tb_next.tb_frame
    assert type(frame.f_code) is LazyCode
    back = pickle.loads(pickle.dumps(info.tb))
    code = back.tb_next.tb_frame.f_code
    assert type(code) is einfo._Code and "_code" not in vars(code)
    assert code.co_name == "_raise_deep"
    assert list(code.co_positions()) == list(_raise_deep.__code__.co_positions())


def test_the_traceback_text_is_the_same_as_billiards() -> None:
    exc_info = _exc_info()
    lazy = einfo.ExceptionInfo(exc_info)
    einfo._Frame.Code = einfo._Code
    try:
        eager = einfo.ExceptionInfo(exc_info)
    finally:
        install()
    assert lazy.traceback == eager.traceback and "the step's own error" in lazy.traceback
    # formatted from the copies themselves (what a process pool's parent would do), carets included
    assert traceback.format_tb(lazy.tb) == traceback.format_tb(eager.tb)  # type: ignore[arg-type]


def test_a_retry_in_celerys_tracer_copies_no_positions() -> None:
    # the worker's own retry path: Celery's tracer turning Task.retry's Retry into an ExceptionInfo
    # (its cost, 0.20 ms a retry against billiard's 0.66-0.74 ms, is measured as the docstring of
    # workers/lazy_einfo.py says; a speed is a bench's business, not a test's)
    from celery import Celery, signals
    from celery.app.trace import build_tracer

    app = Celery("lazy-einfo-test", broker="memory://", set_as_current=False)

    @app.task(bind=True)
    def waits(self: Any) -> None:
        raise self.retry(countdown=1, max_retries=None)

    waits.apply_async = lambda *a, **k: None  # type: ignore[method-assign]  # the re-sent message: not here
    seen: list[Any] = []

    def on_retry(sender: Any = None, einfo: Any = None, **_: Any) -> None:
        seen.append(einfo)

    signals.task_retry.connect(on_retry, sender=waits, weak=False)
    try:
        tracer = build_tracer(waits.name, waits, app=app, eager=False, propagate=False)
        result = tracer("id1", (), {}, {"id": "id1", "delivery_info": {}, "retries": 0})
    finally:
        signals.task_retry.disconnect(on_retry, sender=waits)
    assert result.info.state == "RETRY" and len(seen) == 1
    codes, tb = [], seen[0].tb
    while tb is not None:
        codes.append(tb.tb_frame.f_code)
        tb = tb.tb_next
    assert [c.co_name for c in codes][-1] == "retry" and len(codes) >= 3
    assert all(type(c) is LazyCode and "_co_positions" not in vars(c) for c in codes)
    assert "Retry in 1s" in seen[0].traceback
