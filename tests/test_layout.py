"""The shape of the code, kept by the suite: the layers and no import cycles (import-linter's
`lint-imports`, contracts in pyproject.toml), no domain module importing the Celery layer, and
modules small enough to read (data files apart)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PACKAGES = ("pipeline", "db", "workers")
MAX_LINES = 400


def test_import_contracts_hold() -> None:
    """Layers workers > operations > orders > stories > providers > kernel > db > settings, no
    domain -> workers import, no cycles between sibling modules (`lint-imports` to see it)."""
    r = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_no_module_is_over_the_reading_limit() -> None:
    long = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            n = len(path.read_text(encoding="utf-8").splitlines())
            if n > MAX_LINES:
                long[str(path.relative_to(ROOT))] = n
    assert not long, f"modules over {MAX_LINES} lines (split them along their seams): {long}"
