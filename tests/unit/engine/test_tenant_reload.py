"""A reload of a `Tenant` fences the previous upload queues (issue 14, defect 5).

A stopped upload queue leaves its in-flight attempt running (reference §6.9.6). When the tenant
is reloaded meanwhile (Broken -> retry, a detach retried after a timeout), the new queues start
from the remote index as it is now; if the old index PUT lands after the new one, the remote
index goes backwards (and the next sync reports a false ``SplitBrainDetected``). A reload waits
for everything the previous queues still have in flight.

Scenario over `FakeStorage`: an index PUT naming the first flushed layer is held in flight, the
writer flushes a second layer, the tenant is stopped (Broken) and reloaded while the old PUT is
still held; then the old PUT is released. Every index written must move forward, and the last
one names both layers.
"""

from __future__ import annotations

import asyncio

from helpers.engine_env import EngineEnv, Writer, make_tenant, run, until
from helpers.fake_storage import FakeStorage
from pageserver_operator.engine import paths
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import index_part


def test_a_reload_waits_for_the_index_upload_of_the_previous_queue(fake: EngineEnv) -> None:
    storage = fake.storage
    assert isinstance(storage, FakeStorage)
    gen = make_tenant(storage, seed=6)
    tid, tl = gen.tenant_id, gen.timelines[0]
    key = paths.remote_index_key(tid, tl)
    t = fake.tenant(tid)
    w = Writer(fake.workdir, tid)

    async def scenario() -> None:
        await t.attach()
        for x in t.timelines.values():
            await x.queue.wait_completion()
        first = w.flush(tl)
        held = storage.hold("put", key)
        sync = asyncio.ensure_future(t.sync(timeout=20))
        await until(held.started.is_set, "the index PUT naming the first layer in flight")
        second = w.flush(tl)
        t.mark_broken(EngineError("Injected", "the test stops the queues"))
        await asyncio.gather(sync, return_exceptions=True)
        written = len([k for k, _ in storage.writes if k == key])
        reload = asyncio.ensure_future(t.load())
        # The fixed reload cannot go on while the old PUT is held (no event to wait for); the
        # bound only gives an unfixed one the time to write its own index first.
        await asyncio.wait({reload}, timeout=1.0)
        assert len([k for k, _ in storage.writes if k == key]) == written or reload.done()
        held.release()
        await reload
        for x in t.timelines.values():
            await x.queue.wait_completion()
        indexes = [index_part.IndexPart.parse(d) for k, d in storage.writes if k == key]
        dcls = [i.metadata.disk_consistent_lsn for i in indexes]
        assert dcls == sorted(dcls), f"the remote index went backwards: {[str(d) for d in dcls]}"
        last = index_part.IndexPart.parse(storage.objects[key])
        assert {str(first), str(second)} <= {str(n) for n in last.layers}
        assert last.metadata.disk_consistent_lsn == w.dcl(tl)
        await t.sync(timeout=20)  # no false split brain either

    run(scenario)
