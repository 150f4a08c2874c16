"""Split-brain guard: two operators attached to the same tenant and bucket must not make the
remote index go backwards. The second writer detects that the index changed under it and
refuses (SplitBrainDetected); the first writer's layers and LSN stay in the remote index."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pageserver_operator import testdata
from pageserver_operator.engine import manager, paths
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import index_part
from pageserver_operator.remote import factory as remote_factory
from pageserver_operator.remote import url as remote_url


def test_second_writer_is_refused_and_the_index_never_goes_backwards(tmp_path: Path) -> None:
    remote = f"file://{tmp_path / 'remote'}"
    storage = remote_factory.open_remote(remote_url.parse_remote_url(remote))
    gen = testdata.make_remote_tenant(storage, testdata.TenantShape(timelines=1, layers=3))
    tid, tlid = gen.tenant_id, gen.timelines[0]

    async def scenario() -> EngineError:
        a = manager.TenantManager(tmp_path / "a", remote_factory.open_remote(remote_url.parse_remote_url(remote)))
        b = manager.TenantManager(tmp_path / "b", remote_factory.open_remote(remote_url.parse_remote_url(remote)))
        try:
            await a.get(tid).attach()
            await b.get(tid).attach()
            testdata.flush_local_layer(tmp_path / "a", tid, tlid, 4096, seed=1)
            await a.get(tid).sync(timeout=30)
            testdata.flush_local_layer(tmp_path / "b", tid, tlid, 8192, seed=2)
            with pytest.raises(EngineError) as caught:
                await b.get(tid).sync(timeout=30)
            return caught.value
        finally:
            a.close()
            b.close()

    err = asyncio.run(scenario())
    assert err.reason == "SplitBrainDetected"
    assert "another writer" in err.message and str(tlid) in err.message
    index = index_part.IndexPart.parse(storage.get_bytes(paths.remote_index_key(tid, tlid)))
    a_meta = (tmp_path / "a" / "tenants" / str(tid) / "timelines" / str(tlid) / "metadata").read_bytes()
    assert index.metadata_bytes == a_meta, "the remote index is the first writer's, not the second's"
    assert len(index.layers) == 4
    # the second writer's layer has the same name but other bytes: it must not have replaced the
    # object the first writer indexed
    tl_a = tmp_path / "a" / "tenants" / str(tid) / "timelines" / str(tlid)
    for name, meta in index.layers.items():
        remote_bytes = storage.get_bytes(paths.remote_layer_key(tid, tlid, name))
        assert len(remote_bytes) == meta.file_size, f"{name}: object size disagrees with the index"
        if (tl_a / str(name)).exists():
            assert remote_bytes == (tl_a / str(name)).read_bytes()
