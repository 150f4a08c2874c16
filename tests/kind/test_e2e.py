"""The operator on a real kind cluster: Helm install under PodSecurity ``restricted``, a real PV,
an in-cluster S3 server; attach with checksums, the operator pod force-killed mid-attach, delete
of a Tenant with a local-only layer, ``helm uninstall`` keeping CRDs and data.

The tests run in file order and share one Helm release (module fixture ``operator``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from kind import kube
from kind.conftest import (
    OPERATOR_NAMESPACE,
    OPERATOR_SELECTOR,
    RELEASE,
    REMOTE_URL,
    REPORT,
    Cluster,
    _credentials_secret,
    compare_trees,
    local_tree,
)

pytestmark = pytest.mark.kind

SAMPLE = yaml.safe_load(kube.EXAMPLE_TENANT.read_text())
SAMPLE_NAME: str = SAMPLE["metadata"]["name"]
SAMPLE_ID: str = SAMPLE["spec"]["tenantId"]
BIG_NAME = "big"
BIG_ID = "b16b16b16b16b16b16b16b16b16b1600"
# Large enough that the attach takes several seconds on 2 cores; override with KIND_E2E_BIG_TENANT.
BIG_SHAPE = os.environ.get(
    "KIND_E2E_BIG_TENANT", "--timelines 2 --layers 8 --layer-size 4MiB --sizes 192x8MiB"
).split()
READY_TIMEOUT = 600.0
KILL_AT = 0.4  # fraction of the attach's bytes done when the operator pod is killed


@dataclass
class Operator:
    """The Helm release of the operator in the restricted namespace."""

    cluster: Cluster
    namespace: str = OPERATOR_NAMESPACE
    pod_uids: list[str] = field(default_factory=list)

    @property
    def k(self) -> kube.Kube:
        return self.cluster.k

    def pod(self) -> dict[str, Any]:
        """The operator pod (exactly one, Ready)."""
        pods = [
            p
            for p in self.k.pods(self.namespace, OPERATOR_SELECTOR)
            if not p["metadata"].get("deletionTimestamp")
        ]
        assert len(pods) == 1, f"expected one operator pod, found {[p['metadata']['name'] for p in pods]}"
        return pods[0]

    def wait_pod_ready(self, not_uid: str | None = None, timeout: float = 300.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            for p in self.k.pods(self.namespace, OPERATOR_SELECTOR):
                if (
                    p["metadata"]["uid"] != not_uid
                    and kube.pod_ready(p)
                    and not p["metadata"].get("deletionTimestamp")
                ):
                    return p
            return None

        return kube.wait_for("the operator pod to be Ready", probe, timeout)

    def pod_name(self) -> str:
        name: str = self.pod()["metadata"]["name"]
        return name

    def tenant(self, name: str) -> dict[str, Any]:
        return self.k.get(kube.TENANTS, name, "-n", self.namespace)

    def wait_ready(self, name: str, timeout: float = READY_TIMEOUT) -> float:
        """``kubectl wait --for=condition=Ready``; seconds it took."""
        started = time.monotonic()
        self.k.kubectl(
            "wait",
            "-n",
            self.namespace,
            "--for=condition=Ready",
            f"{kube.TENANTS}/{name}",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 30,
        )
        return time.monotonic() - started

    def apply_tenant(self, name: str, tenant_id: str) -> None:
        doc = {
            "apiVersion": SAMPLE["apiVersion"],
            "kind": SAMPLE["kind"],
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"tenantId": tenant_id},
        }
        self.k.apply(yaml.safe_dump(doc))


def helm_values(cluster: Cluster) -> dict[str, Any]:
    """Values for charts/pageserver-operator: our image, S3 in the cluster, a slow sync (detach,
    not the periodic sync, must upload the local-only layer of the delete test)."""
    repository, _, tag = cluster.operator_image.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "remote": {"url": REMOTE_URL, "credentialsSecret": "s3-credentials"},
        "syncPeriod": 3600,
        "statusInterval": 0.5,
        "logFormat": "text",
    }


@pytest.fixture(scope="module")
def operator(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Operator]:
    k = cluster.k
    if not k.exists("namespace", OPERATOR_NAMESPACE):
        k.kubectl("create", "namespace", OPERATOR_NAMESPACE)
    k.kubectl(
        "label",
        "--overwrite",
        "namespace",
        OPERATOR_NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    k.apply(yaml.safe_dump(_credentials_secret(OPERATOR_NAMESPACE)))
    values = kube.REPO / "build" / "kind-e2e-values.yaml"
    values.parent.mkdir(parents=True, exist_ok=True)
    values.write_text(yaml.safe_dump(helm_values(cluster)))
    started = time.monotonic()
    k.helm(
        "install",
        RELEASE,
        str(kube.CHART),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--values",
        str(values),
        "--wait",
        "--timeout",
        "5m",
    )
    op = Operator(cluster)
    pod = op.wait_pod_ready()
    REPORT["helm install to operator Ready (s)"] = round(time.monotonic() - started, 1)
    kube.log(f"operator pod {pod['metadata']['name']} Ready on node {pod['spec'].get('nodeName')}")
    yield op


def test_operator_runs_under_restricted_pod_security(operator: Operator) -> None:
    k = operator.k
    labels = k.get("namespace", OPERATOR_NAMESPACE)["metadata"]["labels"]
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted"
    pod = operator.pod()
    assert kube.pod_ready(pod)
    # The namespace really enforces it: a pod that is not "restricted" is refused.
    refused = k.kubectl(
        "run",
        "not-restricted",
        "-n",
        OPERATOR_NAMESPACE,
        f"--image={operator.cluster.operator_image}",
        "--image-pull-policy=Never",
        "--restart=Never",
        "--dry-run=server",
        "--command",
        "--",
        "true",
        check=False,
    )
    assert refused.returncode != 0 and "violate" in refused.stderr and "PodSecurity" in refused.stderr, (
        refused.stderr
    )
    # The operator's volume is a PVC bound to a real PV (kind's local-path StorageClass).
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert len(claims) == 1, pod["spec"]["volumes"]
    pvc = k.get("pvc", claims[0], "-n", OPERATOR_NAMESPACE)
    assert pvc["status"]["phase"] == "Bound"
    REPORT["operator volume"] = (
        f"PVC {claims[0]} -> PV {pvc['spec']['volumeName']} ({pvc['spec'].get('storageClassName')})"
    )


def test_sample_tenant_attaches_with_identical_files(operator: Operator) -> None:
    cluster, k = operator.cluster, operator.k
    cluster.make_tenant(SAMPLE_ID)
    k.kubectl("apply", "-n", OPERATOR_NAMESPACE, "-f", str(kube.EXAMPLE_TENANT))
    took = operator.wait_ready(SAMPLE_NAME)
    status = operator.tenant(SAMPLE_NAME)["status"]
    assert status["phase"] == "Active"
    compared = compare_trees(local_tree(k, operator.pod_name(), SAMPLE_ID), cluster.remote_tree(SAMPLE_ID))
    REPORT["sample attach (s)"] = round(took, 1)
    REPORT["sample bytes compared"] = compared


def test_pod_killed_mid_attach_resumes_on_the_same_volume(operator: Operator) -> None:
    cluster, k = operator.cluster, operator.k
    cluster.make_tenant(BIG_ID, *BIG_SHAPE)
    before = operator.pod()
    old_name, old_uid = before["metadata"]["name"], before["metadata"]["uid"]
    old_claims = sorted(
        v["persistentVolumeClaim"]["claimName"]
        for v in before["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    )

    operator.apply_tenant(BIG_NAME, BIG_ID)
    applied = time.monotonic()

    def mid_attach() -> dict[str, Any] | None:
        status = operator.tenant(BIG_NAME).get("status") or {}
        progress = status.get("progress") or {}
        if status.get("phase") == "Active":
            raise AssertionError(
                f"the attach ended before the kill (in {time.monotonic() - applied:.1f} s): make the tenant bigger (KIND_E2E_BIG_TENANT)"
            )
        total, done = progress.get("bytesTotal") or 0, progress.get("bytesDone") or 0
        if status.get("phase") == "Attaching" and total > 0 and done >= total * KILL_AT:
            return progress
        return None

    progress = kube.wait_for(f"the attach to pass {KILL_AT:.0%}", mid_attach, timeout=300, interval=0.1)
    killed = time.monotonic()
    k.kubectl(
        "delete", "pod", "-n", OPERATOR_NAMESPACE, old_name, "--grace-period=0", "--force", "--wait=false"
    )
    fraction = progress["bytesDone"] / progress["bytesTotal"]
    kube.log(f"killed {old_name} at {progress['bytesDone']}/{progress['bytesTotal']} bytes ({fraction:.0%})")

    # The StatefulSet brings the pod back; its attach starts from the `attaching` marker (the
    # status history says "(resuming)") and ends Active. Observed from here every 0.1 s.
    resumed: dict[str, Any] = {}

    def resumed_and_active() -> bool:
        status = operator.tenant(BIG_NAME).get("status") or {}
        history = status.get("history") or []
        if "at" not in resumed and any("resuming" in (h.get("message") or "") for h in history):
            resumed["at"] = time.monotonic()
        return "at" in resumed and status.get("phase") == "Active"

    kube.wait_for("the resumed attach to end Active", resumed_and_active, timeout=READY_TIMEOUT, interval=0.1)
    active = time.monotonic()
    after = operator.wait_pod_ready(not_uid=old_uid)
    pod_ready = time.monotonic()
    new_claims = sorted(
        v["persistentVolumeClaim"]["claimName"]
        for v in after["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    )
    assert new_claims == old_claims, "the new operator pod does not use the same PVC"
    assert after["metadata"]["name"] == old_name, "the StatefulSet did not bring back the same pod"
    operator.wait_ready(BIG_NAME, timeout=60)  # kubectl wait --for=condition=Ready agrees

    status = operator.tenant(BIG_NAME)["status"]
    history = status.get("history") or []
    resuming = [h for h in history if "resuming" in (h.get("message") or "")]
    assert resuming, f"no sign that the attach resumed from the marker: {json.dumps(history)}"
    log_text = k.logs(OPERATOR_NAMESPACE, after["metadata"]["name"])
    resumed_in_log = [line for line in log_text.splitlines() if "resuming" in line]
    compared = compare_trees(local_tree(k, after["metadata"]["name"], BIG_ID), cluster.remote_tree(BIG_ID))
    REPORT["pod kill: attach progress when killed"] = (
        f"{progress['bytesDone']}/{progress['bytesTotal']} bytes ({fraction:.0%}), "
        f"layers {progress.get('layersDone')}/{progress.get('layersTotal')}, {killed - applied:.1f} s after apply"
    )
    REPORT["pod kill: kill -> resumed attach seen (operator restart) (s)"] = round(resumed["at"] - killed, 1)
    REPORT["pod kill: resumed attach seen -> Active (resume) (s)"] = round(active - resumed["at"], 1)
    REPORT["pod kill: kill -> Active (s)"] = round(active - killed, 1)
    REPORT["pod kill: kill -> new pod Ready (readiness probe) (s)"] = round(pod_ready - killed, 1)
    REPORT["pod kill: marker found"] = (
        f"status.history: {resuming[-1]['message']!r}; operator log lines: {len(resumed_in_log)}"
    )
    REPORT["pod kill: history"] = [f"{h.get('time')} {h.get('phase')} {h.get('reason')}" for h in history]
    REPORT["pod kill: bytes compared"] = compared


def test_delete_uploads_local_only_layer_before_removing(operator: Operator) -> None:
    cluster, k = operator.cluster, operator.k
    pod = operator.pod_name()
    status = operator.tenant(SAMPLE_NAME)["status"]
    assert status["phase"] == "Active"
    timeline = sorted(t["timelineId"] for t in status["timelines"])[0]
    layer = k.exec(
        OPERATOR_NAMESPACE,
        pod,
        [
            "pageserver-operator",
            "testdata",
            "flush-layer",
            "--workdir",
            "/data",
            SAMPLE_ID,
            timeline,
            "--size",
            "1MiB",
        ],
    ).strip()
    local = local_tree(k, pod, SAMPLE_ID)["timelines"][timeline]
    assert layer in local, f"flush-layer printed {layer!r}, not on the volume"
    remote_before = cluster.remote_tree(SAMPLE_ID)[timeline]
    uploaded_early = layer in remote_before["objects"]

    started = time.monotonic()
    k.kubectl("delete", kube.TENANTS, SAMPLE_NAME, "-n", OPERATOR_NAMESPACE, "--wait=false")
    k.kubectl(
        "wait",
        "-n",
        OPERATOR_NAMESPACE,
        "--for=delete",
        f"{kube.TENANTS}/{SAMPLE_NAME}",
        "--timeout=300s",
        timeout=330,
    )
    took = time.monotonic() - started
    remote = cluster.remote_tree(SAMPLE_ID)[timeline]
    assert remote["objects"].get(layer) == local[layer], "the local-only layer is not in S3 byte for byte"
    assert layer in remote["index_layers"], "the remote index does not name the uploaded layer"
    assert remote["index_metadata_sha256"] == local["metadata"][1], (
        "the remote index lacks the flushed metadata"
    )
    assert not local_tree(k, operator.pod_name(), SAMPLE_ID)["exists"], (
        "the tenant directory is still on the volume"
    )
    REPORT["delete with local-only layer: delete -> finalizer released (s)"] = round(took, 1)
    REPORT["delete with local-only layer: uploaded by"] = (
        "periodic sync (before delete)" if uploaded_early else "detach"
    )


def test_helm_uninstall_keeps_crds_and_data(operator: Operator) -> None:
    k = operator.k
    pod = operator.pod()
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    k.helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait", "--timeout", "3m")
    kube.wait_for(
        "the operator pod to go", lambda: not k.pods(OPERATOR_NAMESPACE, OPERATOR_SELECTOR), timeout=180
    )
    assert k.exists("crd", kube.CRD_NAME), "helm uninstall removed the CRD"
    assert k.exists(kube.TENANTS, BIG_NAME, "-n", OPERATOR_NAMESPACE), "the Tenant resource is gone"
    for claim in claims:
        pvc = k.get("pvc", claim, "-n", OPERATOR_NAMESPACE)
        assert pvc["status"]["phase"] == "Bound", f"PVC {claim} is {pvc['status']['phase']}"
    # The data is still on the volume: read it from a pod that mounts the same claim.
    reader = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "volume-reader", "namespace": OPERATOR_NAMESPACE},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "fsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "reader",
                    "image": operator.cluster.operator_image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", "import time\nwhile True: time.sleep(3600)"],
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
                }
            ],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claims[0]}}],
        },
    }
    k.apply(yaml.safe_dump(reader))
    k.kubectl(
        "wait",
        "-n",
        OPERATOR_NAMESPACE,
        "--for=condition=Ready",
        "pod/volume-reader",
        "--timeout=180s",
        timeout=200,
    )
    tree = local_tree(k, "volume-reader", BIG_ID)
    assert tree["exists"] and tree["timelines"], (
        "the big tenant's data is not on the volume after helm uninstall"
    )
    REPORT["helm uninstall: kept"] = (
        f"CRD {kube.CRD_NAME}, PVC {claims[0]}, {len(tree['timelines'])} timelines of {BIG_ID}"
    )
