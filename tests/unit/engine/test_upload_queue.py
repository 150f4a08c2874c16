"""Ordering of the per-timeline upload queue (reference §6.9.4 launch rules, §8 item 23).

Every scenario runs the real `UploadQueue` over `helpers.fake_storage.FakeStorage`, whose
operations can be *held* in flight, so what runs together and what waits is observed
deterministically, not inferred from timing:

- two layer uploads are in flight together; the index waits for both and lists both, with their
  sizes, and its metadata round-trips;
- upload + deletion: the deletion's index waits behind the upload, the deletion waits for its
  index (which no longer names the file), several deletions run together;
- two index uploads never overlap; a layer upload scheduled after an index may run with it;
- `wait_completion` is a barrier for everything before it (not after), `stop()` fails pending
  barriers and refuses new work, in-flight attempts finish;
- `remote_consistent_lsn` moves only when an index upload *completes* (not on failure, not while
  in flight);
- an upload whose local file vanished is abandoned and no later index names it (fix of #5635),
  until a file of that name is uploaded again (issue 14, defect 9); the index whose snapshot
  lost it keeps the previous disk_consistent_lsn, or is not uploaded if there is none (defect 4);
- transient failures are retried, the index still waits; while an operation fails the queue
  says why (`upload_error`: reason + message), counts it, and retries a permanent failure
  (AccessDenied) on the longer capped schedule (issue 14, defect 11);
- the same scenario over `LocalFsStorage` leaves exactly the expected objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from helpers.fake_storage import FakeStorage, Gate
from pageserver_operator.engine import metrics, paths, remote_io
from pageserver_operator.engine.upload_queue import Backoff, OpKind, QueueStopped, UploadQueue
from pageserver_operator.formats import ids, index_part, layer_name, lsn, metadata
from pageserver_operator.remote import errors as remote_errors
from pageserver_operator.remote.local_fs import LocalFsStorage

T = TypeVar("T")

TENANT = ids.TenantId.parse("11111111111111111111111111111111")
TIMELINE = ids.TimelineId.parse("22222222222222222222222222222222")
INDEX_KEY = paths.remote_index_key(TENANT, TIMELINE)
FAST = Backoff(base=0.001, factor=1.0, cap=0.001)


def meta(dcl: int, gc: int = 0x1696070) -> metadata.TimelineMetadata:
    return metadata.TimelineMetadata(
        disk_consistent_lsn=lsn.Lsn(dcl),
        prev_record_lsn=None,
        ancestor_timeline=None,
        ancestor_lsn=lsn.Lsn.ZERO,
        latest_gc_cutoff_lsn=lsn.Lsn(gc),
        initdb_lsn=lsn.Lsn(0x1696070),
        pg_version=15,
    )


def delta(start: int, end: int) -> layer_name.LayerName:
    return layer_name.DeltaLayerName(layer_name.Key.MIN, layer_name.Key.MAX, lsn.Lsn(start), lsn.Lsn(end))


A = delta(0x1000000, 0x1100000)
B = delta(0x1100000, 0x1200000)
C = delta(0x1200000, 0x1300000)


def key(name: layer_name.LayerName) -> str:
    return paths.remote_layer_key(TENANT, TIMELINE, name)


@dataclass
class Env:
    storage: FakeStorage
    io: remote_io.RemoteIO
    dir: Path

    def layer(self, name: layer_name.LayerName, size: int) -> int:
        (self.dir / str(name)).write_bytes(bytes([len(str(name)) % 251]) * size)
        return size

    def queue(self) -> UploadQueue:
        q = UploadQueue(self.io, TENANT, TIMELINE, self.dir, FAST)
        q.on_unlinked = deleting(self.io)
        return q

    def uploaded_index(self) -> index_part.IndexPart:
        return index_part.IndexPart.parse(self.storage.objects[INDEX_KEY])

    def started(self) -> list[tuple[str, str]]:
        return [(op, k) for ev, op, k in self.storage.events("start")]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    storage = FakeStorage()
    io = remote_io.RemoteIO(storage, workers=16)
    try:
        yield Env(storage, io, tmp_path)
    finally:
        storage.release_all()
        io.close()


def deleting(io: remote_io.RemoteIO) -> Callable[[Sequence[str]], Awaitable[None]]:
    """The deletion queue's part, at once and unvalidated (engine/deletion_queue.py has its own
    tests): here only *when* the queue hands the keys over matters."""

    async def delete(keys: Sequence[str]) -> None:
        await asyncio.gather(*(io.delete(k) for k in keys))

    return delete


def run(fn: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(fn(), timeout)

    return asyncio.run(main())


async def until(pred: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.002)


async def settle() -> None:
    """Give the event loop and the worker threads time to start whatever may start."""
    for _ in range(5):
        await asyncio.sleep(0.01)


# ---- layer uploads and the index ---------------------------------------------------------------


def test_two_layer_uploads_run_together_and_the_index_waits_for_both(env: Env) -> None:
    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        size_a, size_b = env.layer(A, 1000), env.layer(B, 2345)
        hold_a, hold_b = env.storage.hold("upload", str(A)), env.storage.hold("upload", str(B))
        hold_index = env.storage.hold("put", "index_part.json")
        m = meta(0x1200000)

        q.schedule_layer_upload(A, size_a)
        q.schedule_layer_upload(B, size_b)
        q.schedule_index_upload(m)

        await until(lambda: hold_a.started.is_set() and hold_b.started.is_set(), "both uploads in flight")
        assert env.storage.in_flight() == sorted([("upload", key(A)), ("upload", key(B))])
        assert q.in_flight_kinds() == [OpKind.UPLOAD_LAYER, OpKind.UPLOAD_LAYER]
        assert q.queued_kinds() == [OpKind.UPLOAD_INDEX]

        hold_a.release()
        await until(lambda: ("end", "upload", key(A)) in env.storage.log, "upload A done")
        await settle()
        assert not hold_index.started.is_set(), "index started while upload B was still in flight"
        assert q.queued_kinds() == [OpKind.UPLOAD_INDEX]

        hold_b.release()
        await until(hold_index.started.is_set, "index upload started")
        assert env.storage.in_flight() == [("put", INDEX_KEY)]
        hold_index.release()
        await q.wait_completion()

        idx = env.uploaded_index()
        assert idx.version == 1
        assert dict(idx.layers) == {
            A: index_part.LayerFileMetadata(size_a),
            B: index_part.LayerFileMetadata(size_b),
        }
        assert idx.metadata == m
        assert idx.metadata_bytes == m.to_bytes()
        assert idx.disk_consistent_lsn == m.disk_consistent_lsn
        assert env.storage.objects[key(A)] == (env.dir / str(A)).read_bytes()
        assert env.storage.objects[key(B)] == (env.dir / str(B)).read_bytes()
        ends = [k for ev, _, k in env.storage.log if ev == "end"]
        assert ends.index(INDEX_KEY) > max(ends.index(key(A)), ends.index(key(B)))
        assert q.unfinished == 0

    run(scenario)


def test_index_json_is_compact_v1_with_sizes_for_every_layer(env: Env) -> None:
    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        q.schedule_layer_upload(A, env.layer(A, 10))
        q.schedule_index_upload(meta(0x1100000))
        await q.wait_completion()

    run(scenario)
    doc = json.loads(env.storage.objects[INDEX_KEY])
    assert doc["version"] == 1
    assert doc["timeline_layers"] == [str(A)]
    assert doc["layer_metadata"] == {str(A): {"file_size": 10}}
    assert doc["missing_layers"] == []
    assert doc["disk_consistent_lsn"] == "0/1100000"
    assert bytes(doc["metadata_bytes"]) == meta(0x1100000).to_bytes()


def test_two_index_uploads_never_overlap(env: Env) -> None:
    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        first = env.storage.hold("put", "index_part.json")
        q.schedule_index_upload(meta(0x1100000))
        q.schedule_index_upload(meta(0x1200000))
        await until(first.started.is_set, "first index in flight")
        await settle()
        assert env.storage.in_flight() == [("put", INDEX_KEY)]
        assert q.queued_kinds() == [OpKind.UPLOAD_INDEX]
        first.release()
        await q.wait_completion()
        assert [k for _, op, k in env.storage.events("start") if op == "put"] == [INDEX_KEY, INDEX_KEY]
        assert env.uploaded_index().metadata == meta(0x1200000)

    run(scenario)


def test_layer_upload_scheduled_after_an_index_may_run_with_it(env: Env) -> None:
    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        hold_index = env.storage.hold("put", "index_part.json")
        hold_c = env.storage.hold("upload", str(C))
        q.schedule_index_upload(meta(0x1100000))
        await until(hold_index.started.is_set, "index in flight")
        q.schedule_layer_upload(C, env.layer(C, 5))
        await until(hold_c.started.is_set, "layer upload started while the index is in flight")
        assert env.storage.in_flight() == sorted([("put", INDEX_KEY), ("upload", key(C))])
        env.storage.release_all()
        await q.wait_completion()
        # the index snapshot was taken before C was scheduled: it does not name C
        assert set(env.uploaded_index().layers) == set()

    run(scenario)


# ---- deletions -----------------------------------------------------------------------------------


def test_deletion_and_its_index_queue_behind_an_upload_and_the_deletion_waits_for_its_index(env: Env) -> None:
    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        q.schedule_layer_upload(A, env.layer(A, 100))
        q.schedule_layer_upload(B, env.layer(B, 200))
        q.schedule_index_upload(meta(0x1200000))
        await q.wait_completion()
        n_puts = len(env.storage.writes)

        hold_c = env.storage.hold("upload", str(C))
        hold_index = env.storage.hold("put", "index_part.json")
        q.schedule_layer_upload(C, env.layer(C, 300))
        q.schedule_layer_deletion([A])
        await until(hold_c.started.is_set, "upload C in flight")
        await settle()
        assert q.in_flight_kinds() == [OpKind.UPLOAD_LAYER]
        assert q.queued_kinds() == [OpKind.UPLOAD_INDEX, OpKind.DELETE]
        assert ("start", "delete", key(A)) not in env.storage.log

        hold_c.release()
        await until(hold_index.started.is_set, "the deletion's index in flight")
        await settle()
        assert q.in_flight_kinds() == [OpKind.UPLOAD_INDEX]
        assert q.queued_kinds() == [OpKind.DELETE]
        assert ("start", "delete", key(A)) not in env.storage.log, "deletion started before its index"

        hold_index.release()
        await q.wait_completion()
        # the index uploaded before the deletion does not name A, and names C (uploaded before it)
        index_writes = [d for k, d in env.storage.writes[n_puts:] if k == INDEX_KEY]
        assert len(index_writes) == 1
        unlinking = index_part.IndexPart.parse(index_writes[0])
        assert set(unlinking.layers) == {B, C}
        assert unlinking.metadata == meta(0x1200000)
        starts = env.started()
        assert starts.index(("delete", key(A))) > starts.index(("put", INDEX_KEY))
        assert sorted(env.storage.objects) == sorted([key(B), key(C), INDEX_KEY])

    run(scenario)


def test_deletions_run_together_but_not_with_uploads(env: Env) -> None:
    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        q.schedule_layer_upload(A, env.layer(A, 1))
        q.schedule_layer_upload(B, env.layer(B, 2))
        q.schedule_index_upload(meta(0x1200000))
        await q.wait_completion()

        del_a, del_b = env.storage.hold("delete", str(A)), env.storage.hold("delete", str(B))
        q.schedule_layer_deletion([A, B])
        await until(lambda: del_a.started.is_set() and del_b.started.is_set(), "both deletions in flight")
        hold_c = env.storage.hold("upload", str(C))
        q.schedule_layer_upload(C, env.layer(C, 3))
        await until(hold_c.started.is_set, "upload C started while deletions are in flight")
        # the upload is at the head of the queue now and may start (uploads always may)
        assert sorted(k.value for k in q.in_flight_kinds()) == ["delete", "upload_layer"]
        q.schedule_index_upload(meta(0x1300000))
        await settle()
        assert q.queued_kinds() == [OpKind.UPLOAD_INDEX], "an index must wait for deletions in flight"
        env.storage.release_all()
        await q.wait_completion()
        assert set(env.uploaded_index().layers) == {C}

    run(scenario)


def test_deletion_waits_for_uploads_in_flight(env: Env) -> None:
    """A deletion at the head of the queue may not start while a layer upload is in flight."""

    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        q.schedule_layer_upload(A, env.layer(A, 1))
        q.schedule_index_upload(meta(0x1100000))
        await q.wait_completion()
        hold_index = env.storage.hold("put", "index_part.json")
        hold_b = env.storage.hold("upload", str(B))
        q.schedule_layer_deletion([A])  # index (held) then delete
        await until(hold_index.started.is_set, "index in flight")
        q.schedule_layer_upload(B, env.layer(B, 2))  # queued behind the delete: no overtaking
        hold_index.release()
        await until(lambda: ("end", "delete", key(A)) in env.storage.log, "delete done")
        await until(hold_b.started.is_set, "upload B started after the delete")
        starts = env.started()
        assert starts.index(("delete", key(A))) < starts.index(("upload", key(B)))
        hold_b.release()
        await q.wait_completion()

    run(scenario)


# ---- barrier and stop ----------------------------------------------------------------------------


def test_barrier_waits_for_everything_before_it_and_nothing_after(env: Env) -> None:
    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        hold_a = env.storage.hold("upload", str(A))
        hold_index = env.storage.hold("put", "index_part.json")
        hold_c = env.storage.hold("upload", str(C))
        q.schedule_layer_upload(A, env.layer(A, 1))
        q.schedule_index_upload(meta(0x1100000))
        barrier = asyncio.ensure_future(q.wait_completion())
        await asyncio.sleep(0)  # let the barrier task enqueue its barrier
        assert q.queued_kinds() == [OpKind.UPLOAD_INDEX, OpKind.BARRIER]
        q.schedule_layer_upload(C, env.layer(C, 3))
        await until(hold_a.started.is_set, "upload A in flight")
        await settle()
        assert not barrier.done()
        hold_a.release()
        await until(hold_index.started.is_set, "index in flight")
        await settle()
        assert not barrier.done(), "barrier resolved while the index before it was in flight"
        assert not hold_c.started.is_set(), "upload C overtook the barrier"
        hold_index.release()
        await asyncio.wait_for(barrier, 5)
        # C was scheduled after the barrier: the barrier did not wait for it
        await until(hold_c.started.is_set, "upload C started after the barrier")
        assert ("end", "upload", key(C)) not in env.storage.log
        assert q.unfinished == 1
        hold_c.release()
        await q.wait_completion()
        assert q.unfinished == 0

    run(scenario)


def test_barrier_on_an_idle_queue_returns_at_once(env: Env) -> None:
    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        await asyncio.wait_for(q.wait_completion(), 1)
        assert env.storage.log == []

    run(scenario)


def test_stop_fails_pending_barriers_and_lets_the_in_flight_attempt_finish(env: Env) -> None:
    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        hold_a = env.storage.hold("upload", str(A))
        q.schedule_layer_upload(A, env.layer(A, 1))
        q.schedule_index_upload(meta(0x1100000))
        barrier = asyncio.ensure_future(q.wait_completion())
        await until(hold_a.started.is_set, "upload A in flight")
        assert q.unfinished == 2

        q.stop()
        with pytest.raises(QueueStopped, match="wait_completion aborted because upload queue was stopped"):
            await asyncio.wait_for(barrier, 5)
        assert q.queued_kinds() == []
        with pytest.raises(QueueStopped):
            q.schedule_index_upload(meta(0x1200000))
        with pytest.raises(QueueStopped):
            await q.wait_completion()

        hold_a.release()
        await until(lambda: ("end", "upload", key(A)) in env.storage.log, "in-flight upload finished")
        await until(lambda: q.unfinished == 0, "in-flight task gone")
        await settle()
        assert INDEX_KEY not in env.storage.objects, "a dropped index upload ran after stop()"
        assert q.remote_consistent_lsn is None

    run(scenario)


def test_scheduling_before_init_is_refused(env: Env) -> None:
    q = env.queue()
    with pytest.raises(RuntimeError, match="Uninitialized"):
        q.schedule_index_upload(meta(0x1000000))
    q.init_empty(meta(0x1000000))
    with pytest.raises(RuntimeError, match="twice"):
        q.init_empty(meta(0x1000000))


# ---- remote_consistent_lsn -----------------------------------------------------------------------


def test_remote_consistent_lsn_moves_only_when_an_index_upload_completes(env: Env) -> None:
    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        assert q.remote_consistent_lsn is None  # empty remote: nothing is safe to trim

        hold_a = env.storage.hold("upload", str(A))
        q.schedule_layer_upload(A, env.layer(A, 1))
        q.schedule_index_upload(meta(0x1100000))
        await until(hold_a.started.is_set, "upload in flight")
        assert q.remote_consistent_lsn is None
        hold_index = env.storage.hold("put", "index_part.json")
        hold_a.release()
        await until(hold_index.started.is_set, "index in flight")
        assert q.remote_consistent_lsn is None, "moved while the index upload was in flight"
        assert q.remote_files == {}
        hold_index.release()
        await q.wait_completion()
        assert q.remote_consistent_lsn == lsn.Lsn(0x1100000)
        assert q.remote_files == {A: 1}

        # a failing index upload is retried; the LSN does not move until it succeeds
        hold_first = env.storage.hold("put", "index_part.json")
        env.storage.fail("put", "index_part.json", remote_errors.TransientRemoteError("boom 1"))
        q.schedule_index_upload(meta(0x1200000))
        await until(hold_first.started.is_set, "first attempt in flight")
        hold_retry = env.storage.hold("put", "index_part.json")
        hold_first.release()
        await until(lambda: ("fail", "put", INDEX_KEY) in env.storage.log, "first attempt failed")
        await until(hold_retry.started.is_set, "retry in flight")
        assert q.last_error is not None and "boom 1" in q.last_error
        assert q.remote_consistent_lsn == lsn.Lsn(0x1100000)
        hold_retry.release()
        await q.wait_completion()
        assert q.remote_consistent_lsn == lsn.Lsn(0x1200000)
        assert q.last_error is None

    run(scenario)


def test_init_from_index_takes_files_sizes_and_lsn_from_it(env: Env) -> None:
    idx = index_part.IndexPart.build({A: 10, B: None}, meta(0x1200000))
    q = env.queue()
    q.init_from_index(idx)
    assert q.latest_files == {A: 10, B: None}
    assert q.remote_files == {A: 10, B: None}
    assert q.latest_metadata == meta(0x1200000)
    assert q.remote_consistent_lsn == lsn.Lsn(0x1200000)
    assert q.record_size(B, 20) is True
    assert q.record_size(B, 20) is False  # already known
    assert q.record_size(A, 99) is False  # never overrides a known size
    assert q.latest_files == {A: 10, B: 20}


# ---- failures ------------------------------------------------------------------------------------


P = delta(0x0F00000, 0x1000000)
L1 = layer_name.DeltaLayerName(  # what compaction wrote over A and B before removing A
    layer_name.Key.MIN, layer_name.Key(1 << 100), lsn.Lsn(0x1000000), lsn.Lsn(0x1200000)
)


def test_upload_of_a_vanished_local_file_is_abandoned_and_never_indexed(env: Env) -> None:
    async def scenario() -> None:
        q = env.queue()
        q.init_from_index(index_part.IndexPart.build({P: 4}, meta(0x1000000)))
        env.storage.objects[INDEX_KEY] = index_part.IndexPart.build({P: 4}, meta(0x1000000)).to_json_bytes()
        size_b = env.layer(B, 50)
        # A was flushed, scheduled, then removed locally before its upload could start
        q.schedule_layer_upload(A, 77)
        q.schedule_layer_upload(B, size_b)
        q.schedule_index_upload(meta(0x1200000))  # its snapshot names A and B
        await q.wait_completion()
        assert A in q.abandoned
        assert q.abandons == 1
        assert A not in q.latest_files
        assert key(A) not in env.storage.objects
        assert set(env.uploaded_index().layers) == {P, B}, "the index names an object that was never uploaded"

    run(scenario)


def test_an_index_whose_layer_vanished_keeps_the_previous_disk_consistent_lsn(env: Env) -> None:
    """Issue 14, defect 4: the index after an abandoned upload advanced disk_consistent_lsn over
    the layer that was never uploaded: it claimed LSNs [A) no uploaded layer covers. It keeps the
    last index's metadata instead, and the next scan (which finds the L1 that replaced A)
    uploads the real one."""

    async def scenario() -> None:
        previous = index_part.IndexPart.build({P: 4}, meta(0x1000000))
        q = env.queue()
        q.init_from_index(previous)
        env.storage.objects[INDEX_KEY] = previous.to_json_bytes()
        q.schedule_layer_upload(A, 77)  # gone before its upload (compaction)
        q.schedule_layer_upload(B, env.layer(B, 50))
        q.schedule_index_upload(meta(0x1200000))
        await q.wait_completion()
        gap_index = env.uploaded_index()
        assert set(gap_index.layers) == {P, B}
        assert gap_index.metadata == meta(0x1000000), "the index claims LSNs no uploaded layer covers"
        assert q.remote_consistent_lsn == lsn.Lsn(0x1000000)
        assert q.latest_metadata == meta(0x1000000), "the next scan must schedule the real index"

        # the next scan: the L1 that replaced A is local-only; the metadata is read again
        q.schedule_layer_upload(L1, env.layer(L1, 60))
        q.schedule_index_upload(meta(0x1200000))
        await q.wait_completion()
        assert set(env.uploaded_index().layers) == {P, B, L1}
        assert env.uploaded_index().metadata == meta(0x1200000)
        assert q.remote_consistent_lsn == lsn.Lsn(0x1200000)

    run(scenario)


def test_a_first_index_whose_layer_vanished_is_not_uploaded(env: Env) -> None:
    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        q.schedule_layer_upload(A, 77)
        q.schedule_layer_upload(B, env.layer(B, 50))
        q.schedule_index_upload(meta(0x1200000))
        await q.wait_completion()
        assert INDEX_KEY not in env.storage.objects, "no index may claim LSNs no uploaded layer covers"
        assert q.remote_consistent_lsn is None
        assert q.latest_metadata is None  # the next scan schedules an index
        q.schedule_layer_upload(L1, env.layer(L1, 60))
        q.schedule_index_upload(meta(0x1200000))
        await q.wait_completion()
        assert set(env.uploaded_index().layers) == {B, L1}
        assert q.remote_consistent_lsn == lsn.Lsn(0x1200000)

    run(scenario)


def test_a_layer_that_reappears_after_its_upload_was_abandoned_is_indexed(env: Env) -> None:
    """Issue 14, defect 9: the abandoned set was never cleared, so a file of the same name
    written again was uploaded but left out of every later index (Synced stayed False)."""

    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        q.schedule_layer_upload(A, 77)  # its file is gone before the upload starts
        q.schedule_index_upload(meta(0x1000000))
        await q.wait_completion()
        assert A in q.abandoned
        env.layer(A, 30)  # the pageserver writes a layer of that name again
        q.schedule_layer_upload(A, 30)
        q.schedule_index_upload(meta(0x1100000))
        await q.wait_completion()
        assert len(env.storage.objects[key(A)]) == 30
        assert env.uploaded_index().layers == {A: index_part.LayerFileMetadata(30)}
        assert A not in q.abandoned
        assert q.remote_files == {A: 30}  # so the timeline's upload lag is 0: Synced

    run(scenario)


def test_a_layer_scheduled_again_while_its_first_upload_is_abandoned_stays_desired(env: Env) -> None:
    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        env.layer(A, 5)
        first, second = env.storage.hold("upload", str(A)), env.storage.hold("upload", str(A))
        q.schedule_layer_upload(A, 5)
        await asyncio.to_thread(first.wait_started)
        q.schedule_layer_upload(A, 5)  # scheduled again (a later scan) while the first is in flight
        await asyncio.to_thread(second.wait_started)
        (env.dir / str(A)).unlink()
        first.release()
        await until(lambda: A in q.abandoned, "first upload abandoned")
        assert q.latest_files.get(A) == 5, "the second upload still wants it in the index"
        env.layer(A, 5)
        second.release()
        q.schedule_index_upload(meta(0x1100000))
        await q.wait_completion()
        assert env.uploaded_index().layers == {A: index_part.LayerFileMetadata(5)}
        assert A not in q.abandoned

    run(scenario)


def test_transient_upload_failures_are_retried_and_the_index_still_waits(env: Env) -> None:
    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        env.storage.fail(
            "upload", str(A), remote_errors.TransientRemoteError("x1"), remote_errors.TransientRemoteError("x2")
        )
        q.schedule_layer_upload(A, env.layer(A, 9))
        q.schedule_index_upload(meta(0x1100000))
        await q.wait_completion()
        attempts = [e for e in env.storage.log if e[1] == "upload"]
        assert [e[0] for e in attempts] == ["start", "fail", "start", "fail", "start", "end"]
        starts = env.started()
        assert starts.index(("put", INDEX_KEY)) > len(starts) - 2
        assert set(env.uploaded_index().layers) == {A}

    run(scenario)


@dataclass(frozen=True)
class RecordingBackoff(Backoff):
    """Records each (attempt, permanent) asked for; ``before`` runs before the given attempt
    starts (e.g. to hold it in flight), deterministically."""

    calls: list[tuple[int, bool]] = field(default_factory=list)
    before: dict[int, Callable[[], object]] = field(default_factory=dict)

    def delay(self, attempt: int, *, permanent: bool = False) -> float:
        self.calls.append((attempt, permanent))
        hook = self.before.get(attempt + 1)
        if hook is not None:
            hook()
        return 0.001


def test_backoff_caps_permanent_failures_later_than_transient_ones() -> None:
    b = Backoff()
    assert [b.delay(n) for n in (0, 1, 2, 8, 30)] == [0.0, 0.1, 0.2, 10.0, 10.0]
    assert [b.delay(n, permanent=True) for n in (1, 2, 9, 30)] == [0.1, 0.2, 25.6, 60.0]


def test_a_permanent_upload_error_is_shown_counted_and_retried_on_the_capped_schedule(env: Env) -> None:
    """Issue 14, defect 11: AccessDenied was retried for ever with nothing shown. Now the
    queue says why (reason + message, for the Synced condition and an Event), counts it, and
    retries on the permanent schedule; once the bucket is fixed it succeeds and the error clears."""

    async def scenario() -> None:
        backoff = RecordingBackoff()
        q = UploadQueue(env.io, TENANT, TIMELINE, env.dir, backoff)
        changes: list[tuple[str, str] | None] = []
        q.on_change = lambda: changes.append(
            None if q.upload_error is None else (q.upload_error.reason, q.upload_error.message)
        )
        q.init_empty(meta(0x1000000))
        counter = metrics.UPLOAD_ERRORS.labels(str(TENANT), "RemoteStorageRejected")
        before = counter._value.get()
        denied = "upload of s3://b/k rejected: AccessDenied (HTTP 403): Access Denied"
        env.storage.fail("upload", str(A), *(remote_errors.PermanentRemoteError(denied) for _ in range(3)))
        gates: list[Gate] = []
        backoff.before[4] = lambda: gates.append(env.storage.hold("upload", str(A)))  # until "fixed"
        q.schedule_layer_upload(A, env.layer(A, 9))
        q.schedule_index_upload(meta(0x1100000))
        await until(lambda: bool(gates), "third attempt failed")
        gate = gates[0]
        await asyncio.to_thread(gate.wait_started)
        error = q.upload_error
        assert error is not None
        assert error.reason == "RemoteStorageRejected" and error.permanent and error.attempts == 3
        assert str(TIMELINE) in error.message and "AccessDenied" in error.message and str(A) in error.message
        assert counter._value.get() - before == 3
        assert backoff.calls == [(1, True), (2, True), (3, True)]
        assert changes and changes[0] is not None and changes[0][0] == "RemoteStorageRejected"
        assert INDEX_KEY not in env.storage.objects  # the index still waits
        gate.release()
        await q.wait_completion()
        assert q.upload_error is None and changes[-1] is None
        assert set(env.uploaded_index().layers) == {A}

    run(scenario)


def test_a_transient_upload_error_is_shown_until_the_operation_succeeds(env: Env) -> None:
    async def scenario() -> None:
        backoff = RecordingBackoff()
        q = UploadQueue(env.io, TENANT, TIMELINE, env.dir, backoff)
        q.init_empty(meta(0x1000000))
        env.storage.fail("put", "index_part.json", remote_errors.TransientRemoteError("connection reset"))
        gates: list[Gate] = []
        backoff.before[2] = lambda: gates.append(env.storage.hold("put", "index_part.json"))
        q.schedule_index_upload(meta(0x1000000))
        await until(lambda: bool(gates), "first attempt failed")
        gate = gates[0]
        await asyncio.to_thread(gate.wait_started)
        error = q.upload_error
        assert error is not None and error.reason == "RemoteStorageUnavailable" and not error.permanent
        assert backoff.calls == [(1, False)]
        gate.release()
        await q.wait_completion()
        assert q.upload_error is None

    run(scenario)


def test_stop_ends_the_wait_between_attempts_so_join_is_prompt(env: Env) -> None:
    """A permanent failure waits up to `Backoff.permanent_cap` between attempts; a reload stops
    the queue and joins it (defect 5), which must not wait that long."""

    async def scenario() -> None:
        q = UploadQueue(env.io, TENANT, TIMELINE, env.dir, Backoff(base=300, cap=300, permanent_cap=300))
        q.init_empty(meta(0x1000000))
        env.storage.fail("upload", str(A), remote_errors.PermanentRemoteError("AccessDenied"))
        q.schedule_layer_upload(A, env.layer(A, 3))
        await until(lambda: q.upload_error is not None, "first attempt failed")
        q.stop()
        await asyncio.wait_for(q.join(), 5)
        assert key(A) not in env.storage.objects

    run(scenario)


def test_local_file_of_the_wrong_size_is_retried_not_uploaded(env: Env) -> None:
    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        env.layer(A, 10)
        q.schedule_layer_upload(A, 11)  # scheduled size disagrees with the file
        await until(lambda: q.last_error is not None, "failure recorded")
        assert "11 were scheduled" in (q.last_error or "")
        assert key(A) not in env.storage.objects
        env.layer(A, 11)  # the file reaches the scheduled size: the retry succeeds
        await q.wait_completion()
        assert len(env.storage.objects[key(A)]) == 11

    run(scenario)


def test_an_unexpected_error_in_a_layer_upload_never_lets_the_index_name_a_missing_object(env: Env) -> None:
    """A failure that is neither a remote error nor an OSError (a bug in a backend, an exception
    type nobody mapped) must not count as success: the index after it may only name objects that
    exist (the queue may retry the upload or stop, but never run the index as if it had worked)."""

    async def scenario() -> None:
        q = env.queue()
        q.init_empty(meta(0x1000000))
        env.storage.fail("upload", str(A), RuntimeError("unexpected failure inside the backend"))
        q.schedule_layer_upload(A, env.layer(A, 5))
        q.schedule_index_upload(meta(0x1100000))
        with contextlib.suppress(TimeoutError, QueueStopped):  # stopping or still retrying: both fine
            await asyncio.wait_for(q.wait_completion(), 2)
        # later work arrives (the next flush): whatever the queue does now, no index may lie
        try:
            q.schedule_layer_upload(B, env.layer(B, 6))
            q.schedule_index_upload(meta(0x1200000))
            await asyncio.wait_for(q.wait_completion(), 2)
        except (TimeoutError, QueueStopped):
            pass
        if INDEX_KEY in env.storage.objects:
            named = set(env.uploaded_index().layers)
            missing = sorted(str(n) for n in named if key(n) not in env.storage.objects)
            assert missing == [], f"the uploaded index names objects that were never uploaded: {missing}"

    run(scenario)


# ---- the same over a real backend ----------------------------------------------------------------


def test_queue_over_local_fs_leaves_exactly_the_indexed_objects(tmp_path: Path) -> None:
    root = tmp_path / "remote"
    tl_dir = tmp_path / "timeline"
    tl_dir.mkdir()
    storage = LocalFsStorage(root)
    io = remote_io.RemoteIO(storage, workers=4)

    async def scenario() -> None:
        q = UploadQueue(io, TENANT, TIMELINE, tl_dir, FAST)
        q.on_unlinked = deleting(io)
        q.init_empty(meta(0x1000000))
        for name, size in ((A, 1000), (B, 2000), (C, 3000)):
            (tl_dir / str(name)).write_bytes(b"x" * size)
            q.schedule_layer_upload(name, size)
        q.schedule_index_upload(meta(0x1300000))
        q.schedule_layer_deletion([A])
        await q.wait_completion()

    try:
        run(scenario)
    finally:
        io.close()
    remote_dir = root / paths.remote_timeline_prefix(TENANT, TIMELINE)
    assert sorted(p.name for p in remote_dir.iterdir()) == sorted([str(B), str(C), "index_part.json"])
    idx = index_part.IndexPart.parse((remote_dir / "index_part.json").read_bytes())
    assert dict(idx.layers) == {B: index_part.LayerFileMetadata(2000), C: index_part.LayerFileMetadata(3000)}
    assert idx.metadata == meta(0x1300000)
