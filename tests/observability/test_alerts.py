"""The chart's alerts, each proven by ``promtool test rules``: a case where it fires (with its
labels and rendered annotations) and one where it must not.

The rules under test are the chart's own: ``helm template`` renders the PrometheusRule from
charts/pageserver-operator/files/prometheus-rules.yaml with the default thresholds, and its
``spec.groups`` become promtool's rule file. The series are what the operator exports
(README, Metrics), with the target labels a scrape adds (job, instance).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart import support

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus]

RELEASE = "pso"
JOB = "pso-pageserver-operator-metrics"  # the metrics Service's name: the ServiceMonitor's job
T = {"job": JOB, "instance": "10.0.0.1:9090"}  # the target labels of one manager's scrape
T2 = {"job": JOB, "instance": "10.0.0.2:9090"}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{inner}}}", "values": values}


@dataclass
class Case:
    """One promtool test: input series, and at ``eval_time`` the alerts expected (none: [])."""

    name: str
    series: list[dict[str, str]]
    eval_time: str
    expected: list[dict[str, str]] = field(default_factory=list)  # labels (without alertname)
    summaries: list[str] = field(default_factory=list)


def latency_buckets(op: str, slow: bool) -> list[dict[str, str]]:
    """A histogram of ``op`` calls: 10 a minute, all between 30 and 60 s (slow) or under 1 s."""
    out = []
    for le in ("1.0", "30.0", "60.0", "+Inf"):
        counted = le in ("60.0", "+Inf") or not slow  # buckets holding the calls (cumulative)
        count = "0+10x40" if counted else "0x40"
        out.append(series("pageserver_operator_remote_operation_seconds_bucket",
                          {**T, "op": op, "outcome": "success", "le": le}, count))  # fmt: skip
    return out


CASES: dict[str, tuple[Case, Case]] = {
    "PageserverOperatorTenantBroken": (
        Case("broken for 20 minutes", [series("pageserver_operator_tenants", {**T, "phase": "Broken"}, "1x30")],
             "20m", [{**T, "phase": "Broken", "severity": "warning"}],
             ["1 tenant(s) Broken on 10.0.0.1:9090 for more than 15m"]),
        Case("broken for 10 minutes, then retried successfully",
             [series("pageserver_operator_tenants", {**T, "phase": "Broken"}, "1x10 0x20")], "20m"),
    ),
    "PageserverOperatorAttachStalled": (
        Case("attaching, no byte downloaded since minute 5 (counter flat)",
             [series("pageserver_operator_tenants", {**T, "phase": "Attaching"}, "1x40"),
              series("pageserver_operator_layer_download_bytes_total", {**T, "tenant_id": "a" * 32},
                     "0+1000x5 5000x35")],
             "17m", [{**T, "phase": "Attaching", "severity": "warning"}],
             ["Attach on 10.0.0.1:9090 made no progress for 10m"]),
        Case("attaching and downloading (a slow but moving attach)",
             [series("pageserver_operator_tenants", {**T, "phase": "Attaching"}, "1x40"),
              series("pageserver_operator_layer_download_bytes_total", {**T, "tenant_id": "a" * 32}, "0+100x40")],
             "30m"),
    ),
    "PageserverOperatorUploadLag": (
        Case("2 GB not uploaded for 20 minutes",
             [series("pageserver_operator_upload_lag_bytes", {**T, "tenant_id": "b" * 32}, "2000000000x30")],
             "20m", [{**T, "tenant_id": "b" * 32, "severity": "warning"}],
             [f"Upload lag of {'b' * 32} on 10.0.0.1:9090 is 1.863GiB"]),
        Case("2 GB not uploaded for 10 minutes, then caught up; another tenant lags 1 MB",
             [series("pageserver_operator_upload_lag_bytes", {**T, "tenant_id": "b" * 32}, "2000000000x10 0x20"),
              series("pageserver_operator_upload_lag_bytes", {**T, "tenant_id": "c" * 32}, "1000000x30")],
             "20m"),
    ),
    "PageserverOperatorRemoteErrors": (
        Case("10% of calls failing for 20 minutes",
             [series("pageserver_operator_remote_operation_seconds_count", {**T, "op": "get", "outcome": "failure"}, "0+10x30"),
              series("pageserver_operator_remote_operation_seconds_count", {**T, "op": "get", "outcome": "success"}, "0+80x30"),
              series("pageserver_operator_remote_operation_seconds_count", {**T, "op": "list", "outcome": "not_found"}, "0+10x30")],
             "20m", [{**T, "severity": "warning"}],
             ["10% of remote storage calls fail on 10.0.0.1:9090"]),
        Case("1% of calls failing",
             [series("pageserver_operator_remote_operation_seconds_count", {**T, "op": "get", "outcome": "failure"}, "0+1x30"),
              series("pageserver_operator_remote_operation_seconds_count", {**T, "op": "get", "outcome": "success"}, "0+99x30")],
             "20m"),
    ),
    "PageserverOperatorRemoteLatencyHigh": (
        Case("every download takes 30-60 s for 20 minutes", latency_buckets("download", slow=True), "25m",
             [{**T, "op": "download", "severity": "warning"}],
             ["p99 of remote download calls on 10.0.0.1:9090 is 59.7s"]),
        Case("every download under a second", latency_buckets("download", slow=False), "25m"),
    ),
    "PageserverOffline": (
        Case("the placement leader sees one pageserver Offline",
             [series("pageserver_operator_placement_leader", T, "1x10"),
              series("pageserver_operator_pageservers", {**T, "state": "Offline"}, "0x2 1x8"),
              series("pageserver_operator_pageservers", {**T, "state": "Active"}, "2x2 1x8")],
             "5m", [{**T, "state": "Offline", "severity": "critical"}], ["1 pageserver(s) Offline"]),
        Case("only an ex-leader still exports its stale Offline count; the leader sees none",
             [series("pageserver_operator_placement_leader", T, "1x10"),
              series("pageserver_operator_pageservers", {**T, "state": "Offline"}, "0x10"),
              series("pageserver_operator_placement_leader", T2, "0x10"),
              series("pageserver_operator_pageservers", {**T2, "state": "Offline"}, "1x10")],
             "5m"),
    ),
    "PageserverOperatorDown": (
        Case("one of two managers not answering scrapes for 10 minutes",
             [series("up", T, "1x10"), series("up", T2, "0x10")], "10m",
             [{**T2, "severity": "critical"}], ["Pageserver manager 10.0.0.2:9090 cannot be scraped"]),
        Case("both answering, another job down",
             [series("up", T, "1x10"), series("up", {"job": "other", "instance": "x"}, "0x10")], "10m"),
    ),
    "PageserverOperatorAbsent": (
        Case("no target of the job for 10 minutes (scaled to 0)", [series("up", {"job": "other", "instance": "x"}, "1x10")],
             "10m", [{"severity": "critical"}], [f"No pageserver manager of job {JOB} is up"]),
        Case("one manager up", [series("up", T, "1x10")], "10m"),
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def rules(helm: support.Helm, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The chart's PrometheusRule groups as a promtool rule file, and the rules by alert name."""
    docs = helm.render(
        {"remote": {"url": "file:///data/remote"}, "metrics": {"prometheusRule": {"enabled": True}}},
        release=RELEASE,
    )
    rule = support.one(docs, "PrometheusRule")
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    by_name = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    return path, by_name


