"""docs/monitoring (issue 7): the alert rules pass promtool (check and unit tests), the dashboard's
PromQL parses, and the rules and the dashboard only use metrics, labels and label values that the
agent exports, so a renamed metric cannot leave an alert silently dead."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hacluster.dataplane.table import BackendState
from hacluster.metrics import CAUSES, SECTIONS, AgentCollector, FailoverHistogram, Timings
from hacluster.model import GossipState

from .test_admin import SYNC_OK
from .test_metrics import BACKENDS, CHECKS, MEMBERS, STATUS

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "docs" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts_test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Prometheus adds these to every series it scrapes.
TARGET_LABELS = {"job", "instance"}
# The alerts issue 7 and its follow-up ask for (more may exist).
REQUIRED_ALERTS = {"HaclusterNoQuorum", "HaclusterNoLeader", "HaclusterNoVipHolder", "HaclusterTwoVipHolders",
                   "HaclusterLeaderFlapping", "HaclusterBackendDown", "HaclusterMemberDown",
                   "HaclusterMaintenanceOn", "HaclusterTableNotApplied", "HaclusterCertificateExpiring",
                   "HaclusterFailoverSlow"}
# Label values the rules and panels may match on, from the code that produces them.
KNOWN_VALUES: dict[tuple[str, str], set[str]] = {
    ("hacluster_table_generation", "kind"): {"committed", "applied"},
    ("hacluster_backend_up", "state"): {s.value for s in BackendState},
    ("hacluster_backend_up", "role"): {"backend"},  # fallbacks have no "up"
    ("hacluster_backend_packets_total", "role"): {"backend", "fallback"},
    ("hacluster_backend_bytes_total", "role"): {"backend", "fallback"},
    ("hacluster_members", "state"): {s.value for s in GossipState},
    ("hacluster_metrics_errors_total", "section"): set(SECTIONS),
    **{(f"hacluster_{h}_seconds_{suffix}", "cause"): set(CAUSES)
       for h in ("failover_duration", "vip_claim_delay") for suffix in ("bucket", "sum", "count")},
}


def _promtool() -> str:
    # on PATH (apt install prometheus), or unpacked next to this interpreter (.venv/bin)
    found = shutil.which("promtool") or shutil.which("promtool", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("promtool is not installed, so the alert rules are not checked: run scripts/setup.sh, "
                    "which provides promtool from Debian's `prometheus` package")
    return found


def _promtool_run(*args: str) -> None:
    proc = subprocess.run([_promtool(), *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}{proc.stderr}"


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))  # a collapsed row keeps its panels inside


def _dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in _panels(_dashboard()["panels"]) for t in p.get("targets", [])]
    for var in _dashboard()["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["definition"])
    return exprs


# ------------------------------------------------------------------ promtool


def test_promtool_check_rules() -> None:
    _promtool_run("check", "rules", str(ALERTS.relative_to(REPO)))


def test_promtool_test_rules() -> None:
    """The unit tests in alerts_test.yml: each alert fires when it should, with the exact labels
    and annotations the on-call person gets, and a healthy cluster fires nothing."""
    _promtool_run("test", "rules", str(ALERT_TESTS.relative_to(REPO)))


def test_every_alert_is_tested_firing_and_silent() -> None:
    names = {rule["alert"] for rule in _rules()}
    fired: set[str] = set()
    silent: set[str] = set()
    for group in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for case in group.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else silent).add(case["alertname"])
    assert not names - fired, f"alerts never expected to fire in alerts_test.yml: {sorted(names - fired)}"
    assert not names - silent, f"alerts never expected silent in alerts_test.yml: {sorted(names - silent)}"
    assert not (fired | silent) - names, f"tests of unknown alerts: {sorted((fired | silent) - names)}"


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """promtool has no PromQL linter of its own: the panels' queries go through `check rules` as
    recording rules, with Grafana's variables replaced by what Grafana would put there."""
    substitutions = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "6h", "$job": "hacluster"}
    rules = []
    for i, expr in enumerate(_dashboard_exprs()):
        if expr.startswith("label_values("):
            continue
        for var, value in substitutions.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _promtool_run("check", "rules", str(path))


