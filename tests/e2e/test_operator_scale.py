"""50 Tenants applied at once (one ``kubectl apply``) all become Active; the wall time from the
apply to the last Ready and the operator's peak RSS are measured and printed.

Each tenant is small (2 timelines x 2 layers): the test measures the operator's per-tenant
overhead (watch events, controllers, status writes, Events) rather than bandwidth.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from e2e import helpers
from e2e.conftest import OperatorFactory, Remote, new_tenant_id
from pageserver_operator import testdata
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids

pytestmark = pytest.mark.e2e

TENANTS = 50
SHAPE = testdata.TenantShape(timelines=2, layers=2, layer_size=16 << 10, seed=1)
ALL_READY_BOUND = 180.0


def test_fifty_tenants_applied_at_once_all_become_active(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    op = operator.start(wait_live=False)
    tids = {f"t{n:02d}": new_tenant_id() for n in range(TENANTS)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda tid: remote.seed(SHAPE, tid), tids.values()))
    op.wait_live()
    rss_at_idle = op.peak_rss()

    started = time.monotonic()
    k.apply(*(helpers.tenant_manifest(name, tid) for name, tid in tids.items()))
    applied = time.monotonic() - started
    last: list[list[dict[str, Any]]] = [[]]

    def all_ready() -> bool:
        items = k.tenants()
        last[0] = items
        ready = [t for t in items if (c := helpers.condition(t, "Ready")) and c["status"] == "True"]
        return len(ready) == TENANTS

    def not_ready() -> str:
        pending = [t for t in last[0] if helpers.phase(t) != "Active"]
        return f"{len(pending)} not Active, e.g. " + "; ".join(
            f"{t['metadata']['name']}: {helpers.summary(t)}" for t in pending[:5]
        )

    helpers.wait_for(all_ready, ALL_READY_BOUND, f"all {TENANTS} Tenants to be Ready", interval=0.25,
                     describe=not_ready)  # fmt: skip
    elapsed = time.monotonic() - started
    peak = op.peak_rss()

    with capsys.disabled():
        print(
            f"\n[scale] {TENANTS} Tenants ({SHAPE.timelines} timelines x {SHAPE.layers} layers of "
            f"{helpers.fmt_bytes(SHAPE.layer_size)} each): apply took {applied:.1f} s, all Ready "
            f"{elapsed:.1f} s after the apply; operator peak RSS {helpers.fmt_bytes(peak)} "
            f"({helpers.fmt_bytes(rss_at_idle)} before the apply)"
        )

    items = k.tenants()
    assert len(items) == TENANTS
    for t in items:
        st = t["status"]
        assert st["phase"] == "Active", helpers.summary(t)
        assert st["timelineCount"] == SHAPE.timelines
        assert st["observedGeneration"] == t["metadata"]["generation"]
    on_volume = sorted(p.name for p in (op.workdir / paths.TENANTS_DIR).iterdir())
    assert on_volume == sorted(tids.values())
    for tid in tids.values():
        tp = paths.TenantPaths(op.workdir, ids.TenantId.parse(tid))
        assert not tp.marker.exists()
        assert len(list(tp.timelines_dir.glob("*/*"))) == SHAPE.timelines * (SHAPE.layers + 1)
    metrics = op.metrics()
    assert helpers.metric_value(metrics, "pageserver_operator_tenants", phase="Active") == TENANTS
    assert op.running()
