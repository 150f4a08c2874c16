"""Fixtures of the kind end-to-end suite.

This suite runs only through its own entry point, ``hack/kind/run-e2e.sh``, which builds the
images, creates the kind cluster and sets ``PAGESERVER_OPERATOR_KIND_E2E=1`` plus the paths this
file reads. A plain ``pytest`` run (``hack/test.sh``) does not collect it. Once selected, a
missing piece is an error, never a skip.

Layout in the cluster (1 control plane + 3 workers, hack/kind/cluster.sh):
- everything that must stay up while a worker node is paused (test_failover.py) runs on the
  control plane: the S3 server, the toolbox and the cluster DNS (CoreDNS is moved there);
  the operator's pods run on the workers;
- namespace ``e2e-s3``: the S3 server (SeaweedFS ``weed mini``, image built by hack/kind) as a
  Deployment + Service, and a "toolbox" pod (the operator image, idle) with S3 credentials, used
  to create the bucket, seed tenants with ``pageserver-operator testdata make-tenant`` and read
  remote objects -- all traffic stays inside the cluster;
- namespace ``pso-e2e``: PodSecurity ``restricted`` enforced; ``helm install`` of
  charts/pageserver-operator with S3 settings pointing at the in-cluster server. The Tenants live
  here too;
- namespace ``pso-multi`` (multi.py, fixture ``group``): a second release with three pageserver
  managers, one on each worker, shared by test_failover.py and then test_drain.py (the modules
  run in the order of MODULE_ORDER: test_drain.py needs test_failover.py's even spread first).

Measurements go to ``REPORT`` (any test module may add to it); they are printed at the end of
the session and written to ``$KIND_E2E_REPORT``.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from kind import kube

if TYPE_CHECKING:
    from kind import multi

if os.environ.get("PAGESERVER_OPERATOR_KIND_E2E") != "1":
    # Not run through hack/kind/run-e2e.sh: nothing here is collected.
    collect_ignore_glob = ["test_*.py"]

S3_NAMESPACE = "e2e-s3"
OPERATOR_NAMESPACE = "pso-e2e"
RELEASE = "pso"
BUCKET = "pageserver-e2e"
REGION = "us-east-1"
ACCESS_KEY = "pageserver-e2e"
SECRET_KEY = "pageserver-e2e-secret"
S3_ENDPOINT = f"http://s3.{S3_NAMESPACE}.svc.cluster.local:8333"
REMOTE_URL = f"s3://{BUCKET}?endpoint={S3_ENDPOINT}&region={REGION}"
TOOLBOX = "toolbox"
OPERATOR_SELECTOR = "app.kubernetes.io/name=pageserver-operator"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
# Pods that must survive a paused worker: scheduled on the control plane (tolerating its taint).
ON_CONTROL_PLANE: dict[str, Any] = {
    "nodeSelector": {CONTROL_PLANE_LABEL: ""},
    "tolerations": [{"key": CONTROL_PLANE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
}

# Measurements, printed at the end of the session (fixture `_print_report`).
REPORT: dict[str, Any] = {}


#: the modules run in this order (others after them): the single-pageserver release first, then
#: the three-pageserver one (failover, then drain: the failover test needs a fresh, even spread)
MODULE_ORDER = ("test_e2e.py", "test_failover.py", "test_drain.py")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kind: needs the kind cluster of hack/kind/run-e2e.sh")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the modules by MODULE_ORDER (a stable sort: the order inside a module is kept)."""

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER)

    items.sort(key=rank)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember each phase's report on the item, so fixtures know at teardown whether it failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _credentials_secret(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3-credentials", "namespace": namespace},
        "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
    }


