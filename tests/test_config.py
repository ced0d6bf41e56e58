"""The queue list is written once, in celeryconfig (from the flows' stage tables): every worker
command consumes it by giving no -Q, and every routed task goes to a queue a worker consumes."""
from __future__ import annotations

import re

import celeryconfig
from pipeline.stories.stages import STORY
from tests.support import ALL_QUEUES, ROOT


def test_every_queue_list_matches_celeryconfig() -> None:
    expected = set(celeryconfig.QUEUES)
    # The worker commands name no queues: a worker without -Q consumes celeryconfig's task_queues.
    for where, path in {"Procfile": ROOT / "Procfile", "run": ROOT / "run", "demo": ROOT / "scripts" / "demo.py",
                        "bench": ROOT / "bench" / "bench_pipeline.py"}.items():
        assert not re.search(r"(-Q|--queues)[ =\"',]+[a-z]+,", path.read_text()), where
    assert set(ALL_QUEUES.split(",")) == expected
    # every routed task goes to a queue a worker consumes
    assert {r["queue"] for r in celeryconfig.task_routes.values()} <= expected
    # the routes are the story flow's stage table
    routes = {k: v["queue"] for k, v in celeryconfig.task_routes.items()}
    assert {s.task: s.queue for s in STORY}.items() <= routes.items()
    assert {q.name for q in celeryconfig.task_queues} == expected
