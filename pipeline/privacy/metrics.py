"""Prometheus metrics of personal data's lifecycle, served with the worker's others (METRICS_PORT,
pipeline/kernel/metrics.py) by the worker that runs the sweep. Labels are bounded words, never ids,
keys or names."""
from __future__ import annotations

from prometheus_client import Counter, Gauge

RETENTION = Counter("storycreator_retention_expired_total",
                    "Rows whose personal data a retention period deleted, by kind (photo: upload and face "
                    "data; story: pictures, books, page texts, print files)", ["kind"])
DELETIONS = Counter("storycreator_storage_deletions_total",
                    "Queued storage deletions processed, by outcome (deleted: done for good; rechecked: first "
                    "pass done, a second one is due after the lease; failed: to be tried again)", ["outcome"])
OBJECTS = Counter("storycreator_storage_objects_deleted_total",
                  "Stored objects (files) removed by queued deletions")
QUEUED = Gauge("storycreator_storage_deletions_queued",
               "Rows in the storage deletion queue at the end of the last drain")
