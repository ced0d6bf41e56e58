"""The README's test command.

Without arguments, the whole suite as CI runs it (``.ci/run``): every test but the one module run
alone (below) on ``TEST_WORKERS`` pytest-xdist processes (default 3; each has its own
PostgreSQL database and Redis databases; a test module stays on one process, and the modules that
use RabbitMQ share one: tests/conftest.py),
then ``tests/test_nemesis.py`` alone: it stops workers past a lease and times what takes over, which
a loaded machine would blur (the other chaos-tier tests, ``tests/test_chaos.py`` among them, kill only
their own worker processes and restart only their own Redis and PostgreSQL: tests/services.py).
With arguments, one pytest run with exactly those arguments (``./run test -m unit``,
``./run test tests/test_names.py -k book``).
``./run test --record-module-seconds`` is that CI run rewriting ``tests/module_seconds.txt`` from its own
timings (the order the modules are handed to the xdist processes: tests/scheduling.py).
``./run test fast [ARGS]`` is the developer's loop: the ``unit`` and ``db`` tests not marked ``slow``
(``-m "(unit or db) and not slow"``, tests/conftest.py), in one process, in seconds.

Fails loudly when pytest collected nothing (its exit code 5 would otherwise look like a quiet pass
to some callers). Exit code: the first failing phase's, else 0.
"""
from __future__ import annotations

import os
import subprocess
import sys

NO_TESTS_COLLECTED = 5
FAST = ["-m", "(unit or db) and not slow"]  # ./run test fast
# Never beside other tests: test_nemesis stops workers past a 3 s lease and times what takes over (a
# loaded machine would blur its timings).
ALONE = ("tests/test_nemesis.py",)


def pytest(*args: str) -> int:
    """One pytest run in its own process (a second ``pytest.main`` in one process would reuse the
    first one's imported modules and settings). Returns its exit code."""
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", *args])
    if code == NO_TESTS_COLLECTED:
        print(f"error: pytest collected no tests ({' '.join(args)})", file=sys.stderr)
        return 1
    return code


RECORD = "--record-module-seconds"  # ./run test --record-module-seconds: the CI run, rewriting tests/module_seconds.txt


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["fast"]:
        return pytest(*FAST, *args[1:])
    record = [RECORD] if args == [RECORD] else []
    if args and not record:
        return pytest(*args)
    workers = int(os.environ.get("TEST_WORKERS", "3"))
    # scheduled per module, the longest first (tests/conftest.py, tests/scheduling.py)
    parallel = ["-n", str(workers)] if workers > 1 else []
    first = pytest(*parallel, *record, *(arg for path in ALONE for arg in ("--ignore", path)))
    second = pytest(*record, *ALONE)
    return first or second


if __name__ == "__main__":
    sys.exit(main())
