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
QUEUES = "celery,photos,stories,text,images,personalize,orders"
CELL = {"completed": "█", "processing": "▒", "pending": "·", "failed": "✗", None: "·"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    from pipeline.themes import THEMES

    p = argparse.ArgumentParser(prog="./run demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--photo", type=Path, help="a photo of the child (JPEG/PNG); default: a sample face photo")
    p.add_argument("--name", default="Eileen", help="the child's first name (default: %(default)s)")
    p.add_argument("--age", type=int, default=6, help="the child's age, 0-14 (default: %(default)s)")
    p.add_argument("--theme", default="space_adventure", help=f"one of: {', '.join(THEMES)}")
    p.add_argument("--pages", type=int, default=None, help="pages in the book (default 12)")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the book")
    p.add_argument("--out", type=Path, default=VAR / "books", help="where to copy the finished book")
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

    from sqlalchemy import create_engine

    from db.engine import ensure_database
    from pipeline.config import settings

    s = settings()
    ensure_database(s.database_url)
    print(f"database  {s.database_url.split('@')[-1]}\nbroker    {s.broker_url}\nstorage   {s.local_storage_root}")

    log_path = VAR / "demo-worker.log"
    log = open(log_path, "ab")
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "workers.app", "worker", "--pool", "threads",
         "--concurrency", os.environ.get("WORKER_CONCURRENCY", "12"), "-Q", QUEUES, "-n",
         f"demo-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle", "-E", "--loglevel", "INFO"],
        cwd=ROOT, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    engine = create_engine(s.database_url)
    try:
        print(f"worker    pid {worker.pid} (threads pool), log {log_path}")
        # What the external API does: store the photo, insert user/photo/story rows, then
        # publish stories.generate by name after the commit.
        from pipeline.ops import submit_story

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


def watch(engine, story: str, timeout: float, worker: subprocess.Popen) -> dict | None:  # type: ignore[type-arg]
    from sqlalchemy import text

    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < timeout:
        with engine.connect() as c:
            row = c.execute(text("SELECT status, title, error_message FROM stories WHERE id = :s"),
                            {"s": story}).mappings().first()
            pages = c.execute(text(
                "SELECT page_number, text_generation_status t, image_generation_status i, personalization_status p "
                "FROM story_pages WHERE story_id = :s ORDER BY page_number"), {"s": story}).mappings().all()
            photo = c.execute(text(
                "SELECT ph.ai_processing_status FROM photos ph JOIN stories s ON s.protagonist_photo_id = ph.id "
                "WHERE s.id = :s"), {"s": story}).scalar()
        assert row is not None
        grid = " ".join(f"{p['page_number']:>2}{CELL[p['t']]}{CELL[p['i']]}{CELL[p['p']]}" for p in pages)
        line = f"photo {CELL[photo]}  story {row['status']:<10} {grid}"
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
