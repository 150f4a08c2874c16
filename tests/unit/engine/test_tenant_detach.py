"""Detach of a `Tenant` in process (issue 14, defects 6, 7 and 8).

- Defect 6: detach stops syncing only after a final scan taken once the queue is drained: a
  layer and metadata flushed while the detach uploads are uploaded and indexed before the
  directory goes (held index PUT over `FakeStorage`, the writer flushes meanwhile).
- Defect 7: a detach after a cancelled attach (a Tenant deleted while Attaching) returns only
  once every worker thread of that attach is done: none re-creates the tenant directory
  afterwards (a thread held inside the timeline preparation while the attach is cancelled).
- Defect 8: a detach of a Broken tenant that is blocked (its local data cannot be checked)
  leaves the tenant ``Stopping``, not ``Loading`` with ``hasInProgressDownloads``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from helpers.engine_env import EngineEnv, Writer, make_tenant, run, until
from helpers.fake_storage import FakeStorage
from pageserver_operator.api import v1alpha1
from pageserver_operator.engine import snapshot as engine_snapshot
from pageserver_operator.engine import timeline
from pageserver_operator.engine.errors import EngineError


def test_a_layer_flushed_while_detach_drains_is_uploaded_and_indexed(fake: EngineEnv) -> None:
    storage = fake.storage
    assert isinstance(storage, FakeStorage)
    gen = make_tenant(storage, seed=3)
    tid, tl = gen.tenant_id, gen.timelines[0]
    t = fake.tenant(tid)
    w = Writer(fake.workdir, tid)

    async def scenario() -> None:
        await t.attach()
        for q in t.timelines.values():
            await q.queue.wait_completion()
        first = w.flush(tl)
        held = storage.hold("put", "index_part.json")
        detach = asyncio.ensure_future(t.detach(timeout=20))
        await until(held.started.is_set, "the detach's index upload in flight")
        second = w.flush(tl)  # flushed while the detach drains
        held.release()
        await detach
        idx = fake.remote_index(tid, tl)
        names = {str(n) for n in idx.layers}
        assert str(first) in names
        assert str(second) in names, "a layer flushed during the detach was lost with the directory"
        assert idx.metadata.disk_consistent_lsn.value > 0
        assert not fake.paths(tid).tenant_dir.exists()

    run(scenario)


def test_no_thread_of_a_cancelled_attach_recreates_the_directory_after_detach(
    fake: EngineEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = fake.storage
    assert isinstance(storage, FakeStorage)
    gen = make_tenant(storage, seed=4)
    tid = gen.tenant_id
    t = fake.tenant(tid)
    entered, proceed = threading.Event(), threading.Event()
    real = timeline.choose_metadata

    def slow_choose(*args: Any) -> Any:
        entered.set()
        proceed.wait(10)  # a worker thread still preparing timelines
        return real(*args)

    monkeypatch.setattr(timeline, "choose_metadata", slow_choose)

    async def scenario() -> None:
        attach = asyncio.ensure_future(t.attach())
        await until(entered.is_set, "attach preparing timelines on a worker thread")
        attach.cancel()  # the Tenant was deleted while Attaching
        await asyncio.gather(attach, return_exceptions=True)
        detach = asyncio.ensure_future(t.detach(timeout=20))
        # With the fix the detach cannot complete while the thread is held: there is no event
        # to wait for; the bound only gives an unfixed detach the time to return early.
        await asyncio.wait({detach}, timeout=1.0)
        returned_early = detach.done()
        proceed.set()
        await detach
        await asyncio.get_running_loop().run_in_executor(None, fake.io.close)  # every worker thread done
        assert not returned_early, "detach returned while a thread of the attach was still running"
        assert not fake.paths(tid).tenant_dir.exists(), "a thread of the cancelled attach re-created the tenant"

    run(scenario)


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
    assert t2.state is engine_snapshot.TenantState.BROKEN

    with pytest.raises(EngineError) as e:
        run(lambda: t2.detach(timeout=10))
    assert e.value.reason == "LocalMetadataInvalid"
    snap = t2.snapshot()
    assert snap.state == "Stopping", (snap.state, snap.reason, snap.message)
    assert "detach blocked" in snap.message
    status = v1alpha1.status_from_snapshot(snap)
    assert not status.has_in_progress_downloads
    assert tp.tenant_dir.exists(), "the local data of a blocked detach must stay"