# ------------------------------------------------------------------ metric names and labels


def _extra_gauges() -> list[str]:
    """The gauges daemon.py adds through AgentCollector(extra=...) (the certificate expiry): the
    keys of the dict its lambda returns, read from the source."""
    tree = ast.parse((REPO / "hacluster" / "daemon.py").read_text())
    names = [key.value for node in ast.walk(tree) if isinstance(node, ast.keyword) and node.arg == "extra"
             and isinstance(node.value, ast.Lambda) and isinstance(node.value.body, ast.Dict)
             for key in node.value.body.keys if isinstance(key, ast.Constant)]
    assert names, "daemon.py passes no extra={...} gauges to AgentCollector any more: update this test"
    return names


def _exported() -> dict[str, set[str]]:
    """Every series name an agent exports -> its label names (plus job and instance), from the
    exposition of a collector with every provider, as daemon.py builds it."""
    extra = _extra_gauges()
    registry = CollectorRegistry()
    synced = dataclasses.replace(STATUS, connection_sync=SYNC_OK)  # else the sync's metrics are absent
    registry.register(AgentCollector(lambda: synced, lambda: MEMBERS, lambda: CHECKS, lambda: BACKENDS,
                                     FailoverHistogram(), lambda: dict.fromkeys(extra, 1.0),
                                     leader_changes=lambda: 3, timings=Timings(),
                                     raft_listener=lambda: True))
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set(TARGET_LABELS)).update(sample.labels)
    assert set(extra) <= set(names), "an extra gauge of daemon.py is not exported (clashing name?)"
    return names


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"\b(hacluster_[A-Za-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bhacluster_[A-Za-z0-9_:]*", _STRING.sub('""', expr)))


def _all_exprs() -> list[tuple[str, str]]:
    return ([(f"alerts.yml {rule['alert']}", rule["expr"]) for rule in _rules()] +
            [("grafana-dashboard.json", expr) for expr in _dashboard_exprs()])


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    exported = _exported()
    unknown = {(where, name) for where, expr in _all_exprs() for name in _metric_names(expr)
               if name not in exported}
    assert not unknown, (f"metrics the agent does not export (a histogram is read as _bucket, _sum or "
                         f"_count, a counter as _total): {sorted(unknown)}")
    used = {name for _, expr in _all_exprs() for name in _metric_names(expr)}
    for name in ("hacluster_quorum", "hacluster_vip_held", "hacluster_leader_changes_total",
                 "hacluster_backend_up", "hacluster_failover_duration_seconds_bucket",
                 "hacluster_tls_cert_expiry_timestamp_seconds"):
        assert name in used, f"{name} is used by no rule or panel: did the parsing break?"


def test_rules_and_dashboard_match_only_exported_labels_and_values() -> None:
    exported = _exported()
    every_label = set().union(*exported.values())
    problems = []
    for where, expr in _all_exprs():
        for m in _SELECTOR.finditer(expr):
            name = m.group(1)
            for label, op, value in _MATCHER.findall(m.group(2)):
                if label not in exported.get(name, every_label):
                    problems.append(f"{where}: {name} has no label {label!r}")
                known = KNOWN_VALUES.get((name, label))
                if known is not None and op == "=" and value not in known:
                    problems.append(f"{where}: {name}{{{label}={value!r}}} never exists "
                                    f"(one of {sorted(known)})")
        for group in _GROUPING.findall(_STRING.sub('""', expr)):
            for label in filter(None, (s.strip() for s in group.split(","))):
                if label not in every_label:
                    problems.append(f"{where}: no exported series has the label {label!r}")
    assert not problems, "\n".join(problems)


