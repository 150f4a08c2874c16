"""A `Tenant` in process while a pageserver (the `helpers.engine_env.Writer` stand-in) writes to
the same volume: the writer protocol of DESIGN §8.1 (issue 14, defects 1-3).

- Load and sync never delete or move a file the writer owns (``ephemeral-*``, ``*___temp``,
  anything that is neither a layer nor ``metadata``); only our own ``*.temp_download`` partial
  downloads are removed (defect 1).
- A layer flushed after the last ``metadata`` (from the future) is left where it is at load and
  at sync, not indexed, and indexed once the metadata covers it (defects 1 and 2).
- A timeline the writer is creating is left alone until its ``metadata`` exists, and never
  indexed before (defect 2).
- Load works from the local timelines only (reference §6.4): a remote-only timeline is not
  downloaded, so a timeline the pageserver deleted locally does not come back; a timeline
  directory without ``metadata`` that has a remote index (an interrupted download of ours) is
  completed from that index; one without a remote index (the writer creating it) is skipped
  (defect 3).

Remote: ``file://`` under ``tmp_path`` (real files, real renames).
"""

from __future__ import annotations

import pytest

from helpers import tree
from helpers.engine_env import EngineEnv, Writer, make_tenant, read_metadata, run
from pageserver_operator import testdata
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids, lsn, metadata


@pytest.fixture
def env(local: EngineEnv) -> EngineEnv:
    return local


def attached(env: EngineEnv, seed: int = 1) -> testdata.GeneratedTenant:
    gen = make_tenant(env.storage, seed=seed)
    run(env.tenant(gen.tenant_id).attach)
    return gen


def reload(env: EngineEnv, tid: ids.TenantId) -> None:
    """What a restarted operator (or a CLI ``load``) does: a new `Tenant`, loaded from the volume."""
    t = env.tenant(tid)

    async def go() -> None:
        await t.load()
        for tl in t.timelines.values():
            await tl.queue.wait_completion()

    run(go)
    assert t.state is not None and t.state.value == "Active", (t.reason, t.message)


def indexed_names(env: EngineEnv, tid: ids.TenantId, tlid: ids.TimelineId) -> set[str]:
    return {str(n) for n in env.remote_index(tid, tlid).layers}


# ---- defect 1: the writer's files ----------------------------------------------------------------


def test_load_removes_only_our_partial_downloads(env: EngineEnv) -> None:
    gen = attached(env)
    tid, tl = gen.tenant_id, gen.timelines[1]
    w = Writer(env.workdir, tid)
    own = w.own_files(tl)
    tdir = env.paths(tid).timeline_dir(tl)
    layer = next(p for p in tdir.iterdir() if p.name != "metadata" and p.name not in own)
    partial = tdir / f"{layer.name}{paths.TEMP_DOWNLOAD_SUFFIX}"
    partial.write_bytes(b"partial")

    reload(env, tid)

    assert w.snapshot(tl, own) == own, "load touched files the writer owns"
    assert not partial.exists(), "our own partial download was left behind"


def test_sync_leaves_the_writers_files_alone(env: EngineEnv) -> None:
    gen = attached(env)
    tid, tl = gen.tenant_id, gen.timelines[0]
    t = env.tenants[-1]
    w = Writer(env.workdir, tid)
    own = w.own_files(tl)
    flushed = w.flush(tl)

    run(lambda: t.sync(timeout=20))

    assert w.snapshot(tl, own) == own, "sync touched files the writer owns"
    assert str(flushed) in indexed_names(env, tid, tl)


def test_a_layer_flushed_before_its_metadata_is_left_in_place_at_load_and_indexed_later(env: EngineEnv) -> None:
    gen = attached(env)
    tid, tl = gen.tenant_id, gen.timelines[0]
    w = Writer(env.workdir, tid)
    future = w.flush(tl, with_metadata=False)  # the writer's metadata update is still to come
    path = env.paths(tid).layer(tl, future)
    data = path.read_bytes()

    reload(env, tid)  # an operator restart while the pageserver writes

    assert path.read_bytes() == data, "load moved a layer the writer has just flushed"
    assert str(future) not in indexed_names(env, tid, tl), "a layer beyond disk_consistent_lsn was indexed"
    w.set_dcl(tl, lsn.Lsn(w.dcl(tl).value + testdata.LSN_STEP))
    t = env.tenants[-1]
    run(lambda: t.sync(timeout=20))
    idx = env.remote_index(tid, tl)
    assert str(future) in {str(n) for n in idx.layers}
    assert idx.metadata.disk_consistent_lsn == w.dcl(tl)


# ---- defect 2: a timeline the writer is creating ---------------------------------------------------


def new_root_metadata(template: metadata.TimelineMetadata, dcl: lsn.Lsn) -> metadata.TimelineMetadata:
    return metadata.TimelineMetadata(
        disk_consistent_lsn=dcl,
        prev_record_lsn=None,
        ancestor_timeline=None,
        ancestor_lsn=lsn.Lsn.ZERO,
        latest_gc_cutoff_lsn=template.initdb_lsn,
        initdb_lsn=template.initdb_lsn,
        pg_version=template.pg_version,
    )


