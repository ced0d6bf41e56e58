"""Local storage tries a read or a write again when the filesystem fails for a moment (tenacity in
pipeline/kernel/storage.py), and gives up after its bound with the error unchanged.

The fault is real, not simulated: a child process lowers its own file-descriptor limit and fills
its descriptor table, so ``open()`` fails with EMFILE exactly as in a busy worker; a timer thread
frees the descriptors after ~0.12 s (a passing fault) or never (a lasting one)."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.kernel.storage import ATTEMPTS, LocalStorage

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, logging, os, resource, sys, threading, time
from pathlib import Path
from pipeline.kernel.storage import LocalStorage

root, op, fault = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
storage = LocalStorage(root)
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass  # the table is full: the next open() fails with EMFILE

def release():
    while held:
        os.close(held.pop())

if fault == "passing":
    threading.Timer(0.12, release).start()
out = {}
t0 = time.monotonic()
try:
    if op == "get":
        out["read"] = storage.get("a/photo.bin").decode()
    else:
        storage.put("a/written.bin", b"written", "application/octet-stream")
        out["wrote"] = True
except OSError as e:
    out["errno"] = e.errno
out["seconds"] = time.monotonic() - t0
release()
print(json.dumps(out))
"""


def run_child(root: Path, op: str, fault: str) -> tuple[dict[str, object], int]:
    """(the child's result, how many tries failed before it ended) for one storage call."""
    r = subprocess.run([sys.executable, "-c", CHILD, str(root), op, fault], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    failed_tries = r.stderr.count("storage: try ")
    return json.loads(r.stdout.strip().splitlines()[-1]), failed_tries


@pytest.mark.parametrize("op", ["get", "put"])
def test_a_passing_filesystem_fault_is_tried_again_and_the_call_succeeds(tmp_path: Path, op: str) -> None:
    LocalStorage(tmp_path).put("a/photo.bin", b"photo bytes", "application/octet-stream")
    out, failed = run_child(tmp_path, op, "passing")
    assert "errno" not in out, out
    assert failed >= 1  # the first try met EMFILE, a later one passed
    if op == "get":
        assert out["read"] == "photo bytes"
    else:
        assert LocalStorage(tmp_path).get("a/written.bin") == b"written"
    assert float(out["seconds"]) < 2.0  # short waits only


@pytest.mark.parametrize("op", ["get", "put"])
def test_a_lasting_filesystem_fault_gives_up_after_the_bound_with_the_error_unchanged(tmp_path: Path,
                                                                                       op: str) -> None:
    LocalStorage(tmp_path).put("a/photo.bin", b"photo bytes", "application/octet-stream")
    out, failed = run_child(tmp_path, op, "lasting")
    assert out["errno"] == errno.EMFILE
    assert failed == ATTEMPTS - 1  # logged before each retry: 3 tries in all, then the error
    assert float(out["seconds"]) < 2.0
    assert not (tmp_path / "a" / "written.bin").exists()
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".tmp-")]  # no temp file left


def test_missing_files_and_folders_are_not_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.kernel.storage import ObjectMissing

    storage = LocalStorage(tmp_path)
    (tmp_path / "folder").mkdir()
    with caplog.at_level("INFO", logger="pipeline.kernel.storage"):
        with pytest.raises(ObjectMissing, match="does not exist"):
            storage.get("nothing/here.png")
        with pytest.raises(ObjectMissing, match="folder"):
            storage.get("folder")
    assert "trying again" not in caplog.text
