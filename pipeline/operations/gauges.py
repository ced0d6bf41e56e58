"""The backlog gauges Prometheus scrapes from the exporter (pipeline/operations/exporter.py): queue
depths from the broker, the oldest waiting story, page step and order, dead event deliveries.

Read at scrape time, at most once per ``cache_seconds`` whatever the number of scrapers or their
rate (one lock: concurrent scrapes wait for the one read and share it). A source that fails (the
database or the broker down, a query past its 5 s statement timeout) is reported by
``storycreator_backlog_source_up{source} 0`` and its gauges are left out of that scrape, so an
alert on them neither fires on a stale value nor hides the outage (alerts.yml: BacklogSourceDown).

Names: ``storycreator_`` + what is measured; the queue gauges ``storycreator_queue_*``, the ages
``storycreator_oldest_*_age_seconds`` (a later cost part adds ``storycreator_cost_*``). Labels are
bounded: queue, stage, status and source names, never ids.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from db.backlog import dead_deliveries, limit_statement_time, oldest_orders, oldest_page_steps, story_backlog
from pipeline.operations.queue_depth import Depths, queue_depths
from pipeline.stories.stages import PAGE_STAGES, page_prerequisite

log = logging.getLogger(__name__)

STATEMENT_TIMEOUT_MS = 5000  # one slow query must not hold a scrape (Prometheus' default timeout: 10 s)
SOURCES = ("database", "broker")


def _families() -> dict[str, GaugeMetricFamily]:
    g = GaugeMetricFamily
    return {
        "queue": g("storycreator_queue_messages", "Messages waiting in a Celery queue (all priority steps)",
                   labels=["queue"]),
        "unacked": g("storycreator_queue_unacked_messages",
                     "Messages delivered to workers and not yet acknowledged, all queues (Redis broker only)"),
        "story": g("storycreator_oldest_story_age_seconds",
                   "Age of the oldest story in a status (pending, processing, waiting_for_slot: pending at its "
                   "account's USER_STORIES_IN_FLIGHT), from its creation; 0 when none",
                   labels=["status"]),
        "slot": g("storycreator_stories_waiting_for_slot",
                  "Pending stories whose account has USER_STORIES_IN_FLIGHT stories in flight (they start as "
                  "slots free)"),
        "page": g("storycreator_oldest_page_step_age_seconds",
                  "Age of the oldest waiting or running page step of a stage in a processing story; 0 when none",
                  labels=["stage"]),
        "order": g("storycreator_oldest_order_age_seconds",
                   "Age of the oldest order in a status (paid, fulfilled), since it entered it; 0 when none",
                   labels=["status"]),
        "dead": g("storycreator_event_deliveries_dead", "Event deliveries out of attempts (events retry resends them)"),
        "up": g("storycreator_backlog_source_up", "1 when the last read of a source (database, broker) succeeded",
                labels=["source"]),
        "seconds": g("storycreator_backlog_read_seconds", "Wall time of the last read of a source",
                     labels=["source"]),
        "at": g("storycreator_backlog_read_timestamp_seconds", "Unix time of the last read (the cache's age)"),
    }


@dataclass
class Sources:
    """Where the gauges are read: ``engine()`` returns the SQLAlchemy engine; ``broker_url``, the
    Celery ``queues`` and its ``transport_options`` say which broker queues to ask; ``cap``: the
    USER_STORIES_IN_FLIGHT that tells a story waiting for a slot (default: the setting)."""

    def __post_init__(self) -> None:
        if self.cap < 0:
            from pipeline.config import settings

            self.cap = settings().user_stories_in_flight

    engine: Callable[[], Engine]
    broker_url: str
    queues: Sequence[str]
    transport_options: Mapping[str, Any] = field(default_factory=dict)
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS
    cap: int = -1  # USER_STORIES_IN_FLIGHT (-1: read from the settings when the gauges are read)


class BacklogCollector(Collector):
    """A prometheus_client collector of the backlog gauges, cached for ``cache_seconds``.

    Registered on the default registry at import (so every name it exports is known to tests and
    tools that read the registry); it exports samples only once :meth:`configure` has been called,
    which only the exporter process does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: Sources | None = None
        self._cache_seconds = 15.0
        self._read_at = float("-inf")
        self._cached: list[Metric] = []
        self.reads = 0  # how many times the sources were read (tests: the cache holds)

    def configure(self, sources: Sources, cache_seconds: float) -> None:
        """Read ``sources`` from now on, at most once per ``cache_seconds`` (> 0)."""
        if cache_seconds <= 0:
            raise ValueError(f"cache_seconds must be > 0, not {cache_seconds}")
        with self._lock:
            self._sources, self._cache_seconds = sources, cache_seconds
            self._read_at, self._cached = float("-inf"), []

    def describe(self) -> Iterable[Metric]:
        return list(_families().values())

    def collect(self) -> Iterable[Metric]:
        if self._sources is None:
            return list(_families().values())
        with self._lock:
            if time.monotonic() - self._read_at >= self._cache_seconds:
                self._cached = self._read(self._sources)
                self._read_at = time.monotonic()
                self.reads += 1
            return self._cached

    def _read(self, src: Sources) -> list[Metric]:
        f = _families()
        ok = {"database": self._read_database(src, f), "broker": self._read_broker(src, f)}
        for source in SOURCES:
            f["up"].add_metric([source], 1.0 if ok[source][0] else 0.0)
            f["seconds"].add_metric([source], ok[source][1])
        f["at"].add_metric([], time.time())
        return [m for m in f.values() if m.samples]

    @staticmethod
    def _read_database(src: Sources, f: dict[str, GaugeMetricFamily]) -> tuple[bool, float]:
        t0 = time.perf_counter()
        try:
            with src.engine().begin() as c:
                limit_statement_time(c, src.statement_timeout_ms)
                stories, counts = story_backlog(c, src.cap)
                pages = oldest_page_steps(c, [(s.name, s.status_column,
                                               (pre.status_column if (pre := page_prerequisite(s)) else None))
                                              for s in PAGE_STAGES])
                orders, dead = oldest_orders(c), dead_deliveries(c)
        except Exception as e:  # noqa: BLE001 (any failure is the database's state to report, never a crash)
            log.warning("backlog gauges: the database could not be read: %s", e)
            return False, time.perf_counter() - t0
        for status, age in stories.items():
            f["story"].add_metric([status], age)
        f["slot"].add_metric([], float(counts["waiting_for_slot"]))
        for stage, age in pages.items():
            f["page"].add_metric([stage], age)
        for status, age in orders.items():
            f["order"].add_metric([status], age)
        f["dead"].add_metric([], float(dead))
        return True, time.perf_counter() - t0

    @staticmethod
    def _read_broker(src: Sources, f: dict[str, GaugeMetricFamily]) -> tuple[bool, float]:
        t0 = time.perf_counter()
        try:
            depths: Depths = queue_depths(src.broker_url, src.queues, src.transport_options)
        except Exception as e:  # noqa: BLE001 (as above: the broker's state, reported)
            log.warning("backlog gauges: the broker could not be read: %s", e)
            return False, time.perf_counter() - t0
        for queue, n in depths.ready.items():
            f["queue"].add_metric([queue], float(n))
        if depths.unacked is not None:
            f["unacked"].add_metric([], float(depths.unacked))
        return True, time.perf_counter() - t0


def exported_names(families: Iterator[Metric] | Iterable[Metric]) -> set[str]:
    """The series names a scrape can show for ``families`` (a registry's ``collect()``): a gauge's
    own name; a counter's ``_total`` and ``_created``; a histogram's ``_bucket``, ``_count``,
    ``_sum`` and ``_created``; a summary's ``_count``, ``_sum``, ``_created`` and its own name."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "summary": ("", "_count", "_sum", "_created"), "info": ("_info",)}
    names: set[str] = set()
    for m in families:
        names.update(m.name + s for s in suffixes.get(m.type, ("",)))
    return names


COLLECTOR = BacklogCollector()
REGISTRY.register(COLLECTOR)