def _s3_manifests(s3_image: str, toolbox_image: str) -> str:
    labels = {"app": "s3"}
    env_from = [{"secretRef": {"name": "s3-credentials"}}]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "s3", "namespace": S3_NAMESPACE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    **ON_CONTROL_PLANE,
                    "containers": [
                        {
                            "name": "weed",
                            "image": s3_image,
                            "imagePullPolicy": "Never",
                            "args": [
                                "mini",
                                "-dir=/data",
                                "-ip=127.0.0.1",
                                "-ip.bind=0.0.0.0",
                                "-s3.port=8333",
                                "-s3.port.iceberg=0",
                                "-s3.port.lance=0",
                                "-webdav=false",
                                "-admin.ui=false",
                                "-master.telemetry=false",
                            ],
                            "envFrom": env_from,
                            "ports": [{"name": "s3", "containerPort": 8333}],
                            "readinessProbe": {"tcpSocket": {"port": 8333}, "periodSeconds": 1},
                            "securityContext": RESTRICTED_CONTAINER,
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s3", "namespace": S3_NAMESPACE},
        "spec": {"selector": labels, "ports": [{"name": "s3", "port": 8333, "targetPort": 8333}]},
    }
    toolbox = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": TOOLBOX, "namespace": S3_NAMESPACE},
        "spec": {
            **ON_CONTROL_PLANE,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "toolbox",
                    "image": toolbox_image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", "import time\nwhile True: time.sleep(3600)"],
                    "envFrom": env_from,
                    "env": [
                        {"name": "AWS_ENDPOINT_URL", "value": S3_ENDPOINT},
                        {"name": "AWS_REGION", "value": REGION},
                        {"name": "HOME", "value": "/tmp"},
                    ],
                    "securityContext": RESTRICTED_CONTAINER,
                }
            ],
        },
    }
    docs = [_credentials_secret(S3_NAMESPACE), deployment, service, toolbox]
    return yaml.safe_dump_all(docs)


@dataclass(frozen=True)
class Cluster:
    """The kind cluster and what the suite put in it."""

    k: kube.Kube
    operator_image: str
    s3_image: str

    # ---- remote storage, through the toolbox pod ---------------------------------------------

    def toolbox(self, argv: list[str], timeout: float = 600.0) -> str:
        return self.k.exec(S3_NAMESPACE, TOOLBOX, argv, timeout=timeout)

    def make_tenant(self, tenant_id: str, *args: str) -> None:
        """``pageserver-operator testdata make-tenant`` into the in-cluster S3 bucket."""
        started = time.monotonic()
        out = self.toolbox(
            [
                "pageserver-operator",
                "testdata",
                "make-tenant",
                "--remote",
                REMOTE_URL,
                "--tenant-id",
                tenant_id,
                *args,
            ]
        )
        kube.log(f"seeded tenant {out.strip()} ({' '.join(args)}) in {time.monotonic() - started:.1f} s")

    def make_tenants(self, tenants: list[tuple[str, list[str]]]) -> None:
        """Several ``make-tenant`` runs, each as the command line runs it, in one Python process
        in the toolbox (a process of its own costs about a second each, a ``kubectl exec``
        one or two more)."""
        started = time.monotonic()
        argvs = [
            ["testdata", "make-tenant", "--remote", REMOTE_URL, "--tenant-id", tid, *args] for tid, args in tenants
        ]
        self.k.python(S3_NAMESPACE, TOOLBOX, MAKE_TENANTS_SCRIPT, json.dumps(argvs))
        kube.log(f"seeded {len(tenants)} tenants in {time.monotonic() - started:.1f} s")

    def remote_objects(self, tenant_ids: list[str]) -> dict[str, str]:
        """Every remote object of these tenants: key -> ETag (a rewritten object changes it)."""
        objects: dict[str, str] = self.k.python(S3_NAMESPACE, TOOLBOX, REMOTE_KEYS_SCRIPT, BUCKET, *tenant_ids)
        return objects

    def remote_tree(self, tenant_id: str) -> dict[str, Any]:
        """Every remote object of the tenant with size and sha256, and each timeline's index."""
        return self.remote_trees([tenant_id])[tenant_id]

    def remote_trees(self, tenant_ids: list[str]) -> dict[str, dict[str, Any]]:
        """`remote_tree` of each tenant, in one ``kubectl exec``."""
        result: dict[str, dict[str, Any]] = self.k.python(S3_NAMESPACE, TOOLBOX, REMOTE_TREE_SCRIPT, BUCKET, *tenant_ids)
        return result


