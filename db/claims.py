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
