"""What each book costs, for operators (README "What each book costs"): ``storycreator budget`` and
the cost lines of ``storycreator status`` (a story's, an order's, the last days' totals).

Money is shown in cents with two decimals; the JSON has the exact micro-cents (integers).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

DAYS = 7  # the status summary's days


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``budget`` subcommand's arguments."""
    bp = sub.add_parser("budget", help="set a story's spending budget (then `retry --story` one it stopped)")
    bp.add_argument("--story", required=True, help="the story (UUID)")
    which = bp.add_mutually_exclusive_group(required=True)
    which.add_argument("--cents", type=int, metavar="N", help="its budget in cents (of COST_CURRENCY), >= 0")
    which.add_argument("--unlimited", action="store_true", help="no limit for this story")
    which.add_argument("--default", action="store_true", help="back to STORY_BUDGET_CENTS")
    bp.add_argument("--json", action="store_true")
    bp.set_defaults(fn=cmd_budget)


def cmd_budget(args: argparse.Namespace) -> int:
    """Set ``args.story``'s budget; print it with what the story has spent. Exit 2 for a bad
    argument, 1 for no such story, 0 done."""
    from db import usage as usage_db
    from db.engine import transaction
    from pipeline.config import cost_settings
    from pipeline.kernel.step import valid_uuid

    sid = valid_uuid(args.story)
    if sid is None:
        print(f"error: --story {args.story!r} is not an id (UUID)", file=sys.stderr)
        return 2
    if args.cents is not None and not 0 <= args.cents <= 10**9:
        print(f"error: --cents {args.cents} is out of range; allowed: 0 to 1000000000", file=sys.stderr)
        return 2
    prices = cost_settings()
    with transaction() as c:
        row = usage_db.set_budget(c, sid, args.cents, bool(args.unlimited))
        costs = usage_db.story_costs(c, sid) if row is not None else None
    if row is None or costs is None:
        print(f"no story {sid}", file=sys.stderr)
        return 1
    out = story_cost(costs, prices.story_budget_cents)
    if args.json:
        print(json.dumps({"story": sid, "status": row["status"], **out}))
        return 0
    print(f"{sid}: budget {_budget_text(out)}; spent {_cents(out['total_microcents'])}"
          + (f" ({row['status']}: `storycreator retry --story {sid}` runs its failed steps again)"
             if row["status"] == "failed" else ""))
    return 0


def _cents(microcents: int) -> str:
    return f"{microcents / 1_000_000:,.2f}¢"


def _budget_text(out: dict[str, Any]) -> str:
    if out["budget_unlimited"]:
        return "unlimited"
    note = " (the default, STORY_BUDGET_CENTS)" if out["budget_is_default"] else ""
    return f"{out['budget_cents']}¢{note}"


def story_cost(costs: dict[str, Any], default_cents: int) -> dict[str, Any]:
    """A story's cost for people and JSON, from db.usage.story_costs: ``total_microcents``,
    ``parts`` (per provider and stage), ``budget_cents`` (the effective one), ``budget_is_default``,
    ``budget_unlimited``, ``held_microcents``."""
    return {"total_microcents": sum(p["cost_microcents"] for p in costs["parts"]), "parts": costs["parts"],
            "budget_cents": costs["budget_cents"] if costs["budget_cents"] is not None else default_cents,
            "budget_is_default": costs["budget_cents"] is None, "budget_unlimited": costs["budget_unlimited"],
            "held_microcents": costs["held_microcents"]}


def part_lines(parts: list[dict[str, Any]]) -> list[str]:
    """One line per provider and stage: calls, tokens, seconds, cost."""
    lines = []
    for p in parts:
        units = [f"{p['calls']} call{'s' if p['calls'] != 1 else ''}"]
        if p["input_tokens"] or p["output_tokens"]:
            units.append(f"{p['input_tokens']} in + {p['output_tokens']} out tokens")
        if p["seconds"]:
            units.append(f"{p['seconds']:.1f} s")
        lines.append(f"    {p['provider']:<12} {p['stage']:<16} {', '.join(units)}: {_cents(p['cost_microcents'])}"
                     + (f" {p['currency'].upper()}" if p["currency"] != "usd" else ""))
    return lines


def story_cost_report(story_id: str) -> dict[str, Any] | None:
    """The story's cost (:func:`story_cost`), or None when there is no such story."""
    from db import usage as usage_db
    from db.engine import transaction
    from pipeline.config import cost_settings

    with transaction() as c:
        costs = usage_db.story_costs(c, story_id)
    return story_cost(costs, cost_settings().story_budget_cents) if costs is not None else None


def story_cost_lines(cost: dict[str, Any] | None) -> list[str]:
    """The cost lines of ``status STORY``: the total against the budget, then its parts."""
    if cost is None:
        return []
    held = f" (+{_cents(cost['held_microcents'])} held for calls in flight)" if cost["held_microcents"] else ""
    return [f"  cost: {_cents(cost['total_microcents'])}{held} of budget {_budget_text(cost)}",
            *part_lines(cost["parts"])]


def order_cost(order_id: str) -> dict[str, Any]:
    """An order's cost (its print job: Lulu's price, or 0 at the offline print shop):
    ``total_microcents`` and ``parts``."""
    from db import usage as usage_db
    from db.engine import transaction

    with transaction() as c:
        parts = usage_db.order_costs(c, order_id)
    return {"total_microcents": sum(p["cost_microcents"] for p in parts), "parts": parts}


def order_cost_lines(cost: dict[str, Any]) -> list[str]:
    """The cost lines of ``status --order``."""
    return [f"cost: {_cents(cost['total_microcents'])}", *part_lines(cost["parts"])]


def daily() -> list[dict[str, Any]]:
    """The last DAYS days' totals (db.usage.daily_costs), newest first."""
    from db import usage as usage_db
    from db.engine import transaction

    with transaction() as c:
        return usage_db.daily_costs(c, DAYS)


def daily_lines(days: list[dict[str, Any]]) -> list[str]:
    """The cost lines of the ``status`` summary: one per day with spending."""
    if not days:
        return [f"cost            nothing recorded in the last {DAYS} days"]
    return [f"cost {d['day']}  {_cents(d['cost_microcents'])} {d['currency'].upper()}, {d['calls']} calls, "
            f"{d['stories']} stor{'ies' if d['stories'] != 1 else 'y'}" for d in days]
