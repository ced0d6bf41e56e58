"""How ``./run test`` spreads the test modules over its pytest-xdist processes (tests/conftest.py).

A module stays on one process (its module-scoped workers and Redis databases), and the modules
that use RabbitMQ share one process (they share its vhost's queues): each is one *scope*. The
processes take scopes one at a time as they run out of work; the order they are handed out in
decides when the last process finishes. pytest-xdist hands them out by number of tests, largest
first, which puts a module of 40 quick unit tests before a module of 4 real-worker stories of
20 s each. Here the longest scope goes first (longest processing time first: the processes then
finish within about the length of the shortest scopes of each other), by the seconds
``tests/module_seconds.txt`` records for each module (rewritten by ``--record-module-seconds``
from a whole run's own timings). A module missing from that file (a new one) is assumed to take
``UNKNOWN_SECONDS``, so it runs early rather than last: a new file of real-worker tests is the
likeliest to be long.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

SECONDS_FILE = Path(__file__).with_name("module_seconds.txt")
UNKNOWN_SECONDS = 60.0  # a module the file does not list yet: early, not last
HEADER = (
    "# seconds each test module takes (setup + call + teardown of its tests, summed; wall clock on one\n"
    "# xdist process of ./run test): tests/scheduling.py hands the longest module out first. Rewritten by:\n"
    "#   ./run test --record-module-seconds      (the whole parallel phase; its own timings)\n"
)


def read_seconds(path: Path = SECONDS_FILE) -> dict[str, float]:
    """module path (``tests/test_x.py``) -> seconds, from lines ``<seconds> <path>`` (``#`` starts a
    comment line). A missing file lists nothing."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            seconds, _, module = line.strip().partition(" ")
            out[module.strip()] = float(seconds)
    return out


def write_seconds(seconds: Mapping[str, float], path: Path = SECONDS_FILE) -> None:
    """Rewrites ``path`` with ``seconds`` (module -> seconds), longest first; modules the file
    listed and ``seconds`` lacks keep their line (a run of some modules updates only those)."""
    merged = {**read_seconds(path), **seconds}
    body = "".join(f"{merged[m]:.1f} {m}\n" for m in sorted(merged, key=lambda m: (-merged[m], m)))
    path.write_text(HEADER + body, encoding="utf-8")


def scope_seconds(scope_modules: Mapping[str, list[str]], known: Mapping[str, float]) -> dict[str, float]:
    """scope -> its expected seconds: the sum of its modules' recorded seconds (``UNKNOWN_SECONDS``
    for a module not recorded)."""
    return {scope: sum(known.get(m, UNKNOWN_SECONDS) for m in modules) for scope, modules in scope_modules.items()}


def longest_first(scopes: list[str], expected: Mapping[str, float]) -> str:
    """The scope to hand out next: the one expected to take longest (ties: the first listed)."""
    return max(scopes, key=lambda s: (expected.get(s, UNKNOWN_SECONDS), -scopes.index(s)))
