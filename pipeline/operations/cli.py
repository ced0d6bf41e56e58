"""storycreator: operator commands. `storycreator COMMAND --help` for each.

Exit codes: EXIT_CODES (the same words in --help and the README's Operators paragraph).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pipeline.operations.cli_args import duration, non_negative, positive_int

# What each exit code means, as `--help` and the README say it (tests/test_cli_output.py holds the
# three to each other and to what the commands return).
EXIT_CODES = ("0 done, 1 nothing done or not found (or the database unreachable), 2 usage or "
              "configuration error, 130 interrupted, 141 output closed early (`| head`)")
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for `yes | head -1`'s writer

CELL = {"completed": "done", "processing": "working", "pending": "waiting", "failed": "FAILED", None: "waiting"}


def cmd_status(args: argparse.Namespace) -> int:
    from db import operations as operations_db
    from db import redo as redo_db
    from db.engine import transaction
    from pipeline.kernel.step import valid_uuid
    from pipeline.operations.events import event_lines, story_events
    from pipeline.operations.story_book import book_links, revision_lines
    from pipeline.stories.stages import PAGE_STAGES

    if args.order is not None:
        return _order_status(args)
    if args.story is None:
        return _summary(args)
    sid = valid_uuid(args.story)
    if sid is None:
        print(f"error: {args.story!r} is not a story id (UUID)", file=sys.stderr)
        return 2
    with transaction() as c:
        report = operations_db.story_report(c, sid, {st.name: st.status_column for st in PAGE_STAGES})
        revision = redo_db.story_revision(c, sid)
    if report is None:
        print(f"no story {sid}", file=sys.stderr)
        return 1
    story, pages, errors, jobs = report["story"], report["pages"], report["errors"], report["jobs"]
    # A story being revised (a redone page) still has its previous book to read.
    book = book_links(sid, revision) if story["status"] == "completed" or (revision or {}).get("book_pdf_key") else {}
    events = story_events(sid)
    if args.json:
        print(
            json.dumps(
                {"story": dict(story), "pages": [dict(p) for p in pages], "errors": [dict(e) for e in errors],
                 "jobs": [dict(j) for j in jobs], "book": book, "revision": revision, "events": events},
                default=str,
                indent=2,
            )
        )
        return 0
    errors = _distinct_failures(errors)
    # The story's current failure, once: at the top, with its stage and time when recorded.
    headline = next((e for e in reversed(errors) if e["permanent"] and not e["of_photo"]
                     and e["message"] == story["error_message"]), None)
    print(f"story {story['id']}  {story['status']}" + (f"  “{story['title']}”" if story["title"] else ""))
    if story["error_message"]:
        when = f" ({headline['stage']}, {headline['created_at']:%H:%M:%S})" if headline else ""
        print(f"  error{when}: {story['error_message']}")
    waiting = _waiting_for(story) if not pages else None
    if waiting:
        print(f"  waiting for {waiting}")
    face = story["protagonist_face"]
    if face:  # which face of the photo the book uses (pipeline/stories/faces.py), and what the parent was told
        print(f"  face: #{face['index'] + 1} ({face['rule']})" + (f": {face['notice']}" if face.get("notice") else ""))
    for line in revision_lines(story, revision):
        print(line)
    for kind, link in book.items():
        print(f"  book ({kind}): {link}")
    if pages:
        print(f"  {'page':>4}  {'text':<8} {'image':<8} {'personal.':<9}")
    elif story["status"] == "failed":
        print("  no pages: it failed before its outline")
    for p in pages:
        print(f"  {p['page_number']:>4}  {CELL[p['text']]:<8} {CELL[p['image']]:<8} {CELL[p['personalization']]:<9}")
    for e in errors:
        if e is headline:
            continue
        where = f"page {e['page_number']}" if e["page_number"] else "photo" if e["of_photo"] else "story"
        kind = "failed" if e["permanent"] else "retried"
        print(f"  {e['created_at']:%H:%M:%S} {e['stage']} ({where}) {kind}: {e['message']}")
    ended = [j for j in jobs if j["status"] in ("expired", "failed", "canceled")]
    if jobs:
        print(f"  {len(jobs)} remote jobs, {sum(j['status'] == 'expired' for j in jobs)} re-created after "
              "their output expired")
    for j in ended:
        print(f"  {j['created_at']:%H:%M:%S} {j['stage']} (page {j['page_number']}) {j['provider']} job "
              f"{j['external_id'] or '(not created)'} {j['status']}: {j['error_message'] or ''}")
    for line in event_lines(events):
        print(line)
    return 0


def _distinct_failures(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The story's error records with each failure once: a photo's failed analysis is recorded on
    the photo and again on each story it failed, quoting it ("The photo could not be used: <the
    photo's reason>"); the photo's own record is dropped when a story record quotes it."""
    quoted = [e["message"] for e in errors if e["permanent"] and not e["of_photo"]]
    return [e for e in errors
            if not (e["of_photo"] and e["permanent"] and any(e["message"] in m for m in quoted))]


