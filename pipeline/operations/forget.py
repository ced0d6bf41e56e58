"""``storycreator forget --user ID``: forget a family (pipeline/privacy/forget.py; README
"Forgetting a family"), as the task ``users.forget`` does, printing what went (or, with
``--dry-run``, what would go) and the storage keys and folders."""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

# status -> exit code (cli.EXIT_CODES): done, or nothing done / not found.
EXIT = {"completed": 0, "rechecking": 0, "dry_run": 0, "not_found": 1, "refused": 1, "busy": 1}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``forget`` subcommand's arguments."""
    fg = sub.add_parser("forget", help="delete a family's personal data for good (photos, face data, stories, "
                                       "files); orders keep their accounting only")
    fg.add_argument("--user", required=True, help="the user (UUID) to forget")
    fg.add_argument("--dry-run", action="store_true", help="list what would go; change nothing")
    fg.add_argument("--wait", action="store_true",
                    help="wait for the second pass over the files (STEP_LEASE_SECONDS + 60 s) and complete; "
                         "otherwise the sweeper (ops.sweep) or the same command run again completes it")
    fg.add_argument("--json", action="store_true")
    fg.set_defaults(fn=cmd_forget)


def cmd_forget(args: argparse.Namespace) -> int:
    """Run ``forget`` for ``args.user``; print the outcome; return the exit code (EXIT)."""
    from pipeline.kernel.step import valid_uuid
    from pipeline.privacy.forget import forget

    user = valid_uuid(args.user)
    if user is None:
        print(f"error: {args.user!r} is not a user id (UUID)", file=sys.stderr)
        return 2
    result = forget(user, "cli", dry_run=args.dry_run)
    while args.wait and result.status == "rechecking" and result.recheck_at is not None:
        wait = (result.recheck_at - datetime.now(UTC)).total_seconds()
        if not args.json:
            print(f"deleted; waiting {max(0, wait):.0f} s for the second pass over the files", file=sys.stderr)
        time.sleep(max(0.0, wait) + 0.5)
        result = forget(user, "cli")
    if args.json:
        print(json.dumps(result.as_json(), default=str))
        return EXIT[result.status]
    verb = "would delete" if result.status == "dry_run" else "deleted"
    print(f"{result.status}: {result.message}")
    for o in result.blocking:
        print(f"  order {o['id']} is {o['status']}")
    if result.status in ("not_found", "busy"):
        return EXIT[result.status]
    for kind, n in sorted(result.counts.items()):
        print(f"  {kind}: {n}")
    for t in result.targets:
        where = "output" if t["storage"] == "output" else f"{t['storage']}:{t['bucket'] or ''}"
        print(f"  {verb if result.status != 'refused' else 'would delete'} {where} {t['key']}"
              f"{' (folder)' if t['prefix'] else ''}")
    if result.status == "rechecking" and result.recheck_at:
        print(f"second pass due at {result.recheck_at.isoformat()}: the sweeper completes it, "
              "or run this command again then (or use --wait)")
    return EXIT[result.status]
