"""Metric series per tenant: how many series one manager exports for N attached, synced tenants.

``python -m bench.cardinality [N ...]`` (default 1000) runs the real engine in this process on a
temporary volume against a ``file://`` remote: N tenants (2 timelines of 2 small layers each) are
seeded, attached, given one flushed layer each and synced (so that every upload series exists),
then the samples of the default registry whose name starts with ``pageserver_operator_`` are
counted (what ``/metrics`` serves and Prometheus stores: one series per sample line), those with
a ``tenant_id`` and the others, with per-tenant metrics on and off (`metrics.set_per_tenant`).
Every tenant is detached at the end: no series with a ``tenant_id`` may be left (no leak).

As the operator runs: counters without their ``_created`` samples (``pageserver-operator run``
calls ``prometheus_client.disable_created_metrics()``; they are not counted here).

Invariants: nothing outside the temporary directory is written; the registry is the process's
own (run it in its own process, as ``python -m`` does; tests call `measure` with a few tenants).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import prometheus_client

from pageserver_operator import testdata
from pageserver_operator.engine import metrics, remote_io, tenant, upload_queue
from pageserver_operator.formats import ids
from pageserver_operator.remote import local_fs

PREFIX = "pageserver_operator_"
SHAPE = testdata.TenantShape(timelines=2, layers=2, layer_size=4 << 10, seed=7)
_FAST = upload_queue.Backoff(base=0.001, factor=1.0, cap=0.001)


#: the measured tenants' ids start with this (other tenants of the process are not counted)
ID_PREFIX = "ca4d"


def series() -> tuple[collections.Counter[str], collections.Counter[str]]:
    """Samples of the operator's metrics in the default registry, by metric family: those of the
    measured tenants (``tenant_id`` starting with `ID_PREFIX`), and those without a tenant
    (no or an empty ``tenant_id``). Series of other tenants of this process are left out."""
    tenant: collections.Counter[str] = collections.Counter()
    other: collections.Counter[str] = collections.Counter()
    for family in prometheus_client.REGISTRY.collect():
        for sample in family.samples:
            if not sample.name.startswith(PREFIX) or sample.name.endswith("_created"):
                continue
            tid = sample.labels.get("tenant_id")
            if not tid:
                other[family.name] += 1
            elif tid.startswith(ID_PREFIX):
                tenant[family.name] += 1
    return tenant, other


@dataclass
class Result:
    tenants: int
    per_tenant: bool
    #: every series of the operator's metrics with the tenants attached and synced
    total: int
    #: of which labelled with a tenant (non-empty tenant_id)
    tenant_series: int
    #: tenant_series / tenants
    per_tenant_series: float
    #: the others (fixed label sets: phases, remote operations, the per-manager sums)
    other_series: int
    #: tenant series by metric family
    by_family: dict[str, int] = field(default_factory=dict)
    #: milliseconds of one scrape's collection (the whole registry, as /metrics does) with them attached
    scrape_ms: float = 0.0
    #: tenant series left after every tenant was detached (0: no leak)
    tenant_series_after_detach: int = 0
    seconds: float = 0.0


async def _scenario(root: Path, n: int) -> tuple[collections.Counter[str], collections.Counter[str], int, float]:
    storage = local_fs.LocalFsStorage(root / "remote")
    io = remote_io.RemoteIO(storage, workers=8)
    workdir = root / "volume"
    tenants = []
    try:
        for i in range(n):
            tid = ids.TenantId.parse(f"{ID_PREFIX}{i + 1:028x}")
            gen = testdata.make_remote_tenant(storage, SHAPE, tid)
            t = tenant.Tenant(workdir, tid, io, backoff=_FAST)
            await t.attach()
            testdata.flush_local_layer(workdir, tid, gen.timelines[0], 4 << 10, seed=i)
            await t.sync(timeout=60)
            tenants.append(t)
        per_tenant, other = series()
        started = time.perf_counter()
        prometheus_client.generate_latest(prometheus_client.REGISTRY)
        scrape_ms = (time.perf_counter() - started) * 1000
        for t in tenants:
            await t.detach(timeout=60)
        left, _ = series()
    finally:
        for t in tenants:
            t.stop()
        io.close()
        storage.close()
    return per_tenant, other, sum(left.values()), scrape_ms


def measure(n: int, per_tenant: bool) -> Result:
    """Attach, sync and detach ``n`` tenants in this process and count the series."""
    was = metrics.per_tenant()
    metrics.set_per_tenant(per_tenant)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="cardinality-") as tmp:
            tenant_series, other, left, scrape_ms = asyncio.run(_scenario(Path(tmp), n))
    finally:
        metrics.set_per_tenant(was)
    t, o = sum(tenant_series.values()), sum(other.values())
    return Result(
        tenants=n, per_tenant=per_tenant, total=t + o, tenant_series=t,
        per_tenant_series=round(t / n, 2) if n else 0.0, other_series=o,
        by_family=dict(sorted(tenant_series.items())), scrape_ms=round(scrape_ms, 1), tenant_series_after_detach=left,
        seconds=round(time.monotonic() - started, 1),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cardinality", description=__doc__.splitlines()[0])
    parser.add_argument("tenants", type=int, nargs="*", default=[1000])
    args = parser.parse_args(argv)
    results = []
    for n in args.tenants:
        for per_tenant in (True, False):
            r = measure(n, per_tenant)
            results.append(r)
            print(
                f"{n} tenants, per-tenant metrics {'on ' if per_tenant else 'off'}: {r.total} series, "
                f"{r.tenant_series} with a tenant_id ({r.per_tenant_series} per tenant) and {r.other_series} "
                f"others; one scrape {r.scrape_ms} ms; {r.tenant_series_after_detach} tenant series left after "
                f"detach; {r.seconds} s",
                file=sys.stderr,
            )
            for name, count in r.by_family.items():
                print(f"    {name}: {count}", file=sys.stderr)
    print(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