def _waiting_for(story: dict[str, Any]) -> str | None:
    """What a story without pages waits for, in words (None: it is not waiting: failed, or
    completed). Its order is the story start's (db/stories.py claim_story): the photo's upload,
    a slot of its account, then its analysis, then a worker taking the queued message (or making the outline)."""
    from pipeline.stories import slots

    if story["status"] == "processing":
        return "its outline (being written)"
    if story["status"] != "pending":
        return None
    if story["photo_status"] == "pending_upload":
        return f"its photo's upload (photo {story['photo_id']} pending_upload)"
    if slots.waits_for_slot(story.get("account_in_flight")):  # its account at USER_STORIES_IN_FLIGHT
        return slots.waiting_reason(story["account_in_flight"])
    if story["photo_analysis"] != "completed":
        return f"its photo's analysis ({story['photo_analysis']})"
    return "a worker (queued)"


def _summary(args: argparse.Namespace) -> int:
    from pipeline.operations.events import event_counts, summary_line
    from pipeline.operations.orders import order_summary
    from pipeline.operations.submit import summary

    counts = summary()
    orders = order_summary()
    events = event_counts()
    if args.json:
        print(json.dumps({**counts, "orders": orders, "events": events}))
        return 0
    statuses = ("pending", "processing", "completed", "failed")
    print(f"{'stage':<16}" + "".join(f"{st:>12}" for st in statuses))
    for stage, by_status in counts.items():
        print(f"{stage:<16}" + "".join(f"{by_status.get(st, 0):>12}" for st in statuses))
    print("orders          " + "  ".join(f"{st} {orders.get(st, 0)}" for st in
                                         ("pending_payment", "paid", "fulfilled", "shipped", "failed")))
    print(summary_line(events))
    if orders.get("payment_needs_confirmation") or orders.get("payment_wrong_mode"):
        print(f"payments        needs confirmation {orders.get('payment_needs_confirmation', 0)} order(s) "
              f"(retry --order)  wrong Stripe mode {orders.get('payment_wrong_mode', 0)} event(s) ignored")
    if orders.get("paid_not_printable"):
        print(f"refunds         {orders['paid_not_printable']} paid order(s) not printed: their story is not "
              "their user's (status --order ID; refund, or correct and retry --order)")
    return 0


def _order_status(args: argparse.Namespace) -> int:
    from pipeline.kernel.step import valid_uuid
    from pipeline.operations.events import event_lines, story_events
    from pipeline.operations.orders import format_report, order_report

    oid = valid_uuid(args.order)
    if oid is None:
        print(f"error: {args.order!r} is not an order id (UUID)", file=sys.stderr)
        return 2
    report = order_report(oid)
    if report is None:
        print(f"no order {oid}", file=sys.stderr)
        return 1
    # (report["events"] is the order's history, order_events; the web app's events are these)
    report["outbox_events"] = story_events(order_id=oid)
    print(json.dumps(report, default=str, indent=2) if args.json
          else "\n".join([format_report(report), *event_lines(report["outbox_events"])]))
    return 0


def _retry_order(args: argparse.Namespace) -> int:
    from pipeline.kernel.step import valid_uuid
    from pipeline.operations.orders import retry_order

    oid = valid_uuid(args.order)
    if oid is None:
        print(f"error: --order {args.order!r} is not an id (UUID)", file=sys.stderr)
        return 2
    plan = retry_order(oid, dry_run=args.dry_run)
    print(json.dumps({"dry_run": args.dry_run, "order": oid, "ok": plan.ok, "message": plan.message,
                      "action": plan.action}) if args.json else f"{oid}: {plan.message}")
    return 0 if plan.ok else 1


