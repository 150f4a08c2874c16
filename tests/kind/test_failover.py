"""Many pageservers on a real multi-node cluster (DESIGN §8.3, issue 17 "Show"): the chart with
``replicas: 3`` on three kind worker nodes, one pageserver manager on each; a worker node's
container frozen with ``docker pause`` (its kubelet, its pods, the manager: a node partitioned
away) -> its tenants fail over to the other pageservers under generation+1; ``docker unpause``
-> the frozen manager finds them placed elsewhere and removes its stale copies, deleting
nothing remote; every tenant's files on its pageserver are byte-identical to the remote index
(what a clean attach gives).

The release (multi.py, shared with test_drain.py, which runs after this module) lives in its
own namespace with its own placement group. ``failoverSeconds`` is FAILOVER (the chart's
default is 30) to keep CI short; the figures are also printed as multiples of it.

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
import time
from typing import Any

import pytest
import yaml

from kind import kube
from kind.conftest import CONTROL_PLANE_LABEL, REPORT, S3_NAMESPACE, compare_trees, local_tree
from kind.multi import FAILOVER, NAMESPACE, REPLICAS, Group, paused, phase, placement

pytestmark = pytest.mark.kind

TENANTS = 6
TENANT_SHAPE = ["--timelines", "2", "--layers", "3", "--layer-size", "256KiB"]
# Longest wait while a node is paused: far below the 300 s of the default
# node.kubernetes.io/unreachable toleration, after which the node's pods would be evicted.
PAUSE_LIMIT = 150.0
SEED = int(os.environ.get("KIND_E2E_SEED") or random.SystemRandom().randrange(1 << 31))


def test_three_managers_on_three_workers_share_the_tenants(group: Group) -> None:
    k, cluster = group.k, group.cluster
    kube.log(f"failover suite: seed {SEED} (KIND_E2E_SEED={SEED} repeats it)")
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
        ok = len(ts) == TENANTS and all(phase(t) == "Active" and placement(t).get("attached") for t in ts.values())
        return ts if ok else None

    ts = kube.wait_for(f"{TENANTS} tenants Active", all_active, timeout=300)
    REPORT["failover: apply -> 6 tenants Active on 3 pageservers (s)"] = round(time.monotonic() - started, 1)
    where = {name: placement(t)["attached"] for name, t in ts.items()}
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
    before = {name: placement(t) for name, t in ts.items()}
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
        assert paused(node)

        def failed_over() -> dict[str, dict[str, Any]] | None:
            nonlocal offline_at
            if offline_at is None and group.state(victim) == "Offline":
                offline_at = time.monotonic()
            now = group.tenants()
            done = all(
                phase(now[name]) == "Active"
                and placement(now[name]).get("attached") not in (None, victim)
                and (placement(now[name]).get("generation") or 0) > (before[name].get("generation") or 0)
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
        still_paused = paused(node)
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
        pl = placement(after[name])
        assert pl["generation"] == before[name]["generation"] + 1, (name, before[name], pl)
    for name in stayed:
        pl = placement(after[name])
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
        owner = placement(t)["attached"]
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
