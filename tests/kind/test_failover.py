"""Many pageservers on a real multi-node cluster (DESIGN §8.3, issue 17 "Show"): the chart with
``replicas: 3`` on three kind worker nodes, one pageserver manager on each; a worker node's
container frozen with ``docker pause`` (its kubelet, its pods, the manager: a node partitioned
away) -> its tenants fail over to the other pageservers under generation+1; ``docker unpause``
-> the frozen manager finds them placed elsewhere and removes its stale copies, deleting
nothing remote; every tenant's files on its pageserver are byte-identical to the remote index
(what a clean attach gives).

The release lives in its own namespace (``pso-multi``, PodSecurity ``restricted``), watches
only that namespace and has its own placement group (Leases in that namespace), so the
single-pageserver release of test_e2e.py (same cluster, earlier in the session) never meets it.
``failoverSeconds`` is FAILOVER (the chart's default is 30) to keep CI short; the figures are
also printed as multiples of it.

The pause stays well under the 5 minutes after which Kubernetes evicts the pods of an
unreachable node (default tolerations): the waits while paused are bounded by PAUSE_LIMIT, and
the node is always unpaused (``finally``, the module fixture's teardown, and
``hack/kind/cluster.sh delete``). The S3 server, the toolbox and CoreDNS run on the control
plane (conftest.py), never on the paused worker.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from kind import kube
from kind.conftest import (
    CONTROL_PLANE_LABEL,
    REMOTE_URL,
    REPORT,
    S3_NAMESPACE,
    Cluster,
    _credentials_secret,
    compare_trees,
    local_tree,
)

pytestmark = pytest.mark.kind

NAMESPACE = "pso-multi"
RELEASE = "multi"
FULLNAME = "ps"  # pods, hence pageservers: ps-0, ps-1, ps-2
REPLICAS = 3
FAILOVER = 10
TENANTS = 6
TENANT_SHAPE = ["--timelines", "2", "--layers", "3", "--layer-size", "256KiB"]
SELECTOR = f"app.kubernetes.io/instance={RELEASE}"
LEADER_LEASE = "pageserver-operator-placement"
LEASE_NAMESPACE_LABEL = "pageserver.dev/lease-namespace"
# Longest wait while a node is paused: far below the 300 s of the default
# node.kubernetes.io/unreachable toleration, after which the node's pods would be evicted.
PAUSE_LIMIT = 150.0
SEED = int(os.environ.get("KIND_E2E_SEED") or random.SystemRandom().randrange(1 << 31))

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


def _placement(obj: dict[str, Any]) -> dict[str, Any]:
    return dict((obj.get("status") or {}).get("placement") or {})


def _phase(obj: dict[str, Any]) -> str | None:
    phase: str | None = (obj.get("status") or {}).get("phase")
    return phase


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def _paused(container: str) -> bool:
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
        if _paused(node):
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


@pytest.fixture(scope="module")
def group(cluster: Cluster) -> Iterator[Group]:
    k = cluster.k
    kube.log(f"failover suite: seed {SEED} (KIND_E2E_SEED={SEED} repeats it)")
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
    try:
        yield g
    finally:
        for node in sorted(g.paused):
            g.unpause(node)


def test_three_managers_on_three_workers_share_the_tenants(group: Group) -> None:
    k, cluster = group.k, group.cluster
    pods = group.pods()
    nodes = {name: p["spec"]["nodeName"] for name, p in pods.items()}
    kube.log(f"pageservers on nodes: {nodes}")
    assert len(set(nodes.values())) == REPLICAS, f"the managers are not one per node: {nodes}"
    kube.wait_for(
        "the three Pageservers Active",
        lambda: {n: (p.get("status") or {}).get("state") for n, p in group.pageservers().items()}
        == dict.fromkeys(pods, "Active"),
        timeout=120,
    )

    rng = random.Random(SEED)
    tids = [f"{rng.getrandbits(128):032x}" for _ in range(TENANTS)]
    cluster.make_tenants([(tid, [*TENANT_SHAPE, "--seed", str(SEED + i)]) for i, tid in enumerate(tids)])
    started = time.monotonic()
    docs = [
        {
            "apiVersion": "pageserver.dev/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": f"t{i}", "namespace": NAMESPACE},
            "spec": {"tenantId": tid},
        }
        for i, tid in enumerate(tids)
    ]
    k.apply(yaml.safe_dump_all(docs))

    def all_active() -> dict[str, dict[str, Any]] | None:
        ts = group.tenants()
        ok = len(ts) == TENANTS and all(_phase(t) == "Active" and _placement(t).get("attached") for t in ts.values())
        return ts if ok else None

    ts = kube.wait_for(f"{TENANTS} tenants Active", all_active, timeout=300)
    REPORT["failover: apply -> 6 tenants Active on 3 pageservers (s)"] = round(time.monotonic() - started, 1)
    where = {name: _placement(t)["attached"] for name, t in ts.items()}
    counts = {p: list(where.values()).count(p) for p in pods}
    kube.log(f"placement: {counts}")
    assert max(counts.values()) - min(counts.values()) <= 1, f"tenants not spread: {where}"
    # each tenant on the volume of its pageserver, only there, as a clean attach gives it
    held = {p: group.tenant_dirs(p) for p in pods}
    compared = 0
    for name, t in ts.items():
        tid = t["spec"]["tenantId"]
        assert {p for p, dirs in held.items() if tid in dirs} == {where[name]}, (name, tid, held)
        compared += compare_trees(local_tree(k, where[name], tid, namespace=NAMESPACE), cluster.remote_tree(tid))
    REPORT["failover: placement before the pause"] = counts
    REPORT["failover: bytes compared before the pause"] = compared


def test_a_paused_worker_fails_over_and_removes_its_stale_copies_when_unpaused(group: Group) -> None:
    k, cluster = group.k, group.cluster
    pods = group.pods()
    ts = group.tenants()
    before = {name: _placement(t) for name, t in ts.items()}
    tids = {name: t["spec"]["tenantId"] for name, t in ts.items()}
    leader = kube.wait_for("a placement leader", group.leader, timeout=60)

    # The victim: a manager holding tenants that does not lead placement (the leader's own loss
    # adds a leader election: the e2e suite measures that), on a worker that runs nothing else
    # the suite needs (S3, toolbox and CoreDNS are on the control plane).
    needed = {
        p["spec"].get("nodeName")
        for p in k.get("pods", "-n", S3_NAMESPACE)["items"] + k.pods("kube-system", "k8s-app=kube-dns")
    }
    candidates = [
        p for p in sorted(pods)
        if p != leader and any(pl["attached"] == p for pl in before.values())
        and pods[p]["spec"]["nodeName"] not in needed
    ]
    assert candidates, f"no worker to pause: leader {leader}, placement {before}, needed nodes {needed}"
    victim = candidates[0]
    node = pods[victim]["spec"]["nodeName"]
    labels = k.get("node", node)["metadata"].get("labels") or {}
    assert CONTROL_PLANE_LABEL not in labels, f"{node} is the control plane"
    moved = sorted(name for name, pl in before.items() if pl["attached"] == victim)
    stayed = sorted(set(before) - set(moved))
    moved_tids = {tids[name] for name in moved}
    kube.log(f"pausing node {node} (pageserver {victim}, tenants {moved}); placement leader {leader}")
    deletions_before = group.deletions(victim)
    objects_before = cluster.remote_objects(sorted(tids.values()))

    # -- docker pause: the node, its kubelet and the manager freeze -------------------------------
    offline_at: float | None = None
    paused_at = time.monotonic()
    group.pause(node)
    try:
        assert _paused(node)

        def failed_over() -> dict[str, dict[str, Any]] | None:
            nonlocal offline_at
            if offline_at is None and group.state(victim) == "Offline":
                offline_at = time.monotonic()
            now = group.tenants()
            done = all(
                _phase(now[name]) == "Active"
                and _placement(now[name]).get("attached") not in (None, victim)
                and (_placement(now[name]).get("generation") or 0) > (before[name].get("generation") or 0)
                for name in moved
            )
            return now if done else None

        after = kube.wait_for(
            f"{moved} Active on other pageservers while {node} is paused", failed_over, timeout=PAUSE_LIMIT
        )
        active_at = time.monotonic()
        if offline_at is None:  # marked before the last poll saw it
            assert group.state(victim) == "Offline", group.pageservers()[victim]
            offline_at = active_at
        still_paused = _paused(node)
    finally:
        group.unpause(node)
    unpaused_at = time.monotonic()
    assert still_paused, f"{node} was unpaused before its tenants failed over"
    failover_s = active_at - paused_at
    kube.log(
        f"paused {node}: {victim} Offline after {offline_at - paused_at:.1f} s, {len(moved)} tenants Active "
        f"elsewhere after {failover_s:.1f} s ({failover_s / FAILOVER:.1f} x failoverSeconds {FAILOVER}); "
        f"paused {unpaused_at - paused_at:.1f} s in all"
    )
    for name in moved:
        pl = _placement(after[name])
        assert pl["generation"] == before[name]["generation"] + 1, (name, before[name], pl)
    for name in stayed:
        pl = _placement(after[name])
        assert (pl.get("attached"), pl.get("generation")) == (before[name]["attached"], before[name]["generation"]), (
            f"{name} was not on {victim} and moved: {pl}"
        )

    # -- docker unpause: the stale manager removes its copies, deletes nothing remote ----------
    def stale_removed() -> bool:
        return not (moved_tids & group.tenant_dirs(victim))

    kube.wait_for(f"{victim} to remove its stale copies", stale_removed, timeout=180, interval=0.5)
    removed_at = time.monotonic()
    kube.wait_for(f"Pageserver {victim} Active again", lambda: group.state(victim) == "Active", timeout=120)
    active_again_at = time.monotonic()

    def stale_events() -> dict[str, list[str]] | None:
        events = k.get("events", "-n", NAMESPACE)["items"]
        found = {
            name: [e["reason"] for e in events if (e.get("involvedObject") or {}).get("name") == name
                   and e["reason"] in ("StaleCopyRemoved", "CopyDetached")]
            for name in moved
        }
        return found if all(found.values()) else None

    # One Event for each removed copy. Which one: StaleCopyRemoved (a Warning: removed as a stale
    # copy, nothing uploaded) or CopyDetached (the final sync of a graceful detach ran first,
    # under the old generation, then the copy was removed): recorded in the report.
    events = kube.wait_for("an Event for each removed copy", stale_events, timeout=60)
    assert all(len(reasons) == 1 for reasons in events.values()), events
    assert group.deletions(victim) == deletions_before, f"the stale manager {victim} deleted remote objects"
    objects_after = cluster.remote_objects(sorted(tids.values()))
    # The new owners may delete older generations' indexes; a layer is never deleted here.
    lost = {key for key in set(objects_before) - set(objects_after) if "index_part.json" not in key}
    assert not lost, f"remote layers deleted: {sorted(lost)[:5]}"
    # Objects written (new or rewritten) under a moved tenant's old generation since the pause:
    # only the stale manager could have written them.
    old_suffixes = {tids[name]: f"-{before[name]['generation']:08x}" for name in moved}
    stale_writes = sorted(
        key for key, etag in objects_after.items()
        if objects_before.get(key) != etag and key.split("/")[1] in old_suffixes
        and key.endswith(old_suffixes[key.split("/")[1]])
    )

    # -- every tenant, on its pageserver and only there, byte-identical to the remote index ------
    final = group.tenants()
    held = {p: group.tenant_dirs(p) for p in pods}
    compared = 0
    for name, t in final.items():
        owner = _placement(t)["attached"]
        assert {p for p, dirs in held.items() if tids[name] in dirs} == {owner}, (name, held)
        compared += compare_trees(local_tree(k, owner, tids[name], namespace=NAMESPACE), cluster.remote_tree(tids[name]))
    REPORT["failover: paused worker"] = (
        f"{node} (pageserver {victim}, {len(moved)} of {TENANTS} tenants; leader {leader}; seed {SEED})"
    )
    REPORT["failover: pause -> Pageserver Offline (s)"] = round(offline_at - paused_at, 1)
    REPORT["failover: pause -> moved tenants Active elsewhere, generation+1 (s)"] = round(failover_s, 1)
    REPORT["failover: failoverSeconds"] = FAILOVER
    REPORT["failover: node paused for (s)"] = round(unpaused_at - paused_at, 1)
    REPORT["failover: unpause -> stale copies removed (s)"] = round(removed_at - unpaused_at, 1)
    REPORT["failover: unpause -> Pageserver Active again (s)"] = round(active_again_at - unpaused_at, 1)
    REPORT["failover: events"] = json.dumps(events)
    REPORT["failover: objects written under a fenced generation after the pause"] = stale_writes
    REPORT["failover: bytes compared after"] = compared
