"""The chart for many pageservers (DESIGN §8.3, issue 17): replicas, the manager's name and Lease
namespace from the pod, spread over nodes, the PodDisruptionBudget, the NetworkPolicy, and the
least-privilege RBAC for Leases, Pageservers and the manager's own pod, proven against the real
API server with the chart's ServiceAccount token.

The control plane has no kubelet, scheduler or controller-manager: pods never run, so the
NetworkPolicy and the budget are checked as the API server accepts them and as rendered (which
traffic they let through), not enforced.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart import support
from e2e import helpers
from pageserver_operator import settings
from pageserver_operator.devenv import controlplane

pytestmark = pytest.mark.e2e

BASE: dict[str, Any] = {"remote": {"bucket": "bkt"}}
FULLNAME = "pso-pageserver-operator"  # release "pso" (support.Helm.template's default)
NAMESPACE = "pageserver"


def _render(helm: support.Helm, values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    return helm.render({**BASE, **(values or {})}, namespace=NAMESPACE)


def _env(statefulset: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in support.container(statefulset)["env"]}


def _pod_labels(docs: list[dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = support.one(docs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    return labels


def _grants(role: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in support.of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, rendered {[d['metadata']['name'] for d in docs]}"
    return found[0]


# ---- replicas and the manager's identity ----------------------------------------------------------


def test_replicas_render_that_many_pageservers_each_with_its_own_volume(helm: support.Helm) -> None:
    default = support.one(_render(helm), "StatefulSet")["spec"]
    assert default["replicas"] == 1
    spec = support.one(_render(helm, {"replicas": 3}), "StatefulSet")["spec"]
    assert spec["replicas"] == 3
    # One claim template: the StatefulSet gives each pod its own claim (data-<pod>).
    assert [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]] == ["data"]
    # The same policy for every replica count: the field is immutable (test below).
    assert default["podManagementPolicy"] == spec["podManagementPolicy"] == "Parallel"


def test_each_manager_is_named_after_its_pod_and_keeps_its_leases_in_the_release_namespace(
    helm: support.Helm,
) -> None:
    env = _env(support.one(_render(helm), "StatefulSet"))
    assert env["PAGESERVER_OPERATOR_PAGESERVER"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["PAGESERVER_OPERATOR_LEASE_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    assert env["PAGESERVER_OPERATOR_FAILOVER_SECONDS"]["value"] == "30"
    assert env["PAGESERVER_OPERATOR_CAPACITY"]["value"] == "1000"
    # the operator's own default
    default_drain = settings.OperatorSettings.model_fields["drain_concurrency"].default
    assert env["PAGESERVER_OPERATOR_DRAIN_CONCURRENCY"]["value"] == str(default_drain) == "4"
    default_attaches = settings.OperatorSettings.model_fields["max_concurrent_attaches"].default
    assert env["PAGESERVER_OPERATOR_MAX_CONCURRENT_ATTACHES"]["value"] == str(default_attaches) == "32"
    env = _env(
        support.one(_render(helm, {"failoverSeconds": 12.5, "capacity": 40, "drainConcurrency": 9,
                                  "maxConcurrentAttaches": 5}), "StatefulSet")
    )
    assert env["PAGESERVER_OPERATOR_FAILOVER_SECONDS"]["value"] == "12.5"
    assert env["PAGESERVER_OPERATOR_CAPACITY"]["value"] == "40"
    assert env["PAGESERVER_OPERATOR_DRAIN_CONCURRENCY"]["value"] == "9"
    assert env["PAGESERVER_OPERATOR_MAX_CONCURRENT_ATTACHES"]["value"] == "5"
    # As the kubelet resolves them for pod <fullname>-2.
    resolved = support.resolve_env(
        support.container(support.one(_render(helm), "StatefulSet"))["env"],
        {},
        {"metadata.name": f"{FULLNAME}-2", "metadata.namespace": NAMESPACE},
    )
    assert resolved["PAGESERVER_OPERATOR_PAGESERVER"] == f"{FULLNAME}-2"
    assert resolved["PAGESERVER_OPERATOR_LEASE_NAMESPACE"] == NAMESPACE


# ---- spread over nodes ----------------------------------------------------------------------------


def test_pageservers_spread_over_nodes_by_default_and_the_spread_can_be_replaced(helm: support.Helm) -> None:
    docs = _render(helm)
    pod = support.one(docs, "StatefulSet")["spec"]["template"]["spec"]
    (constraint,) = pod["topologySpreadConstraints"]
    assert constraint == {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        # best effort: a one-node cluster still runs every replica
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": constraint["labelSelector"]["matchLabels"]},
    }
    # It counts this release's pods, and only them.
    selector = constraint["labelSelector"]["matchLabels"]
    assert selector.items() <= _pod_labels(docs).items()
    assert selector["app.kubernetes.io/instance"] == "pso"

    own = {"matchLabels": {"team": "storage"}}
    custom = [
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"},
        {"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": own},
    ]  # fmt: skip
    pod = support.one(_render(helm, {"topologySpreadConstraints": custom}), "StatefulSet")["spec"]["template"]
    hard, zone = pod["spec"]["topologySpreadConstraints"]
    assert hard["whenUnsatisfiable"] == "DoNotSchedule" and hard["labelSelector"] == {"matchLabels": selector}
    assert zone["labelSelector"] == own and zone["maxSkew"] == 2
    pod = support.one(_render(helm, {"topologySpreadConstraints": []}), "StatefulSet")["spec"]["template"]
    assert "topologySpreadConstraints" not in pod["spec"]
    # affinity still applies next to the spread
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "storage", "operator": "In", "values": ["fast"]}]}]}}}  # fmt: skip
    pod = support.one(_render(helm, {"affinity": affinity}), "StatefulSet")["spec"]["template"]["spec"]
    assert pod["affinity"] == affinity and pod["topologySpreadConstraints"]


# ---- the disruption budget ------------------------------------------------------------------------


@pytest.mark.parametrize("replicas", [1, 3])
def test_a_disruption_budget_evicts_one_pageserver_at_a_time(helm: support.Helm, replicas: int) -> None:
    """Rendered for every replica count: with one replica, maxUnavailable 1 lets a drain evict
    it (the budget never blocks it forever); with three, drains take one at a time."""
    docs = _render(helm, {"replicas": replicas})
    pdb = support.one(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["metadata"]["namespace"] == NAMESPACE
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= _pod_labels(docs).items()
    assert selector == support.one(docs, "StatefulSet")["spec"]["selector"]["matchLabels"]
    assert not support.of_kind(
        _render(helm, {"podDisruptionBudget": {"enabled": False}}), "PodDisruptionBudget"
    )


# ---- the network policy ---------------------------------------------------------------------------


def _allows(rules: list[dict[str, Any]], port: int, protocol: str = "TCP") -> list[dict[str, Any]]:
    """The rules (ingress or egress) that let ``port``/``protocol`` through (a rule without
    ports allows every port)."""
    return [
        r
        for r in rules
        if "ports" not in r
        or any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in r["ports"])
    ]


def test_the_network_policy_is_on_by_default_and_lets_through_only_what_the_operator_needs(
    helm: support.Helm,
) -> None:
    docs = _render(helm)
    policy = support.one(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["metadata"]["namespace"] == NAMESPACE
    assert spec["podSelector"]["matchLabels"].items() <= _pod_labels(docs).items()
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    # In: metrics scrapes (from anyone by default) and the kubelet's probes, nothing else.
    ingress = spec["ingress"]
    opened = sorted((p["protocol"], p["port"]) for r in ingress for p in r["ports"])
    assert opened == [("TCP", 8080), ("TCP", 9090)]
    assert all("from" not in r for r in ingress)
    # Out: DNS, the API server, S3; every rule names its ports.
    egress = spec["egress"]
    assert all(r.get("ports") for r in egress), egress
    for port, protocol in [(53, "UDP"), (53, "TCP")]:
        (dns,) = _allows(egress, port, protocol)
        assert "to" not in dns  # any destination: node-local DNS caches are no pods
    for port in (443, 6443, 80, 8333, 9000):  # API server; S3, SeaweedFS (the kind suite's), MinIO
        assert _allows(egress, port), f"egress to TCP {port} is not allowed"
    for port in (22, 5432, 8080, 9090):
        assert not _allows(egress, port), f"egress to TCP {port} is allowed"
    assert not _allows(egress, 443, "UDP")

    off = _render(helm, {"networkPolicy": {"enabled": False}})
    assert not support.of_kind(off, "NetworkPolicy")


def test_the_network_policy_follows_the_ports_and_takes_the_narrowed_peers(helm: support.Helm) -> None:
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    s3 = {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"protocol": "TCP", "port": 7480}]}
    proxy = {"to": [{"ipBlock": {"cidr": "10.0.0.10/32"}}], "ports": [{"protocol": "TCP", "port": 3128}]}
    values = {
        "metrics": {"port": 9100},
        "probes": {"port": 8081},
        "networkPolicy": {
            "metricsFrom": [monitoring],
            "apiServer": [{"cidr": "172.18.0.2/32", "ports": [6443]}],
            "s3": [s3],
            "extraEgress": [proxy],
        },
    }
    spec = support.one(_render(helm, values), "NetworkPolicy")["spec"]
    metrics, probes = spec["ingress"]
    assert metrics == {"ports": [{"protocol": "TCP", "port": 9100}], "from": [monitoring]}
    assert probes == {"ports": [{"protocol": "TCP", "port": 8081}]}  # the kubelet: from anywhere
    dns, api, *rest = spec["egress"]
    assert sorted((p["protocol"], p["port"]) for p in dns["ports"]) == [("TCP", 53), ("UDP", 53)]
    assert api == {
        "ports": [{"protocol": "TCP", "port": 6443}],
        "to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}],
    }
    assert rest == [s3, proxy]
    assert not _allows(spec["egress"], 443)
    # Without metrics, only the probes port is open; without S3 rules (a file:// remote), no S3.
    spec = support.one(
        _render(helm, {"metrics": {"enabled": False}, "networkPolicy": {"s3": []}}), "NetworkPolicy"
    )["spec"]
    assert spec["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]
    assert not _allows(spec["egress"], 8333) and not _allows(spec["egress"], 9000)


# ---- RBAC -----------------------------------------------------------------------------------------

PAGESERVER_GRANTS = {
    ("pageserver.dev", "pageservers", "get"), ("pageserver.dev", "pageservers", "list"),
    ("pageserver.dev", "pageservers", "watch"), ("pageserver.dev", "pageservers", "create"),
    ("pageserver.dev", "pageservers", "patch"),
    ("pageserver.dev", "pageservers/status", "get"), ("pageserver.dev", "pageservers/status", "patch"),
}  # fmt: skip
RELEASE_NAMESPACE_GRANTS = {
    ("coordination.k8s.io", "leases", "get"), ("coordination.k8s.io", "leases", "list"),
    ("coordination.k8s.io", "leases", "watch"), ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"), ("coordination.k8s.io", "leases", "patch"),
    ("", "pods", "get"),
}  # fmt: skip


@pytest.mark.parametrize("watch", [False, True], ids=["all-namespaces", "watch-namespaces"])
def test_rbac_grants_exactly_the_leases_pageservers_and_own_pod_access(
    helm: support.Helm, watch: bool
) -> None:
    docs = _render(helm, {"watchNamespaces": ["team-a"]} if watch else {})
    sa = support.one(docs, "ServiceAccount")["metadata"]["name"]
    subject = [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    # Pageservers are cluster-scoped: a ClusterRole whatever watchNamespaces is.
    role = _named(docs, "ClusterRole", f"{FULLNAME}-pageservers")
    assert _grants(role) == PAGESERVER_GRANTS
    binding = _named(docs, "ClusterRoleBinding", f"{FULLNAME}-pageservers")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": f"{FULLNAME}-pageservers"}  # fmt: skip
    assert binding["subjects"] == subject
    # Leases and the manager's own pod: a Role in the release namespace only.
    role = _named(docs, "Role", f"{FULLNAME}-leases")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert _grants(role) == RELEASE_NAMESPACE_GRANTS
    binding = _named(docs, "RoleBinding", f"{FULLNAME}-leases")
    assert binding["metadata"]["namespace"] == NAMESPACE and binding["subjects"] == subject
    assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] == f"{FULLNAME}-leases"
    # Nothing else anywhere grants leases, pods or pageservers; no rule deletes anything.
    for r in support.of_kind(docs, "Role", "ClusterRole"):
        if r["metadata"]["name"] not in (f"{FULLNAME}-leases", f"{FULLNAME}-pageservers"):
            assert not {res for _, res, _ in _grants(r)} & {
                "leases",
                "pods",
                "pageservers",
                "pageservers/status",
            }
        assert not [g for g in _grants(r) if g[2] in ("delete", "deletecollection", "*")], r
    assert not support.of_kind(_render(helm, {"rbac": {"create": False}}), "Role", "ClusterRole")


@contextmanager
def _values_file(values: dict[str, Any]) -> Iterator[Path]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="values-") as f:
        yaml.safe_dump(values, f)
        f.flush()
        yield Path(f.name)


@pytest.fixture
def installed(
    helm: support.Helm, kube: helpers.Kubectl, control_plane: controlplane.ControlPlane, chart_crd: None
) -> Iterator[tuple[str, str]]:
    """``helm install`` of the chart (watching one other namespace: the Leases' Role must not
    depend on that); yields (release, namespace); uninstalled after."""
    namespace = f"chart-{uuid.uuid4().hex[:10]}"
    watched = f"{namespace}-t"
    kube.run("create", "namespace", watched)
    release = f"pso-{uuid.uuid4().hex[:6]}"
    with _values_file({**BASE, "watchNamespaces": [watched]}) as values:
        helm.run(
            "install", release, str(support.CHART), "--namespace", namespace, "--create-namespace",
            "--values", str(values), kubeconfig=control_plane.kubeconfig,
        )  # fmt: skip
    yield release, namespace
    helm.run("uninstall", release, "-n", namespace, kubeconfig=control_plane.kubeconfig)


def test_the_service_account_token_can_do_exactly_the_lease_pageserver_and_pod_calls(
    kube: helpers.Kubectl,
    control_plane: controlplane.ControlPlane,
    installed: tuple[str, str],
    tmp_path: Path,
) -> None:
    """The calls the managers make, as the chart's ServiceAccount (a real token): heartbeat and
    leader Leases created, renewed (update) and patched in the release namespace; its own
    Pageserver created, patched and its status patched; its pod read. And what it must not do."""
    release, namespace = installed
    sa = f"{release}-pageserver-operator"
    pod_name = f"{sa}-0"
    token = support.service_account_token(kube, namespace, sa)
    as_sa = helpers.Kubectl(
        kube.binary, control_plane.kubeconfig_for_token(token, tmp_path / "sa.kubeconfig", user=sa)
    )
    other = f"{namespace}-t"  # a namespace the release watches for Tenants, not the Leases'

    def can(verb: str, resource: str, ns: str | None = None) -> bool:
        args = ["auth", "can-i", verb, resource] + ([f"--namespace={ns}"] if ns else [])
        out = as_sa.run(*args, check=False).stdout.strip()
        assert out in ("yes", "no"), out
        return out == "yes"

    for verb in ("get", "list", "watch", "create", "update", "patch"):
        assert can(verb, "leases.coordination.k8s.io", namespace), verb
    for verb in ("get", "list", "watch", "create", "patch"):
        assert can(verb, "pageservers.pageserver.dev"), verb
    assert can("get", "pods", namespace)
    denied = [
        ("delete", "leases.coordination.k8s.io", namespace), ("create", "leases.coordination.k8s.io", other),
        ("get", "leases.coordination.k8s.io", "default"),
        ("delete", "pageservers.pageserver.dev", None), ("update", "pageservers.pageserver.dev", None),
        ("list", "pods", namespace), ("patch", "pods", namespace), ("get", "pods", other),
        ("get", "secrets", namespace),
    ]  # fmt: skip
    for verb, resource, ns in denied:
        assert not can(verb, resource, ns), f"the ServiceAccount may {verb} {resource} in {ns}"

    # The real calls: a heartbeat Lease and the leader's, a Pageserver and its status.
    k = as_sa.in_namespace(namespace)
    for lease in (f"pageserver-{pod_name}", "pageserver-operator-placement"):
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": lease, "namespace": namespace},
                "spec": {"holderIdentity": pod_name, "leaseDurationSeconds": 30}}  # fmt: skip
        k.run("create", "-f", "-", stdin=json.dumps(body))
        current = k.get_json("lease", lease)
        current["spec"]["leaseTransitions"] = 1
        k.run("replace", "-f", "-", stdin=json.dumps(current))  # update, with its resourceVersion
        k.run(
            "patch", "lease", lease, "--type=merge", "-p", json.dumps({"spec": {"leaseDurationSeconds": 20}})
        )
    assert len(k.get_json("leases")["items"]) == 2
    denied_delete = k.run("delete", "lease", "pageserver-operator-placement", check=False)
    assert denied_delete.returncode != 0 and "forbidden" in denied_delete.stderr.lower(), denied_delete.stderr

    pageserver = f"{pod_name}-{uuid.uuid4().hex[:6]}"  # cluster-scoped: unique across tests
    body = {"apiVersion": "pageserver.dev/v1alpha1", "kind": "Pageserver", "metadata": {"name": pageserver}}
    as_sa.run("create", "-f", "-", stdin=json.dumps(body))
    as_sa.run("patch", f"pageservers.pageserver.dev/{pageserver}", "--type=merge", "-p",
              json.dumps({"metadata": {"labels": {"pageserver.dev/test": "yes"}}}))  # fmt: skip
    status = {"status": {"state": "Active", "tenants": 0, "bytes": 0}}
    as_sa.run(
        "patch",
        f"pageservers.pageserver.dev/{pageserver}",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    assert as_sa.get_json(f"pageservers.pageserver.dev/{pageserver}")["status"]["state"] == "Active"
    kube.run(
        "delete", f"pageservers.pageserver.dev/{pageserver}"
    )  # (as the admin: the ServiceAccount may not)


def test_scaling_a_one_replica_release_is_a_plain_helm_upgrade(
    helm: support.Helm, kube: helpers.Kubectl, control_plane: controlplane.ControlPlane, chart_crd: None
) -> None:
    """`helm upgrade --set replicas=3` of a single-volume release: accepted by the API server,
    since podManagementPolicy does not depend on replicas. Control: a changed policy is refused
    (the field is immutable), which is why it must not."""
    namespace = f"chart-{uuid.uuid4().hex[:10]}"
    release = f"pso-{uuid.uuid4().hex[:6]}"
    kubeconfig = control_plane.kubeconfig
    with _values_file(BASE) as values:
        install = helm.run(
            "install", release, str(support.CHART), "--namespace", namespace, "--create-namespace",
            "--values", str(values), kubeconfig=kubeconfig,
        )  # fmt: skip
        assert "pageservers:    1 (pods " in install.stdout, install.stdout
        upgrade = helm.run(
            "upgrade", release, str(support.CHART), "--namespace", namespace, "--values", str(values),
            "--set", "replicas=3", kubeconfig=kubeconfig,
        )  # fmt: skip
        assert f"pageservers:    3 (pods {release}-pageserver-operator-0 to -2;" in upgrade.stdout, (
            upgrade.stdout
        )
        sts = kube.in_namespace(namespace).get_json("statefulset", f"{release}-pageserver-operator")
        assert sts["spec"]["replicas"] == 3
        refused = helm.run(
            "upgrade", release, str(support.CHART), "--namespace", namespace, "--values", str(values),
            "--set", "replicas=3", "--set", "podManagementPolicy=OrderedReady", kubeconfig=kubeconfig,
            check=False,
        )  # fmt: skip
    assert refused.returncode != 0 and "Forbidden" in refused.stderr, refused.stderr
    helm.run("uninstall", release, "-n", namespace, kubeconfig=kubeconfig)


# ---- the values schema ----------------------------------------------------------------------------


SOMETIMES = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "Sometimes"}


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicas": 0}, "/replicas"),
        ({"replicas": 1.5}, "/replicas"),
        ({"failoverSeconds": 0}, "/failoverSeconds"),
        ({"failoverSeconds": -5}, "/failoverSeconds"),
        ({"capacity": 0}, "/capacity"),
        ({"capacity": 2.5}, "/capacity"),
        ({"drainConcurrency": 0}, "/drainConcurrency"),
        ({"drainConcurrency": 1001}, "/drainConcurrency"),
        ({"drainConcurrency": 1.5}, "/drainConcurrency"),
        ({"maxConcurrentAttaches": 0}, "/maxConcurrentAttaches"),
        ({"maxConcurrentAttaches": 2.5}, "/maxConcurrentAttaches"),
        ({"podManagementPolicy": "Random"}, "/podManagementPolicy"),
        ({"podDisruptionBudget": {"maxUnavailable": 0}}, "/podDisruptionBudget/maxUnavailable"),
        ({"topologySpreadConstraints": [SOMETIMES]}, "/topologySpreadConstraints/0/whenUnsatisfiable"),
        (
            {"networkPolicy": {"apiServer": [{"cidr": "10.0.0.1", "ports": [443]}]}},
            "/networkPolicy/apiServer/0/cidr",
        ),
        (
            {"networkPolicy": {"apiServer": [{"cidr": "", "ports": [0]}]}},
            "/networkPolicy/apiServer/0/ports/0",
        ),
        ({"networkPolicy": {"apiServer": []}}, "/networkPolicy/apiServer"),
        ({"networkPolicy": {"s3": [{"port": 443}]}}, "/networkPolicy/s3/0"),
        ({"networkPolicy": {"enable": False}}, "additional properties 'enable' not allowed"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else None,
)
def test_a_wrong_multi_pageserver_value_fails_with_the_schema_message(
    helm: support.Helm, values: dict[str, Any], where: str
) -> None:
    result = helm.template({**BASE, **values}, check=False)
    assert result.returncode != 0, "helm template accepted " + json.dumps(values)
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert where in result.stderr, result.stderr
