"""What the control-plane benchmarks share (`bench.controlplane`, `bench.placement`).

- `Cluster` (`cluster`): etcd + kube-apiserver + SeaweedFS started under a state directory
  (`pageserver_operator.devenv.environment`), the CRDs of crds/ installed and Established, the
  namespace `NAMESPACE`, a bucket with N small tenants seeded (1 timeline x `SHAPE_LAYERS` x
  `SHAPE_LAYER_SIZE` each); it starts ``pageserver-operator run`` processes against them.
- `create_tenants`: the N ``Tenant`` objects, created from 16 threads.
- The API server's ``apiserver_request_total`` (`apiserver_requests`), and what others
  requested between two readings with the harness's own requests taken out (`requests_delta`).
- An operator's own figures without an API request: its ``/metrics`` (`metric`, `sample`), its
  peak RSS (``VmHWM``, `vmhwm`) and CPU seconds (`cpu_seconds`).

Crash behaviour: the context manager stops every process it started (the environment's own
atexit hook is the safety net); the state directory is removed at the start of the next run,
not at the end (its logs are what to read after a failure).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import ssl
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

SHAPE_LAYERS = 2
SHAPE_LAYER_SIZE = 16 << 10
NAMESPACE = "bench"
GROUP, VERSION, PLURAL = "pageserver.dev", "v1alpha1", "tenants"
CREATE_THREADS = 16
_REQ = re.compile(r"^apiserver_request_total\{([^}]*)\}\s+(\S+)$")

#: (verb, resource, subresource)
RequestKey = tuple[str, str, str]


def parse_request_total(text: str) -> dict[RequestKey, float]:
    """(verb, resource, subresource) -> count, from the text of the API server's /metrics."""
    out: dict[RequestKey, float] = {}
    for line in text.splitlines():
        m = _REQ.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
        out[key] = out.get(key, 0.0) + float(m.group(2))
    return out


def apiserver_requests(plane: Any) -> dict[RequestKey, float]:
    """`parse_request_total` of the running API server (itself one non-resource GET)."""
    ctx = ssl.create_default_context(cafile=str(plane.ca_file))
    req = urllib.request.Request(
        f"{plane.server_url}/metrics", headers={"Authorization": f"Bearer {plane.admin_token}"}
    )
    with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
        return parse_request_total(r.read().decode())


def requests_delta(
    before: Mapping[RequestKey, float],
    after: Mapping[RequestKey, float],
    harness: Mapping[RequestKey, float] | None = None,
) -> dict[RequestKey, float]:
    """What others requested between two readings: ``after - before - harness``, only the
    positive entries (a harness count larger than what was seen does not go negative)."""
    out: dict[RequestKey, float] = {}
    for k in set(after) | set(before) | set(harness or {}):
        v = after.get(k, 0.0) - before.get(k, 0.0) - (harness or {}).get(k, 0.0)
        if v > 0:
            out[k] = v
    return out


def by_label(delta: Mapping[RequestKey, float]) -> dict[str, float]:
    """``"PATCH tenants status" -> n``, sorted by the label."""
    return {" ".join(x for x in k if x) or "(non-resource)": v for k, v in sorted(delta.items())}


def sample(text: str, name: str, labels: str = "") -> float:
    """The sum of the samples of ``name`` whose labels contain ``labels`` in a Prometheus text
    exposition (0 when there is none)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric == name and labels in rest:
            total += float(value)
    return total


def metrics_url(port: int, names: Sequence[str] = ()) -> str:
    """The /metrics of an operator; with ``names`` only those metrics (prometheus_client's
    ``name[]`` filter: the other collectors do not run, so a frequent scrape of a manager with
    thousands of tenants, whose per-tenant series are most of the text, stays cheap)."""
    query = "&".join(f"name[]={n}" for n in names)
    return f"http://127.0.0.1:{port}/metrics" + (f"?{query}" if query else "")


def metrics_text(port: int, names: Sequence[str] = ()) -> str:
    """An operator's /metrics, or only ``names`` ("" when unreachable)."""
    try:
        with urllib.request.urlopen(metrics_url(port, names), timeout=10) as r:
            return str(r.read().decode())
    except OSError:
        return ""


def metric(port: int, name: str, labels: str = "") -> float:
    return sample(metrics_text(port), name, labels)


