"""The queue list is written in a few places that must agree with celeryconfig."""
from __future__ import annotations

import re

import celeryconfig
from tests.support import ALL_QUEUES, ROOT


def test_every_queue_list_matches_celeryconfig() -> None:
    expected = set(celeryconfig.QUEUES)
    lists = {
        "Procfile": re.search(r"-Q (\S+)", (ROOT / "Procfile").read_text()),
        "run": re.search(r"-Q (\S+)", (ROOT / "run").read_text()),
        "demo": re.search(r'QUEUES = "([^"]+)"', (ROOT / "scripts" / "demo.py").read_text()),
    }
    for where, m in lists.items():
        assert m is not None and set(m.group(1).split(",")) == expected, where
    assert set(ALL_QUEUES.split(",")) == expected
    # every routed task goes to a queue a worker consumes
    assert {r["queue"] for r in celeryconfig.task_routes.values()} <= expected
