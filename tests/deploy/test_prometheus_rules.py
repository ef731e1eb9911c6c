"""Prometheus alert rules and Grafana dashboards (deploy/prometheus, deploy/grafana), offline.

- The rules are checked by ``promtool check rules`` and unit-tested by ``promtool test
  rules`` (deploy/prometheus/alerts.test.yml). Every alert must have a test in which it
  fires and one in which it stays quiet, and the tests must notice an alert that always
  or never fires (each alert's expression is replaced in turn and the tests must fail).
- Every dashboard query (panel targets and variable queries, with Grafana's variables
  substituted) is parsed by promtool, as the expressions of a throw-away rules file.
- Rules and dashboards name only metrics that the services define.

promtool comes from Debian's ``prometheus`` package (scripts/install.sh). Whether the
queries return data on the running platform is tests/integration/test_observability.py.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts.test.yml"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
#: Where the services define their metrics.
METRIC_SOURCES = ("ingest", "api", "stream", "recognizer", "notify", "common")
#: Grafana's built-in interval variables, and what a lint or a test puts in their place.
BUILTIN_INTERVALS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
SEVERITIES = {"warning", "critical"}
#: Annotations every alert carries: what happened, more detail, and what to do.
ANNOTATIONS = ("summary", "description", "runbook")

Dashboard = dict[str, Any]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool not found: it comes with Debian's prometheus package "
            "(apt-get install --no-install-recommends prometheus; scripts/install.sh installs it)"
        )
    return found


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


# ------------------------------------------------------------------------------- metrics


@functools.cache
def defined_metrics() -> frozenset[str]:
    """Every series name the services can export (a histogram's _bucket, _sum, _count)."""
    pattern = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"", re.S)
    names: set[str] = set()
    for folder in METRIC_SOURCES:
        for source in (ROOT / folder).rglob("*.py"):
            for kind, name in pattern.findall(source.read_text()):
                names.add(name)
                if kind in ("Histogram", "Summary"):
                    names.update({f"{name}_sum", f"{name}_count"})
                if kind == "Histogram":
                    names.add(f"{name}_bucket")
    return frozenset(names)


def recorded_metrics(rules: Mapping[str, Any]) -> set[str]:
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def unknown_metrics(expr: str, known: set[str] | frozenset[str]) -> list[str]:
    """facestream series named in ``expr`` that nothing defines (a typo, a renamed metric)."""
    named = re.findall(r"\bfacestream[a-zA-Z0-9_:]*", expr)
    return sorted({n for n in named if n not in known})


# --------------------------------------------------------------------------------- rules


def load_rules(path: Path = RULES) -> dict[str, Any]:
    rules: dict[str, Any] = yaml.safe_load(path.read_text())
    return rules


