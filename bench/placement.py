"""Placement at scale (issue 17, DESIGN §8.3): N small Tenants over M pageserver managers.

``python -m bench --shapes '' --servers '' --controlplane N --managers M`` (or ``python -m
bench.placement N M``) starts the environment of `bench.cluster` (N tenants seeded), then M
``pageserver-operator run`` processes, each with its own volume, ``--pageserver ps-<i>`` and the
same ``--lease-namespace``: one placement group. When one of them leads placement (its
``pageserver_operator_placement_leader`` gauge), the harness creates the N Tenants from 16
threads and, once a second, reads three metrics of every manager's ``/metrics`` (no API request) until their
``pageserver_operator_tenants{phase="Active"}`` add up to N.

Reported:
- seconds from the first create to all Active, and how fast the leader placed (its
  ``pageserver_operator_placements_total{kind="placed"}``, first placements only, from the
  first to the N-th; failovers, ``kind="failover"``, are counted apart);
- API requests per tenant (``apiserver_request_total``, by verb and resource) from the first
  create to all Active, with the harness's N creates taken out; then the steady state: requests
  per second over `STEADY_SECONDS` with every tenant Active (heartbeats, Pageserver status,
  the leader's passes), the harness silent meanwhile;
- peak RSS (``VmHWM``) of the leader (the placement Lease's ``holderIdentity``, read after the
  measurement) and the largest and median of the other managers; CPU seconds of every manager
  and of kube-apiserver, etcd and SeaweedFS over the run;
- the spread: Tenants per manager by ``status.placement.attached`` (one LIST at the end, which
  also checks that every Tenant is Active where it is placed), failovers (none expected).

The measurement holds the machine-wide heavy-job lock. After `timeout` seconds without all
Active the run stops there and reports what it reached (``complete: false``).
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench import cluster, measure
from bench.cluster import NAMESPACE, PLURAL, SHAPE_LAYER_SIZE, SHAPE_LAYERS

LEASE = "pageserver-operator-placement"
TIMEOUT = 1200.0
STEADY_SECONDS = 60.0
SAMPLE_PERIOD = 1.0
#: the metrics read from every manager once a `SAMPLE_PERIOD` (only these: see `cluster.metrics_url`)
SCRAPED = (
    "pageserver_operator_tenants",
    "pageserver_operator_placements_total",
    "pageserver_operator_placement_leader",
)
#: the processes of the environment whose CPU is reported
SERVERS = ("kube-apiserver", "etcd", "weed")


@dataclass
class Manager:
    name: str
    proc: Any  # processes.ManagedProcess
    metrics_port: int
    workdir: Path


@dataclass
class Sample:
    """One reading of every manager's /metrics, ``t`` seconds after the first create."""

    t: float
    active: dict[str, float]
    placed: float  # first placements (kind placed) by all managers (in practice: by the leader)
    failovers: float
    leaders: list[str]


# ---- pure helpers (tests/bench/test_placement_helpers.py) ---------------------------------------


def placement_rate(samples: Sequence[tuple[float, float]], n: int) -> dict[str, float | None]:
    """From (seconds, tenants placed so far) readings: when the first and the last (``n``-th)
    placement were seen, and tenants placed per second in between (None while unknown)."""
    first = next((t for t, p in samples if p > 0), None)
    last = next((t for t, p in samples if p >= n), None)
    placed = max((p for _, p in samples), default=0.0)
    rate = None
    if first is not None:
        end = last if last is not None else samples[-1][0]
        if end > first:
            rate = (placed if last is None else n) / (end - first)
    return {"first_placed_s": first, "all_placed_s": last, "placed": placed, "tenants_per_second": rate}


def spread(attached: Sequence[str | None], names: Sequence[str]) -> dict[str, Any]:
    """Tenants per pageserver (every name counted, even with none), and the unplaced ones."""
    counts = {n: 0 for n in names}
    unplaced = 0
    for a in attached:
        if a is None:
            unplaced += 1
        else:
            counts[a] = counts.get(a, 0) + 1
    values = list(counts.values()) or [0]
    return {
        "per_pageserver": counts,
        "min": min(values),
        "max": max(values),
        "median": statistics.median(values),
        "unplaced": unplaced,
    }


