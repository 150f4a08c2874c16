"""`engine.inspect`: what the volume alone says about a tenant (the CLI's ``status``), read-only,
with the typed values of a snapshot (the text is api/'s: tests/unit/api/test_v1alpha1.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.engine_env import EngineEnv, Writer, make_tenant, read_metadata, run
from pageserver_operator import testdata
from pageserver_operator.engine import inspect, paths
from pageserver_operator.engine.errors import TenantNotFound
from pageserver_operator.engine.snapshot import TenantState
from pageserver_operator.engine.timeline import TimelineState
from pageserver_operator.formats import ids


def attached(env: EngineEnv) -> testdata.GeneratedTenant:
    gen = make_tenant(env.storage, seed=7)
    t = env.tenant(gen.tenant_id)

    async def go() -> None:
        await t.attach()
        for tl in t.timelines.values():
            await tl.queue.wait_completion()

    run(go)
    t.stop()
    return gen


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_an_attached_tenant_is_active_with_the_lsns_of_its_metadata(local: EngineEnv) -> None:
    gen = attached(local)
    tp = local.paths(gen.tenant_id)
    before = tree(local.workdir)
    snap = inspect.inspect_tenant(local.workdir, gen.tenant_id)
    assert (snap.state, snap.reason) == (TenantState.ACTIVE, "Active")
    assert snap.message == f"{len(gen.timelines)} timelines on the volume"
    assert [t.timeline_id for t in snap.timelines] == sorted(str(t) for t in gen.timelines)
    for t in snap.timelines:
        meta = read_metadata(tp.metadata(ids.TimelineId.parse(t.timeline_id)))
        assert (t.disk_consistent_lsn, t.ancestor_lsn, t.latest_gc_cutoff_lsn) == (
            meta.disk_consistent_lsn, meta.ancestor_lsn, meta.latest_gc_cutoff_lsn
        )  # fmt: skip
        assert (t.remote_consistent_lsn, t.upload_lag_bytes, t.state) == (None, 0, TimelineState.ACTIVE)
    assert tree(local.workdir) == before, "status wrote to the volume"


def test_with_the_remote_the_remote_lsn_and_the_local_only_bytes_are_filled_in(local: EngineEnv) -> None:
    gen = attached(local)
    tlid = gen.timelines[0]
    remote_dcl = local.remote_index(gen.tenant_id, tlid).metadata.disk_consistent_lsn
    Writer(local.workdir, gen.tenant_id).flush(tlid, size=1234)  # a local-only layer, its metadata advanced
    snap = inspect.inspect_tenant(local.workdir, gen.tenant_id, local.storage)
    shown = next(t for t in snap.timelines if t.timeline_id == str(tlid))
    assert shown.remote_consistent_lsn == remote_dcl
    assert shown.disk_consistent_lsn > remote_dcl
    assert shown.upload_lag_bytes == 1234


def test_what_the_volume_says_when_the_tenant_is_not_complete(local: EngineEnv) -> None:
    tid = ids.TenantId.parse("ab" * 16)
    with pytest.raises(TenantNotFound):
        inspect.inspect_tenant(local.workdir, tid)
    tp = local.paths(tid)
    tp.tenant_dir.mkdir(parents=True)
    snap = inspect.inspect_tenant(local.workdir, tid)
    assert (snap.state, snap.reason, snap.timelines) == (TenantState.BROKEN, "TimelinesDirMissing", [])
    tp.marker.write_bytes(b"")
    snap = inspect.inspect_tenant(local.workdir, tid)
    assert (snap.state, snap.reason) == (TenantState.ATTACHING, "AttachIncomplete")


def test_unreadable_metadata_is_broken_and_keeps_the_timelines_read_before_it(local: EngineEnv) -> None:
    gen = attached(local)
    tp = local.paths(gen.tenant_id)
    last = sorted(gen.timelines, key=str)[-1]
    data = bytearray(tp.metadata(last).read_bytes())
    data[10] ^= 0xFF
    tp.metadata(last).write_bytes(bytes(data))
    snap = inspect.inspect_tenant(local.workdir, gen.tenant_id)
    assert (snap.state, snap.reason) == (TenantState.BROKEN, "LocalMetadataInvalid")
    assert [t.timeline_id for t in snap.timelines] == sorted(str(t) for t in gen.timelines)[:-1]
    assert os.path.exists(tp.metadata(last)), "status removed a file"
    assert paths.METADATA_FILE in snap.message or str(last) in snap.message