REMOTE_TREE_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import boto3
    bucket = sys.argv[1]
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
    def tree(tid):
        base = f"tenants/{tid}/timelines/"
        found = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
            for obj in page.get("Contents", []):
                timeline, _, name = obj["Key"][len(base):].partition("/")
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"]
                digest = hashlib.sha256()
                for chunk in iter(lambda: body.read(1 << 20), b""):
                    digest.update(chunk)
                found.setdefault(timeline, {})[name] = [obj["Size"], digest.hexdigest()]
        out = {}
        for timeline, objects in found.items():
            # the newest index: the highest generation (index_part.json-XXXXXXXX sorts after the seed's)
            indexes = [n for n in objects if n == "index_part.json" or n.startswith("index_part.json-")]
            if not indexes:
                continue
            index = json.loads(s3.get_object(Bucket=bucket, Key=base + timeline + "/" + max(indexes))["Body"].read())
            layers = index.get("timeline_layers") or list(index["layer_metadata"])
            entry = {"objects": {}, "index_layers": sorted(layers),
                     "index_metadata_sha256": hashlib.sha256(bytes(index["metadata_bytes"])).hexdigest()}
            for layer in layers:
                g = (index.get("layer_metadata") or {}).get(layer, {}).get("generation")
                key = layer if g is None else f"{layer}-{g:08x}"
                if key in objects:
                    entry["objects"][layer] = objects[key]  # by layer name, as the volume names it
            out[timeline] = entry
        return out
    print(json.dumps({tid: tree(tid) for tid in sys.argv[2:]}))
    """
)

MAKE_TENANTS_SCRIPT = textwrap.dedent(
    """
    import contextlib, json, sys
    from pageserver_operator import cli
    for argv in json.loads(sys.argv[1]):
        try:
            with contextlib.redirect_stdout(sys.stderr):  # the tenant id it prints
                cli.main(argv)
        except SystemExit as e:
            if e.code not in (0, None):
                raise RuntimeError(f"pageserver-operator {' '.join(argv)}: exit status {e.code}") from None
    print("[]")
    """
)

REMOTE_KEYS_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import boto3
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
    objects = {}
    for tid in sys.argv[2:]:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[1], Prefix=f"tenants/{tid}/"):
            objects.update({obj["Key"]: obj["ETag"] for obj in page.get("Contents", [])})
    print(json.dumps(objects))
    """
)

LOCAL_TREE_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys
    def tree(tid):
        root = os.path.join(sys.argv[1], "tenants", tid)
        out = {"exists": os.path.isdir(root), "marker": os.path.exists(os.path.join(root, "attaching")),
               "timelines": {}}
        timelines = os.path.join(root, "timelines")
        for timeline in sorted(os.listdir(timelines)) if os.path.isdir(timelines) else []:
            files = {}
            for name in sorted(os.listdir(os.path.join(timelines, timeline))):
                path = os.path.join(timelines, timeline, name)
                if not os.path.isfile(path):
                    continue
                digest = hashlib.sha256()
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        digest.update(chunk)
                files[name] = [os.path.getsize(path), digest.hexdigest()]
            out["timelines"][timeline] = files
        return out
    print(json.dumps({tid: tree(tid) for tid in sys.argv[2:]}))
    """
)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The kind cluster, with the S3 server and the toolbox running and the bucket created."""
    try:
        k = kube.Kube.from_env()
        operator_image = os.environ["KIND_E2E_OPERATOR_IMAGE"]
        s3_image = os.environ["KIND_E2E_S3_IMAGE"]
    except KeyError as missing:
        pytest.fail(f"{missing} is not set: run this suite with hack/kind/run-e2e.sh", pytrace=False)
    version = json.loads(k.kubectl("version", "-o", "json").stdout)
    kube.log(f"cluster: server {version['serverVersion']['gitVersion']}; images {operator_image}, {s3_image}")
    for name in (S3_NAMESPACE,):
        if not k.exists("namespace", name):
            k.kubectl("create", "namespace", name)
    c = Cluster(k, operator_image, s3_image)
    k.apply(_s3_manifests(s3_image, operator_image))
    # The cluster DNS on the control plane too (kubeadm's CoreDNS tolerates its taint): a paused
    # worker must not take a DNS replica down with it (the operators resolve the S3 Service).
    k.kubectl(
        "patch", "deployment", "coredns", "-n", "kube-system", "--type", "merge", "-p",
        json.dumps({"spec": {"template": {"spec": {"nodeSelector": {CONTROL_PLANE_LABEL: ""}}}}}),
    )
    k.kubectl("rollout", "status", "-n", S3_NAMESPACE, "deployment/s3", "--timeout=180s", timeout=200)
    k.kubectl("rollout", "status", "-n", "kube-system", "deployment/coredns", "--timeout=180s", timeout=200)
    k.kubectl(
        "wait", "-n", S3_NAMESPACE, "--for=condition=Ready", f"pod/{TOOLBOX}", "--timeout=180s", timeout=200
    )
    create_bucket = textwrap.dedent(
        f"""
        import os, time, boto3, botocore.exceptions
        s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
        deadline = time.monotonic() + 120
        while True:
            try:
                if "{BUCKET}" not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
                    s3.create_bucket(Bucket="{BUCKET}")
                break
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        print("[]")
        """
    )
    k.python(S3_NAMESPACE, TOOLBOX, create_bucket)
    kube.log(f"S3 server ready at {S3_ENDPOINT}, bucket {BUCKET}")
    yield c


