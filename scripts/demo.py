"""The demo: a real story from a real face photo, end to end, through real worker processes.

    ./run demo                                   # the astronaut photo (public domain, offline)
    ./run demo --photo kid.jpg --name Sam --age 5 --theme pirates

It creates the database if needed, starts a worker, inserts the rows and publishes
``stories.generate`` exactly as the external API does, shows each page's progress, prints
where the finished book is, and stops the worker it started.
"""
from __future__ import annotations

import argparse
import io
import mimetypes
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
CELL = {"completed": "█", "processing": "▒", "pending": "·", "failed": "✗", None: "·"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    from pipeline.providers.themes import THEMES

    p = argparse.ArgumentParser(prog="./run demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--photo", type=Path, help="a photo of the child (JPEG/PNG); default: a sample face photo")
    p.add_argument("--name", default="Eileen", help="the child's first name (default: %(default)s)")
    p.add_argument("--age", type=int, default=6, help="the child's age, 0-14 (default: %(default)s)")
    p.add_argument("--theme", default="space_adventure", help=f"one of: {', '.join(THEMES)}")
    p.add_argument("--pages", type=int, default=None, help="pages in the book (default 12)")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the book")
    p.add_argument("--out", type=Path, default=VAR / "books", help="where to copy the finished book")
    p.add_argument("--order-print", action="store_true",
                   help="then order a printed hardcover of it: a simulated Stripe payment, printed and shipped "
                        "by the offline print shop (POD_PROVIDER=local; Lulu's sandbox with POD_PROVIDER=lulu)")
    return p.parse_args(argv)


def sample_photo() -> tuple[bytes, str]:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "JPEG", quality=92)
    return buf.getvalue(), "image/jpeg"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.photo is not None and not args.photo.is_file():
        print(f"error: no such photo file: {args.photo}", file=sys.stderr)
        return 2
    VAR.mkdir(exist_ok=True)
    from scripts import services

    env = services.ensure(VAR)
    os.environ.update(env)
    os.environ.setdefault("LOCAL_STORAGE_ROOT", str(VAR / "storage"))
    if args.pages:
        os.environ["STORY_PAGE_COUNT"] = str(args.pages)
    if args.order_print:  # a print shop that takes seconds, not days, and a worker that looks often
        os.environ.setdefault("ORDER_POLL_INTERVAL", "1")
        os.environ.setdefault("LOCAL_PRINT_SHOP_STAGE_SECONDS", "2")
        if not os.environ.get("STRIPE_MODE", "").strip() and not os.environ.get("STRIPE_SECRET_KEY", "").strip():
            # a simulated payment is a test-mode one: unsigned events count only in test mode
            os.environ["STRIPE_MODE"] = "test"

    from db.engine import ensure_database, make_engine
    from db.url import redact
    from pipeline.config import settings

    s = settings()
    ensure_database(s.database_url)
    print(f"database  {redact(s.database_url)}\nbroker    {s.broker_url}\nstorage   {s.local_storage_root}")

    log_path = VAR / "demo-worker.log"
    log = open(log_path, "ab")
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "workers.app", "worker", "--pool", "threads",
         "--concurrency", os.environ.get("WORKER_CONCURRENCY", "12"), "-n",
         f"demo-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle", "-E", "--loglevel", "INFO"],
        cwd=ROOT, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    engine = make_engine(s.database_url)
    try:
        print(f"worker    pid {worker.pid} (threads pool), log {log_path}")
        # What the external API does: store the photo, insert user/photo/story rows, then
        # publish stories.generate by name after the commit.
        from pipeline.operations.submit import submit_story

        photo_bytes, ctype = (args.photo.read_bytes(), mimetypes.guess_type(args.photo.name)[0] or "image/jpeg") \
            if args.photo else sample_photo()
        story = submit_story(photo_bytes, ctype, args.photo.name if args.photo else "astronaut.jpg",
                             args.name, args.age, args.theme, email=f"demo-{uuid.uuid4().hex[:8]}@example.com")
        print(f"story     {story} submitted ({args.name}, {args.age}, {args.theme})\n")
        print("progress  each page: text | illustration | face   (█ done, ▒ working, · waiting, ✗ failed)")
        row = watch(engine, story, args.timeout, worker)
        if row is None:
            print(f"\nerror: the story did not finish in {args.timeout:.0f}s; see {log_path}", file=sys.stderr)
            return 1
        if row["status"] != "completed":
            print(f"\nstory failed: {row['error_message']}", file=sys.stderr)
            return 1
        out = export(s.local_storage_root, story, args.out)
        print(f"\n“{row['title']}” is ready.")
        print(f"  PDF   {out / 'book.pdf'}\n  HTML  {out / 'book.html'}")
        if args.order_print:
            return order_print(engine, story, s.local_storage_root, args.timeout, worker)
        return 0
    finally:
        engine.dispose()
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)  # warm shutdown: finishes what it holds
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        log.close()
        services.shutdown()
        print("worker stopped")