def vmhwm(pid: int) -> int:
    """Peak resident set of a process (``VmHWM``) in bytes; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


def tenant_body(i: int, tid: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant",
        "metadata": {"name": f"t{i:04d}"}, "spec": {"tenantId": tid},
    }  # fmt: skip


def create_tenants(co: Any, tids: Sequence[str]) -> float:
    """Create a Tenant per tenant id (`CREATE_THREADS` at once); returns the seconds it took."""
    t0 = time.monotonic()

    def create(i_tid: tuple[int, str]) -> None:
        co.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, tenant_body(*i_tid))

    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        list(pool.map(create, enumerate(tids)))
    return time.monotonic() - t0


@dataclass
class Cluster:
    state_dir: Path
    env: Any  # environment.Environment
    api: Any  # kubernetes.client.ApiClient
    url: str  # the bucket's remote URL
    op_env: dict[str, str]  # the environment of an operator process
    tids: list[str]

    @property
    def plane(self) -> Any:
        return self.env.control_plane

    def co(self) -> Any:
        import kubernetes

        return kubernetes.client.CustomObjectsApi(self.api)

    def operator_argv(
        self, workdir: Path, metrics_port: int, liveness_port: int, extra: Sequence[str] = ()
    ) -> list[str]:
        return [
            sys.executable, "-m", "pageserver_operator.cli", "run", "--workdir", str(workdir), "--remote",
            self.url, "--namespace", NAMESPACE, "--metrics-port", str(metrics_port), "--liveness-port",
            str(liveness_port), "--kubeconfig", str(self.plane.kubeconfig), *extra,
        ]  # fmt: skip

    def start_operator(self, name: str, argv: list[str], log_path: Path, liveness_port: int) -> Any:
        """Start ``argv`` and wait until it answers on its liveness port."""
        from pageserver_operator.devenv import processes

        proc = processes.ManagedProcess.start(name, argv, log_path, env=self.op_env)
        processes.wait_until(
            proc, lambda: processes.http_ok(f"http://127.0.0.1:{liveness_port}/healthz"), 120, "live"
        )
        return proc


@contextlib.contextmanager
def cluster(n: int, state_dir: Path, log: Callable[[str], None]) -> Iterator[Cluster]:
    """A control plane and a bucket with ``n`` seeded tenants (see the module docstring)."""
    import kubernetes

    from pageserver_operator import testdata
    from pageserver_operator.devenv import environment
    from pageserver_operator.formats import ids
    from pageserver_operator.remote import factory as remote_factory
    from pageserver_operator.remote import url as remote_url

    if state_dir.exists():
        shutil.rmtree(state_dir)
    log(f"control plane: starting etcd, kube-apiserver and SeaweedFS under {state_dir}")
    env = environment.start_environment(state_dir)
    try:
        plane, store = env.control_plane, env.object_store
        assert store is not None
        kubernetes.config.load_kube_config(config_file=str(plane.kubeconfig))
        api = kubernetes.client.ApiClient()
        crds = Path(__file__).resolve().parent.parent / "crds"
        for f in sorted(crds.glob("*.yaml")):
            kubernetes.utils.create_from_yaml(api, str(f))
        ext = kubernetes.client.ApiextensionsV1Api(api)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            crd = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
            if any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
                break
            time.sleep(0.2)
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
        store.create_bucket("bench")
        aws = {k: v for k, v in store.env().items() if k != "AWS_ENDPOINT_URL"}
        os.environ.update(aws)
        url = f"s3://bench?endpoint={store.endpoint}&region={store.region}"
        storage = remote_factory.open_remote(remote_url.parse_remote_url(url, concurrency=16))
        shape = testdata.TenantShape(timelines=1, layers=SHAPE_LAYERS, layer_size=SHAPE_LAYER_SIZE, seed=7)
        tids = [f"{i:032x}" for i in range(1, n + 1)]
        log(f"control plane: seeding {n} tenants in the bucket")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda t: testdata.make_remote_tenant(storage, shape, ids.TenantId.parse(t)), tids))
        storage.close()
        op_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("PAGESERVER_OPERATOR_", "KUBECONFIG"))
        }
        op_env.update(aws)
        op_env["KUBECONFIG"] = str(plane.kubeconfig)
        yield Cluster(state_dir, env, api, url, op_env, tids)
    finally:
        env.stop()