@pytest.fixture(scope="session")
def group(cluster: Cluster) -> Iterator[multi.Group]:
    """The three-pageserver release (multi.py), installed once for the modules that use it."""
    from kind import multi  # imports this module: imported once this module is complete

    g = multi.install(cluster)
    try:
        yield g
    finally:
        for node in sorted(g.paused):
            g.unpause(node)


@pytest.fixture(scope="session", autouse=True)
def _print_report() -> Iterator[None]:
    yield
    if REPORT:
        lines = "\n".join(f"  {key}: {value}" for key, value in REPORT.items())
        print(f"\n[kind-e2e] measurements:\n{lines}", flush=True)
        out = os.environ.get("KIND_E2E_REPORT")
        if out:
            with open(out, "w") as f:
                json.dump(REPORT, f, indent=2)


def compare_trees(local: dict[str, Any], remote: dict[str, Any]) -> int:
    """Assert that the volume holds exactly the remote layers, byte for byte (what a clean attach
    of the remote index gives); return the bytes compared."""
    assert local["exists"], "the tenant directory is missing on the volume"
    assert not local["marker"], "the attaching marker is still on the volume"
    assert sorted(local["timelines"]) == sorted(remote), "timelines on the volume != timelines in S3"
    compared = 0
    for timeline, entry in remote.items():
        files = dict(local["timelines"][timeline])
        metadata = files.pop("metadata", None)
        assert metadata is not None, f"{timeline}: no metadata file on the volume"
        assert metadata[1] == entry["index_metadata_sha256"], (
            f"{timeline}: metadata != the index's metadata_bytes"
        )
        assert sorted(files) == entry["index_layers"], (
            f"{timeline}: layer files on the volume != the index's layers"
        )
        for name, (size, digest) in files.items():
            assert entry["objects"][name] == [size, digest], f"{timeline}/{name}: size/sha256 differ from S3"
            compared += size
    return compared


def local_tree(
    k: kube.Kube, pod: str, tenant_id: str, workdir: str = "/data", namespace: str = OPERATOR_NAMESPACE
) -> dict[str, Any]:
    """The tenant's files on the operator's volume, with size and sha256 (through kubectl exec)."""
    return local_trees(k, pod, [tenant_id], workdir, namespace)[tenant_id]


def local_trees(
    k: kube.Kube, pod: str, tenant_ids: list[str], workdir: str = "/data", namespace: str = OPERATOR_NAMESPACE
) -> dict[str, dict[str, Any]]:
    """`local_tree` of each tenant, in one ``kubectl exec``."""
    result: dict[str, dict[str, Any]] = k.python(namespace, pod, LOCAL_TREE_SCRIPT, workdir, *tenant_ids)
    return result


def repo_path(*parts: str) -> Path:
    return kube.REPO.joinpath(*parts)
