"""Issue 14, part 3: the alerting rules and the dashboard that ship in ops/.

- ``promtool check rules`` / ``check config`` and the rules' unit tests (``promtool test rules``),
  with the promtool of Debian's ``prometheus`` package (``./run`` installs it). Without promtool the
  tests fail in CI (CI=true) and skip, saying so, on a developer's machine.
- Every PromQL expression of the rules and the dashboard is parsed with a real PromQL parser
  (``promql-parser`` on PyPI: the Rust ``promql-parser`` crate, GreptimeDB's, in Python) and every
  metric it selects is one the code exports: the names come from prometheus_client's registry after
  the worker's metrics and the exporter's gauges are imported, never from a list written here.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.core import REGISTRY

from tests.support import ROOT

OPS = ROOT / "ops"
RULES = OPS / "prometheus" / "alerts.yml"
RULE_TESTS = OPS / "prometheus" / "alerts_test.yml"
CONFIG = OPS / "prometheus" / "prometheus.yml"
DASHBOARD = OPS / "grafana" / "storycreator.json"
# Series Prometheus writes itself for every scrape target (not exported by any code of ours).
PROMETHEUS_OWN = {"up"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("promtool is missing: ./run installs Debian's prometheus package (apt-get); "
                    "see README, Metrics and alerts")
    pytest.skip("promtool is not installed (Debian/Ubuntu: apt-get install --no-install-recommends prometheus; "
                "./run does it as root)")


def _promtool(*args: str) -> str:
    proc = subprocess.run([promtool(), *args], cwd=RULES.parent, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_promtool_checks_the_rules_and_the_example_config() -> None:
    assert "SUCCESS: 14 rules found" in _promtool("check", "rules", RULES.name)
    _promtool("check", "config", CONFIG.name)


def test_promtool_rule_unit_tests_pass() -> None:
    assert "SUCCESS" in _promtool("test", "rules", RULE_TESTS.name)


def test_promtool_fails_a_rule_test_that_expects_the_wrong_thing(tmp_path: Path) -> None:
    # the harness can fail: the same tests, one expectation changed, are refused
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tests["rule_files"] = [str(RULES)]
    tests["tests"][0]["alert_rule_test"][0]["exp_alerts"] = [{"exp_labels": {"severity": "page"}}]
    wrong = tmp_path / "wrong_test.yml"
    wrong.write_text(yaml.safe_dump(tests))
    proc = subprocess.run([promtool(), "test", "rules", str(wrong)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "FAILED" in proc.stdout + proc.stderr


# --- every expression names an exported metric ----------------------------------------------------
def exported() -> set[str]:
    """Every series name the worker (pipeline.kernel.metrics) and the exporter (gauges) can serve."""
    import pipeline.kernel.metrics  # noqa: F401  (registers the worker's counters and histograms)
    from pipeline.operations.gauges import exported_names

    return exported_names(REGISTRY.collect())


def rule_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text())
    return [(f"alert {r['alert']}", r["expr"]) for g in rules["groups"] for r in g["rules"]]


def dashboard_expressions() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(f"panel {p['title']!r} {t['refId']}", t["expr"]) for p in dash["panels"] for t in p["targets"]]


def selected_metrics(node: Any) -> Iterator[str]:
    """The metric names an expression's selectors name (``foo{…}`` and ``foo{…}[5m]``). A selector
    without a literal name (``{__name__=~"…"}``) raises: it could not be checked."""
    if isinstance(node, promql_parser.MatrixSelector):
        node = node.vector_selector
    if isinstance(node, promql_parser.VectorSelector):
        if not node.name:
            raise AssertionError(f"a selector without a metric name cannot be checked: {node.prettify()}")
        yield node.name
        return
    for child in ("lhs", "rhs", "expr", "param"):
        if (sub := getattr(node, child, None)) is not None and isinstance(sub, promql_parser.Expr):
            yield from selected_metrics(sub)
    for arg in getattr(node, "args", None) or ():
        yield from selected_metrics(arg)


def test_the_dashboard_and_the_rules_use_only_metrics_the_code_exports() -> None:
    names = exported()
    # the registry was really read (a worker counter, a histogram series, an exporter gauge)
    assert {"storycreator_steps_total", "storycreator_step_duration_seconds_bucket",
            "storycreator_queue_messages"} <= names
    expressions = rule_expressions() + dashboard_expressions()
    assert len(expressions) >= 20
    unknown = []
    for where, expr in expressions:
        used = set(selected_metrics(promql_parser.parse(expr)))  # a syntax error raises here
        assert used, (where, expr)
        unknown += [(where, m) for m in sorted(used - names - PROMETHEUS_OWN)]
    assert not unknown, unknown


# Labels Prometheus attaches to every scraped series (the target's), whatever the code exports.
TARGET_LABELS = {"job", "instance"}


def exported_labels() -> dict[str, set[str]]:
    """Series name -> the label names the code gives it, from the registry's collectors: a metric
    object's label names (histogram buckets add ``le``), a custom collector's described families'."""
    exported()  # the modules imported
    labels: dict[str, set[str]] = {}
    for collector, names in REGISTRY._collector_to_names.items():  # no public listing of the collectors
        own = getattr(collector, "_labelnames", None)  # a Counter, Gauge or Histogram of prometheus_client
        described = {} if own is not None or not hasattr(collector, "describe") else {
            f.name: set(f._labelnames) for f in collector.describe()}  # a custom collector's families
        for name in names:
            base = set(own) if own is not None else described.get(name, set())
            labels[name] = base | ({"le"} if name.endswith("_bucket") else set())
    return labels