def test_sync_leaves_a_timeline_being_created_alone_until_its_metadata_exists(env: EngineEnv) -> None:
    gen = attached(env)
    tid = gen.tenant_id
    t = env.tenants[-1]
    w = Writer(env.workdir, tid)
    tp = env.paths(tid)
    template = read_metadata(tp.metadata(gen.timelines[0]))
    new = ids.TimelineId(bytes(range(1, 17)))
    tdir = tp.timeline_dir(new)
    tdir.mkdir()
    start = template.initdb_lsn
    first = w.write_layer(new, start, lsn.Lsn(start.value + testdata.LSN_STEP))
    own = {"ephemeral-9": b"spill", f"{first}{paths.TEMP_SUFFIX}": b"x"}
    for name, data in own.items():
        (tdir / name).write_bytes(data)

    run(lambda: t.sync(timeout=20))  # layers there, metadata not yet: not a timeline yet
    assert {p.name for p in tdir.iterdir()} == {str(first), *own}
    assert new not in t.timelines
    assert paths.remote_timeline_prefix(tid, new) not in "".join(env.storage.list_objects(paths.remote_timelines_prefix(tid)))

    # metadata written (covering the first layer); a second layer is flushed before its metadata
    dcl1 = lsn.Lsn(start.value + testdata.LSN_STEP)
    (tdir / paths.METADATA_FILE).write_bytes(new_root_metadata(template, dcl1).to_bytes())
    second = w.write_layer(new, dcl1, lsn.Lsn(dcl1.value + testdata.LSN_STEP))
    run(lambda: t.sync(timeout=20))
    assert (tdir / str(second)).exists(), "sync set aside a layer whose metadata is not written yet"
    assert w.snapshot(new, own) == own, "sync touched files the writer owns"
    idx = env.remote_index(tid, new)
    assert {str(n) for n in idx.layers} == {str(first)} and idx.metadata.disk_consistent_lsn == dcl1

    w.set_dcl(new, lsn.Lsn(dcl1.value + testdata.LSN_STEP))
    run(lambda: t.sync(timeout=20))
    idx = env.remote_index(tid, new)
    assert {str(n) for n in idx.layers} == {str(first), str(second)}
    assert idx.metadata.disk_consistent_lsn == w.dcl(new)


# ---- defect 3: what load works from -----------------------------------------------------------------


def test_a_timeline_deleted_locally_does_not_come_back_at_load(env: EngineEnv) -> None:
    gen = attached(env)
    tid, gone = gen.tenant_id, gen.timelines[1]
    import shutil

    shutil.rmtree(env.paths(tid).timeline_dir(gone))  # the pageserver deleted the timeline
    before = env.storage.list_objects("")

    reload(env, tid)

    assert not env.paths(tid).timeline_dir(gone).exists(), "load downloaded a timeline the pageserver deleted"
    assert gone not in env.tenants[-1].timelines
    assert env.storage.list_objects("") == before


def test_an_interrupted_timeline_download_is_completed_at_load(env: EngineEnv) -> None:
    gen = attached(env)
    tid, tl = gen.tenant_id, gen.timelines[1]
    remote = tree.RemoteTenant.capture(env.storage, tid)
    tp = env.paths(tid)
    # as left by a kill while that timeline was being downloaded: no metadata yet, a layer
    # missing, another one partial
    tp.metadata(tl).unlink()
    layers = sorted(p for p in tp.timeline_dir(tl).iterdir())
    layers[0].unlink()
    layers[1].rename(layers[1].with_name(layers[1].name + paths.TEMP_DOWNLOAD_SUFFIX))

    reload(env, tid)

    tree.assert_matches_remote(env.workdir, remote)


def test_a_timeline_without_metadata_nor_remote_index_is_skipped_at_load(env: EngineEnv) -> None:
    gen = attached(env)
    tid = gen.tenant_id
    w = Writer(env.workdir, tid)
    tp = env.paths(tid)
    new = ids.TimelineId(bytes(range(2, 18)))
    tp.timeline_dir(new).mkdir()
    start = read_metadata(tp.metadata(gen.timelines[0])).initdb_lsn
    layer = w.write_layer(new, start, lsn.Lsn(start.value + testdata.LSN_STEP))

    reload(env, tid)

    assert {p.name for p in tp.timeline_dir(new).iterdir()} == {str(layer)}
    assert new not in env.tenants[-1].timelines
    assert not any(k.startswith(paths.remote_timeline_prefix(tid, new)) for k in env.storage.list_objects(""))


def test_status_of_the_volume_agrees_with_load_on_timelines_being_created(env: EngineEnv) -> None:
    """``status`` (`inspect.inspect_tenant`) does not call a tenant Broken for a timeline that
    load skips: one without metadata yet, or one with an ``___uninit`` sibling."""
    from pageserver_operator.engine import inspect

    gen = attached(env)
    tid = gen.tenant_id
    tp = env.paths(tid)
    w = Writer(env.workdir, tid)
    start = read_metadata(tp.metadata(gen.timelines[0])).initdb_lsn
    bare = ids.TimelineId(bytes(range(3, 19)))
    tp.timeline_dir(bare).mkdir()
    w.write_layer(bare, start, lsn.Lsn(start.value + testdata.LSN_STEP))
    uninit = ids.TimelineId(bytes(range(4, 20)))
    tp.timeline_dir(uninit).mkdir()
    (tp.timeline_dir(uninit) / paths.METADATA_FILE).write_bytes(b"half-created")
    (tp.timelines_dir / f"{uninit}.{paths.UNINIT_SUFFIX}").write_bytes(b"")

    snap = inspect.inspect_tenant(env.workdir, tid)
    assert snap.state == "Active", (snap.reason, snap.message)
    assert sorted(t.timeline_id for t in snap.timelines) == sorted(str(t) for t in gen.timelines)
    reload(env, tid)