def order_print(engine, story: str, storage_root: Path, timeout: float,  # type: ignore[no-untyped-def]
                worker: subprocess.Popen) -> int:  # type: ignore[type-arg]
    """Order a printed copy as the external API would (an order row, then Stripe's payment event,
    signed when STRIPE_WEBHOOK_SECRET is set) and follow it until it ships."""
    from db.order_repair import order_progress
    from pipeline.operations.orders import simulated_payment, submit_order
    from workers.app import app

    order, intent = submit_order(story, amount=2999, currency="usd")
    app.send_task("orders.confirm_payment", kwargs=simulated_payment(order, intent, 2999, "usd"))
    print(f"\norder     {order}: a hardcover for 29.99 USD, payment_intent.succeeded sent")
    t0, last = time.monotonic(), ""
    while time.monotonic() - t0 < timeout:
        with engine.connect() as c:
            row = order_progress(c, order)
        seen, error = row["print_status"], row["error"]
        line = f"order {row['status']:<16} print job {row['pod_order_id'] or '-'} {seen or ''}"
        if line != last:
            print(f"  {time.monotonic() - t0:6.1f}s  {line}", flush=True)
            last = line
        if row["status"] == "shipped":
            print(f"\nShipped, tracking number {row['tracking_number']}.\n"
                  f"  print files  {storage_root / 'orders' / order / 'print'}/interior.pdf, cover.pdf")
            return 0
        if row["status"] == "failed":
            print(f"\norder failed: {error}", file=sys.stderr)
            return 1
        if worker.poll() is not None:
            print("error: the worker exited; see its log", file=sys.stderr)
            return 1
        time.sleep(0.25)
    print(f"\nerror: the order did not ship in {timeout:.0f}s", file=sys.stderr)
    return 1


def watch(engine, story: str, timeout: float, worker: subprocess.Popen) -> dict | None:  # type: ignore[type-arg]
    from db.operations import story_progress
    from pipeline.stories.stages import PAGE_STAGES

    columns = {s.name: s.status_column for s in PAGE_STAGES}
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < timeout:
        with engine.connect() as c:
            progress = story_progress(c, story, columns)
        assert progress is not None
        row = progress["story"]
        grid = " ".join(f"{p['page_number']:>2}" + "".join(CELL[p[name]] for name in columns)
                        for p in progress["pages"])
        line = f"photo {CELL[progress['photo_status']]}  story {row['status']:<10} {grid}"
        if line != last:
            print(f"  {time.monotonic() - t0:6.1f}s  {line}", flush=True)
            last = line
        if row["status"] in ("completed", "failed"):
            return dict(row)
        if worker.poll() is not None:
            print("error: the worker exited; see its log", file=sys.stderr)
            return None
        time.sleep(0.25)
    return None


def export(storage_root: Path, story: str, out_dir: Path) -> Path:
    """Copy the book (PDF, HTML and the page images it shows) out of storage."""
    src = storage_root / "stories" / story
    dest = out_dir / story
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "book.pdf", dest / "book.pdf")
    shutil.copy2(src / "book.html", dest / "book.html")
    for img in (src / "pages").glob("*/personalized.png"):
        target = dest / img.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(img, target)
    return dest


if __name__ == "__main__":
    sys.exit(main())