def cmd_submit(args: argparse.Namespace) -> int:
    import mimetypes

    from pipeline.operations.submit import submit_story

    if not args.photo.is_file():
        print(f"error: no such photo file: {args.photo}", file=sys.stderr)
        return 2
    from pipeline.providers.photo_decode import photo_format

    data = args.photo.read_bytes()
    # What the bytes are (an iPhone's .HEIC, a .jpg that is a PNG), else what the name suggests.
    sniffed = photo_format(data)
    ctype = sniffed[1] if sniffed else mimetypes.guess_type(args.photo.name)[0] or "application/octet-stream"
    story = submit_story(data, ctype, args.photo.name, args.name, args.age, args.theme)
    print(json.dumps({"story_id": story}) if args.json else f"submitted story {story}")
    return 0


def _retry_event(args: argparse.Namespace) -> int:
    from pipeline.operations.events import retry_event

    ok, message = retry_event(args.event) if not args.dry_run else (True, f"{args.event}: would be queued again")
    print(json.dumps({"dry_run": args.dry_run, "event": args.event, "ok": ok, "message": message})
          if args.json else message)
    return 0 if ok else 1


def cmd_retry(args: argparse.Namespace) -> int:
    from pipeline.kernel.step import valid_uuid
    from pipeline.operations.retry import failed_stories, retry_story

    if args.order is not None:
        return _retry_order(args)
    if args.event is not None:
        return _retry_event(args)
    ids = {k: getattr(args, k) for k in ("story", "page", "photo") if getattr(args, k) is not None}
    for k, v in ids.items():
        if valid_uuid(v) is None:
            print(f"error: --{k} {v!r} is not an id (UUID)", file=sys.stderr)
            return 2
    if not ids and args.since is None and args.stage is None and args.theme is None:
        print("error: say what to retry: --story, --page, --photo, --order, --event, or --since/--stage/--theme",
              file=sys.stderr)
        return 2
    if args.story:
        stories = [str(valid_uuid(args.story))]
    else:
        stories = failed_stories(page=args.page, photo=args.photo, since_seconds=args.since,
                                 stage=args.stage, theme=args.theme, limit=args.limit)
    results = []
    for sid in stories:
        plan = retry_story(sid, force=args.force, dry_run=args.dry_run)
        results.append({"story": sid, "ok": plan.ok, "message": plan.message,
                        "pages_reset": plan.reset_pages, "photo_reset": plan.reset_photo})
        if not args.json:
            print(f"{sid}: {plan.message} ({plan.reset_pages} page(s) with failed steps, "
                  f"photo reset: {plan.reset_photo})")
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "stories": results}))
    elif not stories:
        print("no failed story matches")
    return 0 if any(r["ok"] for r in results) else 1


