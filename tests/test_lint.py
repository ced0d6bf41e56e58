"""ruff and mypy clean (docs/STYLE.md), and the project's documents kept inside it: kept by the
suite so CI enforces it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.unit  # ruff, mypy and git are processes, but no services: the fast loop runs them


def test_ruff_clean() -> None:
    r = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_mypy_clean() -> None:
    r = subprocess.run([str(BIN / "mypy"), "pipeline", "db", "workers", "celeryconfig.py"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# --- documents: every reference points inside the repository -------------------------------------
_TEXT_SUFFIXES = {".py", ".md", ".sql", ".toml", ".sh", ".cfg", ".ini", ".txt", ".yml", ".yaml", ".js", ".json", ""}
# Places outside the repository that documents once lived in or that a machine has: a reference
# to one of them breaks on every other checkout. (Split so this file does not match itself.)
_OUTSIDE = re.compile("|".join([r"\.\./" + "shared", r"\bshared/" + "spec", r"\bshared/" + r"(?:DESIGN|STYLE)\.md",
                                r"/" + r"work/", r"/" + r"home/\w+"]))
_DOC_NAME = re.compile(r"[\w./-]*\b(?:DESIGN|STYLE|database-schema)\.md")
_MD_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def _project_files() -> list[Path]:
    """The repository's text files: tracked ones and new ones not ignored (``git ls-files``); a
    copy without ``.git`` falls back to walking the tree without ``.venv``, ``var`` and caches."""
    r = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                       cwd=ROOT, capture_output=True)
    if r.returncode == 0 and r.stdout:
        paths = [ROOT / p for p in r.stdout.decode().split("\0") if p]
    else:
        skip = {".git", ".venv", "var", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
        paths = [p for p in ROOT.rglob("*") if not skip & set(p.relative_to(ROOT).parts)]
    return [p for p in paths if p.is_file() and p.suffix in _TEXT_SUFFIXES and p.stat().st_size < 2_000_000]


def _text(path: Path) -> str | None:
    try:
        return path.read_text()
    except UnicodeDecodeError:
        return None


def test_design_documents_live_in_the_repository() -> None:
    for name in ("docs/DESIGN.md", "docs/STYLE.md", "docs/database-schema.md"):
        assert (ROOT / name).is_file(), f"{name} is missing"


def test_no_file_refers_outside_the_repository() -> None:
    """No path to a place outside the checkout (a sibling ``shared/`` folder, a machine's home),
    every mention of a design document names a file that exists, and every relative Markdown link
    resolves to a file inside the repository."""
    problems: list[str] = []
    me = Path(__file__).resolve()
    for path in _project_files():
        text = _text(path)
        if text is None or path.resolve() == me:
            continue
        rel = path.relative_to(ROOT)
        for lineno, line in enumerate(text.splitlines(), 1):
            if m := _OUTSIDE.search(line):
                problems.append(f"{rel}:{lineno}: refers outside the repository: {m.group(0)!r}")
            for m in _DOC_NAME.finditer(line):
                ref = m.group(0)
                if not ((ROOT / ref).is_file() or (path.parent / ref).is_file()):
                    problems.append(f"{rel}:{lineno}: {ref!r} is not a file of the repository (write docs/…)")
            if path.suffix == ".md":
                for target in _MD_LINK.findall(line):
                    if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                        continue
                    resolved = (path.parent / target).resolve()
                    if ROOT not in resolved.parents or not resolved.exists():
                        problems.append(f"{rel}:{lineno}: link {target!r} does not resolve inside the repository")
    assert not problems, "\n".join(problems)
