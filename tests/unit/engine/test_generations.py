"""Generations in the engine (DESIGN §8.2, issue 16): the keys Neon writes, the index a
generation reads, and what a caller without a control plane (the CLI) does when a newer
attachment exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.engine_env import EngineEnv, Writer, make_tenant, run
from pageserver_operator.engine import paths
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import index_part
from pageserver_operator.formats.generation import Generation

G = Generation


def _objects(env: EngineEnv) -> dict[str, int]:
    return env.storage.list_objects("")


def _index(env: EngineEnv, tid: object, tlid: object, g: Generation) -> index_part.IndexPart:
    return index_part.IndexPart.parse(env.storage.get_bytes(paths.remote_index_key(tid, tlid, g)))  # type: ignore[arg-type]


def _trusted(t: object) -> None:
    """As the operator: the control plane issued the generation (no stale check in storage)."""

    async def current() -> bool:
        return True

    t.attachment.control_plane = current  # type: ignore[attr-defined]


def test_a_seed_tenant_is_continued_with_suffixed_keys_that_refer_to_the_old_objects(local: EngineEnv) -> None:
    gen = make_tenant(local.storage, seed=3, timelines=1)
    tid, tlid = gen.tenant_id, gen.timelines[0]
    seed_objects = _objects(local)
    t = local.tenant(tid)
    t.generation = G(3)
    run(t.attach)
    assert t.state is not None and t.state.value == "Active", (t.reason, t.message)
    w = Writer(local.workdir, tid)
    new_layer = w.flush(tlid)
    run(lambda: t.sync(timeout=20))

    after = _objects(local)
    seed_index = paths.remote_index_key(tid, tlid)
    assert seed_index not in after, "the seed's index stays after a validated index of generation 3"
    assert all(after[k] == v for k, v in seed_objects.items() if k != seed_index), "a seed layer was rewritten or removed"
    added = set(after) - set(seed_objects)
    assert added == {
        paths.remote_index_key(tid, tlid, G(3)),
        paths.remote_layer_key(tid, tlid, new_layer, G(3)),
    }
    idx = _index(local, tid, tlid, G(3))
    assert idx.layers[new_layer].generation == G(3)
    assert {m.generation for n, m in idx.layers.items() if n != new_layer} == {G.none()}
    assert idx.metadata.disk_consistent_lsn == w.dcl(tlid)


def test_a_restart_with_the_next_generation_reads_the_previous_index_and_downloads_the_old_keys(
    local: EngineEnv, tmp_path: Path
) -> None:
    gen = make_tenant(local.storage, seed=4, timelines=1)
    tid, tlid = gen.tenant_id, gen.timelines[0]
    t = local.tenant(tid)
    t.generation = G(1)
    run(t.attach)
    w = Writer(local.workdir, tid)
    layer_of_1 = w.flush(tlid)
    run(lambda: t.sync(timeout=20))
    t.stop()

    # a second volume attaches with generation 2: the index of generation 1 is the newest
    other = tmp_path / "other"
    other.mkdir()
    env2 = EngineEnv(other, local.storage, local.io)
    t2 = env2.tenant(tid)
    t2.generation = G(2)
    run(t2.attach)
    assert t2.state is not None and t2.state.value == "Active", (t2.reason, t2.message)
    assert (env2.paths(tid).layer(tlid, layer_of_1)).stat().st_size == (w._paths().layer(tlid, layer_of_1)).stat().st_size
    assert t2.timelines[tlid].queue.index_generation == G(1)
    assert t2.timelines[tlid].queue.layer_generation(layer_of_1) == G(1)


def test_the_highest_index_not_above_our_generation_is_read_never_a_newer_one(local: EngineEnv) -> None:
    gen = make_tenant(local.storage, seed=5, timelines=1)
    tid, tlid = gen.tenant_id, gen.timelines[0]
    seed_index = local.storage.get_bytes(paths.remote_index_key(tid, tlid))
    doc = index_part.IndexPart.parse(seed_index)
    # generations 1 and 3 hold the seed's index; generation 9 names a layer that does not exist
    for g in (G(1), G(3)):
        local.storage.put_bytes(paths.remote_index_key(tid, tlid, g), seed_index)
    bogus = dict(doc.layers)
    planted_meta = doc.metadata
    bogus_name = next(iter(bogus))
    planted = index_part.IndexPart.build(
        {bogus_name: index_part.LayerFileMetadata(123, G(9))}, planted_meta
    )
    local.storage.put_bytes(paths.remote_index_key(tid, tlid, G(9)), planted.to_json_bytes())

    t = local.tenant(tid)
    t.generation = G(7)  # neither 7 nor 6 exists: a LIST finds 3, the highest not above 7
    _trusted(t)
    run(t.attach)
    assert t.state is not None and t.state.value == "Active", (t.reason, t.message)
    assert t.timelines[tlid].queue.index_generation == G(3)
    assert set(t.timelines[tlid].layers) == set(doc.layers)


def test_without_a_control_plane_a_newer_index_makes_the_attachment_stale(local: EngineEnv) -> None:
    gen = make_tenant(local.storage, seed=6, timelines=1)
    tid, tlid = gen.tenant_id, gen.timelines[0]
    local.storage.put_bytes(
        paths.remote_index_key(tid, tlid, G(5)), local.storage.get_bytes(paths.remote_index_key(tid, tlid))
    )
    before = _objects(local)
    t = local.tenant(tid)
    t.generation = G(4)
    with pytest.raises(EngineError) as caught:
        run(t.attach)
    assert caught.value.reason == "Stale"
    assert "generation 4" in caught.value.message and "generation 5" in caught.value.message
    assert t.state is not None and t.state.value == "Broken"
    assert _objects(local) == before
    # and a generation above it takes the tenant over
    t2 = local.tenant(tid)
    t2.generation = G(6)
    run(t2.attach)
    assert t2.state is not None and t2.state.value == "Active"


def test_a_seed_format_process_never_reads_a_suffixed_index(local: EngineEnv) -> None:
    """Generation none (no --generation) is below every generation: with a suffixed index
    present it is stale (it would otherwise write an index every generation ignores)."""
    gen = make_tenant(local.storage, seed=7, timelines=1)
    tid, tlid = gen.tenant_id, gen.timelines[0]
    local.storage.put_bytes(
        paths.remote_index_key(tid, tlid, G(1)), local.storage.get_bytes(paths.remote_index_key(tid, tlid))
    )
    t = local.tenant(tid)
    with pytest.raises(EngineError) as caught:
        run(t.attach)
    assert caught.value.reason == "Stale"