def selector_labels(node: Any) -> Iterator[tuple[str, str]]:
    """(metric name, label name) for every label matcher of every selector in the expression."""
    if isinstance(node, promql_parser.MatrixSelector):
        node = node.vector_selector
    if isinstance(node, promql_parser.VectorSelector):
        for m in node.matchers.matchers:
            yield node.name or "", m.name
        return
    for child in ("lhs", "rhs", "expr", "param"):
        if (sub := getattr(node, child, None)) is not None and isinstance(sub, promql_parser.Expr):
            yield from selector_labels(sub)
    for arg in getattr(node, "args", None) or ():
        yield from selector_labels(arg)


def test_every_label_an_expression_matches_on_is_one_its_metric_has() -> None:
    labels = exported_labels()
    assert labels["storycreator_steps_total"] == {"stage", "outcome"}
    assert labels["storycreator_queue_messages"] == {"queue"}
    wrong = [(where, metric, label)
             for where, expr in rule_expressions() + dashboard_expressions()
             for metric, label in selector_labels(promql_parser.parse(expr))
             if metric not in PROMETHEUS_OWN and label not in labels[metric] | TARGET_LABELS]
    assert not wrong, wrong
    # and the check can fail
    assert list(selector_labels(promql_parser.parse('storycreator_queue_messages{stage="text"}'))) == [
        ("storycreator_queue_messages", "stage")]


def test_the_checker_finds_an_unknown_metric_and_a_syntax_error() -> None:
    names = exported()
    used = set(selected_metrics(promql_parser.parse(
        'sum by (stage) (rate(storycreator_steps_total[5m])) / on() group_left max(storycreator_cost_total)')))
    assert used - names == {"storycreator_cost_total"}
    with pytest.raises(ValueError):
        promql_parser.parse("sum by (stage (rate(storycreator_steps_total[5m]))")


def test_the_dashboard_imports_as_grafana_expects() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["__inputs"][0]["name"] == "DS_PROMETHEUS" and dash["uid"] == "storycreator-workers"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in dash["panels"]}
    assert {"Stories per hour by outcome", "Step latency by stage (p50, p95)", "Queue depth",
            "Oldest waiting work", "Provider errors per minute", "Cost per book"} <= titles
    assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in dash["panels"] for t in p["targets"])


# --- ./run installs promtool without starting a service ------------------------------------------
def _install_promtool(tmp_path: Path, apt_get: str) -> subprocess.CompletedProcess[str]:
    """``./run``'s install_promtool, alone, with fake ``apt-get`` and ``id`` (root) first on PATH and
    the policy file under ``tmp_path``; ``promtool`` is not on that PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(apt_get)
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    for tool in ("chmod", "rm", "cat"):  # what the function and the fakes call; nothing else on PATH
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")
    function = subprocess.run(["sed", "-n", "/^install_promtool()/,/^}/p", str(ROOT / "run")],
                              capture_output=True, text=True, check=True).stdout
    assert function.strip().endswith("}")
    env = {"PATH": str(bin_dir), "POLICY_RC_D": str(tmp_path / "policy-rc.d"), "LOG": str(tmp_path / "log")}
    return subprocess.run(["/bin/bash", "-c", f"set -euo pipefail\n{function}\ninstall_promtool\necho done"],
                          capture_output=True, text=True, env=env, timeout=30)


def test_run_installs_promtool_with_service_starts_refused(tmp_path: Path) -> None:
    # apt-get records, while it installs, what the policy says about starting the prometheus service
    proc = _install_promtool(tmp_path, '#!/bin/bash\necho "$*" >>"$LOG"\n'
                                       'if [ "$1" = install ]; then "$POLICY_RC_D" prometheus start; '
                                       'echo "policy says $?" >>"$LOG"; fi\n')
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr
    log = (tmp_path / "log").read_text().splitlines()
    assert log[0] == "update -qq"
    assert log[1].startswith("install -y -qq --no-install-recommends") and log[1].split()[-1] == "prometheus"
    assert log[2] == "policy says 101"  # invoke-rc.d's "action forbidden by policy"
    assert not (tmp_path / "policy-rc.d").exists()  # put in place for the install only


def test_run_goes_on_when_promtool_cannot_be_installed(tmp_path: Path) -> None:
    (tmp_path / "policy-rc.d").write_text("#!/bin/sh\nexit 101\n")  # the machine's own: left as it is
    proc = _install_promtool(tmp_path, "#!/bin/bash\nexit 100\n")
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr
    assert "warning: could not install promtool" in proc.stderr
    assert (tmp_path / "policy-rc.d").read_text() == "#!/bin/sh\nexit 101\n"
