"""The operator CLI's output: a closed pipe ends it quietly, `status` says what a story waits for or
why it failed (each failure once), and its exit codes are the ones --help and the README list."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from pipeline.operations.cli import EXIT_CODES, EXIT_PIPE_CLOSED
from pipeline.operations.cli import main as cli
from tests.support import Db, WorkerProcess, external_send, faceless_png

ROOT = Path(__file__).resolve().parent.parent
BROKER = os.environ["CELERY_BROKER_URL"]


def _cli_into_closed_pipe(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI as `./run cli` does, its stdout a pipe whose reader has already gone (what
    `| head -2` leaves once head has its lines): every write meets EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "pipeline.operations.cli", *argv], cwd=ROOT,
                              stdout=write_end, stderr=subprocess.PIPE, timeout=60, env=env or dict(os.environ))
    finally:
        os.close(write_end)


def test_every_command_ends_quietly_on_a_closed_pipe(clean_db: Db) -> None:
    story = clean_db.story(clean_db.photo(faceless_png()))
    for argv in (["status", story], ["status"], ["status", "--json"], ["--help"], ["status", "--help"],
                 ["retry", "--since", "1d", "--dry-run"], ["backfill", "--dry-run"]):
        done = _cli_into_closed_pipe(*argv)
        assert done.stderr == b"", (argv, done.stderr.decode())
        # (argparse's --help swallows its own write error and exits 0: quiet too)
        assert done.returncode == (0 if "--help" in argv else EXIT_PIPE_CLOSED), argv


def test_a_closed_pipe_does_not_hide_the_exit_code_of_an_error_written_to_stderr(clean_db: Db) -> None:
    done = _cli_into_closed_pipe("status", "not-a-uuid")
    assert done.returncode == 2 and b"is not a story id" in done.stderr and b"Traceback" not in done.stderr


def _status(story: str, capsys) -> list[str]:
    capsys.readouterr()
    assert cli(["status", story]) == 0
    return capsys.readouterr().out.splitlines()


def test_status_of_a_story_waiting_for_its_photo_says_for_what(clean_db: Db, capsys) -> None:
    # a story whose photo has not finished uploading
    photo = clean_db.photo(None, status="pending_upload")
    story = clean_db.story(photo)
    out = _status(story, capsys)
    assert out[0] == f"story {story}  pending", out  # no empty title in quotes
    assert any("waiting for its photo's upload" in line for line in out), out
    assert not any(line.strip().startswith("page") for line in out), out  # no empty page table
    # uploaded, not analysed yet
    clean_db.exec("UPDATE photos SET status = 'uploaded' WHERE id = :p", p=photo)
    assert any("waiting for its photo's analysis (pending)" in line for line in _status(story, capsys))
    # analysed: only a worker's turn is missing
    clean_db.exec("UPDATE photos SET ai_processing_status = 'completed' WHERE id = :p", p=photo)
    assert any("waiting for a worker (queued)" in line for line in _status(story, capsys))


def test_status_of_a_story_failed_by_its_photo_shows_the_failure_once(
        clean_db: Db, worker: WorkerProcess, capsys) -> None:
    story = clean_db.story(clean_db.photo(faceless_png()))
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story)
    assert row["status"] == "failed"
    out = _status(story, capsys)
    assert out[0] == f"story {story}  failed", out
    assert sum(row["error_message"] in line for line in out) == 1, out
    assert any("no pages: it failed before its outline" in line for line in out), out


def _words(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_exit_codes_in_help_and_readme_are_what_the_commands_return(db: Db, capsys, tmp_path) -> None:
    # the words: --help's epilog and the README's Operators paragraph list the same codes
    done = subprocess.run([sys.executable, "-m", "pipeline.operations.cli", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and f"exit codes: {EXIT_CODES}." in _words(done.stdout)
    assert f"exit codes: {EXIT_CODES}." in _words((ROOT / "README.md").read_text())
    codes = dict(re.findall(r"(\d+) ([^,]+)", EXIT_CODES))
    assert set(codes) == {"0", "1", "2", "130", "141"}
    # what the code does: not found 1, usage 2, the database unreachable 1, its URL malformed 2
    import uuid

    assert cli(["status", str(uuid.uuid4())]) == 1 and "not found" in codes["1"]
    assert cli(["status", "nope"]) == 2 and "usage" in codes["2"]
    env = {**os.environ, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    down = subprocess.run([sys.executable, "-m", "pipeline.operations.cli", "status"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "cannot reach the database" in down.stderr and "database unreachable" in codes["1"]
    env["DATABASE_URL"] = "mysql://nobody@127.0.0.1/none"
    bad = subprocess.run([sys.executable, "-m", "pipeline.operations.cli", "status"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "configuration error" in bad.stderr and "configuration error" in codes["2"]
    assert "interrupted" in codes["130"] and "closed" in codes["141"]
