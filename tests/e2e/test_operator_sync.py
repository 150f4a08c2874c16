"""While a Tenant is Active the operator keeps remote storage in sync (every ``--sync-period``):
a layer the pageserver flushes onto the volume is uploaded, then the index, and the status
follows (``remoteConsistentLsn`` catches up with ``diskConsistentLsn``, ``Synced`` is True again).
A spec change (tenant config) is written to the tenant's ``config`` file and acknowledged in
``observedGeneration``.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e import helpers
from e2e.conftest import OperatorFactory, Remote, new_tenant_id
from pageserver_operator import testdata
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids, metadata

pytestmark = pytest.mark.e2e


def test_flushed_layers_are_uploaded_while_active(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory
) -> None:
    tid = new_tenant_id()
    tenant_id = ids.TenantId.parse(tid)
    op = operator.start(sync_period=0.5, wait_live=False)
    generated = remote.seed(testdata.TenantShape(timelines=2, layers=2, layer_size=32 << 10, seed=4), tid)
    op.wait_live()
    k.apply(helpers.tenant_manifest("busy", tid, {"gcPeriod": "100 s"}))
    helpers.wait_phase(k, "busy", "Active")
    tp = paths.TenantPaths(op.workdir, tenant_id)

    root = generated.timelines[0]
    name = testdata.flush_local_layer(op.workdir, tenant_id, root, 300 << 10, seed=8)
    dcl = str(metadata.TimelineMetadata.from_bytes(tp.metadata(root).read_bytes()).disk_consistent_lsn)
    def uploaded() -> bool:
        idx = remote.newest_index(tenant_id, root)
        sizes = {str(n): m.file_size for n, m in idx.layers.items()}
        return sizes.get(str(name)) == 300 << 10 and str(idx.disk_consistent_lsn) == dcl

    helpers.wait_for(uploaded, 30, "the flushed layer in the remote index")
    layer_key = remote.layer_key(tenant_id, root, name)
    assert remote.objects()[layer_key][0] == 300 << 10

    def caught_up() -> dict[str, Any] | None:
        obj = k.tenant("busy")
        t = next(t for t in obj["status"]["timelines"] if t["timelineId"] == str(root))
        synced = helpers.condition(obj, "Synced")
        ok = t["diskConsistentLsn"] == dcl and t["remoteConsistentLsn"] == dcl and t["uploadLagBytes"] == 0
        return obj if ok and synced is not None and synced["status"] == "True" else None

    obj = helpers.wait_for(caught_up, 30, "the status to show the timeline in sync at the new LSN",
                           describe=lambda: str(k.tenant("busy")["status"]["timelines"]))  # fmt: skip
    assert obj["status"]["phase"] == "Active"
    t = next(t for t in obj["status"]["timelines"] if t["timelineId"] == str(root))
    assert t["layers"] == 3

    # A config change reaches the tenant's config file; the status acknowledges the generation.
    k.apply(helpers.tenant_manifest("busy", tid, {"gcPeriod": "1 h", "compactionThreshold": 7}))
    generation = k.tenant("busy")["metadata"]["generation"]
    assert generation == 2
    helpers.wait_for(lambda: 'gc_period = "1 h"' in tp.config.read_text(), 30, "the new config on the volume")
    assert "compaction_threshold = 7" in tp.config.read_text()
    helpers.wait_for(lambda: k.tenant("busy")["status"].get("observedGeneration") == generation, 30,
                     "observedGeneration to follow the spec change")  # fmt: skip