def test_every_alert_has_cases(rules: tuple[Path, dict[str, Any]], prometheus_bin: Path) -> None:
    path, by_name = rules
    assert sorted(by_name) == sorted(CASES), "each rule of the chart has a firing and a quiet case"
    out = subprocess.run([str(prometheus_bin / "promtool"), "check", "rules", str(path)],
                         capture_output=True, text=True, check=False)  # fmt: skip
    print(out.stdout)
    assert out.returncode == 0, out.stderr + out.stdout


def _description(rule: dict[str, Any], labels: dict[str, str]) -> str:
    """The rule's description as Prometheus renders it (the only template used there is
    ``{{ $labels.X }}``)."""
    text: str = rule["annotations"]["description"]
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)


@pytest.mark.parametrize("alert", sorted(CASES))
def test_alert(alert: str, rules: tuple[Path, dict[str, Any]], prometheus_bin: Path, tmp_path: Path) -> None:
    path, by_name = rules
    rule = by_name[alert]
    tests = []
    for case in CASES[alert]:
        exp = [
            {"exp_labels": labels, "exp_annotations": {"summary": summary, "description": _description(rule, labels)}}
            for labels, summary in zip(case.expected, case.summaries, strict=True)
        ]
        tests.append({
            "interval": "1m",
            "input_series": case.series,
            "alert_rule_test": [{"eval_time": case.eval_time, "alertname": alert, "exp_alerts": exp}],
        })  # fmt: skip
    test_file = tmp_path / "test.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(path)], "evaluation_interval": "1m", "tests": tests}))
    out = subprocess.run([str(prometheus_bin / "promtool"), "test", "rules", str(test_file)],
                         capture_output=True, text=True, check=False)  # fmt: skip
    for case in CASES[alert]:
        verdict = f"fires: {case.summaries[0]!r}" if case.expected else "does not fire"
        print(f"{alert}: {case.name} at {case.eval_time} -> {verdict}")
    assert out.returncode == 0, f"promtool test rules:\n{out.stdout}{out.stderr}"
    print(out.stdout.strip())


def test_no_rule_without_the_value(helm: support.Helm) -> None:
    """Off by default (it needs the prometheus-operator CRDs), and off with the metrics."""
    base = {"remote": {"url": "file:///data/remote"}}
    assert not support.of_kind(helm.render(base), "PrometheusRule")
    off = {**base, "metrics": {"enabled": False, "prometheusRule": {"enabled": True}}}
    assert not support.of_kind(helm.render(off), "PrometheusRule")
