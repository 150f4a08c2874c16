"""The Helm chart: lint, rendering, the values schema, the real API server's verdict on every
object, ``helm install``, and least-privilege RBAC proven by running the operator as the
chart's ServiceAccount (a real token, not impersonation, which kopf ignores).

The control plane has no kubelet: installed pods never run. The operator runs here as a
process instead, configured only by the environment the chart gives its container.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart import support
from e2e import helpers
from pageserver_operator.devenv import controlplane, objectstore, processes

pytestmark = pytest.mark.e2e

CI_VALUES = sorted((support.CHART / "ci").glob("*-values.yaml"))
SECRET = "s3-credentials"
#: (not the milliseconds of a log line's timestamp, ",403": that made the test fail by chance)
FORBIDDEN = re.compile(r"(?<![,.:])\b403\b|Forbidden|forbidden|Not enough permissions")
ACTIVE_TIMEOUT = 90.0
OPERATOR_EXIT_TIMEOUT = 60.0


# ---- static checks --------------------------------------------------------------------------------


def test_chart_crd_is_identical_to_the_top_level_crd() -> None:
    assert support.CHART_CRD.read_bytes() == support.TOP_CRD.read_bytes(), (
        f"{support.CHART_CRD.relative_to(support.REPO)} differs from {support.TOP_CRD.relative_to(support.REPO)}: "
        f"cp {support.TOP_CRD.relative_to(support.REPO)} {support.CHART_CRD.relative_to(support.REPO)}"
    )


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_helm_lint_is_clean(helm: support.Helm, values: Path | None) -> None:
    args = ["lint", "--strict", str(support.CHART)] + (["--values", str(values)] if values else [])
    result = helm.run(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ERROR]" not in result.stdout and "[WARNING]" not in result.stdout, result.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda v: v.name)
def test_helm_template_renders_every_object(helm: support.Helm, values: Path) -> None:
    docs = helm.render(value_files=[values])
    kinds = sorted(d["kind"] for d in docs)
    assert {"ServiceAccount", "StatefulSet", "Service", "ClusterRole", "ClusterRoleBinding"} <= set(kinds), (
        kinds
    )
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"], d
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"].get("namespace"), f"{d['kind']} {d['metadata']['name']} has no namespace"


def test_statefulset_runs_the_operator_with_the_chart_settings(helm: support.Helm) -> None:
    docs = helm.render(
        {
            "remote": {
                "bucket": "pageserver-data",
                "prefix": "prod/ps",
                "endpoint": "http://minio:9000",
                "region": "eu-central-1",
                "credentialsSecret": "creds",
            },
            "watchNamespaces": ["a", "b"],
            "syncPeriod": 15,
            "concurrency": 32,
            "logFormat": "text",
            "persistence": {"storageClassName": "fast", "size": "50Gi"},
        },
    )
    sts = support.one(docs, "StatefulSet")
    spec = sts["spec"]
    assert spec["replicas"] == 1
    c = support.container(sts)
    env = {e["name"]: e for e in c["env"]}
    plain = {k: v["value"] for k, v in env.items() if "value" in v}
    assert plain["PAGESERVER_OPERATOR_REMOTE"] == (
        "s3://pageserver-data/prod/ps?endpoint=http://minio:9000&region=eu-central-1"
    )
    assert plain["PAGESERVER_OPERATOR_WORKDIR"] == "/data"
    assert plain["PAGESERVER_OPERATOR_NAMESPACES"] == "a,b"
    assert plain["PAGESERVER_OPERATOR_SYNC_PERIOD"] == "15"
    assert plain["PAGESERVER_OPERATOR_CONCURRENCY"] == "32"
    assert plain["PAGESERVER_OPERATOR_LOG_FORMAT"] == "text"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "creds", "key": key}
    assert c["args"] == ["run"]
    # The working directory: a claim from the template, mounted at /data; /tmp is an emptyDir.
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts == {"/data": "data", "/tmp": "tmp"}
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    # Restricted pod security.
    pod_sc = spec["template"]["spec"]["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 65532 and pod_sc["fsGroup"] == 65532
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    # Probes on kopf's liveness endpoint.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"liveness": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # Namespaced RBAC: a Role + RoleBinding per watched namespace (and the Leases' Role in the
    # release namespace, test_chart_multi), read-only discovery cluster-wide; the only
    # cluster-wide writes are to the cluster-scoped Pageservers.
    fullname = sts["metadata"]["name"]
    roles = [r for r in support.of_kind(docs, "Role") if r["metadata"]["name"] == fullname]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["a", "b"]
    bindings = [b for b in support.of_kind(docs, "RoleBinding") if b["metadata"]["name"] == fullname]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["a", "b"]
    cluster_roles = {r["metadata"]["name"]: r for r in support.of_kind(docs, "ClusterRole")}
    assert sorted(cluster_roles) == [f"{fullname}-discovery", f"{fullname}-pageservers"]
    for rule in cluster_roles[f"{fullname}-discovery"]["rules"]:
        assert set(rule["verbs"]) <= {"list", "watch"}, f"cluster-wide rule beyond read access: {rule}"
    for rule in cluster_roles[f"{fullname}-pageservers"]["rules"]:
        assert rule["apiGroups"] == ["pageserver.dev"], rule
        assert set(rule["resources"]) <= {"pageservers", "pageservers/status"}, rule


def test_values_build_the_remote_url_or_take_it_as_given(helm: support.Helm) -> None:
    def remote(values: dict[str, Any]) -> str:
        c = support.container(support.one(helm.render(values), "StatefulSet"))
        return next(e["value"] for e in c["env"] if e["name"] == "PAGESERVER_OPERATOR_REMOTE")

    assert remote({"remote": {"bucket": "b-1"}}) == "s3://b-1"
    assert remote({"remote": {"bucket": "b-1", "region": "us-west-2"}}) == "s3://b-1?region=us-west-2"
    assert remote({"remote": {"url": "file:///data/remote"}}) == "file:///data/remote"


def test_irsa_annotations_go_on_the_service_account_and_no_secret_is_referenced(helm: support.Helm) -> None:
    role = "arn:aws:iam::123456789012:role/pageserver"
    docs = helm.render(
        {"remote": {"bucket": "bkt"}, "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": role}}}
    )
    sa = support.one(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role}
    sts = support.one(docs, "StatefulSet")
    assert sts["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert not [e for e in support.container(sts)["env"] if "secretKeyRef" in e.get("valueFrom", {})]


def test_service_monitor_is_optional_and_scrapes_the_metrics_service(helm: support.Helm) -> None:
    assert not support.of_kind(helm.render({"remote": {"bucket": "bkt"}}), "ServiceMonitor")
    docs = helm.render(
        {
            "remote": {"bucket": "bkt"},
            "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        }
    )
    monitor = support.one(docs, "ServiceMonitor")
    service = support.one(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_remote_storage_is_required_with_a_clear_message(helm: support.Helm) -> None:
    result = helm.template({}, check=False)
    assert result.returncode != 0
    assert "remote storage is required: set remote.url" in result.stderr, result.stderr
    both = helm.template({"remote": {"url": "s3://a", "bucket": "b-1"}}, check=False)
    assert "set either remote.url or remote.bucket" in both.stderr, both.stderr


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"syncPeriod": -1}, "/syncPeriod"),
        ({"syncPeriod": "often"}, "/syncPeriod"),
        ({"logFormat": "xml"}, "/logFormat"),
        ({"logLevel": "chatty"}, "/logLevel"),
        ({"remote": {"url": "ftp://bucket/prefix"}}, "/remote/url"),
        ({"remote": {"bucket": "Not_A_Bucket"}}, "/remote/bucket"),
        ({"remote": {"bucket": "bkt", "endpoint": "minio:9000"}}, "/remote/endpoint"),
        ({"concurrency": 0}, "/concurrency"),
        ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
        ({"persistence": {"size": "lots"}}, "/persistence/size"),
        ({"metrics": {"port": 70000}}, "/metrics/port"),
        ({"syncperiod": 10}, "additional properties 'syncperiod' not allowed"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else None,
)
def test_a_wrong_value_fails_with_the_schema_message(
    helm: support.Helm, values: dict[str, Any], where: str
) -> None:
    base: dict[str, Any] = {"remote": {"bucket": "bkt"}}
    merged = {**base, **values}
    result = helm.template(merged, check=False)
    assert result.returncode != 0, "helm template accepted " + json.dumps(values)
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert where in result.stderr, result.stderr


# ---- against the real API server ------------------------------------------------------------------


def _restricted_namespace(kube: helpers.Kubectl) -> str:
    """A namespace that enforces (and warns about) Pod Security "restricted"."""
    name = f"chart-{uuid.uuid4().hex[:10]}"
    kube.run("create", "namespace", name)
    kube.run(
        "label", "namespace", name,
        "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip
    return name


#: kinds every rendering has (with the defaults or any ci/ values file)
EVERY_RENDERING = {
    "ServiceAccount", "StatefulSet", "Service", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
    "PodDisruptionBudget", "NetworkPolicy",
}  # fmt: skip


@pytest.mark.parametrize("mode", ["all-namespaces", "watch-namespaces", *(v.name for v in CI_VALUES)])
def test_every_rendered_object_passes_server_side_dry_run(
    helm: support.Helm, kube: helpers.Kubectl, chart_crd: None, mode: str
) -> None:
    """Every object of the chart (the defaults, the namespaced mode and each ci/ values file),
    PodDisruptionBudget, NetworkPolicy and the Leases' Role included, as the API server judges it."""
    namespace = _restricted_namespace(kube)
    values: dict[str, Any] = {"remote": {"bucket": "bkt", "credentialsSecret": SECRET}}
    value_files: list[Path] = []
    if mode == "watch-namespaces":
        watched = [f"{namespace}-a", f"{namespace}-b"]
        for ns in watched:
            kube.run("create", "namespace", ns)
        values["watchNamespaces"] = watched
    elif mode.endswith(".yaml"):
        path = support.CHART / "ci" / mode
        value_files, values = [path], {}
        for ns in yaml.safe_load(path.read_text()).get("watchNamespaces", []):
            if kube.run("get", "namespace", ns, "--ignore-not-found").stdout.strip() == "":
                kube.run("create", "namespace", ns)
    docs = helm.render(
        values, release=f"dry-{uuid.uuid4().hex[:6]}", namespace=namespace, value_files=value_files
    )
    # prometheus-operator's CRD is not installed here: the ServiceMonitor (namespaced-values.yaml)
    # is checked by test_service_monitor_is_optional_and_scrapes_the_metrics_service only.
    docs = [d for d in docs if d["kind"] != "ServiceMonitor"]
    assert {d["kind"] for d in docs} >= EVERY_RENDERING, sorted({d["kind"] for d in docs})
    result = kube.run(
        "apply",
        "--dry-run=server",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
    )
    assert "would violate PodSecurity" not in result.stderr, result.stderr
    assert result.stdout.count("(server dry run)") == len(docs), result.stdout

    # The pod the StatefulSet would create passes Pod Security "restricted" (enforced for pods).
    sts = support.one(docs, "StatefulSet")
    template = copy.deepcopy(sts["spec"]["template"])
    template["spec"]["volumes"].append(
        {"name": "data", "persistentVolumeClaim": {"claimName": f"data-{sts['metadata']['name']}-0"}}
    )
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{sts['metadata']['name']}-0", "namespace": namespace,
           "labels": template["metadata"]["labels"]}, "spec": template["spec"]}  # fmt: skip
    result = kube.run("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(pod), check=False)
    assert result.returncode == 0, result.stderr
    assert "violate" not in result.stderr, result.stderr


def test_the_pod_security_check_above_catches_a_weakened_security_context(
    helm: support.Helm, kube: helpers.Kubectl
) -> None:
    """Control for the test above: without the chart's security contexts the API server warns."""
    namespace = _restricted_namespace(kube)
    docs = helm.render(
        {
            "remote": {"bucket": "bkt"},
            # Helm merges maps: null removes a default key, {} would keep them all.
            "podSecurityContext": {"runAsNonRoot": None, "seccompProfile": None},
            "securityContext": {
                "runAsNonRoot": None,
                "allowPrivilegeEscalation": None,
                "capabilities": None,
                "seccompProfile": None,
            },
        },
        namespace=namespace,
    )
    sts = support.one(docs, "StatefulSet")
    result = kube.run("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(sts))
    assert 'would violate PodSecurity "restricted:latest"' in result.stderr, result.stderr


def test_the_chart_crd_passes_server_side_dry_run(kube: helpers.Kubectl, chart_crd: None) -> None:
    result = kube.run("apply", "--dry-run=server", "-f", str(support.CHART_CRD))
    assert "customresourcedefinition.apiextensions.k8s.io/tenants.pageserver.dev" in result.stdout


def test_helm_install_creates_every_object(
    helm: support.Helm, kube: helpers.Kubectl, control_plane: controlplane.ControlPlane, chart_crd: None
) -> None:
    namespace = f"chart-{uuid.uuid4().hex[:10]}"
    release = f"pso-{uuid.uuid4().hex[:6]}"
    with _values_file({"remote": {"bucket": "bkt", "credentialsSecret": SECRET}}) as values:
        install = helm.run(
            "install", release, str(support.CHART), "--namespace", namespace, "--create-namespace",
            "--values", str(values), kubeconfig=control_plane.kubeconfig,
        )  # fmt: skip
    notes = install.stdout
    assert "STATUS: deployed" in notes
    assert "kubectl apply -f examples/tenant.yaml" in notes and "kubectl get tenants -w" in notes, notes
    fullname = f"{release}-pageserver-operator"
    k = kube.in_namespace(namespace)
    assert k.get_json("statefulset", fullname)["spec"]["replicas"] == 1
    k.get_json("serviceaccount", fullname)
    k.get_json("service", f"{fullname}-metrics")
    kube.get_json("clusterrole", fullname)
    kube.get_json("clusterrolebinding", fullname)
    status = json.loads(
        helm.run("status", release, "-n", namespace, "-o", "json", kubeconfig=control_plane.kubeconfig).stdout
    )
    assert status["info"]["status"] == "deployed"
    helm.run("uninstall", release, "-n", namespace, kubeconfig=control_plane.kubeconfig)
    assert kube.run("get", "clusterrole", fullname, "--ignore-not-found").stdout.strip() == ""
    # The CRD stays (Helm never deletes what crds/ installed): Tenants and their data survive.
    kube.get_json("crd", support.CRD_NAME)


@contextlib.contextmanager
def _values_file(values: dict[str, Any]) -> Iterator[Path]:
    """A temporary values file."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="values-") as f:
        yaml.safe_dump(values, f)
        f.flush()
        yield Path(f.name)


# ---- RBAC proof: the operator as the chart's ServiceAccount ---------------------------------------


class Setup:
    """The chart's settings and RBAC in the cluster, and the operator run as its ServiceAccount."""

    def __init__(
        self,
        tmp_path: Path,
        helm: support.Helm,
        kube: helpers.Kubectl,
        control_plane: controlplane.ControlPlane,
        server: objectstore.ObjectStore,
        bucket: str,
        watch_namespace: bool,
    ) -> None:
        self.tmp_path = tmp_path
        self.kube = kube
        self.control_plane = control_plane
        self.server = server
        self.bucket = bucket
        self.release = f"rbac-{uuid.uuid4().hex[:6]}"
        self.namespace = f"pso-{uuid.uuid4().hex[:8]}"
        self.tenant_namespace = f"tenants-{uuid.uuid4().hex[:8]}"
        for ns in (self.namespace, self.tenant_namespace):
            kube.run("create", "namespace", ns)
        self.values: dict[str, Any] = {
            **support.s3_values(server, bucket, SECRET),
            "logFormat": "text",
            "syncPeriod": 1,
            "statusInterval": 0.5,
        }
        if watch_namespace:
            self.values["watchNamespaces"] = [self.tenant_namespace]
        self.docs = helm.render(self.values, release=self.release, namespace=self.namespace)
        self.secret = support.credentials_secret(SECRET, self.namespace, server)
        self.remote_url = f"s3://{bucket}?endpoint={server.endpoint}&region={server.region}"
        self.operators: list[support.Operator] = []
        self.k = kube.in_namespace(self.tenant_namespace)

    def rbac_docs(self) -> list[dict[str, Any]]:
        return support.of_kind(
            self.docs, "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"
        )

    def operator_env(self, statefulset: dict[str, Any], workdir: Path) -> tuple[dict[str, str], int]:
        """The container's environment as the kubelet would set it, with what a process on this
        machine needs instead: the volume path, free ports, the ServiceAccount's kubeconfig."""
        pod = f"{statefulset['metadata']['name']}-0"
        fields = {"metadata.name": pod, "metadata.namespace": self.namespace}
        env = support.resolve_env(
            support.container(statefulset)["env"], {SECRET: self.secret["stringData"]}, fields
        )
        assert env["PAGESERVER_OPERATOR_PAGESERVER"] == pod
        assert env["PAGESERVER_OPERATOR_LEASE_NAMESPACE"] == self.namespace
        assert env["PAGESERVER_OPERATOR_WORKDIR"] == "/data"
        metrics_port, liveness_port = processes.free_ports(2)
        sa = support.one(self.docs, "ServiceAccount")["metadata"]["name"]
        token = support.service_account_token(self.kube, self.namespace, sa)
        kubeconfig = self.control_plane.kubeconfig_for_token(token, self.tmp_path / "sa.kubeconfig", user=sa)
        env.update({
            "PAGESERVER_OPERATOR_WORKDIR": str(workdir),
            "PAGESERVER_OPERATOR_METRICS_PORT": str(metrics_port),
            "PAGESERVER_OPERATOR_LIVENESS_PORT": str(liveness_port),
            "KUBECONFIG": str(kubeconfig),
        })  # fmt: skip
        return env, liveness_port

    def start_operator(
        self, statefulset: dict[str, Any], workdir: Path, wait_live: bool = True
    ) -> support.Operator:
        env, liveness_port = self.operator_env(statefulset, workdir)
        op = support.start_operator(
            env, self.tmp_path / f"operator-{len(self.operators) + 1}.log", liveness_port
        )
        self.operators.append(op)
        if wait_live:
            op.wait_live()
        return op

    def close(self, failed: bool) -> None:
        for op in self.operators:
            op.stop()
            if failed:
                print(f"\n----- operator log ({op.process.log_path}) -----\n{op.log()[-20000:]}")


@pytest.fixture
def setup_factory(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    helm: support.Helm,
    kube: helpers.Kubectl,
    control_plane: controlplane.ControlPlane,
    s3_server: objectstore.ObjectStore,
    s3_bucket: str,
    chart_crd: None,
) -> Iterator[Any]:
    made: list[Setup] = []

    def make(watch_namespace: bool) -> Setup:
        s = Setup(tmp_path, helm, kube, control_plane, s3_server, s3_bucket, watch_namespace)
        made.append(s)
        return s

    yield make
    failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))
    for s in made:
        s.close(failed)


