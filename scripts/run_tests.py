"""The README's test command.

Without arguments, the whole suite as CI runs it (``.ci/run``): every test on ``TEST_WORKERS``
pytest-xdist processes (default 3; each has its own PostgreSQL database and Redis databases; a test
module stays on one process, and the modules that use RabbitMQ share one: tests/conftest.py). The
chaos-tier modules run beside the rest: they kill and stop only their own worker processes and
restart only their own Redis and PostgreSQL (tests/services.py), and ``tests/test_nemesis.py``'s
waits are deadlines, not timings (it passed under a load of 15). It was once run alone after the
rest, which cost its whole length (about 4 minutes) on top.
With arguments, one pytest run with exactly those arguments (``./run test -m unit``,
``./run test tests/test_names.py -k book``).
``./run test --record-module-seconds`` is that CI run rewriting ``tests/module_seconds.txt`` from its own
timings (the order the modules are handed to the xdist processes: tests/scheduling.py).
``./run test fast [ARGS]`` is the developer's loop: the ``unit`` and ``db`` tests not marked ``slow``
(``-m "(unit or db) and not slow"``, tests/conftest.py), in one process, in seconds.

Fails loudly when pytest collected nothing (its exit code 5 would otherwise look like a quiet pass
to some callers). Exit code: pytest's (1 for "collected nothing").
"""
from __future__ import annotations

import os
import subprocess
import sys

NO_TESTS_COLLECTED = 5
FAST = ["-m", "(unit or db) and not slow"]  # ./run test fast


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
    return pytest(*parallel, *record)


if __name__ == "__main__":
    sys.exit(main())
