"""deploy/prometheus and deploy/grafana: promtool accepts the rules and the Prometheus
config, the rules' unit tests pass (every alert has one), and the rules and the
dashboard name only metrics gateway.metrics exposes, every one of which has a panel."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import metrics

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "lgw-dashboard.json"
METRIC_NAME = re.compile(r"\blgw_[a-z0-9_]+")  # the gateway's prefix; label values never start with it
# how prometheus-client exposes each metric type (the family name plus these suffixes)
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
            "summary": ("", "_sum", "_count")}


@pytest.fixture(scope="module")
def promtool() -> str:
    # Debian's `prometheus` package (scripts/system-packages.sh): a missing one is a
    # broken environment, never a reason to skip
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        pytest.fail("promtool not found: install the Debian package prometheus (scripts/system-packages.sh)")
    return found


def run_promtool(promtool: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *argv], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


def exposed() -> dict[str, str]:
    """Every series name gateway.metrics exposes, mapped to its metric's family name."""
    names: dict[str, str] = {}
    for family in metrics.families():
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = family.name
    return names


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    return [(panel["title"], target["expr"]) for panel in dashboard()["panels"]
            for target in panel.get("targets", [])]


def test_promtool_accepts_the_alert_rules(promtool: str) -> None:
    done = run_promtool(promtool, "check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_the_alert_rules_unit_tests_pass(promtool: str) -> None:
    done = run_promtool(promtool, "test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test_that_sees_it_fire() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text(encoding="utf-8"))["tests"]
    firing = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for test in tests for case in test["alert_rule_test"] if not case["exp_alerts"]}
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts == firing, "every alert needs a test that sees it fire"
    assert alerts - {"LgwBatchRunFailed"} <= quiet  # and, where it waits (`for:`), one before it does
    assert {"LgwBreakerOpen", "LgwFallbackShareHigh", "LgwRejectRateJump", "LgwConsumerLagGrowing",
            "LgwNoFileArrived", "LgwBatchRunFailed"} <= alerts


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_promtool_accepts_the_prometheus_config_and_it_scrapes_gateway_and_pushgateway(
        promtool: str, tmp_path: Path) -> None:
    # promtool checks that the scrape's token file exists: it is a secret compose mounts at
    # run time, so the check runs on a copy pointing at a stand-in
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    auth = jobs["lgw"]["authorization"]
    assert auth["type"] == "Bearer" and auth["credentials_file"] == "/run/secrets/lgw-metrics-token"
    (tmp_path / "lgw-metrics-token").write_text("lgw_stand-in\n")
    auth["credentials_file"] = str(tmp_path / "lgw-metrics-token")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    done = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert config["rule_files"] == ["alerts.yml"]
    assert jobs["lgw"]["static_configs"][0]["targets"] == ["gateway:9464"]
    assert jobs["lgw"].get("metrics_path", "/metrics") == "/metrics"
    # a pushed series keeps the job and pipeline it was pushed with
    assert jobs["pushgateway"]["honor_labels"] is True
    assert jobs["pushgateway"]["static_configs"][0]["targets"] == ["pushgateway:9091"]


def test_the_rules_name_only_metrics_the_gateway_exposes() -> None:
    names = exposed()
    for rule in alert_rules():
        used = set(METRIC_NAME.findall(rule["expr"]))
        assert used, f"{rule['alert']} reads no gateway metric"
        assert used <= set(names), f"{rule['alert']} reads {sorted(used - set(names))}, not in gateway.metrics"


def test_the_dashboard_names_only_metrics_the_gateway_exposes() -> None:
    names = exposed()
    for title, expr in dashboard_queries():
        used = set(METRIC_NAME.findall(expr))
        assert used <= set(names), f"panel {title!r} reads {sorted(used - set(names))}, not in gateway.metrics"


def test_every_gateway_metric_has_a_dashboard_panel() -> None:
    names = exposed()
    shown = {names[name] for _, expr in dashboard_queries() for name in METRIC_NAME.findall(expr) if name in names}
    assert {family.name for family in metrics.families()} - shown == set()


def test_the_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses each query as a recording rule, with Grafana's variables given
    values as Grafana would substitute them."""
    rules = [{"record": f"lgw:dashboard:{i}",
              "expr": expr.replace("$__rate_interval", "5m").replace("$pipeline", ".+")}
             for i, (_, expr) in enumerate(dashboard_queries())]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_is_a_grafana_dashboard_with_a_prometheus_datasource_variable() -> None:
    dash = dashboard()
    assert 36 <= dash["schemaVersion"] <= 41 and dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["pipeline"]["multi"] and variables["pipeline"]["includeAll"]
    ids = [panel["id"] for panel in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'pipeline=~"$pipeline"' in target["expr"], f"{panel['title']}: not filtered by $pipeline"
