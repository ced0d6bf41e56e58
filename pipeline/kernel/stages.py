"""How a flow is declared: an ordered table of :class:`Stage` rows, written once per flow.

Each flow (the story pipeline in ``pipeline.stories.stages``, the order flow in
``pipeline.orders.stages``) declares its stages here-shaped, and everything that needs to know the
flow reads the table instead of repeating it: the Celery chain a page runs (task names in order),
each step's prerequisite, the stuck-work queries (status column, prerequisite column), the task
routes and the worker's queue list (``queue``), and the words shown to people (``label``).
Celery-free: names only, no task objects.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One step of a flow.

    ``name``: the stage's short name (``"text"``), used in logs, metrics and ``step_errors.stage``.
    ``task``: the Celery task name it runs as (``"pages.write_text"``), the name messages carry.
    ``queue``: the broker queue it is routed to (``"text"``).
    ``label``: what operators and parents read (``"story text"``).
    ``table`` / ``status_column``: the row and column this step alone moves
    (pending -> processing -> completed | failed; docs/database-schema.md).
    ``id_kwarg``: the keyword argument carrying the row's id in the message (``"page_id"``).
    ``prerequisite``: the stage (same flow) whose column must be completed first, or None.
    """

    name: str
    task: str
    queue: str
    label: str
    table: str
    status_column: str
    id_kwarg: str
    prerequisite: str | None = None


class Flow:
    """An ordered, immutable table of stages with lookups by name and by task name.

    Raises ValueError at import time when the table contradicts itself (a duplicate name or task,
    a prerequisite that is not an earlier stage), so a typo cannot ship."""

    def __init__(self, name: str, stages: Iterable[Stage]) -> None:
        self.name = name
        self.stages: tuple[Stage, ...] = tuple(stages)
        self._by_name = {s.name: s for s in self.stages}
        self._by_task = {s.task: s for s in self.stages}
        if len(self._by_name) != len(self.stages) or len(self._by_task) != len(self.stages):
            raise ValueError(f"flow {name}: duplicate stage name or task")
        seen: set[str] = set()
        for s in self.stages:
            if s.prerequisite is not None and s.prerequisite not in seen:
                raise ValueError(f"flow {name}: {s.name}'s prerequisite {s.prerequisite!r} is not an earlier stage")
            seen.add(s.name)

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)

    def __getitem__(self, name: str) -> Stage:
        return self._by_name[name]

    def by_task(self, task: str) -> Stage | None:
        """The stage a task name runs, or None for a task of another flow."""
        return self._by_task.get(task)

    def after(self, name: str) -> tuple[Stage, ...]:
        """The stages from ``name`` (included) to the end, in order."""
        i = self.stages.index(self._by_name[name])
        return self.stages[i:]

    def queues(self) -> tuple[str, ...]:
        """This flow's queues, in first-use order, each once."""
        return tuple(dict.fromkeys(s.queue for s in self.stages))

    def labels(self) -> dict[str, str]:
        """Stage name -> label for people."""
        return {s.name: s.label for s in self.stages}
