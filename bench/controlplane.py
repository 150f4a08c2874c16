"""Control-plane benchmark: N small Tenants created at once against a real kube-apiserver.

``python -m bench --shapes '' --servers '' --controlplane 1000`` (or ``python -m bench.controlplane
1000``) starts etcd + kube-apiserver + SeaweedFS (`pageserver_operator.devenv.environment`),
installs the CRD, seeds N tenants in the bucket (1 timeline x 2 layers x 16 KiB each), starts
``pageserver-operator run`` as a subprocess, then creates all N ``Tenant`` objects from 16
threads and polls (one LIST per second) until every one is Ready.

Reported: seconds from the first create to all Ready; the operator's peak RSS (``VmHWM``) and
CPU seconds; API requests per tenant from the apiserver's ``apiserver_request_total``, by
verb and resource, with the harness's own requests (N creates, the LIST polls) subtracted.

Then the restart: the operator is stopped and started again on the same volume; measured are
the seconds until its metrics count N Active tenants, and the API requests it made from its
start until then plus a quiet period (`RESTART_SETTLE` seconds after the last of them, status
writes included). The harness makes no API request meanwhile. The measurement holds the
machine-wide heavy-job lock.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from bench import measure

SHAPE_LAYERS = 2
SHAPE_LAYER_SIZE = 16 << 10
READY_TIMEOUT = 900.0
#: after a restart, seconds without any new operator request before the count is taken
RESTART_SETTLE = 5.0
NAMESPACE = "bench"
GROUP, VERSION, PLURAL = "pageserver.dev", "v1alpha1", "tenants"
_REQ = re.compile(r"^apiserver_request_total\{([^}]*)\}\s+(\S+)$")


def _apiserver_requests(plane: Any) -> dict[tuple[str, str, str], float]:
    """(verb, resource, subresource) -> count, from the apiserver's /metrics."""
    ctx = ssl.create_default_context(cafile=str(plane.ca_file))
    req = urllib.request.Request(
        f"{plane.server_url}/metrics", headers={"Authorization": f"Bearer {plane.admin_token}"}
    )
    with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
        text = r.read().decode()
    out: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        m = _REQ.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
        out[key] = out.get(key, 0.0) + float(m.group(2))
    return out


