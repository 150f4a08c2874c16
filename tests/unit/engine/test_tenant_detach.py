"""Detach of a `Tenant` in process (issue 14, defect 8).

- Defect 8: a detach of a Broken tenant that is blocked (its local data cannot be checked)
  leaves the tenant ``Stopping``, not ``Loading`` with ``hasInProgressDownloads``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.engine_env import EngineEnv, make_tenant, run
from helpers.fake_storage import FakeStorage
from pageserver_operator.api import v1alpha1
from pageserver_operator.engine import remote_io, tenant
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.remote.local_fs import LocalFsStorage


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[EngineEnv]:
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    storage = FakeStorage()
    e = EngineEnv(workdir, storage, remote_io.RemoteIO(storage, workers=4))
    try:
        yield e
    finally:
        storage.release_all()
        e.close()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[EngineEnv]:
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    storage = LocalFsStorage(tmp_path / "remote")
    e = EngineEnv(workdir, storage, remote_io.RemoteIO(storage, workers=4))
    try:
        yield e
    finally:
        e.close()


def test_a_blocked_detach_of_a_broken_tenant_is_stopping(local: EngineEnv) -> None:
    gen = make_tenant(local.storage, seed=5)
    tid, tl = gen.tenant_id, gen.timelines[0]
    t = local.tenant(tid)
    run(t.attach)
    tp = local.paths(tid)
    data = bytearray(tp.metadata(tl).read_bytes())
    data[10] ^= 0xFF  # corrupt: the tenant cannot be loaded, its layers not checked
    tp.metadata(tl).write_bytes(bytes(data))
    t2 = local.tenant(tid)
    with pytest.raises(EngineError):
        run(t2.load)
    assert t2.state is tenant.TenantState.BROKEN

    with pytest.raises(EngineError) as e:
        run(lambda: t2.detach(timeout=10))
    assert e.value.reason == "LocalMetadataInvalid"
    snap = t2.snapshot()
    assert snap.state == "Stopping", (snap.state, snap.reason, snap.message)
    assert "detach blocked" in snap.message
    status = v1alpha1.status_from_snapshot(snap)
    assert not status.has_in_progress_downloads
    assert tp.tenant_dir.exists(), "the local data of a blocked detach must stay"
