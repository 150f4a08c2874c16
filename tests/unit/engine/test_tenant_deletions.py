"""Deletions (DESIGN §8.1 deletion rule, §8.2; issue 16 item 4-5): a layer the writer removed
while Active leaves the next index, and its object is deleted only after that index is
uploaded and the generation validated; a stale generation deletes nothing (leaked, counted)
and stops; a wholesale disappearance is damage; a restart after GC downloads none of the
removed layers and the bucket ends with exactly the newest index's objects."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from helpers import tree
from helpers.engine_env import EngineEnv, Writer, make_tenant, run
from pageserver_operator.engine import deletion_queue, paths
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import ids, index_part, layer_name
from pageserver_operator.formats.generation import Generation

G = Generation


class ControlPlane:
    """What the operator's Tenant resource answers: is this generation still the current one?"""

    def __init__(self) -> None:
        self.current = True
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        return self.current


def _attached(env: EngineEnv, gen: int, seed: int = 11, layers: int = 4) -> tuple[ids.TenantId, ids.TimelineId, ControlPlane]:
    made = make_tenant(env.storage, seed=seed, timelines=1, layers=layers)
    tid, tlid = made.tenant_id, made.timelines[0]
    t = env.tenant(tid)
    t.generation = G(gen)
    cp = ControlPlane()
    t.attachment.control_plane = cp

    async def attach_and_sync() -> None:  # one event loop: the attach's index upload completes in it
        await t.attach()
        await t.sync(timeout=20)  # the first index of our generation, validated

    run(attach_and_sync)
    return tid, tlid, cp


def _newest(env: EngineEnv, tid: ids.TenantId, tlid: ids.TimelineId) -> index_part.IndexPart:
    return tree.newest_index(env.storage, tid, tlid)


def _objects(env: EngineEnv) -> set[str]:
    return set(env.storage.list_objects(""))


def _compact(env: EngineEnv, tid: ids.TenantId, tlid: ids.TimelineId) -> tuple[list[layer_name.LayerName], layer_name.LayerName]:
    """As the pageserver's compaction: write one layer over two old ones (new metadata), then
    remove the two."""
    w = Writer(env.workdir, tid)
    tdir = env.paths(tid).timeline_dir(tlid)
    names = sorted((layer_name.parse_layer_name(p.name) for p in tdir.iterdir() if p.name != paths.METADATA_FILE),
                   key=lambda n: n.sort_key())  # fmt: skip
    old = names[:2]
    new = w.flush(tlid)
    for n in old:
        (tdir / str(n)).unlink()
    return old, new


def test_a_removed_layer_leaves_the_index_and_is_deleted_after_validation(local: EngineEnv) -> None:
    tid, tlid, cp = _attached(local, 3)
    t = local.tenants[-1]
    old, new = _compact(local, tid, tlid)
    old_keys = {paths.remote_layer_key(tid, tlid, n, t.timelines[tlid].queue.layer_generation(n)) for n in old}
    assert old_keys <= _objects(local)
    calls = cp.calls
    assert t.attachment.deletions is not None and t.attachment.deletions.deleted == 0
    assert paths.remote_index_key(tid, tlid) not in _objects(local), "the seed's index, once ours was validated"
    run(lambda: t.sync(timeout=20))
    idx = _newest(local, tid, tlid)
    assert not set(old) & set(idx.layers) and new in idx.layers
    assert not old_keys & _objects(local), "the unlinked objects were not deleted"
    assert cp.calls == calls + 1, "one validation per sync"
    assert t.attachment.deletions.deleted == len(old) and t.attachment.deletions.pending == 0
    assert not (local.paths(tid).tenant_dir / deletion_queue.QUEUE_FILE).exists()
    # the bucket holds exactly the newest index and what it names
    expected = {paths.remote_index_key(tid, tlid, G(3))} | {
        paths.remote_layer_key(tid, tlid, n, m.generation) for n, m in idx.layers.items()
    }
    assert _objects(local) == expected


def test_a_stale_generation_deletes_nothing_counts_the_leak_and_stops(local: EngineEnv) -> None:
    tid, tlid, cp = _attached(local, 3)
    t = local.tenants[-1]
    old, _ = _compact(local, tid, tlid)
    before_rcl = t.timelines[tlid].queue.validated_consistent_lsn
    cp.current = False  # another manager was issued generation 4 meanwhile
    with pytest.raises(EngineError) as caught:
        run(lambda: t.sync(timeout=20))
    assert caught.value.reason == "Stale"
    for n in old:
        assert paths.remote_layer_key(tid, tlid, n) in _objects(local), f"{n} was deleted by a stale generation"
    assert t.attachment.deletions is not None and t.attachment.deletions.leaked == len(old) and t.attachment.deletions.pending == 0
    assert t.timelines[tlid].queue.validated_consistent_lsn == before_rcl, "remoteConsistentLsn moved without validation"


def test_a_newer_index_in_remote_storage_makes_the_generation_stale_too(local: EngineEnv) -> None:
    """A second Tenant resource naming the same tenant and bucket has a control plane of its own;
    what it leaves in the bucket is an index of a higher generation."""
    tid, tlid, _ = _attached(local, 3)
    t = local.tenants[-1]
    old, _ = _compact(local, tid, tlid)
    local.storage.put_bytes(paths.remote_index_key(tid, tlid, G(9)), local.storage.get_bytes(paths.remote_index_key(tid, tlid, G(3))))
    with pytest.raises(EngineError) as caught:
        run(lambda: t.sync(timeout=20))
    assert caught.value.reason == "Stale"
    assert all(paths.remote_layer_key(tid, tlid, n) in _objects(local) for n in old)


