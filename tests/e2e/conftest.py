"""Fixtures of the operator end-to-end tests: the real control plane, the real S3 server, and
``pageserver-operator run`` as a separate process.

- `crd_installed` (session): ``kubectl apply -f crds/`` and wait until the CRD is Established.
- `namespace` / `k`: a fresh namespace per test and ``kubectl`` bound to it, so tests never see
  each other's Tenants (namespaces are never deleted: without a controller-manager they would
  stay Terminating).
- `remote`: a fresh bucket on the S3 server, its ``s3://`` URL, and a storage client for seeding;
  the AWS credentials are in this process's environment (the operator gets them in its own).
- `operator`: a factory that starts ``pageserver-operator run`` in its own process group
  (free ports for metrics and liveness, ``--namespace`` of the test, a short sync period, one
  volume per test shared by every start so a restart sees what the previous process left), and
  always kills every process it started at teardown; when the test failed, the operators' logs
  are printed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from e2e import helpers
from helpers import tree
from pageserver_operator import testdata
from pageserver_operator.devenv import controlplane, objectstore, processes
from pageserver_operator.formats import ids, index_part
from pageserver_operator.remote import base
from pageserver_operator.remote import factory as remote_factory
from pageserver_operator.remote import url as remote_url

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
CRD_NAME = helpers.RESOURCE
OPERATOR_START_TIMEOUT = 60.0
LOG_TAIL_LINES = 200


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember each phase's report on the item, so fixtures know at teardown whether the test failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"rep_{when}", None), "failed", False) for when in ("setup", "call")
    )


# ---- the cluster ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kube(control_plane: controlplane.ControlPlane, kubectl: Path) -> helpers.Kubectl:
    """Cluster-scoped kubectl with the admin kubeconfig."""
    return helpers.Kubectl(kubectl, control_plane.kubeconfig)


@pytest.fixture(scope="session")
def crd_installed(kube: helpers.Kubectl) -> None:
    """The committed CRD, applied and Established."""
    kube.run("apply", "-f", str(CRDS))
    wait_established(kube)


def wait_established(kube: helpers.Kubectl, timeout: float = 60.0) -> dict[str, Any]:
    """Until the Tenant CRD is Established; returns the CRD as the API server stores it.

    Polls rather than ``kubectl wait``, which fails outright while a just-created CRD has no
    ``status.conditions`` yet."""

    def established() -> dict[str, Any] | None:
        crd: dict[str, Any] = kube.get_json("crd", CRD_NAME)
        conditions = (crd.get("status") or {}).get("conditions") or []
        ok = any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)
        return crd if ok else None

    return helpers.wait_for(established, timeout, f"the CRD {CRD_NAME} to be Established")


@pytest.fixture
def namespace(kube: helpers.Kubectl) -> str:
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    kube.run("create", "namespace", name)
    return name


@pytest.fixture
def k(kube: helpers.Kubectl, namespace: str, crd_installed: None) -> helpers.Kubectl:
    """kubectl in the test's namespace (the CRD installed)."""
    return kube.in_namespace(namespace)


# ---- remote storage -------------------------------------------------------------------------------


@dataclass
class Remote:
    """A fresh bucket and how the operator and the test reach it."""

    server: objectstore.ObjectStore
    bucket: str
    url: str
    _opened: list[base.RemoteStorage] = field(default_factory=list)

    def open(self) -> base.RemoteStorage:
        """A storage client of the test itself (closed at teardown)."""
        storage = remote_factory.open_remote(remote_url.parse_remote_url(self.url, concurrency=16))
        self._opened.append(storage)
        return storage

    def objects(self) -> dict[str, tuple[int, str]]:
        return helpers.bucket_objects(self.server.client(), self.bucket)

    def get(self, key: str) -> bytes:
        body = self.server.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return bytes(body)

    def put(self, key: str, data: bytes) -> None:
        self.server.client().put_object(Bucket=self.bucket, Key=key, Body=data)

    def seed(self, shape: testdata.TenantShape, tenant_id: str) -> testdata.GeneratedTenant:
        """Write a tenant to the bucket as a pageserver would have uploaded it."""
        return testdata.make_remote_tenant(self.open(), shape, ids.TenantId.parse(tenant_id))

    def newest_index(self, tenant_id: str | ids.TenantId, timeline_id: str | ids.TimelineId) -> index_part.IndexPart:
        """The timeline's newest index (the operator writes one per generation)."""
        return tree.newest_index(self.open(), ids.TenantId.parse(str(tenant_id)), ids.TimelineId.parse(str(timeline_id)))

    def newest_index_key(self, tenant_id: str | ids.TenantId, timeline_id: str | ids.TimelineId) -> str:
        return tree.newest_index_key(self.open(), ids.TenantId.parse(str(tenant_id)), ids.TimelineId.parse(str(timeline_id)))

    def layer_key(self, tenant_id: str | ids.TenantId, timeline_id: str | ids.TimelineId, name: object) -> str:
        """The object of layer ``name`` as the newest index names it (with its generation)."""
        return tree.layer_key(self.open(), ids.TenantId.parse(str(tenant_id)), ids.TimelineId.parse(str(timeline_id)), name)

    def capture(self, tenant_id: str) -> tree.RemoteTenant:
        """Every index and the hash of every layer of the tenant, as the bucket holds them now."""
        return tree.RemoteTenant.capture(self.open(), ids.TenantId.parse(tenant_id))

    def close(self) -> None:
        for storage in self._opened:
            storage.close()


