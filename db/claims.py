"""The pieces every guarded claim is built from, shared by db/photos.py, db/stories.py,
db/pages.py and db/provider_jobs.py.

Guarded status transitions: each is one conditional UPDATE, so two copies of a step cannot
both win, and a lost race is a no-op (no row returned), not an error.

A claim takes a column from pending (NULL counts as pending: rows from before the column had a
default) to processing, or takes over a processing claim whose row has not moved for longer
than the lease: that copy's worker died (SIGKILL, OOM, lost node) and its message came back.
A healthy copy keeps its row fresh for less than the lease, so it is never taken over.
"""
from __future__ import annotations

from typing import Literal

# The steps of the story flow, as step_errors.stage records them.
Stage = Literal["analysis", "outline", "text", "image", "personalization", "finish"]


def claimable(col: str, updated_at: str = "updated_at") -> str:
    """SQL: column ``col`` may be claimed (pending, NULL, or processing with ``updated_at`` older
    than ``:lease`` seconds). The statement must bind ``:lease``."""
    return (
        f"(COALESCE({col}, 'pending') = 'pending' OR "
        f"({col} = 'processing' AND {updated_at} < now() - make_interval(secs => :lease)))"
    )


def claim_sets(col: str, alias: str) -> str:
    """SQL: the SET list of a claim of column ``col`` on the row aliased ``alias``: processing, a new
    fencing token (schema.sql: ``claim_token``, one more at every claim) and one more takeover when
    the claim taken was a processing one (its holder went silent past the lease). The statement
    should ``RETURNING {alias}.claim_token, {alias}.takeovers`` (the new values)."""
    return (f"claim_token = {alias}.claim_token + 1, "
            f"takeovers = CASE WHEN {alias}.{col} = 'processing' THEN {alias}.takeovers + 1 "
            f"ELSE {alias}.takeovers END, "
            f"{col} = 'processing'")


def held(col: str, alias: str | None = None) -> str:
    """SQL: the step of column ``col`` is processing under the claim whose token the statement binds
    as ``:token`` (the fencing check every write after a claim makes: a holder that lost its claim
    to a takeover writes nothing)."""
    a = f"{alias}." if alias else ""
    return f"({a}{col} = 'processing' AND {a}claim_token = :token)"


def poison_message(what: str, takeovers: int, lease: float) -> str:
    """The message of a step failed for crashing its worker ``takeovers`` times (STEP_MAX_TAKEOVERS):
    ``what`` names the step as people read it ("The illustration step")."""
    return (f"{what} crashed its worker {takeovers} times in a row (each time the worker died or stopped "
            f"answering for longer than the {lease:g} s lease, e.g. out of memory or a crash while "
            "processing this input), so it was stopped rather than take down more workers. "
            "An operator can retry it.")