def alerts(rules: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def test_rules_are_valid() -> None:
    done = run_promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_unit_tests_pass() -> None:
    done = run_promtool("test", "rules", RULE_TESTS.name, cwd=PROMETHEUS)
    assert done.returncode == 0, done.stdout + done.stderr


def coverage_problems(rules: Mapping[str, Any], tests: Mapping[str, Any]) -> list[str]:
    """Each alert needs a test in which it fires and one in which it does not."""
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in tests["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    problems = []
    for alert in alerts(rules):
        name = alert["alert"]
        if name not in fires:
            problems.append(f"{name}: no test in which it fires")
        if name not in quiet:
            problems.append(f"{name}: no test in which it stays quiet")
    return problems


def test_every_alert_is_tested_firing_and_quiet() -> None:
    assert coverage_problems(load_rules(), yaml.safe_load(RULE_TESTS.read_text())) == []


def annotation_problems(rules: Mapping[str, Any]) -> list[str]:
    """Each alert says what happened and what to do, with a severity to route on."""
    problems = []
    for alert in alerts(rules):
        name = alert["alert"]
        missing = [a for a in ANNOTATIONS if not str(alert.get("annotations", {}).get(a, "")).strip()]
        if missing:
            problems.append(f"{name}: no {', '.join(missing)} annotation")
        if alert.get("labels", {}).get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity is not one of {sorted(SEVERITIES)}")
    return problems


def test_every_alert_explains_itself() -> None:
    assert annotation_problems(load_rules()) == []


def test_rules_name_only_defined_metrics() -> None:
    rules = load_rules()
    known = defined_metrics() | recorded_metrics(rules)
    problems = {
        r.get("alert") or r["record"]: unknown_metrics(r["expr"], known)
        for g in rules["groups"]
        for r in g["rules"]
    }
    assert {k: v for k, v in problems.items() if v} == {}


def rule_tests_pass_with(tmp_path: Path, rules: Mapping[str, Any], only: str | None = None) -> bool:
    """Run alerts.test.yml against ``rules`` instead of alerts.yml; with ``only``, just the
    cases of that alert (the others cannot notice a change to it, and each costs time)."""
    tests = yaml.safe_load(RULE_TESTS.read_text())
    if only is not None:
        kept = []
        for test in tests["tests"]:
            cases = [c for c in test.get("alert_rule_test", []) if c["alertname"] == only]
            if cases:
                kept.append({**test, "alert_rule_test": cases, "promql_expr_test": []})
        tests["tests"] = kept
    (tmp_path / RULES.name).write_text(yaml.safe_dump(dict(rules), sort_keys=False))
    (tmp_path / RULE_TESTS.name).write_text(yaml.safe_dump(tests, sort_keys=False))
    return run_promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path).returncode == 0


@pytest.mark.parametrize(
    ("mutant", "expr"), [("always-fires", "vector(1)"), ("never-fires", "vector(1) == 0")]
)
def test_rule_tests_notice_a_broken_alert(tmp_path: Path, mutant: str, expr: str) -> None:
    rules = load_rules()
    assert rule_tests_pass_with(tmp_path, rules), "the tests must pass on the real rules first"
    unnoticed = []
    for i, alert in enumerate(alerts(rules)):
        broken = copy.deepcopy(rules)
        alerts(broken)[i]["expr"] = expr
        if rule_tests_pass_with(tmp_path, broken, only=alert["alert"]):
            unnoticed.append(alert["alert"])
    assert unnoticed == [], f"alerts.test.yml passes when these alerts are {mutant}"


def test_coverage_and_annotation_checks_can_fail() -> None:
    rules = load_rules()
    tests = yaml.safe_load(RULE_TESTS.read_text())
    first = alerts(rules)[0]["alert"]
    quiet_only = copy.deepcopy(tests)
    for test in quiet_only["tests"]:
        for case in test.get("alert_rule_test", []):
            if case["alertname"] == first:
                case["exp_alerts"] = []
    assert coverage_problems(rules, quiet_only) == [f"{first}: no test in which it fires"]
    unexplained = copy.deepcopy(rules)
    del alerts(unexplained)[0]["annotations"]["runbook"]
    assert annotation_problems(unexplained) == [f"{first}: no runbook annotation"]
    assert unknown_metrics("rate(facestream_http_requests[5m])", defined_metrics()) == [
        "facestream_http_requests"
    ]


# ---------------------------------------------------------------------------- dashboards


@dataclass(frozen=True)
class Query:
    dashboard: str  # uid
    where: str  # panel title and refId, or the variable
    expr: str  # as written in the dashboard


def load_dashboards() -> dict[str, Dashboard]:
    """File name -> dashboard, every JSON under deploy/grafana/dashboards."""
    found = {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}
    assert found, f"no dashboards in {DASHBOARDS}"
    return found


def panels(dashboard: Dashboard) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside a collapsed row."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variables(dashboard: Dashboard) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def variable_query(variable: Mapping[str, Any]) -> str | None:
    """The PromQL inside a query variable's ``label_values(<selector>, <label>)`` (None: other)."""
    if variable.get("type") != "query":
        return None
    query = variable.get("query")
    text = query.get("query", "") if isinstance(query, dict) else str(query or "")
    found = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", text)
    return found.group(1) if found else text


def label_of(variable: Mapping[str, Any]) -> str:
    query = variable.get("query")
    text = query.get("query", "") if isinstance(query, dict) else str(query or "")
    found = re.fullmatch(r"\s*label_values\(.*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", text)
    assert found, f"variable {variable.get('name')}: not a label_values() query"
    return found.group(1)


def queries(dashboard: Dashboard) -> list[Query]:
    uid = dashboard["uid"]
    found = [
        Query(uid, f"panel {panel.get('title')!r} {target.get('refId')}", target.get("expr", ""))
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]
    for name, variable in variables(dashboard).items():
        expr = variable_query(variable)
        if expr is not None:
            found.append(Query(uid, f"variable {name}", expr))
    return found


VARIABLE = re.compile(r"\$\{([a-zA-Z0-9_]+)(?::[a-z]+)?\}|\$([a-zA-Z0-9_]+)|\[\[([a-zA-Z0-9_]+)\]\]")


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with Grafana's variables replaced; KeyError names a variable not in ``values``."""

    def one(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g)
        return values[name]

    return VARIABLE.sub(one, expr)


def lint_values(dashboard: Dashboard) -> dict[str, str]:
    """A value for each variable that keeps the query valid PromQL (a regex matching all)."""
    values = dict(BUILTIN_INTERVALS)
    for name, variable in variables(dashboard).items():
        values[name] = (variable.get("allValue") or ".+") if variable.get("type") == "query" else name
    return values


def structure_problems(name: str, dashboard: Dashboard) -> list[str]:
    """What Grafana needs to provision the file and show each panel on the Prometheus picked."""
    problems = []
    for key in ("uid", "title", "schemaVersion", "panels"):
        if key not in dashboard:
            problems.append(f"{name}: no {key}")
    source = variables(dashboard).get("datasource", {})
    if source.get("type") != "datasource" or source.get("query") != "prometheus":
        problems.append(f"{name}: no Prometheus datasource variable named 'datasource'")
    ids = [p.get("id") for p in panels(dashboard)]
    if len(ids) != len(set(ids)) or None in ids:
        problems.append(f"{name}: panel ids are missing or repeated")
    for panel in panels(dashboard):
        title = panel.get("title")
        grid = panel.get("gridPos", {})
        if not {"h", "w", "x", "y"} <= grid.keys() or grid["x"] + grid["w"] > 24:
            problems.append(f"{name}: panel {title!r}: gridPos missing or wider than 24 columns")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{name}: panel {title!r}: datasource is not the $datasource variable")
        targets = panel.get("targets", [])
        if not targets:
            problems.append(f"{name}: panel {title!r}: no query")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)) or None in refs:
            problems.append(f"{name}: panel {title!r}: refIds missing or repeated")
        if any(not str(t.get("expr", "")).strip() for t in targets):
            problems.append(f"{name}: panel {title!r}: an empty expression")
    return problems


