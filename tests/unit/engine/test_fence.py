"""`engine.fence`: detach's last look at a directory the writer can no longer change.

The window the writer simulation found (tests/reliability/test_writer_protocol.py, seed 3,
profile s3-slow): the pageserver flushes after detach's final scan and before the directory is
removed; the flush was lost with the directory. Now detach fences the directory (renames it),
looks again, and syncs again when something is new. A kill after the fence is undone at the next
read of the tenant's state and by the volume's start-up scan.
"""

from __future__ import annotations

from typing import Any

import pytest

from helpers.engine_env import EngineEnv, Writer, make_tenant, run
from pageserver_operator.engine import fence, manager, paths, tenant


def test_a_flush_after_the_final_scan_is_indexed_before_the_directory_goes(
    local: EngineEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = make_tenant(local.storage, seed=21, timelines=1)
    tid, tl = gen.tenant_id, gen.timelines[0]
    t = local.tenant(tid)
    run(t.attach)
    w = Writer(local.workdir, tid)
    real = tenant.Tenant._upload_before_detach
    flushed: list[Any] = []

    async def then_flush(self: tenant.Tenant, timeout: float | None) -> None:
        await real(self, timeout)
        if not flushed:  # right after the final scan found nothing new
            flushed.append(w.flush(tl))

    monkeypatch.setattr(tenant.Tenant, "_upload_before_detach", then_flush)
    run(lambda: t.detach(timeout=30))
    assert flushed
    idx = local.remote_index(tid, tl)
    assert flushed[0] in idx.layers, "a layer flushed after the final scan was lost with the directory"
    assert idx.metadata.disk_consistent_lsn == flushed[0].lsn_end
    root = local.workdir / paths.TENANTS_DIR
    assert sorted(p.name for p in root.iterdir()) == [], "the detach left a directory behind"


def test_a_detach_killed_after_its_fence_is_undone_and_completes_next_time(local: EngineEnv) -> None:
    gen = make_tenant(local.storage, seed=22, timelines=1)
    tid, tl = gen.tenant_id, gen.timelines[0]
    run(local.tenant(tid).attach)
    late = Writer(local.workdir, tid).flush(tl)  # local-only when the "kill" happens
    p = local.paths(tid)
    fence.fence(p)  # what a detach killed right after its rename leaves
    assert not p.tenant_dir.exists()
    again = local.tenant(tid)
    assert again.local_state() == "present"  # put back before anything reads the volume
    assert p.tenant_dir.is_dir() and not fence.fenced_dir(p).exists()
    run(lambda: again.detach(timeout=30))
    assert late in local.remote_index(tid, tl).layers
    assert not p.tenant_dir.exists() and not fence.fenced_dir(p).exists()


def test_the_start_up_scan_puts_a_fenced_tenant_back(local: EngineEnv) -> None:
    gen = make_tenant(local.storage, seed=23, timelines=1)
    tid = gen.tenant_id
    run(local.tenant(tid).attach)
    p = local.paths(tid)
    fence.fence(p)
    m = manager.TenantManager(local.workdir, local.storage)
    try:
        scan = m.scan_volume()
    finally:
        m.close()
    assert scan.tenants == [tid] and scan.unknown == []
    assert p.tenant_dir.is_dir() and not fence.fenced_dir(p).exists()


def test_both_directories_are_left_alone_when_the_tenant_was_recreated(local: EngineEnv) -> None:
    gen = make_tenant(local.storage, seed=24, timelines=1)
    tid = gen.tenant_id
    run(local.tenant(tid).attach)
    p = local.paths(tid)
    fence.fence(p)
    p.tenant_dir.mkdir()
    fence.recover(p)
    assert p.tenant_dir.is_dir() and fence.fenced_dir(p).is_dir()