@pytest.mark.parametrize("mode", ["all-namespaces", "watch-namespaces"])
def test_operator_as_the_chart_service_account_attaches_syncs_and_detaches_without_403(
    helm: support.Helm, setup_factory: Any, tmp_path: Path, mode: str
) -> None:
    s: Setup = setup_factory(mode == "watch-namespaces")
    tenant_id = support.seed_tenant(s.remote_url, s.server)
    # helm install: the chart's own ServiceAccount, RBAC and StatefulSet in the cluster.
    support.apply_docs(s.kube, [s.secret])
    with _values_file(s.values) as values:
        helm.run(
            "install", s.release, str(support.CHART), "--namespace", s.namespace, "--values", str(values),
            kubeconfig=s.control_plane.kubeconfig,
        )  # fmt: skip
    fullname = f"{s.release}-pageserver-operator"
    statefulset = s.kube.in_namespace(s.namespace).get_json("statefulset", fullname)
    workdir = tmp_path / "volume"
    workdir.mkdir()
    op = s.start_operator(statefulset, workdir)

    # Attach.
    name = "sample"
    s.k.apply(helpers.tenant_manifest(name, tenant_id))
    tenant = helpers.wait_phase(s.k, name, "Active", timeout=ACTIVE_TIMEOUT)
    assert (helpers.condition(tenant, "Ready") or {}).get("status") == "True"
    timelines = tenant["status"]["timelines"]
    assert timelines, tenant["status"]
    assert (workdir / "tenants" / tenant_id).is_dir()

    # Sync: a layer the pageserver flushed is uploaded.
    timeline_id = timelines[0]["timelineId"]
    layer = (
        support.cli("testdata", "flush-layer", "--workdir", str(workdir), tenant_id, timeline_id, env={})
        .strip()
        .splitlines()[-1]
    )
    helpers.wait_for(
        lambda: any(key.rsplit("/", 1)[1].startswith(layer) for key in support.bucket_keys(s.server, s.bucket)),
        60, f"the flushed layer {layer} to be uploaded",
    )  # fmt: skip

    # Detach.
    s.k.run("delete", "tenant", name, "--wait=false")
    helpers.wait_gone(s.k, name, timeout=ACTIVE_TIMEOUT)
    assert not (workdir / "tenants" / tenant_id).exists()
    reasons = {e.get("reason") for e in s.k.events(name)}
    assert "Detached" in reasons, reasons  # (no Event repeats the status: no "Active")

    op.stop()
    log = op.log()
    assert "starting: workdir" in log, log[-5000:]
    denied = [line for line in log.splitlines() if FORBIDDEN.search(line)]
    assert not denied, "the operator was denied something:\n" + "\n".join(denied)
    assert "could not post event" not in log and "status patch failed" not in log, log[-5000:]
    helm.run("uninstall", s.release, "-n", s.namespace, kubeconfig=s.control_plane.kubeconfig)


