"""A sync while the pageserver compacts (issue 14, defects 4 and 9; DESIGN §8.1), in process.

A `Tenant` over `helpers.fake_storage.FakeStorage` (operations can be held in flight): a layer
is flushed (file, then metadata), the sync schedules its upload, and before the upload reads
the file the writer compacts: an L1 over the same LSN range is written (temp + rename), the L0
removed. The upload is abandoned. Checked:

- every index uploaded during the sync is self-consistent: each named layer exists remotely
  with its size, and the named deltas reach the index's ``disk_consistent_lsn`` (before the fix
  the index after the abandoned upload claimed the flushed LSNs with no layer covering them);
- the same sync scans again and ends with the L1 uploaded and indexed at the new
  ``disk_consistent_lsn``; the tenant is Synced.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from helpers.fake_storage import FakeStorage
from pageserver_operator import testdata
from pageserver_operator.engine import paths, remote_io, tenant
from pageserver_operator.engine.upload_queue import Backoff
from pageserver_operator.formats import index_part, layer_name, lsn

FAST = Backoff(base=0.001, factor=1.0, cap=0.001)


def assert_self_consistent(storage: FakeStorage, key: str, data: bytes) -> None:
    index = index_part.IndexPart.parse(data)
    prefix = key.removesuffix(paths.INDEX_PART_FILE)
    for name, meta in index.layers.items():
        obj = storage.objects.get(prefix + str(name))
        assert obj is not None, f"{key} names {name}, which was never uploaded"
        assert len(obj) == meta.file_size, f"{key}: {name} has {len(obj)} bytes, the index says {meta.file_size}"
    reach = max(
        (n.lsn_end.value for n in index.layers if isinstance(n, layer_name.DeltaLayerName)), default=0
    )
    dcl = index.metadata.disk_consistent_lsn
    assert reach >= dcl.value, f"{key} claims disk_consistent_lsn {dcl} but its layers end at {lsn.Lsn(reach)}"


def test_a_sync_during_compaction_never_uploads_an_index_over_a_gap(tmp_path: Path) -> None:
    storage = FakeStorage()
    io = remote_io.RemoteIO(storage, workers=4)
    workdir = tmp_path / "volume"
    gen = testdata.make_remote_tenant(storage, testdata.TenantShape(timelines=1, layers=3, layer_size=1000, seed=14))
    tid, tl = gen.tenant_id, gen.timelines[0]
    index_key = paths.remote_index_key(tid, tl)

    async def scenario() -> None:
        t = tenant.Tenant(workdir, tid, io, backoff=FAST)
        await t.attach()
        flushed = testdata.flush_local_layer(workdir, tid, tl, 500, seed=3)
        assert isinstance(flushed, layer_name.DeltaLayerName)
        gate = storage.hold("upload", str(flushed))
        writes_before = len(storage.writes)
        sync = asyncio.ensure_future(t.sync(timeout=30))
        await asyncio.to_thread(gate.wait_started)
        # compaction: an L1 over the flushed range (other key split), written, then the L0 removed
        l1 = layer_name.DeltaLayerName(
            layer_name.Key.MIN, layer_name.Key(1 << 100), flushed.lsn_start, flushed.lsn_end
        )
        target = paths.TenantPaths(workdir, tid).layer(tl, l1)
        tmp = target.with_name(target.name + paths.TEMP_SUFFIX)
        tmp.write_bytes(b"\x01" * 700)
        os.replace(tmp, target)
        paths.TenantPaths(workdir, tid).layer(tl, flushed).unlink()
        gate.release()
        await sync

        indexes = [(k, d) for k, d in storage.writes[writes_before:] if k == index_key]
        assert indexes, "the sync uploaded no index"
        for k, d in indexes:
            assert_self_consistent(storage, k, d)
        final = index_part.IndexPart.parse(storage.objects[index_key])
        assert l1 in final.layers and flushed not in final.layers
        assert final.metadata.disk_consistent_lsn == flushed.lsn_end
        snap = t.snapshot()
        assert snap.synced, snap
        assert snap.timelines[0].remote_consistent_lsn == flushed.lsn_end
        t.stop()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        storage.release_all()
        io.close()


def test_a_layer_written_again_after_its_upload_was_abandoned_is_indexed_and_synced(tmp_path: Path) -> None:
    """Issue 14, defect 9, through a `Tenant`: the layer's file vanishes under its upload, then
    the pageserver writes a file of that name again; the next sync indexes it: Synced."""
    storage = FakeStorage()
    io = remote_io.RemoteIO(storage, workers=4)
    workdir = tmp_path / "volume"
    gen = testdata.make_remote_tenant(storage, testdata.TenantShape(timelines=1, layers=2, layer_size=900, seed=9))
    tid, tl = gen.tenant_id, gen.timelines[0]
    index_key = paths.remote_index_key(tid, tl)

    async def scenario() -> None:
        t = tenant.Tenant(workdir, tid, io, backoff=FAST)
        await t.attach()
        flushed = testdata.flush_local_layer(workdir, tid, tl, 400, seed=4)
        path = paths.TenantPaths(workdir, tid).layer(tl, flushed)
        content = path.read_bytes()
        gate = storage.hold("upload", str(flushed))
        sync = asyncio.ensure_future(t.sync(timeout=30))
        await asyncio.to_thread(gate.wait_started)
        path.unlink()  # gone under the upload: abandoned
        gate.release()
        await sync
        assert flushed not in index_part.IndexPart.parse(storage.objects[index_key]).layers
        path.write_bytes(content)  # the same layer written again
        await t.sync(timeout=30)
        final = index_part.IndexPart.parse(storage.objects[index_key])
        assert final.layers.get(flushed) == index_part.LayerFileMetadata(400)
        assert final.metadata.disk_consistent_lsn == flushed.lsn_end
        assert t.snapshot().synced, t.snapshot()
        t.stop()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        storage.release_all()
        io.close()
