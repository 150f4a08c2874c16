"""The chart's Grafana dashboard against a real Prometheus scraping a real operator.

Prometheus (Debian's, hack/prometheus.sh) runs on 127.0.0.1 with a temporary config and data
directory and scrapes one operator process every second, with the target labels a
ServiceMonitor gives (job, namespace, pod). The operator reaches the S3 server through the
fault proxy (tests/reliability/faultproxy.py), which makes the error panels honest: two layer
GETs answer 500 (retried: the retries panel), one PUT answers AccessDenied (a failed call and an
upload error, retried by the upload queue: the error panels). Then a tenant attaches and a flushed
layer is uploaded (the sync).

Every panel's every expression, from the dashboard JSON the chart ships (its ConfigMap, rendered
by helm), with the template variables substituted ($job: the scrape's job, $tenant_id: the
tenant, $__rate_interval: 1m, $__range: 5m), is evaluated through the HTTP API until it returns
data (polled: no fixed sleep); the test prints each panel's data and fails naming the panels
that never returned any.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from chart import support
from e2e import helpers
from e2e.conftest import OperatorFactory, Remote, new_tenant_id
from pageserver_operator import testdata
from pageserver_operator.devenv import processes
from pageserver_operator.formats import ids
from reliability import faultproxy

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus]

JOB = "pso-pageserver-operator-metrics"
PAGESERVER = "ps-dash-0"
SUBSTITUTIONS = {"$__rate_interval": "1m", "$__range": "5m", "$job": JOB}
DATA_TIMEOUT = 90.0
#: a layer object's key (its name starts with the 36 hex digits of its first key)
LAYER_PATH = r"/timelines/[0-9a-f]{32}/[0-9A-F]{36}-"


def dashboard(helm: support.Helm) -> dict[str, Any]:
    docs = helm.render(
        {"remote": {"url": "file:///data/remote"}, "metrics": {"grafanaDashboard": {"enabled": True}}},
        release="pso",
    )
    (cm,) = [d for d in support.of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = cm["data"].values()
    board: dict[str, Any] = json.loads(text)
    return board


def panels_of(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in board["panels"]:
        out.extend(p.get("panels", []))  # collapsed rows hold their panels
        if p.get("type") != "row":
            out.append(p)
    return out


class Prometheus:
    def __init__(self, binary: Path, tmp: Path, target_port: int, namespace: str) -> None:
        (self.port,) = processes.free_ports(1)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": JOB,
                "static_configs": [{
                    "targets": [f"127.0.0.1:{target_port}"],
                    "labels": {"namespace": namespace, "pod": PAGESERVER},
                }],
            }],
        }  # fmt: skip
        tmp.mkdir(parents=True, exist_ok=True)
        config_path = tmp / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.process = processes.ManagedProcess.start(
            "prometheus",
            [str(binary), f"--config.file={config_path}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            tmp / "prometheus.log",
        )  # fmt: skip
        processes.wait_until(
            self.process, lambda: processes.http_ok(f"http://127.0.0.1:{self.port}/-/ready"), 60, "ready"
        )

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        self.process.stop()


def substitute(expr: str, tenant_id: str) -> str:
    out = expr.replace("$tenant_id", tenant_id)
    for name, value in SUBSTITUTIONS.items():
        out = out.replace(name, value)
    assert "$" not in out, f"an unsubstituted variable in {out}"
    return out


def test_every_panel_returns_data_while_a_tenant_attaches_and_syncs(
    helm: support.Helm,
    prometheus_bin: Path,
    k: helpers.Kubectl,
    remote: Remote,
    operator: OperatorFactory,
    tmp_path: Path,
) -> None:
    board = dashboard(helm)
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"tenant_id", "job"} <= variables
    panels = panels_of(board)
    parts = urlsplit(remote.server.endpoint)
    assert parts.hostname is not None and parts.port is not None
    # Each layer GET is delayed 0.5-1 s (the attach lasts a few scrapes: the rates are not 0).
    proxy = faultproxy.FaultProxy((parts.hostname, parts.port), seed=21, latency=(0.5, 1.0)).start()
    prom: Prometheus | None = None
    try:
        tid = new_tenant_id()
        generated = remote.seed(testdata.TenantShape(timelines=2, layers=6, layer_size=256 << 10, seed=21), tid)
        # One layer's GET answers 500 once (one attempt is one request, s3/transfer.py); the
        # backend's retry loop then counts a retry and succeeds.
        layer = sorted(k for k in generated.objects if re.search(LAYER_PATH, "/" + k))[0]
        proxy.add_rule(faultproxy.Rule("error", method="GET", path=re.escape(layer) + "$", times=1))
        proxy.add_rule(faultproxy.Rule("latency", method="GET", path=LAYER_PATH, times=1 << 30))
        op = operator.start(
            sync_period=0.5,
            remote_url=remote.url.replace(remote.server.endpoint, proxy.endpoint),
            extra_args=["--pageserver", PAGESERVER, "--concurrency", "4"],
        )
        prom = Prometheus(prometheus_bin / "prometheus", tmp_path / "prometheus", op.metrics_port, k.namespace or "")
        # Prometheus' discovery hands the target to the scraper after up to 5 s: the tenant comes
        # once the operator has been scraped, so that every counter is seen before it moves.
        helpers.wait_for(lambda: prom.query(f'up{{job="{JOB}"}} == 1') if prom else None, 60,
                         "Prometheus to scrape the operator")  # fmt: skip
        k.apply(helpers.tenant_manifest("dash", tid))
        helpers.wait_phase(k, "dash", "Active", timeout=90)
        # The next layer PUT is refused once (AccessDenied, a permanent error: one failed call and
        # one upload error); the upload queue tries again and the flushed layer reaches the bucket.
        proxy.add_rule(faultproxy.Rule("denied", method="PUT", path=LAYER_PATH, times=1))
        tenant_id = ids.TenantId.parse(tid)
        timeline_id = generated.timelines[0]
        name = testdata.flush_local_layer(op.workdir, tenant_id, timeline_id, 300 << 10, seed=22)
        helpers.wait_for(
            lambda: str(name) in {str(n) for n in remote.newest_index(tenant_id, timeline_id).layers}, 180,
            "the flushed layer in the remote index (after the refused PUT)",
        )

        pending = {(p["title"], t["refId"]): substitute(t["expr"], tid) for p in panels for t in p["targets"]}
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}

        def all_have_data() -> bool:
            for key, expr in list(pending.items()):
                result = prom.query(expr) if prom else []
                if result:
                    results[key] = result
                    del pending[key]
            return not pending

        try:
            helpers.wait_for(all_have_data, DATA_TIMEOUT, "data for every panel", interval=1.0,
                             describe=lambda: "no data: " + "; ".join(f"{t} [{r}]: {e}" for (t, r), e in pending.items()))  # fmt: skip
        finally:
            print(f"\n{len(panels)} panels, {len(results)} queries with data; {proxy.stats.summary()}")
            for (title, ref), result in results.items():
                shown = ", ".join(
                    f"{ {k: v for k, v in r['metric'].items() if k != '__name__'} or '{}'}={float(r['value'][1]):.4g}"
                    for r in result[:4]
                )
                print(f"  {title} [{ref}]: {shown}{' ...' if len(result) > 4 else ''}")
        # each rule fires once, and one attempt is one request (no second request through botocore)
        assert proxy.stats.faults["error"] == 1 and proxy.stats.faults["denied"] == 1, proxy.stats.summary()
    finally:
        if prom is not None:
            prom.stop()
        proxy.stop()


def test_no_dashboard_without_the_value(helm: support.Helm) -> None:
    base = {"remote": {"url": "file:///data/remote"}}
    assert not [d for d in support.of_kind(helm.render(base), "ConfigMap") if "dashboard" in d["metadata"]["name"]]
    elsewhere = {**base, "metrics": {"grafanaDashboard": {"enabled": True, "namespace": "monitoring"}}}
    (cm,) = [d for d in support.of_kind(helm.render(elsewhere), "ConfigMap") if "dashboard" in d["metadata"]["name"]]
    assert cm["metadata"]["namespace"] == "monitoring"


def test_per_tenant_value_reaches_the_operator(helm: support.Helm) -> None:
    base: dict[str, Any] = {"remote": {"url": "file:///data/remote"}}
    for values, want in ((base, "true"), ({**base, "metrics": {"perTenant": False}}, "false")):
        env = {e["name"]: e.get("value") for e in support.container(support.one(helm.render(values), "StatefulSet"))["env"]}
        assert env["PAGESERVER_OPERATOR_PER_TENANT_METRICS"] == want
