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
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from bench import cluster, measure
from bench.cluster import NAMESPACE, PLURAL, SHAPE_LAYER_SIZE, SHAPE_LAYERS

READY_TIMEOUT = 900.0
#: after a restart, seconds without any new request other than the periodic ones (PERIODIC) before the count is taken
RESTART_SETTLE = 5.0


def run(n: int, state_dir: Path, log: Callable[[str], None], extra: Sequence[str] = ()) -> dict[str, Any]:
    from pageserver_operator.devenv import processes

    op_proc: processes.ManagedProcess | None = None
    with cluster.cluster(n, state_dir, log) as c:
        try:
            plane = c.plane
            workdir = state_dir / "volume"
            workdir.mkdir()
            metrics_port, liveness_port = processes.free_ports(2)
            argv = c.operator_argv(workdir, metrics_port, liveness_port, extra)
            op_proc = c.start_operator("operator", argv, state_dir / "operator.log", liveness_port)
            proc = psutil.Process(op_proc.pid)
            time.sleep(2)  # let kopf settle its initial LIST/WATCH

            co = c.co()
            with measure.heavy_lock():
                rss_idle = proc.memory_info().rss
                cpu0 = cluster.cpu_seconds(op_proc.pid)
                before = cluster.apiserver_requests(plane)
                t0 = time.monotonic()
                created = cluster.create_tenants(co, c.tids)
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
                    items = co.list_namespaced_custom_object(
                        cluster.GROUP, cluster.VERSION, NAMESPACE, PLURAL
                    )["items"]
                    polls += 1
                    ready = sum(
                        1
                        for t in items
                        if any(
                            cond.get("type") == "Ready" and cond.get("status") == "True"
                            for cond in (t.get("status") or {}).get("conditions") or []
                        )
                    )
                    samples.append((time.monotonic() - t0, ready, proc.memory_info().rss))
                    if ready == n:
                        break
                    time.sleep(1.0)
                elapsed = time.monotonic() - t0
                after = cluster.apiserver_requests(plane)
                cpu = cluster.cpu_seconds(op_proc.pid) - cpu0
                stop.set()
                sampler.join()
                vmhwm = cluster.vmhwm(op_proc.pid)
                restart = _restart(c, op_proc, argv, metrics_port, liveness_port, n, log)
                op_proc = restart.pop("process")
        finally:
            if op_proc is not None:
                op_proc.stop()
    log(f"control plane: {ready}/{n} Ready after {elapsed:.1f} s; operator cpu {cpu:.1f} s")
    harness = {("POST", PLURAL, ""): float(n), ("LIST", PLURAL, ""): float(polls)}
    ours = cluster.by_label(cluster.requests_delta(before, after, harness))
    return {
        "tenants": n,
        "ready": ready,
        "seconds_to_all_ready": elapsed,
        "seconds_to_create": created,
        "operator_peak_rss_mib": max(peak_rss, vmhwm) / 2**20,
        "operator_rss_idle_mib": rss_idle / 2**20,
        "operator_cpu_seconds": cpu,
        "harness_requests": {"POST tenants": n, "LIST tenants": polls},
        "operator_requests": ours,
        "operator_requests_total": sum(ours.values()),
        "requests_per_tenant": sum(ours.values()) / n,
        "samples": samples,
        "restart": restart,
    }


def _restart(
    c: cluster.Cluster,
    old: Any,
    argv: list[str],
    metrics_port: int,
    liveness_port: int,
    n: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Stop the operator, start it again, count its API requests until every tenant is Active
    again and nothing more is requested for `RESTART_SETTLE` seconds."""
    old.stop()
    before = cluster.apiserver_requests(c.plane)
    t0 = time.monotonic()
    proc = c.start_operator("operator (restarted)", argv, c.state_dir / "operator-2.log", liveness_port)
    active = 0.0
    while time.monotonic() - t0 < READY_TIMEOUT:
        active = cluster.metric(metrics_port, "pageserver_operator_tenants", 'phase="Active"')
        if active >= n:
            break
        time.sleep(0.5)
    all_active = time.monotonic() - t0
    last, quiet_since = cluster.apiserver_requests(c.plane), time.monotonic()
    while time.monotonic() - quiet_since < RESTART_SETTLE:
        time.sleep(1.0)
        now = cluster.apiserver_requests(c.plane)
        if _per_tenant(now) != _per_tenant(last):
            quiet_since = time.monotonic()
        last = now
    settled = time.monotonic() - t0
    ours = cluster.by_label(cluster.requests_delta(before, last))
    total = sum(ours.values())
    periodic = sum(v for k, v in ours.items() if _periodic(k))
    log(f"control plane: restart: {active:.0f}/{n} Active after {all_active:.1f} s; {total:.0f} API requests "
        f"({periodic:.0f} of them Lease renewals in {settled:.0f} s)")
    return {
        "process": proc,
        "active": active,
        "seconds_to_all_active": all_active,
        "seconds_measured": settled,
        "operator_requests": ours,
        "operator_requests_total": total,
        "lease_requests": periodic,
        "requests_per_tenant": (total - periodic) / n,
        "operator_peak_rss_mib": cluster.vmhwm(proc.pid) / 2**20,
    }


#: resources requested every few seconds whatever the tenants do: Leases (the heartbeat, the
#: placement leader's and the API server's own renewals) and Pageservers (the leader's pass, a
#: manager's report); reported apart, not per tenant
PERIODIC = ("leases", "pageservers")


def _periodic(label: str) -> bool:
    return any(f" {r}" in label for r in PERIODIC)


def _per_tenant(requests: dict[cluster.RequestKey, float]) -> dict[cluster.RequestKey, float]:
    return {k: v for k, v in requests.items() if k[1] not in PERIODIC}


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
            f"{rs['seconds_to_all_active']:.1f} s, peak RSS {rs.get('operator_peak_rss_mib', 0):.0f} MiB; "
            f"{rs['operator_requests_total']:.0f} API requests "
            f"({rs['requests_per_tenant']:.2f} per tenant without the {rs.get('lease_requests', 0):.0f} periodic Lease and Pageserver requests "
            f"of the {rs.get('seconds_measured', 0):.0f} s measured): "
            + ", ".join(f"{k} {v:.0f}" for k, v in rs["operator_requests"].items()),
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    """``python -m bench.controlplane [N [STATE_DIR]] [-- OPERATOR_ARGS...]`` (e.g. ``-- --max-concurrent-attaches 8``)."""
    args, extra = (sys.argv[1:], []) if "--" not in sys.argv else (
        sys.argv[1:sys.argv.index("--")], sys.argv[sys.argv.index("--") + 1:])
    n = int(args[0]) if args else 1000
    state = Path(args[1]) if len(args) > 1 else Path("/tmp/pageserver-operator-bench/controlplane")
    r = run(
        n, state, lambda m: print(f"[bench {time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True), extra
    )
    r["operator_args"] = extra
    print(markdown(r))
    out = state.parent / "controlplane.json"
    out.write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
