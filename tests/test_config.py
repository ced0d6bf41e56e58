"""The queue list is written in a few places that must agree with celeryconfig; every numeric
setting goes through one parser (pipeline.kernel.config.parse_number)."""
from __future__ import annotations

import math
import re

import pytest

import celeryconfig
from pipeline.kernel import config
from pipeline.kernel.config import env_float, env_int, env_number, parse_number
from tests.support import ALL_QUEUES, ROOT


def test_every_queue_list_matches_celeryconfig() -> None:
    expected = set(celeryconfig.QUEUES)
    lists = {
        "Procfile": re.search(r"-Q (\S+)", (ROOT / "Procfile").read_text()),
        "run": re.search(r"-Q (\S+)", (ROOT / "run").read_text()),
        "demo": re.search(r'QUEUES = "([^"]+)"', (ROOT / "scripts" / "demo.py").read_text()),
    }
    for where, m in lists.items():
        assert m is not None and set(m.group(1).split(",")) == expected, where
    assert set(ALL_QUEUES.split(",")) == expected
    # every routed task goes to a queue a worker consumes
    assert {r["queue"] for r in celeryconfig.task_routes.values()} <= expected


@pytest.mark.parametrize(("raw", "whole", "expected"), [
    (None, False, 7.5), ("", False, 7.5), ("  ", True, 7.5),  # unset or blank: the default, as given
    ("3", True, 3), (" 42 ", True, 42), ("0.25", False, 0.25), ("1e2", False, 100.0), ("10", False, 10.0),
])
def test_a_number_within_its_range_is_read(raw: str | None, whole: bool, expected: float) -> None:
    value = parse_number("X_SETTING", raw, 7.5, 0, 100, whole=whole)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("raw", "whole", "words"), [
    ("two", True, "'two' is not a whole number; allowed: a whole number from 0 to 64"),
    ("2.0", True, "'2.0' is not a whole number"),  # a count is written as one
    ("65", True, "'65' is out of range; allowed: a whole number from 0 to 64"),
    ("-1", False, "'-1' is out of range; allowed: a number from 0 to 64"),
    ("nan", False, "'nan' is out of range"),
    ("inf", False, "'inf' is out of range"),
    ("lots", False, "'lots' is not a number; allowed: a number from 0 to 64"),
])
def test_a_bad_number_is_one_line_naming_variable_value_and_range(raw: str, whole: bool, words: str) -> None:
    with pytest.raises(SystemExit) as e:
        parse_number("CPU_PROCESSES", raw, 1, 0, 64, whole=whole)
    msg = str(e.value.code)
    assert msg.startswith(f"configuration error: CPU_PROCESSES={words}"), msg
    assert "\n" not in msg


def test_every_reader_is_the_one_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    # env_int / env_float read os.environ (or a mapping), env_number a mapping: all the same rules
    monkeypatch.setenv("X_PORT", "8080")
    monkeypatch.setenv("X_WAIT", "0.5")
    assert env_int("X_PORT", 0, 1, 65535) == 8080 and env_float("X_WAIT", 1.0, 0.0, 60.0) == 0.5
    assert env_int("X_PORT", 0, 1, 65535, env={"X_PORT": "9"}) == 9
    assert env_number({"X_WAIT": "2"}, "X_WAIT", 1.0, 0.0, 60.0) == 2.0
    assert config._int is env_int and config._float is env_float  # the old private names, same parser
    monkeypatch.setenv("X_PORT", "http")
    with pytest.raises(SystemExit, match="X_PORT='http' is not a whole number; allowed: a whole number from 1 to"):
        env_int("X_PORT", 0, 1, 65535)
    with pytest.raises(SystemExit, match="X_WAIT='99' is out of range; allowed: a number from 0 to 60"):
        env_number({"X_WAIT": "99"}, "X_WAIT", 1.0, 0.0, 60.0)
    with pytest.raises(SystemExit, match=r"X_N='5.5' is not a whole number"):
        env_number({"X_N": "5.5"}, "X_N", 0, 0, 10, whole=True)


def test_an_open_range_and_a_note_are_said(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.kernel import quota

    assert env_float("X_RATE", 0.0, 0.0, math.inf, env={"X_RATE": "inf"}) == math.inf
    monkeypatch.setenv("QUOTA_NOTEPROV_RPM", "-3")
    quota.limits.cache_clear()
    try:
        with pytest.raises(SystemExit) as e:
            quota.limits("noteprov")
        assert str(e.value.code) == ("configuration error: QUOTA_NOTEPROV_RPM='-3' is out of range; "
                                     "allowed: a number >= 0 (0 = no limit)")
    finally:
        monkeypatch.undo()
        quota.limits.cache_clear()