def query_problems(dashboards: Mapping[str, Dashboard], tmp_path: Path) -> list[str]:
    """Variables that are not defined, metrics that nothing exports, and PromQL that promtool
    cannot parse: the queries become recording rules of a throw-away file."""
    problems = []
    known = defined_metrics() | recorded_metrics(load_rules())
    group_rules: list[dict[str, Any]] = []
    wheres: list[str] = []
    for name, dashboard in dashboards.items():
        values = lint_values(dashboard)
        for i, q in enumerate(queries(dashboard)):
            try:
                expr = substitute(q.expr, values)
            except KeyError as exc:
                problems.append(f"{name}: {q.where}: undefined variable {exc}")
                continue
            for metric in unknown_metrics(expr, known):
                problems.append(f"{name}: {q.where}: no service exports {metric}")
            record = "dashboard:" + re.sub(r"[^a-zA-Z0-9_]", "_", f"{name}_{i}")
            group_rules.append({"record": record, "expr": expr})
            wheres.append(f"{name}: {q.where}")
    rules_file = tmp_path / "dashboard-queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": group_rules}]}))
    done = run_promtool("check", "rules", str(rules_file))
    if done.returncode != 0:
        # promtool names the failing rule by its position: point at the panel instead.
        problems.append(f"promtool check rules: {done.stdout}{done.stderr}")
        for m in re.finditer(r"group \"dashboards\", rule (\d+)", done.stdout + done.stderr):
            problems.append(f"  rule {m.group(1)} is {wheres[int(m.group(1)) - 1]}")
    return problems


def test_dashboards_are_well_formed() -> None:
    dashboards = load_dashboards()
    problems = [p for name, d in dashboards.items() for p in structure_problems(name, d)]
    assert problems == []
    uids = [d["uid"] for d in dashboards.values()]
    assert len(uids) == len(set(uids)), "two dashboards share a uid"


def test_dashboard_queries_are_valid(tmp_path: Path) -> None:
    assert query_problems(load_dashboards(), tmp_path) == []


def test_there_are_the_three_dashboards() -> None:
    titles = {d["uid"]: d["title"] for d in load_dashboards().values()}
    assert set(titles) == {"facestream-overview", "facestream-recognizer", "facestream-kafka"}, titles


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("unparsable", "promtool check rules"),
        ("undefined-variable", "undefined variable"),
        ("unknown-metric", "no service exports facestream_nonexistent_total"),
        ("no-datasource-variable", "datasource is not the $datasource variable"),
    ],
)
def test_dashboard_lint_can_fail(tmp_path: Path, breakage: str, expected: str) -> None:
    dashboards = load_dashboards()
    name, dashboard = next(iter(dashboards.items()))
    target_panel = next(p for p in panels(dashboard) if p.get("targets"))
    target = target_panel["targets"][0]
    if breakage == "unparsable":
        target["expr"] = "sum(rate(facestream_http_requests_total[5m])"
    elif breakage == "undefined-variable":
        target["expr"] = 'facestream_circuit_state{dependency="$nowhere"}'
    elif breakage == "unknown-metric":
        target["expr"] = "sum(rate(facestream_nonexistent_total[5m]))"
    else:
        target_panel["datasource"] = {"type": "prometheus", "uid": "some-other-uid"}
    found = query_problems({name: dashboard}, tmp_path) + structure_problems(name, dashboard)
    assert any(expected in p for p in found), found
