"""Bytes of a page step's message as stored in Redis (the broker's list item: kombu's JSON
envelope with the base64 body): each page step sent alone by name (how steps enqueued their
successor before issue 11) vs the page's chain (the first link carries the rest of the chain; the
next links are sent by Celery with what is left).

    .venv/bin/python -m bench.bench_messages     # BENCH_REDIS_URL, default redis://127.0.0.1:6379/10

Sends to the queues of an otherwise unused Redis database, reads the items back, deletes them.

Measured (issue 11): pages.write_text 1166 B alone vs 1998 B as the first link of the page's chain
(it carries the two links after it), draw_base 1167 vs 1579 B, personalize 1174 vs 1170 B; per page
3507 B in three single-step messages vs 4747 B as one chain (1.35x, +1.2 KB), all ids. The cost buys
a page whose remaining steps travel with it: a redelivered or retried link still runs the rest, and
any re-sent step resumes the whole page.
"""
from __future__ import annotations

import os
import sys
import uuid


def main() -> int:
    broker = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
    os.environ["CELERY_BROKER_URL"] = broker  # Celery lets the variable win over broker_url
    import redis
    from celery import Celery

    from pipeline.kernel import publish
    from pipeline.stories.stages import PAGE_STAGES, page_chain, page_kwargs

    app = Celery("bench-messages", set_as_current=False)
    app.config_from_object("celeryconfig")
    r = redis.Redis.from_url(broker)
    page, story = str(uuid.uuid4()), str(uuid.uuid4())

    def size_of(send: object) -> int:
        queue_lengths = {s.queue: r.llen(s.queue) for s in PAGE_STAGES}
        send()  # type: ignore[operator]
        for s in PAGE_STAGES:
            if r.llen(s.queue) > queue_lengths[s.queue]:
                item = r.lpop(s.queue)
                assert isinstance(item, bytes)
                return len(item)
        raise SystemExit("no message arrived")

    alone = [size_of(lambda s=s: publish.send(s.task, page_kwargs(page, story), via=app)) for s in PAGE_STAGES]
    chained = [size_of(lambda s=s: publish.send_signature(page_chain(page, s.name, story), via=app))
               for s in PAGE_STAGES]
    for s, a, c in zip(PAGE_STAGES, alone, chained, strict=True):
        print(f"{s.task:20s} alone {a:5d} B   as the chain's link from here {c:5d} B")
    print(f"per page: {sum(alone)} B in 3 single-step messages vs {sum(chained)} B as one chain "
          f"({sum(chained) / sum(alone):.2f}x); first message {alone[0]} B vs {chained[0]} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
