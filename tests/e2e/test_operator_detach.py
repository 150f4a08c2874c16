"""Deleting a Tenant detaches it through the operator's finalizer: layers that exist only on the
volume (flushed by the "pageserver" while Active) are uploaded and named in the remote index
*before* the local directory disappears; then the finalizer is released (the object is gone);
every object that was in the bucket before is still there, unchanged.

The operator runs with a sync period far longer than the test, so the only thing that can upload
the local-only layers is the detach itself. A Tenant deleted while no operator runs is held by
the finalizer and detached by the next operator process.
"""

from __future__ import annotations

import json

import pytest

from e2e import helpers
from e2e.conftest import OperatorFactory, Remote, new_tenant_id
from pageserver_operator import testdata
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids, index_part, metadata

pytestmark = pytest.mark.e2e

FINALIZER = "pageserver.dev/finalizer"


def test_delete_uploads_local_only_layers_then_removes_the_tenant(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory
) -> None:
    tid = new_tenant_id()
    op = operator.start(sync_period=3600, wait_live=False)
    generated = remote.seed(testdata.TenantShape(timelines=2, layers=3, layer_size=64 << 10, seed=21), tid)
    op.wait_live()
    k.apply(helpers.tenant_manifest("leaving", tid))
    obj = helpers.wait_phase(k, "leaving", "Active")
    assert FINALIZER in obj["metadata"].get("finalizers", [])
    before = remote.objects()
    original = remote.capture(tid)

    # The pageserver flushes a new layer on each timeline: layer file first, then metadata.
    tenant_id = ids.TenantId.parse(tid)
    tp = paths.TenantPaths(op.workdir, tenant_id)
    flushed: dict[str, tuple[str, int, str]] = {}  # timeline -> (layer, size, new dcl)
    for n, timeline_id in enumerate(generated.timelines):
        size = (200 + n) << 10
        name = testdata.flush_local_layer(op.workdir, tenant_id, timeline_id, size, seed=100 + n)
        new_dcl = metadata.TimelineMetadata.from_bytes(
            tp.metadata(timeline_id).read_bytes()
        ).disk_consistent_lsn
        flushed[str(timeline_id)] = (str(name), size, str(new_dcl))
    assert not any(key.endswith(layer) for key in remote.objects() for layer, _, _ in flushed.values())

    def index(tlid: str) -> index_part.IndexPart:
        return remote.newest_index(tenant_id, tlid)

    def indexed(tlid: str) -> bool:
        layer, _, _ = flushed[tlid]
        return layer in {str(n) for n in index(tlid).layers}

    k.run("delete", "tenant/leaving", "--wait=false")

    # While the detach runs: whenever the local directory is seen gone, the remote indexes read
    # right after must already name the flushed layers (they were uploaded before the removal).
    def local_gone() -> bool:
        gone = not tp.tenant_dir.exists()
        if gone:
            late = [tlid for tlid in flushed if not indexed(tlid)]
            assert not late, (
                f"the local directory disappeared before the index named the new layers of {late}"
            )
        return gone

    helpers.wait_for(local_gone, 60, "the local tenant directory to disappear", interval=0.02,
                     describe=lambda: helpers.summary(k.tenant_or_none("leaving")))  # fmt: skip
    helpers.wait_gone(k, "leaving", timeout=30)  # the finalizer was released

    assert not tp.tenant_dir.exists() and not tp.deleting_dir.exists()
    assert helpers.files_below(op.workdir / paths.TENANTS_DIR) == []

    after = remote.objects()
    for tlid, (layer, size, dcl) in flushed.items():
        key = remote.layer_key(tenant_id, tlid, layer)
        assert after[key][0] == size, f"{key} in S3 with the wrong size"
        idx = index(tlid)
        assert {str(n): m.file_size for n, m in idx.layers.items()}[layer] == size
        assert str(idx.disk_consistent_lsn) == dcl, "the index carries the flushed disk_consistent_lsn"
        assert (
            json.loads(remote.get(remote.newest_index_key(tenant_id, tlid)))["version"]
            == 1
        )
    # Remote data intact: every original object is still there, layers unchanged.
    for key, (size, etag) in before.items():
        if paths.INDEX_PART_FILE in key:
            continue  # an older generation's index: superseded (and deleted) once ours was validated
        assert key in after, f"{key} was deleted from remote storage"
        assert after[key] == (size, etag), f"{key} was rewritten"
    # ... and every layer the old index named is still named.
    for tlid in flushed:
        assert original.timelines[tlid].index.layer_names <= index(tlid).layer_names

    detached = helpers.wait_event(k, "leaving", "Detached")
    assert detached["type"] == "Normal"


def test_delete_while_the_operator_is_down_detaches_at_its_next_start(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory
) -> None:
    """The finalizer holds the object while no operator runs; the next operator process uploads
    the local-only layer (loading the tenant from the volume first), removes the directory and
    releases the finalizer."""
    tid = new_tenant_id()
    tenant_id = ids.TenantId.parse(tid)
    first = operator.start(sync_period=3600, wait_live=False)
    generated = remote.seed(testdata.TenantShape(timelines=1, layers=3, layer_size=64 << 10, seed=22), tid)
    first.wait_live()
    k.apply(helpers.tenant_manifest("orphan", tid))
    helpers.wait_phase(k, "orphan", "Active")
    tlid = generated.timelines[0]
    name = testdata.flush_local_layer(first.workdir, tenant_id, tlid, 128 << 10, seed=5)
    first.kill()

    k.run("delete", "tenant/orphan", "--wait=false")
    obj = k.tenant("orphan")
    assert obj["metadata"].get("deletionTimestamp") and FINALIZER in obj["metadata"]["finalizers"]

    second = operator.start(sync_period=3600)
    helpers.wait_gone(k, "orphan", timeout=60)

    assert helpers.files_below(second.workdir / paths.TENANTS_DIR) == []
    idx = remote.newest_index(tenant_id, tlid)
    assert {str(n): m.file_size for n, m in idx.layers.items()}.get(str(name)) == 128 << 10
    assert remote.objects()[remote.layer_key(tenant_id, tlid, name)][0] == 128 << 10
