"""Argument types of the operators' commands (pipeline/operations/cli.py): each parses one value
or raises argparse.ArgumentTypeError with what was wrong, which argparse prints as a usage error."""
from __future__ import annotations

import argparse


def duration(raw: str) -> float:
    """'90s', '15m', '6h', '2d' or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(raw[:-1]) * units[raw[-1]] if raw[-1:] in units else float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {raw!r} (e.g. 90s, 15m, 6h, 2d)") from None


def non_negative(value: str) -> float:
    """A number >= 0."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if x < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return x


def positive_int(value: str) -> int:
    """A whole number >= 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n