def test_most_layers_vanishing_at_once_is_damage_and_deletes_nothing(local: EngineEnv) -> None:
    tid, tlid, _ = _attached(local, 2, layers=5)
    t = local.tenants[-1]
    before = _objects(local)
    tdir = local.paths(tid).timeline_dir(tlid)
    layers = [p for p in tdir.iterdir() if p.name != paths.METADATA_FILE]
    for p in layers[:4]:
        p.unlink()
    with pytest.raises(EngineError) as caught:
        run(lambda: t.sync(timeout=20))
    assert caught.value.reason == "LocalLayersVanished", caught.value.message
    assert (t.state is not None and t.state.value == "Active") or caught.value.reason == "LocalLayersVanished"
    assert _objects(local) == before


def test_a_vanished_timeline_directory_is_damage(local: EngineEnv) -> None:
    import shutil

    tid, tlid, _ = _attached(local, 2)
    t = local.tenants[-1]
    before = _objects(local)
    shutil.rmtree(local.paths(tid).timeline_dir(tlid))
    with pytest.raises(EngineError) as caught:
        run(lambda: t.sync(timeout=20))
    assert caught.value.reason == "LocalLayersVanished"
    assert _objects(local) == before


def test_a_restart_after_gc_downloads_none_of_the_removed_layers(local: EngineEnv, tmp_path: Path) -> None:
    tid, tlid, _ = _attached(local, 1)
    t = local.tenants[-1]
    t.stop()
    # while the operator is down, the pageserver compacts (removes two layers)
    old, new = _compact(local, tid, tlid)
    # restart: generation 2, this manager's previous one was 1
    t2 = local.tenant(tid)
    t2.generation, t2.attachment.previous_generation = G(2), G(1)
    cp = ControlPlane()
    t2.attachment.control_plane = cp

    async def load_and_sync() -> None:
        await t2.load()
        assert t2.state is not None and t2.state.value == "Active", (t2.reason, t2.message)
        for n in old:
            assert not local.paths(tid).layer(tlid, n).exists(), f"{n} was downloaded again"
        await t2.sync(timeout=20)

    run(load_and_sync)
    idx = _newest(local, tid, tlid)
    assert not set(old) & set(idx.layers) and new in idx.layers
    expected = {paths.remote_index_key(tid, tlid, G(2))} | {
        paths.remote_layer_key(tid, tlid, n, m.generation) for n, m in idx.layers.items()
    }
    assert _objects(local) == expected, "the bucket holds more than the newest index's objects"


def test_deletions_recorded_by_the_previous_incarnation_are_adopted_or_dropped(local: EngineEnv) -> None:
    tid, tlid, _ = _attached(local, 4)
    t = local.tenants[-1]
    key = paths.remote_layer_key(tid, tlid, next(iter(t.timelines[tlid].layers)), G.none())
    qfile = local.paths(tid).tenant_dir / deletion_queue.QUEUE_FILE
    t.stop()
    for previous, adopted in ((G(4), True), (None, False)):
        qfile.write_text(json.dumps({"version": 1, "entries": [{"generation": 4, "keys": [f"tenants/{tid}/timelines/{tlid}/x"]}]}))
        t2 = local.tenant(tid)
        t2.generation, t2.attachment.previous_generation = G(5), previous
        t2.attachment.control_plane = ControlPlane()
        run(t2.load)
        assert t2.attachment.deletions is not None
        assert (t2.attachment.deletions.pending == 1) is adopted and (t2.attachment.deletions.leaked == 0) is adopted
        t2.stop()
    assert key in _objects(local)


def test_settling_lists_the_index_objects_once_per_timeline(local: EngineEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """The validation and the search for older indexes share one LIST per timeline (the first
    sync of a generation needs both: it validates its first index and deletes the seed's)."""
    made = make_tenant(local.storage, seed=12, timelines=2, layers=3)
    t = local.tenant(made.tenant_id)
    t.generation = G(2)
    t.attachment.control_plane = ControlPlane()
    listed: list[str] = []
    real = local.storage.list_objects

    def counting(prefix: str) -> dict[str, int]:
        listed.append(prefix)
        return real(prefix)

    async def scenario() -> None:
        await t.attach()
        await asyncio.gather(*(tl.queue.wait_completion() for tl in t.timelines.values()))
        monkeypatch.setattr(local.storage, "list_objects", counting)
        await t.sync(timeout=20)

    run(scenario)
    assert sorted(listed) == sorted(paths.remote_index_prefix(made.tenant_id, tl) for tl in made.timelines), listed
    assert all(paths.remote_index_key(made.tenant_id, tl) not in _objects(local) for tl in made.timelines)


def test_held_deletions_wait_while_uploads_go_on_and_run_once_released(local: EngineEnv) -> None:
    """The source of a migration past SourceStale (DESIGN §8.4): its pageserver compacts, the
    index without the old layers is uploaded, but nothing is deleted until the hold ends (here:
    the migration aborted and the source carries on)."""
    tid, tlid, _ = _attached(local, 4)
    t = local.tenants[-1]
    t.attachment.deletions_held = True
    old, new = _compact(local, tid, tlid)
    old_keys = {paths.remote_layer_key(tid, tlid, n, t.timelines[tlid].queue.layer_generation(n)) for n in old}
    run(lambda: t.sync(timeout=20))
    idx = _newest(local, tid, tlid)
    assert new in idx.layers and not set(old) & set(idx.layers), "the upload and its index went on"
    assert old_keys <= _objects(local), "a held deletion was executed"
    assert t.attachment.deletions is not None and t.attachment.deletions.pending == len(old)
    t.attachment.deletions_held = False
    run(lambda: t.sync(timeout=20))
    assert not old_keys & _objects(local) and t.attachment.deletions.pending == 0
