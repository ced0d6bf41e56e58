"""The README's test command: the whole suite on the real services, failing loudly when pytest
collected nothing (its exit code 5 would otherwise look like a quiet pass to some callers)."""
from __future__ import annotations

import sys

import pytest


def main() -> int:
    code = int(pytest.main(["-q", *sys.argv[1:]]))
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("error: pytest collected no tests", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