def rss_summary(peaks: Mapping[str, int], leader: str | None) -> dict[str, Any]:
    """Peak RSS (bytes) by manager -> the leader's, and the largest and median of the others, in MiB."""
    others = [v / 2**20 for k, v in peaks.items() if k != leader]
    mine = peaks.get(leader) if leader is not None else None
    return {
        "leader": leader,
        "leader_mib": mine / 2**20 if mine is not None else None,
        "others_max_mib": max(others) if others else None,
        "others_median_mib": statistics.median(others) if others else None,
    }


def capacity_for(n: int, m: int) -> int:
    """The managers' ``--capacity`` for ``n`` tenants over ``m``: sized for an even share.

    The load score is the larger of the volume's used fraction and tenants / capacity. Here every
    volume is a directory of one filesystem, so the disk term is the same for all (e.g. 0.19),
    and with the default capacity (1000) the first 190 tenants of a pageserver would tie on it
    and all go to the first name: with ``ceil(n / m)`` the tenant term takes over early."""
    return max(1, -(-n // m))


def per_second(delta: Mapping[str, float], seconds: float) -> dict[str, float]:
    return {k: v / seconds for k, v in delta.items()} if seconds > 0 else {}


# ---- the run ---------------------------------------------------------------------------------------


def _scrape(managers: Sequence[Manager], t: float) -> Sample:
    active: dict[str, float] = {}
    placed = failovers = 0.0
    leaders = []
    for m in managers:
        text = cluster.metrics_text(m.metrics_port, SCRAPED)
        active[m.name] = cluster.sample(text, "pageserver_operator_tenants", 'phase="Active"')
        placed += cluster.sample(text, "pageserver_operator_placements_total", 'kind="placed"')
        failovers += cluster.sample(text, "pageserver_operator_placements_total", 'kind="failover"')
        if cluster.sample(text, "pageserver_operator_placement_leader") >= 1:
            leaders.append(m.name)
    return Sample(t, active, placed, failovers, leaders)


def _servers() -> dict[str, int]:
    """pid of each of `SERVERS` among this process's descendants."""
    out: dict[str, int] = {}
    for p in psutil.Process().children(recursive=True):
        try:
            name = p.name()
        except psutil.Error:
            continue
        for s in SERVERS:
            if name.startswith(s) and s not in out:
                out[s] = p.pid
    return out


def _start_managers(c: cluster.Cluster, m: int, extra: Sequence[str]) -> list[Manager]:
    from pageserver_operator.devenv import processes

    ports = processes.free_ports(2 * m)
    managers = []
    for i in range(m):
        name = f"ps-{i}"
        workdir = c.state_dir / name
        workdir.mkdir()
        metrics_port, liveness_port = ports[2 * i], ports[2 * i + 1]
        argv = c.operator_argv(
            workdir, metrics_port, liveness_port,
            ["--pageserver", name, "--lease-namespace", NAMESPACE, *extra],
        )  # fmt: skip
        proc = c.start_operator(name, argv, c.state_dir / f"{name}.log", liveness_port)
        managers.append(Manager(name, proc, metrics_port, workdir))
    return managers


def run(
    n: int,
    m: int,
    state_dir: Path,
    log: Callable[[str], None],
    *,
    timeout: float = TIMEOUT,
    steady_seconds: float = STEADY_SECONDS,
    capacity: int | None = None,
) -> dict[str, Any]:
    """``capacity``: each manager's ``--capacity`` (default ``ceil(n / m)``: see `capacity_for`)."""
    cap = capacity or capacity_for(n, m)
    with cluster.cluster(n, state_dir, log) as c:
        log(f"placement: starting {m} pageserver managers (--capacity {cap})")
        managers = _start_managers(c, m, ["--capacity", str(cap)])
        try:
            return {"capacity": cap, **_measure(c, managers, n, log, timeout, steady_seconds)}
        finally:
            with ThreadPoolExecutor(len(managers) or 1) as pool:  # each may take its 10 s to stop
                list(pool.map(lambda mg: mg.proc.stop(), managers))


def _measure(
    c: cluster.Cluster,
    managers: list[Manager],
    n: int,
    log: Callable[[str], None],
    timeout: float,
    steady_seconds: float,
) -> dict[str, Any]:
    co = c.co()
    deadline = time.monotonic() + 120
    while not _scrape(managers, 0.0).leaders:
        if time.monotonic() > deadline:
            raise RuntimeError("no manager leads placement after 120 s")
        time.sleep(0.5)
    time.sleep(2)  # let kopf settle its initial LIST/WATCH
    servers = _servers()
    pids = {mg.name: mg.proc.pid for mg in managers} | servers
    log("placement: waiting for the heavy-job lock")
    with measure.heavy_lock() as waited:
        log(f"placement: the lock after {waited:.0f} s; creating {n} Tenants")
        rss_idle = {mg.name: psutil.Process(mg.proc.pid).memory_info().rss for mg in managers}
        cpu0 = {k: cluster.cpu_seconds(p) for k, p in pids.items()}
        before = cluster.apiserver_requests(c.plane)
        t0 = time.monotonic()
        creating: dict[str, Any] = {}

        def create() -> None:
            try:
                creating["seconds"] = cluster.create_tenants(co, c.tids)
            except Exception as e:  # reported, and the run ends at the timeout
                creating["error"] = repr(e)

        creator = threading.Thread(target=create, daemon=True)
        creator.start()
        samples: list[Sample] = []
        last_log = 0.0
        while True:
            time.sleep(SAMPLE_PERIOD)
            s = _scrape(managers, time.monotonic() - t0)
            samples.append(s)
            active = sum(s.active.values())
            if s.t - last_log >= 15:
                last_log = s.t
                log(f"placement: {s.t:.0f} s: {s.placed:.0f} placed, {active:.0f} Active; leader {s.leaders}")
            if active >= n or s.t > timeout:
                break
        elapsed = time.monotonic() - t0
        complete = active >= n
        after = cluster.apiserver_requests(c.plane)
        cpu = {k: cluster.cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
        peaks = {mg.name: cluster.vmhwm(mg.proc.pid) for mg in managers}
        creator.join(timeout=600)
        steady: dict[str, float] = {}
        if complete and steady_seconds > 0:
            log(f"placement: all {n} Active after {elapsed:.1f} s; steady state for {steady_seconds:.0f} s")
            s0 = time.monotonic()
            time.sleep(steady_seconds)
            steady_delta = cluster.requests_delta(after, cluster.apiserver_requests(c.plane))
            steady = per_second(cluster.by_label(steady_delta), time.monotonic() - s0)
        peaks_end = {mg.name: cluster.vmhwm(mg.proc.pid) for mg in managers}
    lease = _lease_holder(c)
    items = co.list_namespaced_custom_object(cluster.GROUP, cluster.VERSION, NAMESPACE, PLURAL)["items"]
    attached = [((t.get("status") or {}).get("placement") or {}).get("attached") for t in items]
    active_where_placed = sum(
        1
        for t in items
        if (t.get("status") or {}).get("phase") == "Active"
        and ((t.get("status") or {}).get("placement") or {}).get("attached")
    )
    names = [mg.name for mg in managers]
    harness = {("POST", PLURAL, ""): float(n)}
    ours = cluster.by_label(cluster.requests_delta(before, after, harness))
    total = sum(ours.values())
    rate = placement_rate([(s.t, s.placed) for s in samples], n)
    leaders_seen = sorted({x for s in samples for x in s.leaders})
    cpu_managers = {k: v for k, v in cpu.items() if k in names}
    result: dict[str, Any] = {
        "tenants": n,
        "managers": len(managers),
        "complete": complete,
        "active": sum(samples[-1].active.values()) if samples else 0,
        "active_where_placed": active_where_placed,
        "seconds_to_all_active": elapsed,
        "seconds_to_create": creating.get("seconds"),
        "create_error": creating.get("error"),
        "placement": rate,
        "failovers": max((s.failovers for s in samples), default=0.0),
        "leader": lease,
        "leaders_seen": leaders_seen,
        "rss": rss_summary(peaks, lease),
        "rss_peak_mib": {k: v / 2**20 for k, v in peaks.items()},
        "rss_peak_after_steady_mib": {k: v / 2**20 for k, v in peaks_end.items()},
        "rss_idle_mib": {k: v / 2**20 for k, v in rss_idle.items()},
        "cpu_seconds": cpu,
        "cpu_seconds_managers": sum(cpu_managers.values()),
        "spread": spread(attached, names),
        "requests": ours,
        "requests_total": total,
        "requests_per_tenant": total / n,
        "steady_requests_per_second": steady,
        "steady_seconds": steady_seconds if steady else 0.0,
        "samples": [(round(s.t, 1), sum(s.active.values()), s.placed) for s in samples],
    }
    log(
        f"placement: {result['active']:.0f}/{n} Active after {elapsed:.1f} s; {total / n:.2f} requests per "
        f"tenant; leader {lease} peak RSS {result['rss']['leader_mib']} MiB"
    )
    return result


def _lease_holder(c: cluster.Cluster) -> str | None:
    import kubernetes

    lease = kubernetes.client.CoordinationV1Api(c.api).read_namespaced_lease(LEASE, NAMESPACE)
    return (lease.spec.holder_identity if lease.spec else None) or None


def markdown(r: dict[str, Any]) -> str:
    n, rss, sp, pl = r["tenants"], r["rss"], r["spread"], r["placement"]
    steady = r["steady_requests_per_second"]

    def f(v: float | None, fmt: str = ".0f") -> str:
        return "-" if v is None else format(v, fmt)

    lines = [
        f"### Placement: {n} Tenants over {r['managers']} pageserver managers (--capacity {r['capacity']}) "
        f"(1 timeline x {SHAPE_LAYERS} layers x {SHAPE_LAYER_SIZE >> 10} KiB each)",
        "",
        "| measure | value |",
        "|---|---|",
        f"| Tenants Active (where placed, by the final LIST) | {r['active']:.0f} / {n} ({r['active_where_placed']}) |",
        f"| creating all Tenant objects (16 threads) | {f(r['seconds_to_create'], '.1f')} s |",
        f"| first create → all Active | {r['seconds_to_all_active']:.1f} s"
        f"{'' if r['complete'] else ' (timed out: not all Active)'} |",
        f"| leader placed (first placements) | {pl['placed']:.0f} tenants, {f(pl['tenants_per_second'], '.1f')} per s "
        f"(first at {f(pl['first_placed_s'], '.1f')} s, last at {f(pl['all_placed_s'], '.1f')} s) |",
        f"| API requests to all Active | {r['requests_total']:.0f} ({r['requests_per_tenant']:.2f} per tenant) |",
        f"| steady state, all Active | {sum(steady.values()):.1f} requests/s |",
        f"| leader ({rss['leader']}) peak RSS | {f(rss['leader_mib'])} MiB |",
        f"| other managers' peak RSS, max / median | {f(rss['others_max_mib'])} / {f(rss['others_median_mib'])} MiB |",
        f"| tenants per manager, min / median / max | {sp['min']} / {sp['median']:g} / {sp['max']}"
        f" ({sp['unplaced']} unplaced) |",
        f"| CPU seconds: managers (all) / leader | {r['cpu_seconds_managers']:.0f} / "
        f"{r['cpu_seconds'].get(rss['leader'] or '', 0.0):.0f} |",
        "| CPU seconds: "
        + " / ".join(SERVERS)
        + " | "
        + " / ".join(f"{r['cpu_seconds'].get(s, 0.0):.0f}" for s in SERVERS)
        + " |",
        f"| failovers during the run | {r['failovers']:.0f} |",
        "",
        "API requests by verb and resource, first create to all Active (harness's creates removed): "
        + ", ".join(f"{k} {v:.0f}" for k, v in r["requests"].items()),
        "",
    ]
    if steady:
        lines += [
            f"Steady state over {r['steady_seconds']:.0f} s, requests per second: "
            + ", ".join(f"{k} {v:.2f}" for k, v in steady.items()),
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    m = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    state = Path(sys.argv[3]) if len(sys.argv) > 3 else Path("/tmp/pageserver-operator-bench/placement")
    r = run(
        n, m, state, lambda s: print(f"[bench {time.strftime('%H:%M:%S')}] {s}", file=sys.stderr, flush=True)
    )
    print(markdown(r))
    (state.parent / "placement.json").write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
