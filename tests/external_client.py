"""A stand-in for the external web API: it knows the broker URL and the contract, nothing else.

Run as a script from outside the project (cwd=/). It imports celery only, never this project.
Usage: external_client.py BROKER_URL TASK_NAME JSON_KWARGS [JSON_KWARGS ...]
"""
import json
import sys

from celery import Celery

broker, name, *payloads = sys.argv[1:]
client = Celery("external-api", broker=broker)
for payload in payloads:
    # Default queue, default serializer (JSON): exactly what a fresh Celery client does.
    client.send_task(name, kwargs=json.loads(payload))
assert not any(m.split(".")[0] in ("pipeline", "workers", "db", "celeryconfig") for m in sys.modules), \
    "the external client must not import the project"