def _aws_env(server: objectstore.ObjectStore) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_REGION": server.region,
    }


@pytest.fixture
def remote(
    s3_server: objectstore.ObjectStore, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Remote]:
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    for var, value in _aws_env(s3_server).items():
        monkeypatch.setenv(var, value)
    url = f"s3://{s3_bucket}?endpoint={s3_server.endpoint}&region={s3_server.region}"
    r = Remote(s3_server, s3_bucket, url)
    try:
        yield r
    finally:
        r.close()


# ---- the operator ---------------------------------------------------------------------------------


@dataclass
class OperatorProcess:
    """One ``pageserver-operator run`` process."""

    process: processes.ManagedProcess
    workdir: Path
    metrics_port: int
    liveness_port: int
    argv: list[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def running(self) -> bool:
        return self.process.running()

    def wait_live(self, timeout: float = OPERATOR_START_TIMEOUT) -> None:
        """Until kopf's liveness endpoint answers 200 (fails at once if the process exits)."""
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        try:
            processes.wait_until(self.process, lambda: helpers.http_status(url) == 200, timeout, "live", 0.1)
        except processes.StartError as e:
            pytest.fail(str(e), pytrace=False)

    def metrics(self) -> str:
        return helpers.scrape(self.metrics_port)

    def metric(self, name: str, **labels: str) -> float | None:
        return helpers.metric_value(self.metrics(), name, **labels)

    def peak_rss(self) -> int:
        return helpers.peak_rss_bytes(self.pid)

    def kill(self) -> None:
        """SIGKILL the whole process group (a pod killed without notice), and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.stop(timeout=10)

    def stop(self) -> None:
        self.process.stop(timeout=10)


class OperatorFactory:
    """Starts operators for one test; every process is killed at teardown."""

    def __init__(self, tmp_path: Path, kubeconfig: Path, namespace: str, remote: Remote) -> None:
        self.tmp_path = tmp_path
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.remote = remote
        self.workdir = tmp_path / "volume"
        self.started: list[OperatorProcess] = []

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PAGESERVER_OPERATOR_", "AWS_", "KUBECONFIG"))
        }
        env.update(_aws_env(self.remote.server))
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(
        self,
        *,
        sync_period: float = 1.0,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        wait_live: bool = True,
        remote_url: str | None = None,
    ) -> OperatorProcess:
        """Start an operator on the test's volume, namespace and bucket (or ``remote_url``)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        metrics_port, liveness_port = processes.free_ports(2)
        n = len(self.started) + 1
        argv = [
            sys.executable, "-m", "pageserver_operator.cli", "run",
            "--workdir", str(self.workdir),
            "--remote", remote_url or self.remote.url,
            "--namespace", self.namespace,
            # the test's own placement group: Leases in its namespace (Pageservers are labelled with it)
            "--lease-namespace", self.namespace,
            "--sync-period", str(sync_period),
            "--metrics-port", str(metrics_port),
            "--liveness-port", str(liveness_port),
            "--kubeconfig", str(self.kubeconfig),
            *extra_args,
        ]  # fmt: skip
        full_env = self.env()
        full_env.update(env or {})
        process = processes.ManagedProcess.start(
            f"operator #{n}", argv, self.tmp_path / f"operator-{n}.log", env=full_env, cwd=self.tmp_path
        )
        op = OperatorProcess(process, self.workdir, metrics_port, liveness_port, argv)
        self.started.append(op)
        if wait_live:
            op.wait_live()
        return op

    def close(self, failed: bool) -> None:
        for op in self.started:
            op.kill()
        if failed:
            for n, op in enumerate(self.started, 1):
                lines = op.log().splitlines()
                print(
                    f"\n----- operator #{n} log ({op.log_path}), last {LOG_TAIL_LINES} of {len(lines)} lines -----"
                )
                print("\n".join(lines[-LOG_TAIL_LINES:]))


@pytest.fixture
def operator(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    control_plane: controlplane.ControlPlane,
    namespace: str,
    crd_installed: None,
    remote: Remote,
) -> Iterator[OperatorFactory]:
    factory = OperatorFactory(tmp_path, control_plane.kubeconfig, namespace, remote)
    started = time.monotonic()
    try:
        yield factory
    finally:
        factory.close(_failed(request))
        if _failed(request):
            print(f"(test ran {time.monotonic() - started:.1f} s; volume {factory.workdir})")


def new_tenant_id() -> str:
    """A random tenant id (32 lowercase hex): every test has its own tenants, even in one bucket."""
    return uuid.uuid4().hex