def cmd_backfill(args: argparse.Namespace) -> int:
    from pipeline.config import settings
    from pipeline.operations.backfill import BackfillProgress, backfill
    from pipeline.operations.events import backfill_events
    from pipeline.operations.orders import sweep_orders

    lease = args.stale_after if args.stale_after is not None else settings().step_lease_seconds
    pending_after = args.pending_after if args.pending_after is not None else lease
    verb = "would re-enqueue" if args.dry_run else "re-enqueued"

    def progress(p: BackfillProgress, task: str, n: int) -> None:
        if not args.json:
            print(f"batch {p.batches}: {verb} {n} x {task} ({p.enqueued} so far)", file=sys.stderr)

    try:
        result = backfill(lease=lease, pending_after=pending_after, batch_size=args.batch_size,
                          rate=args.rate, max_items=args.limit, dry_run=args.dry_run, restart=args.restart,
                          on_batch=progress)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume where it stopped", file=sys.stderr)
        return 130
    # Stuck orders: paid with no print files or no print job, print jobs nobody follows.
    orders = sweep_orders(lease=lease, pending_after=pending_after, limit=args.limit or 500, dry_run=args.dry_run)
    events = backfill_events(dry_run=args.dry_run)  # webhook deliveries waiting for their backoff: due now
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "enqueued": result.enqueued, "batches": result.batches,
                          "resumed": result.resumed, "finished": result.done,
                          "items": [{"task": i.task, **i.kwargs} for i in result.items],
                          "orders": [{"task": i.task, **i.kwargs} for i in orders], "events": events}))
        return 0
    for i in [*result.items, *orders]:
        print(f"{verb} {i.task} {next(iter(i.kwargs.values()))}")
    if orders:
        print(f"{len(orders)} stuck order step(s) {verb}")
    print(f"{events} pending event deliver(ies) {'would be ' if args.dry_run else ''}made due now")
    if result.resumed:
        print("(resumed an earlier, unfinished backfill; --restart starts over)")
    print(f"{result.enqueued} stuck step(s) {verb}"
          + ("" if result.done else " (stopped at --limit: run again to continue)"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command (``argv``: the arguments after the program name; None: ``sys.argv[1:]``)
    and return its exit code (EXIT_CODES). A reader that closes the output early (``status ID |
    head -2``) ends any command quietly with 141, as a shell reports a process that SIGPIPE ended:
    Python ignores SIGPIPE, so the write raises BrokenPipeError instead, and stdout is then pointed
    at /dev/null so that the interpreter's own flush at exit cannot raise it again (the recipe of
    Python's documentation, ``signal`` module, "Note on SIGPIPE"). argparse's own exits (--help,
    usage errors) still raise SystemExit, unless their output met a closed pipe."""
    try:
        try:
            return _main(argv)
        finally:  # a closed pipe shows here, inside the try, not at interpreter exit
            sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_PIPE_CLOSED


def _main(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(
        prog="storycreator", description="Operate the story pipeline: see it, repair it.",
        epilog=f"exit codes: {EXIT_CODES}. `storycreator COMMAND --help` for each command.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("status", help="a story's pages x stages with errors; without a story: counts per stage")
    st.add_argument("story", nargs="?")
    st.add_argument("--order", help="an order: its status, steps and history (payments, print job, errors)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_status)
    rt = sub.add_parser("retry", help="re-run failed work: a story's failed steps (completed work kept), an order")
    rt.add_argument("--story", help="one story")
    rt.add_argument("--page", help="the story of this page")
    rt.add_argument("--photo", help="the failed stories of this photo")
    rt.add_argument("--order", help="a failed order: again from its print files (a new print run if the "
                                   "provider rejected its job), or following its job again")
    rt.add_argument("--since", type=duration, metavar="DURATION",
                    help="stories that failed within this long (90s, 15m, 6h, 2d)")
    rt.add_argument("--stage", choices=["analysis", "outline", "text", "image", "personalization", "finish"],
                    help="stories that failed at this stage")
    rt.add_argument("--theme", help="stories of this theme")
    rt.add_argument("--event", help="an event (evt_...) whose webhook delivery is dead: sent again, attempts anew")
    rt.add_argument("--limit", type=int, default=1000, help="at most this many stories")
    rt.add_argument("--force", action="store_true", help="retry even a photo that had no face")
    rt.add_argument("--dry-run", action="store_true")
    rt.add_argument("--json", action="store_true")
    rt.set_defaults(fn=cmd_retry)
    sb = sub.add_parser("submit", help="submit a story for a photo file, as the external API would")
    sb.add_argument("--photo", type=Path, required=True)
    sb.add_argument("--name", required=True)
    sb.add_argument("--age", type=int, required=True)
    sb.add_argument("--theme", required=True)
    sb.add_argument("--json", action="store_true")
    sb.set_defaults(fn=cmd_submit)
    bf = sub.add_parser("backfill", help="re-enqueue stuck work: dead workers' steps, lost messages")
    bf.add_argument("--stale-after", type=float, default=None, metavar="SECONDS",
                    help="a 'processing' step untouched this long is stuck (default: STEP_LEASE_SECONDS)")
    bf.add_argument("--pending-after", type=float, default=None, metavar="SECONDS",
                    help="a ready 'pending' step untouched this long lost its message (default: the lease)")
    bf.add_argument("--batch-size", type=positive_int, default=200, metavar="N",
                    help="look up and enqueue this many at a time (default 200)")
    bf.add_argument("--rate", type=non_negative, default=100.0, metavar="PER_SECOND",
                    help="enqueue at most this many messages a second (default 100; 0 = no limit)")
    bf.add_argument("--limit", type=positive_int, default=None, metavar="N",
                    help="stop after this many (run again to continue from there)")
    bf.add_argument("--restart", action="store_true", help="ignore an unfinished earlier run; start over")
    bf.add_argument("--dry-run", action="store_true", help="list what would be enqueued; change nothing")
    bf.add_argument("--json", action="store_true")
    bf.set_defaults(fn=cmd_backfill)
    from pipeline.operations.forget import add_parser as add_forget

    add_forget(sub)
    args = ap.parse_args(argv)
    from db.engine import reason, unavailable
    from db.url import DatabaseURLError, redact
    from pipeline.config import settings

    try:
        return int(args.fn(args))
    except DatabaseURLError as e:  # one line, never a traceback, never the password
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if not unavailable(e):
            raise
        print(f"error: cannot reach the database at {redact(settings().database_url)}: {reason(e)}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
