"""The fairness bench's pure parts (bench/bench_fairness.py): its arguments, each mode's worker
settings, the ratio and median math, and the report it prints. The bench itself starts workers
and takes minutes: run it by hand (README, Benchmarks)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import bench_fairness as bf

pytestmark = pytest.mark.unit


def _runs() -> list[dict[str, Any]]:
    # Chosen so the median of the per-repeat ratios (fair/alone 1.2) differs from the ratio of the
    # medians (3.0 / 2.0 = 1.5): the paired ratio is the headline.
    return [
        {"load_1min": 0.5, "alone": {"latency_s": 2.0}, "unfair": {"latency_s": 40.0, "throughput": 0.80,
         "a_in_flight_max": 16}, "fair": {"latency_s": 2.4, "throughput": 0.78, "a_in_flight_max": 4}},
        {"load_1min": 1.5, "alone": {"latency_s": 1.0}, "unfair": {"latency_s": 30.0, "throughput": 1.00,
         "a_in_flight_max": 15}, "fair": {"latency_s": 3.0, "throughput": 1.00, "a_in_flight_max": 4}},
        {"load_1min": 2.5, "alone": {"latency_s": 4.0}, "unfair": {"latency_s": 50.0, "throughput": 0.90,
         "a_in_flight_max": 16}, "fair": {"latency_s": 4.0, "throughput": 0.81, "a_in_flight_max": 3}},
    ]


def _result(runs: list[dict[str, Any]], cap: int | None = None) -> dict[str, Any]:
    return {"settings": {"batch": 40, "pages": 12, "latency_s": 0.5, "repeats": len(runs), "cap": cap,
                         "concurrency": 16},
            "runs": runs, "summary": bf.summarize(runs), "cores": 2,
            "load": {"start": [0.25, 0.5, 0.75], "end": [1.0, 1.25, 1.5]}, "seconds": 400.0, "logs": "/tmp/x"}


def test_defaults_and_options() -> None:
    a = bf.parse_args([])
    assert (a.batch, a.pages, a.latency, a.repeats, a.cap, a.json) == (40, 12, 0.5, 3, None, False)
    a = bf.parse_args(["--batch", "8", "--pages", "4", "--latency", "0.2", "--repeats", "1", "--cap", "0", "--json"])
    assert (a.batch, a.pages, a.latency, a.repeats, a.cap, a.json) == (8, 4, 0.2, 1, 0, True)


@pytest.mark.parametrize("bad", [["--repeats", "0"], ["--batch", "0"], ["--pages", "-1"], ["--latency", "0"],
                                 ["--cap", "-1"], ["--batch", "x"]])
def test_bad_values_are_refused(bad: list[str]) -> None:
    with pytest.raises(SystemExit):
        bf.parse_args(bad)


def test_the_worker_concurrency_is_the_procfiles_default(tmp_path: Path) -> None:
    assert bf.procfile_concurrency() == 32  # Procfile: --concurrency ${WORKER_CONCURRENCY:-32}
    (tmp_path / "Procfile").write_text("beat: celery beat\nworker: celery -A x worker --concurrency 7 -E\n")
    assert bf.procfile_concurrency(tmp_path / "Procfile") == 7
    (tmp_path / "Procfile").write_text("worker: celery -A x worker\n")
    with pytest.raises(ValueError):
        bf.procfile_concurrency(tmp_path / "Procfile")


def test_each_modes_worker_settings() -> None:
    base = {"PATH": "/bin", "USER_STORIES_IN_FLIGHT": "9", "FAIR_PRIORITY": "true"}  # inherited: dropped
    assert bf.mode_env(base, "alone") == {"PATH": "/bin"}
    assert bf.mode_env(base, "fair") == {"PATH": "/bin"}  # the shipped defaults
    assert bf.mode_env(base, "fair", cap=2) == {"PATH": "/bin", "USER_STORIES_IN_FLIGHT": "2"}
    assert bf.mode_env(base, "alone", cap=2) == {"PATH": "/bin"}
    assert bf.mode_env(base, "unfair", cap=2) == {"PATH": "/bin", "USER_STORIES_IN_FLIGHT": "0",
                                                  "FAIR_PRIORITY": "false"}
    assert base["USER_STORIES_IN_FLIGHT"] == "9"  # not changed in place
    with pytest.raises(ValueError):
        bf.mode_env(base, "fastest")


def test_ratios_are_medians_of_each_repeats_ratios() -> None:
    s = bf.summarize(_runs())
    assert [round(p["fair_vs_alone_latency"], 6) for p in s["repeats"]] == [1.2, 3.0, 1.0]
    assert [round(p["fair_vs_unfair_throughput"], 6) for p in s["repeats"]] == [0.975, 1.0, 0.9]
    assert [round(p["unfair_vs_alone_latency"], 6) for p in s["repeats"]] == [20.0, 30.0, 12.5]
    m = s["median"]
    assert m["fair_vs_alone_latency"] == pytest.approx(1.2)  # not 3.0 / 2.0
    assert m["fair_vs_unfair_throughput"] == pytest.approx(0.975)
    assert m["unfair_vs_alone_latency"] == pytest.approx(20.0)
    assert (m["alone_latency_s"], m["unfair_latency_s"], m["fair_latency_s"]) == (2.0, 40.0, 3.0)
    assert (m["unfair_throughput"], m["fair_throughput"]) == (0.90, 0.81)
    assert s["met"] == {"latency": True, "throughput": True}


def test_targets_at_their_bounds_and_past_them() -> None:
    one = {"alone": {"latency_s": 2.0}, "unfair": {"latency_s": 9.0, "throughput": 1.0},
           "fair": {"latency_s": 3.0, "throughput": 0.95}}
    assert bf.summarize([one])["met"] == {"latency": True, "throughput": True}  # 1.5x and 0.95x exactly
    worse = {**one, "fair": {"latency_s": 3.01, "throughput": 0.949}}
    assert bf.summarize([worse])["met"] == {"latency": False, "throughput": False}
    # Two repeats: the median is their mean.
    assert bf.summarize([one, worse])["median"]["fair_vs_alone_latency"] == pytest.approx((1.5 + 1.505) / 2)


def test_nothing_measured_is_an_error() -> None:
    with pytest.raises(ValueError):
        bf.summarize([])
    with pytest.raises(ValueError):
        bf.ratio(1.0, 0.0)
    assert bf.ratio(3.0, 2.0) == 1.5


def test_the_report_names_every_number_and_the_verdicts() -> None:
    text = bf.format_report(_result(_runs()))
    lines = text.splitlines()
    assert lines[0].startswith("fairness: account A queues 40 stories x 12 pages, then account B submits 1; "
                               "0.5s per provider call; 1 worker, threads pool, concurrency 16; 3 repeats")
    assert "fair: USER_STORIES_IN_FLIGHT=shipped default" in lines[1]
    assert lines[2] == ("repeat 1: B latency alone 2.00s, unfair 40.00s, fair 2.40s; throughput unfair 0.800, "
                        "fair 0.780 stories/s -> fair/alone latency 1.20x, fair/unfair throughput 0.975x; "
                        "A's stories in flight at most: unfair 16, fair 4 (load 0.50)")
    assert lines[4].startswith("repeat 3: ") and lines[4].endswith("(load 2.50)")
    assert lines[5] == ("B's latency (median): alone 2.00s, unfair 40.00s, fair 3.00s -> fair/alone 1.20x "
                        "(target <= 1.5x: met; per repeat 1.20, 3.00, 1.00); unfair/alone 20.00x")
    assert lines[6] == ("throughput (median): unfair 0.900, fair 0.810 stories/s -> fair/unfair 0.975x "
                        "(target >= 0.95x: met; per repeat 0.975, 1.000, 0.900)")
    assert lines[7] == "machine load (1/5/15 min, 2 cores): start 0.25/0.50/0.75, end 1.00/1.25/1.50; took 400s"
    assert len(lines) == 8


def test_the_report_says_missed_and_the_cap() -> None:
    runs = _runs()
    runs[1]["fair"] = {"latency_s": 9.0, "throughput": 0.5, "a_in_flight_max": 40}
    runs[2]["fair"] = {"latency_s": 9.0, "throughput": 0.5, "a_in_flight_max": 40}
    text = bf.format_report(_result(runs, cap=2))
    assert "fair: USER_STORIES_IN_FLIGHT=2," in text
    assert "(target <= 1.5x: MISSED;" in text and "(target >= 0.95x: MISSED;" in text
    assert "A's stories in flight at most: unfair 15, fair 40 (load 1.50)" in text


def test_json_prints_the_whole_result(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    seen = []

    def fake_run(args: Any) -> dict[str, Any]:  # the measuring part starts workers: not here
        seen.append(args)
        return _result(_runs())

    monkeypatch.setattr(bf, "run", fake_run)
    assert bf.main(["--json", "--repeats", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert seen[0].repeats == 3
    assert out["summary"]["median"]["fair_vs_alone_latency"] == pytest.approx(1.2)
    assert set(out) == {"settings", "runs", "summary", "cores", "load", "seconds", "logs"}
    assert bf.main([]) == 0
    assert capsys.readouterr().out.startswith("fairness: ")