def _without(docs: list[dict[str, Any]], resource: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The RBAC docs with the rule that grants ``resource`` removed from the (Cluster)Role."""
    out = copy.deepcopy(docs)
    removed: dict[str, Any] | None = None
    for d in out:
        if d["kind"] in ("ClusterRole", "Role"):
            keep = []
            for rule in d["rules"]:
                if resource in rule["resources"]:
                    removed = rule
                else:
                    keep.append(rule)
            d["rules"] = keep
    assert removed is not None, f"no rule grants {resource}"
    return out, removed


@pytest.mark.parametrize(
    ("resource", "watch_namespace", "denied"),
    [
        # The operator's own writes: the API server's 403, logged with the resource and verb.
        ("tenants/status", False, 'cannot patch resource "tenants/status"'),
        ("events", False, 'cannot create resource "events"'),
        # kopf's discovery: retried with backoff for about a minute (in namespaced mode nothing
        # is served meanwhile), then kopf falls back to no observation and says so.
        ("customresourcedefinitions", False, 'cannot list resource "customresourcedefinitions"'),
        ("namespaces", True, 'cannot list resource "namespaces"'),
        # A manager registers its Pageserver and starts its heartbeat Lease before serving
        # anything: refused, it exits (status 1) saying which call (the verb may change).
        ("pageservers", False, 'cannot create resource "pageservers"'),
        ("leases", False, 'resource "leases" in API group "coordination.k8s.io"'),
        ("leases", True, 'resource "leases" in API group "coordination.k8s.io"'),
    ],
)
def test_removing_a_rule_makes_the_operator_fail_with_a_clear_message(
    setup_factory: Any, tmp_path: Path, resource: str, watch_namespace: bool, denied: str
) -> None:
    s: Setup = setup_factory(watch_namespace)
    tenant_id = support.seed_tenant(s.remote_url, s.server, timelines=1, layers=2)
    docs, _ = _without(s.rbac_docs(), resource)
    support.apply_docs(s.kube, [s.secret, *docs])
    statefulset = support.one(s.docs, "StatefulSet")
    workdir = tmp_path / "volume"
    workdir.mkdir()
    if resource in ("pageservers", "leases"):
        op = s.start_operator(statefulset, workdir, wait_live=False)
        helpers.wait_for(
            lambda: not op.process.running(), OPERATOR_EXIT_TIMEOUT, "the operator to exit",
            describe=lambda: op.log()[-3000:],
        )  # fmt: skip
        log = op.log().replace('\\"', '"')
        assert op.process.returncode() == 1, log[-3000:]
        line = next((ln for ln in log.splitlines() if "registering pageserver" in ln), "")
        assert denied in line and "403 Forbidden" in line, log[-3000:]
        return
    op = s.start_operator(statefulset, workdir)
    name = "denied"
    tenant_rule = resource in ("tenants/status", "events")
    if tenant_rule:
        s.k.apply(helpers.tenant_manifest(name, tenant_id))
    if resource == "events":
        # A tenant that attaches cleanly posts no Event (the status says it all); its deletion
        # posts `Detached`, the first Event this operator tries to create.
        helpers.wait_phase(s.k, name, "Active", timeout=ACTIVE_TIMEOUT)
        s.k.run("delete", "tenant", name, "--wait=false")

    line = helpers.wait_for(
        # The API server's JSON message is quoted inside the log line: compare without escapes.
        lambda: next((ln for ln in op.log().replace('\\"', '"').splitlines() if denied in ln), None),
        ACTIVE_TIMEOUT,
        f"the operator to log: {denied}",
        describe=lambda: op.log()[-3000:],
    )
    assert "403" in line or "Forbidden" in line, line
    if not tenant_rule:
        return
    if resource == "tenants/status":
        # Nothing the operator did reached the resource's status.
        time.sleep(2)
        assert helpers.phase(s.k.tenant(name)) is None, s.k.tenant(name).get("status")
    else:
        # the refused Event did not stop the detach
        helpers.wait_gone(s.k, name, timeout=ACTIVE_TIMEOUT)
        assert not s.k.events(name)
        return
    # Clean up while the operator (with its finalizer) still runs.
    s.k.run("delete", "tenant", name, "--wait=false")
    helpers.wait_gone(s.k, name, timeout=ACTIVE_TIMEOUT)


def test_kopf_needs_no_more_than_the_chart_grants_at_cluster_scope(helm: support.Helm) -> None:
    """The cluster-wide grant is read-only discovery plus the Tenant rules (no secrets, no pods);
    the Pageservers' ClusterRole is test_chart_multi's."""
    docs = helm.render({"remote": {"bucket": "bkt"}})
    (role,) = [
        r for r in support.of_kind(docs, "ClusterRole") if r["metadata"]["name"] == "pso-pageserver-operator"
    ]
    granted = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert granted == {
        ("pageserver.dev", "tenants", "get"), ("pageserver.dev", "tenants", "list"),
        ("pageserver.dev", "tenants", "watch"), ("pageserver.dev", "tenants", "patch"),
        ("pageserver.dev", "tenants/status", "get"), ("pageserver.dev", "tenants/status", "patch"),
        ("", "events", "create"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    }  # fmt: skip
