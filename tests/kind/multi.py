"""The three-pageserver release the multi-pageserver kind tests share (test_failover.py, then
test_drain.py; conftest.py runs them in this order, after test_e2e.py): the chart with
``replicas: 3`` in its own namespace (``pso-multi``, PodSecurity ``restricted``), one pageserver
manager on each worker node, watching only that namespace, with its own placement group (Leases
in that namespace), so the single-pageserver release of test_e2e.py (same cluster) never meets
it. The session fixture ``group`` (conftest.py) installs it once, with `install`; it is never
uninstalled (the cluster is deleted after the suite).

``failoverSeconds`` is FAILOVER (the chart's default is 30, kept short for CI) and
``drainConcurrency`` is DRAIN_CONCURRENCY (not the chart's default 4: test_drain.py shows the
value reaching the placement leader).
"""

from __future__ import annotations

import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from kind import kube
from kind.conftest import CONTROL_PLANE_LABEL, REMOTE_URL, REPORT, Cluster, _credentials_secret

NAMESPACE = "pso-multi"
RELEASE = "multi"
FULLNAME = "ps"  # pods, hence pageservers: ps-0, ps-1, ps-2
REPLICAS = 3
FAILOVER = 10
DRAIN_CONCURRENCY = 5
SELECTOR = f"app.kubernetes.io/instance={RELEASE}"
LEADER_LEASE = "pageserver-operator-placement"
LEASE_NAMESPACE_LABEL = "pageserver.dev/lease-namespace"

TENANT_DIRS_SCRIPT = textwrap.dedent(
    """
    import json, os
    root = "/data/tenants"
    print(json.dumps(sorted(n for n in os.listdir(root) if len(n) == 32) if os.path.isdir(root) else []))
    """
)
DELETIONS_SCRIPT = textwrap.dedent(
    """
    import json, sys, urllib.request
    text = urllib.request.urlopen("http://127.0.0.1:" + sys.argv[1] + "/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("pageserver_operator_deletions_total"):
            total += float(line.rsplit(" ", 1)[1])
    print(json.dumps(total))
    """
)
METRICS_PORT = "9090"


def placement(obj: dict[str, Any]) -> dict[str, Any]:
    return dict((obj.get("status") or {}).get("placement") or {})


def phase(obj: dict[str, Any]) -> str | None:
    phase: str | None = (obj.get("status") or {}).get("phase")
    return phase


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def paused(container: str) -> bool:
    return _docker("inspect", "--format", "{{.State.Paused}}", container).strip() == "true"


@dataclass
class Group:
    """The three-pageserver release, and the worker nodes paused by the test."""

    cluster: Cluster
    paused: set[str] = field(default_factory=set)

    @property
    def k(self) -> kube.Kube:
        return self.cluster.k

    def pods(self) -> dict[str, dict[str, Any]]:
        return {
            p["metadata"]["name"]: p
            for p in self.k.pods(NAMESPACE, SELECTOR)
            if not p["metadata"].get("deletionTimestamp")
        }

    def tenants(self) -> dict[str, dict[str, Any]]:
        items = self.k.get(kube.TENANTS, "-n", NAMESPACE)["items"]
        return {t["metadata"]["name"]: t for t in items}

    def pageservers(self) -> dict[str, dict[str, Any]]:
        items = self.k.get("pageservers", "-l", f"{LEASE_NAMESPACE_LABEL}={NAMESPACE}")["items"]
        return {p["metadata"]["name"]: p for p in items}

    def state(self, pageserver: str) -> str | None:
        state: str | None = (self.pageservers()[pageserver].get("status") or {}).get("state")
        return state

    def leader(self) -> str | None:
        out = self.k.kubectl(
            "get", "lease", LEADER_LEASE, "-n", NAMESPACE, "-o", "jsonpath={.spec.holderIdentity}", check=False
        )
        return out.stdout.strip() or None if out.returncode == 0 else None

    def tenant_dirs(self, pod: str) -> set[str]:
        dirs: list[str] = self.k.python(NAMESPACE, pod, TENANT_DIRS_SCRIPT, timeout=30)
        return set(dirs)

    def deletions(self, pod: str) -> float:
        total: float = self.k.python(NAMESPACE, pod, DELETIONS_SCRIPT, METRICS_PORT, timeout=30)
        return total

    def pause(self, node: str) -> None:
        self.paused.add(node)
        _docker("pause", node)

    def unpause(self, node: str) -> None:
        if paused(node):
            _docker("unpause", node)
        self.paused.discard(node)


def helm_values(cluster: Cluster) -> dict[str, Any]:
    repository, _, tag = cluster.operator_image.rpartition(":")
    return {
        "fullnameOverride": FULLNAME,
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "remote": {"url": REMOTE_URL, "credentialsSecret": "s3-credentials"},
        "replicas": REPLICAS,
        "failoverSeconds": FAILOVER,
        "drainConcurrency": DRAIN_CONCURRENCY,
        # The load score is the larger of the volume's used fraction and tenants / capacity. Here
        # the three volumes are directories of one host filesystem (kind's local-path), so the
        # used fraction is the same disk's, changing by the second, and with the default
        # capacity (1000) it alone decides: every tenant went to whichever pageserver reported
        # last (seen: 6 of 6 on one). With capacity 1 the tenant count decides.
        "capacity": 1,
        "watchNamespaces": [NAMESPACE],
        "statusInterval": 0.5,
        "logFormat": "text",
        # One manager on each worker, a hard rule: the chart's default (ScheduleAnyway) is best
        # effort, and this test needs a worker to pause that holds exactly one manager.
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}
        ],
    }


def install(cluster: Cluster) -> Group:
    """``helm install`` of the release; returns once its three pods are Ready."""
    k = cluster.k
    workers = [
        n["metadata"]["name"]
        for n in k.get("nodes")["items"]
        if CONTROL_PLANE_LABEL not in (n["metadata"].get("labels") or {})
    ]
    assert len(workers) >= REPLICAS, f"needs {REPLICAS} worker nodes (hack/kind/cluster.sh), found {workers}"
    if not k.exists("namespace", NAMESPACE):
        k.kubectl("create", "namespace", NAMESPACE)
    k.kubectl(
        "label", "--overwrite", "namespace", NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest",
    )
    k.apply(yaml.safe_dump(_credentials_secret(NAMESPACE)))
    values = kube.REPO / "build" / "kind-e2e-multi-values.yaml"
    values.parent.mkdir(parents=True, exist_ok=True)
    values.write_text(yaml.safe_dump(helm_values(cluster)))
    started = time.monotonic()
    k.helm(
        "install", RELEASE, str(kube.CHART), "--namespace", NAMESPACE, "--values", str(values),
        "--wait", "--timeout", "5m",
    )
    g = Group(cluster)
    kube.wait_for(
        f"{REPLICAS} pageserver pods Ready",
        lambda: len([p for p in g.pods().values() if kube.pod_ready(p)]) == REPLICAS,
        timeout=300,
    )
    REPORT["failover: helm install (3 replicas) to all Ready (s)"] = round(time.monotonic() - started, 1)
    return g
