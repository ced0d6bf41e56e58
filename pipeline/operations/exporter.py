"""The metrics exporter process (Procfile: exporter): the backlog gauges (pipeline/operations/gauges.py)
at ``http://<host>:EXPORTER_PORT/metrics``.

    python -m pipeline.operations.exporter        # EXPORTER_PORT (default 9810), EXPORTER_CACHE_SECONDS (15)

One per deployment, beside the workers: the gauges describe the whole system (one database, one
broker), so a worker serving them would export the same numbers once per machine and run the
queries once per worker per scrape. Not in celery beat either: beat must be exactly one process
and only schedules; a slow database or a scrape storm must not delay its ticks, and an exporter
down (its own ``up`` series) is told apart from beat down. Two exporters are harmless (same numbers;
alert expressions aggregate with ``max``).
"""
from __future__ import annotations

import logging
import signal
import sys
import threading

from pipeline.config import env_float, env_int, log_level, settings

DEFAULT_PORT = 9810
log = logging.getLogger("pipeline.operations.exporter")


def main() -> int:
    """Serve until SIGTERM/SIGINT. Exits 2 with one line ("configuration error: …") for a bad
    setting or a port that cannot be bound; a database or broker that is down is not an error here
    (``storycreator_backlog_source_up`` says so, and the gauges come back when it does)."""
    logging.basicConfig(level=log_level(), format="%(asctime)s %(levelname)s exporter %(name)s: %(message)s")
    try:
        port = env_int("EXPORTER_PORT", DEFAULT_PORT, 1, 65535)
        cache = env_float("EXPORTER_CACHE_SECONDS", 15.0, 1.0, 3600.0)
        s = settings()
        import celeryconfig  # the queue list and transport options the workers use
        from db.engine import make_engine
        from db.url import DatabaseURLError
        from pipeline.operations.gauges import COLLECTOR, Sources
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    try:
        # Its own small pool: one read at a time (the collector's lock), checked before use so the
        # first scrape after a PostgreSQL restart reads instead of failing once.
        engine = make_engine(None, pool_size=1, max_overflow=1, pool_pre_ping=True, pool_recycle=1800,
                             connect_args={"application_name": "storycreator-exporter", "connect_timeout": 5})
    except DatabaseURLError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    COLLECTOR.configure(Sources(lambda: engine, s.broker_url, celeryconfig.QUEUES,
                                celeryconfig.broker_transport_options), cache)
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(port, addr="0.0.0.0")
    except OSError as e:
        print(f"configuration error: EXPORTER_PORT={port} cannot be served: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("serving backlog gauges on :%d/metrics (read at most every %.0f s)", port, cache)
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