def test_the_label_check_catches_mistakes() -> None:
    """The checks above are regexes over PromQL: make sure they see what they should."""
    assert _metric_names('max by (job) (hacluster_quorum{job="hacluster_x"}) == 0') == {"hacluster_quorum"}
    assert _metric_names("rate(hacluster_failover_duration_seconds_bucket[1h])") == \
        {"hacluster_failover_duration_seconds_bucket"}
    m = _SELECTOR.search('sum(hacluster_backend_up{role="backend", state=~"down|x"})')
    assert m is not None
    assert _MATCHER.findall(m.group(2)) == [("role", "=", "backend"), ("state", "=~", "down|x")]
    assert _GROUPING.findall("a * on (job, instance) group_left (vip) b") == ["job, instance", "vip"]
    assert "hacluster_failover_duration_seconds" not in _exported()  # the bare histogram name is no series


# ------------------------------------------------------------------ alert rules


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_severity_annotations_and_a_runbook_that_exists() -> None:
    rules = _rules()
    names = {rule["alert"] for rule in rules}
    assert REQUIRED_ALERTS <= names, f"missing alerts: {sorted(REQUIRED_ALERTS - names)}"
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        ann = rule["annotations"]
        assert ann["summary"].strip() and len(ann["description"]) > 80, rule["alert"]
        path, _, anchor = ann["runbook_url"].partition("#")
        doc = REPO / path
        assert doc.is_file(), f"{rule['alert']}: runbook {path} does not exist"
        headings = {_slug(h) for h in re.findall(r"^#+\s+(.+)$", doc.read_text(), re.MULTILINE)}
        assert anchor in headings, f"{rule['alert']}: {path} has no section #{anchor}"


def test_certificate_alert_has_a_warning_and_a_critical_level() -> None:
    levels = {rule["labels"]["severity"] for rule in _rules()
              if rule["alert"] == "HaclusterCertificateExpiring"}
    assert levels == {"warning", "critical"}


# ------------------------------------------------------------------ dashboard


def test_dashboard_loads_and_every_panel_uses_the_datasource_variable() -> None:
    dash = _dashboard()
    assert dash["schemaVersion"] >= 36 and dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["job"]["type"] == "query" and variables["job"]["datasource"] == DS
    panels = list(_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    with_queries = [p for p in panels if p["type"] != "row"]
    assert len(with_queries) >= 15
    for p in with_queries:
        assert p["datasource"] == DS, f"panel {p['title']!r}: datasource is not ${{DS_PROMETHEUS}}"
        assert p["targets"], f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t["datasource"] == DS, f"panel {p['title']!r}, query {t['refId']}: datasource"
            assert t["expr"].strip(), f"panel {p['title']!r}, query {t['refId']}: empty"
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24


def test_every_dashboard_query_is_limited_to_the_chosen_job() -> None:
    """One Prometheus may scrape several clusters (one job each): a selector without job="$job"
    would mix them."""
    for expr in _dashboard_exprs():
        if expr.startswith("label_values("):
            continue
        bare = _STRING.sub('""', expr)
        for m in re.finditer(r"\b(hacluster_[A-Za-z0-9_]+|up)\b(\s*\{)?", bare):
            assert m.group(2), f"{m.group(1)} without a selector in: {expr}"
        for m in _SELECTOR.finditer(expr):
            assert ("job", "=", "$job") in _MATCHER.findall(m.group(2)), f"{m.group(1)} not limited to $job"
        assert re.search(r'\bup\{[^}]*job="\$job"', expr) or not re.search(r"\bup\b", bare), expr


def test_dashboard_covers_what_operators_asked_for() -> None:
    used = {name for expr in _dashboard_exprs() for name in _metric_names(expr)}
    for name in ("hacluster_leader", "hacluster_vip_held", "hacluster_quorum", "hacluster_lease_valid",
                 "hacluster_members", "hacluster_check_up", "hacluster_check_committed_up",
                 "hacluster_backend_up", "hacluster_backend_packets_total", "hacluster_backend_bytes_total",
                 "hacluster_table_generation", "hacluster_failover_duration_seconds_bucket",
                 "hacluster_leader_changes_total"):
        assert name in used, f"no panel shows {name}"
    kinds = {p["type"] for p in _panels(_dashboard()["panels"])}
    assert {"heatmap", "table", "state-timeline", "timeseries", "stat"} <= kinds
