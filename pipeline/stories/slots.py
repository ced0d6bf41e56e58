"""Fair turns between families (README "Fair turns between families"): the words for a story that
waits for a slot of its account, the hand-off that starts the next one when a story ends, the
sweep's backstop for a lost hand-off, and the priority of a story's pages.

The slots are rows (db/slots.py): at most USER_STORIES_IN_FLIGHT of an account's stories are
``processing``; the start's claim (db/stories.py claim_story with ``cap``) takes one under the
account's advisory lock or leaves the story ``pending``. When a story ends, :func:`ended_story`
sends ``stories.generate`` for the account's oldest waiting stories, as many as it has free slots
(duplicates are harmless: the claim decides). A worker that dies between the end's commit and the
send loses only the message: :func:`sweep_waiting` (run by the periodic sweep) sends it again.
"""
from __future__ import annotations

import logging

from db import slots as slots_db
from db.engine import autocommit
from pipeline.config import settings
from pipeline.kernel import publish
from pipeline.stories.stages import STORY

log = logging.getLogger("storycreator.slots")

# Redis's priority steps (kombu's default ``priority_steps``): 0 is served first. A message's
# priority is put in the step at or below it, so only these four values mean anything.
PRIORITY_STEPS = (0, 3, 6, 9)


def page_priority(in_flight_before: int, backlog: int) -> int | None:
    """The broker priority of a story's page chains, from how busy its account is: the account's
    other stories in flight when this one started plus its stories still pending (``backlog``).
    0 for a family's only story, then 3, 6 and 9 (three or more others): on Redis the workers take
    priority 0 from every queue before 3, so a small story's pages pass a large batch's. None when
    FAIR_PRIORITY is off (no priority sent). RabbitMQ ignores it unless its queues were declared
    with ``x-max-priority`` (this project does not: README)."""
    if not settings().fair_priority:
        return None
    return PRIORITY_STEPS[min(max(in_flight_before, 0) + max(backlog, 0), len(PRIORITY_STEPS) - 1)]


def waiting_detail(in_flight: int, cap: int) -> str:
    """The start's log line for a story left pending at its account's cap."""
    return f"waiting for a slot: {in_flight} of the account's stories in flight (USER_STORIES_IN_FLIGHT={cap})"


def waiting_reason(in_flight: int, cap: int | None = None) -> str:
    """What ``storycreator status <story>`` says a story waiting at its account's cap (default
    USER_STORIES_IN_FLIGHT) waits for (after "waiting for ")."""
    cap = settings().user_stories_in_flight if cap is None else cap
    return (f"a slot of its account ({in_flight} of its stories in flight; USER_STORIES_IN_FLIGHT={cap}): "
            "it starts when one of them ends")


def waits_for_slot(in_flight: int | None, cap: int | None = None) -> bool:
    """Is a pending story whose account has ``in_flight`` other stories in flight waiting for a
    slot under ``cap`` (default USER_STORIES_IN_FLIGHT; 0: no cap)?"""
    cap = settings().user_stories_in_flight if cap is None else cap
    return cap > 0 and in_flight is not None and in_flight >= cap


def hand_off(user_id: str) -> list[str]:
    """Send ``stories.generate`` for the account's oldest waiting stories, one per free slot.
    Returns their ids (empty when nothing waits, the account is at its cap, or there is no cap)."""
    cap = settings().user_stories_in_flight
    if cap <= 0:
        return []
    with autocommit() as c:
        ids = slots_db.account_waiting(c, user_id, cap)
    for story_id in ids:
        publish.send(STORY["outline"].task, {"story_id": story_id})
    return ids


def ended_story(story_id: str | None = None, page_id: str | None = None) -> list[str]:
    """After a step that may have ended a story (completed or failed; ``page_id``: a page step's,
    whose failure fails its story): its account's hand-off (:func:`hand_off`). Never raises: a
    hand-off that could not be sent (the database or the broker away) is the sweep's to do
    (:func:`sweep_waiting`). Returns the stories sent."""
    if settings().user_stories_in_flight <= 0 or (story_id is None and page_id is None):
        return []
    try:
        with autocommit() as c:
            user = slots_db.story_account(c, story_id, page_id)
        return hand_off(user) if user is not None else []
    except Exception as e:  # noqa: BLE001 - the step is done; the sweep sends what this could not
        log.warning("hand-off after story %s / page %s not sent (the sweep will): %s", story_id, page_id,
                    type(e).__name__)
        return []


def sweep_waiting(limit: int = 500, settle: float | None = None, *, dry_run: bool = False) -> list[str]:
    """The sweep's backstop: ``stories.generate`` for the waiting stories of accounts with free
    slots (db.slots.waiting_stories: oldest first, one per free slot), pending for at least
    ``settle`` seconds (default SWEEP_INTERVAL: their own message or hand-off had its turn), at
    most ``limit``. Nothing when there is no cap. Returns the ids (sent unless ``dry_run``)."""
    s = settings()
    if s.user_stories_in_flight <= 0:
        return []
    with autocommit() as c:
        ids = slots_db.waiting_stories(c, limit, s.user_stories_in_flight,
                                       s.sweep_interval if settle is None else settle)
    if not dry_run:
        for story_id in ids:
            publish.send(STORY["outline"].task, {"story_id": story_id})
    return ids