def run(n: int, state_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    import kubernetes

    from pageserver_operator import testdata
    from pageserver_operator.devenv import environment, processes
    from pageserver_operator.formats import ids
    from pageserver_operator.remote import factory as remote_factory
    from pageserver_operator.remote import url as remote_url

    if state_dir.exists():
        import shutil

        shutil.rmtree(state_dir)
    log(f"control plane: starting etcd, kube-apiserver and SeaweedFS under {state_dir}")
    env = environment.start_environment(state_dir)
    op_proc: processes.ManagedProcess | None = None
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
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        store.create_bucket("bench")
        aws = store.env()
        os.environ.update({k: v for k, v in aws.items() if k != "AWS_ENDPOINT_URL"})
        url = f"s3://bench?endpoint={store.endpoint}&region={store.region}"
        storage = remote_factory.open_remote(remote_url.parse_remote_url(url, concurrency=16))
        shape = testdata.TenantShape(timelines=1, layers=SHAPE_LAYERS, layer_size=SHAPE_LAYER_SIZE, seed=7)
        tids = [f"{i:032x}" for i in range(1, n + 1)]
        log(f"control plane: seeding {n} tenants in the bucket")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda t: testdata.make_remote_tenant(storage, shape, ids.TenantId.parse(t)), tids))
        storage.close()

        workdir = state_dir / "volume"
        workdir.mkdir()
        metrics_port, liveness_port = processes.free_ports(2)
        op_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("PAGESERVER_OPERATOR_", "KUBECONFIG"))
        }
        op_env.update({k: v for k, v in aws.items() if k != "AWS_ENDPOINT_URL"})
        op_env["KUBECONFIG"] = str(plane.kubeconfig)
        argv = [
            sys.executable, "-m", "pageserver_operator.cli", "run", "--workdir", str(workdir), "--remote", url,
            "--namespace", NAMESPACE, "--metrics-port", str(metrics_port), "--liveness-port",
            str(liveness_port), "--kubeconfig", str(plane.kubeconfig),
        ]  # fmt: skip
        op_proc = processes.ManagedProcess.start("operator", argv, state_dir / "operator.log", env=op_env)
        processes.wait_until(
            op_proc, lambda: processes.http_ok(f"http://127.0.0.1:{liveness_port}/healthz"), 120, "live"
        )
        proc = psutil.Process(op_proc.pid)
        time.sleep(2)  # let kopf settle its initial LIST/WATCH

        co = kubernetes.client.CustomObjectsApi(api)
        with measure.heavy_lock():
            rss_idle = proc.memory_info().rss
            cpu0 = sum(proc.cpu_times()[:2])
            before = _apiserver_requests(plane)
            t0 = time.monotonic()

            def create(i_tid: tuple[int, str]) -> None:
                i, tid = i_tid
                body = {
                    "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant",
                    "metadata": {"name": f"t{i:04d}"}, "spec": {"tenantId": tid},
                }  # fmt: skip
                co.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)

            with ThreadPoolExecutor(16) as pool:
                list(pool.map(create, enumerate(tids)))
            created = time.monotonic() - t0
            log(f"control plane: {n} Tenants created in {created:.1f} s")
            polls = 0
            peak_rss = rss_idle
            samples: list[tuple[float, int, int]] = []
            stop = threading.Event()

            def sample_rss() -> None:
                nonlocal peak_rss
                while not stop.is_set():
                    try:
                        peak_rss = max(peak_rss, proc.memory_info().rss)
                    except psutil.Error:
                        return
                    stop.wait(0.2)

            sampler = threading.Thread(target=sample_rss, daemon=True)
            sampler.start()
            ready = 0
            while time.monotonic() - t0 < READY_TIMEOUT:
                items = co.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
                polls += 1
                ready = sum(
                    1
                    for t in items
                    if any(
                        c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (t.get("status") or {}).get("conditions") or []
                    )
                )
                samples.append((time.monotonic() - t0, ready, proc.memory_info().rss))
                if ready == n:
                    break
                time.sleep(1.0)
            elapsed = time.monotonic() - t0
            after = _apiserver_requests(plane)
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            stop.set()
            sampler.join()
            vmhwm = 0
            for line in Path(f"/proc/{op_proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    vmhwm = int(line.split()[1]) * 1024
            restart = _restart(op_proc, argv, plane, metrics_port, liveness_port, n, state_dir, op_env, log)
            op_proc = restart.pop("process")
        log(f"control plane: {ready}/{n} Ready after {elapsed:.1f} s; operator cpu {cpu:.1f} s")
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
        delta = {k: v for k, v in delta.items() if v > 0}
        ours = dict(delta)
        ours[("POST", PLURAL, "")] = ours.get(("POST", PLURAL, ""), 0) - n
        ours[("LIST", PLURAL, "")] = ours.get(("LIST", PLURAL, "")) or 0
        ours[("LIST", PLURAL, "")] -= polls
        ours = {k: v for k, v in ours.items() if v > 0}
        return {
            "tenants": n,
            "ready": ready,
            "seconds_to_all_ready": elapsed,
            "seconds_to_create": created,
            "operator_peak_rss_mib": max(peak_rss, vmhwm) / 2**20,
            "operator_rss_idle_mib": rss_idle / 2**20,
            "operator_cpu_seconds": cpu,
            "harness_requests": {"POST tenants": n, "LIST tenants": polls},
            "operator_requests": {" ".join(x for x in k if x): v for k, v in sorted(ours.items())},
            "operator_requests_total": sum(ours.values()),
            "requests_per_tenant": sum(ours.values()) / n,
            "samples": samples,
            "restart": restart,
        }
    finally:
        if op_proc is not None:
            op_proc.stop()
        env.stop()


def _restart(
    old: Any,
    argv: list[str],
    plane: Any,
    metrics_port: int,
    liveness_port: int,
    n: int,
    state_dir: Path,
    env: dict[str, str],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Stop the operator, start it again, count its API requests until every tenant is Active
    again and nothing more is requested for `RESTART_SETTLE` seconds."""
    from pageserver_operator.devenv import processes

    old.stop()
    before = _apiserver_requests(plane)
    t0 = time.monotonic()
    proc = processes.ManagedProcess.start("operator (restarted)", argv, state_dir / "operator-2.log", env=env)
    processes.wait_until(
        proc, lambda: processes.http_ok(f"http://127.0.0.1:{liveness_port}/healthz"), 120, "live"
    )
    active = 0.0
    while time.monotonic() - t0 < READY_TIMEOUT:
        active = _metric(metrics_port, "pageserver_operator_tenants", 'phase="Active"')
        if active >= n:
            break
        time.sleep(0.5)
    all_active = time.monotonic() - t0
    last, quiet_since = _apiserver_requests(plane), time.monotonic()
    while time.monotonic() - quiet_since < RESTART_SETTLE:
        time.sleep(1.0)
        now = _apiserver_requests(plane)
        if now != last:
            last, quiet_since = now, time.monotonic()
    delta = {k: last.get(k, 0) - before.get(k, 0) for k in set(last) | set(before)}
    ours = {" ".join(x for x in k if x): v for k, v in sorted(delta.items()) if v > 0}
    total = sum(ours.values())
    log(f"control plane: restart: {active:.0f}/{n} Active after {all_active:.1f} s; {total:.0f} API requests")
    return {
        "process": proc,
        "active": active,
        "seconds_to_all_active": all_active,
        "operator_requests": ours,
        "operator_requests_total": total,
        "requests_per_tenant": total / n,
    }


def _metric(port: int, name: str, labels: str) -> float:
    """A sample of the operator's /metrics (0 when absent or unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"### Control plane: {r['tenants']} Tenants created at once "
        f"(1 timeline x {SHAPE_LAYERS} layers x {SHAPE_LAYER_SIZE >> 10} KiB each)",
        "",
        "| measure | value |",
        "|---|---|",
        f"| Tenants Ready | {r['ready']} / {r['tenants']} |",
        f"| creating all Tenant objects (16 threads) | {r['seconds_to_create']:.1f} s |",
        f"| first create → all Ready | {r['seconds_to_all_ready']:.1f} s |",
        f"| operator peak RSS (idle before) | {r['operator_peak_rss_mib']:.0f} MiB ({r['operator_rss_idle_mib']:.0f} MiB) |",
        f"| operator CPU | {r['operator_cpu_seconds']:.1f} s |",
        f"| operator API requests | {r['operator_requests_total']:.0f} ({r['requests_per_tenant']:.2f} per tenant) |",
        "",
        "Operator API requests by verb and resource (apiserver_request_total, harness requests removed): "
        + ", ".join(f"{k} {v:.0f}" for k, v in r["operator_requests"].items()),
        "",
    ]
    rs = r.get("restart")
    if rs:
        lines += [
            f"Operator restart with {r['tenants']} Active tenants: {rs['active']:.0f} Active again after "
            f"{rs['seconds_to_all_active']:.1f} s; {rs['operator_requests_total']:.0f} API requests "
            f"({rs['requests_per_tenant']:.2f} per tenant): "
            + ", ".join(f"{k} {v:.0f}" for k, v in rs["operator_requests"].items()),
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    state = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/tmp/pageserver-operator-bench/controlplane")
    r = run(
        n, state, lambda m: print(f"[bench {time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True)
    )
    print(markdown(r))
    out = state.parent / "controlplane.json"
    out.write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
