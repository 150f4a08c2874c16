"""`engine.deletion_queue`: the durable deletion queue of one tenant (DESIGN §8.1, §8.2).

Against the real ``file://`` backend (`LocalFsStorage`, wrapped to record and fail deletes) and
a real file on a temporary volume:

- a valid flush deletes the objects and removes the file; an empty queue validates nothing; a
  stale flush deletes nothing and counts the keys as leaked (counter and metric);
- recovery adopts entries of the current and of the proven previous generation and drops (and
  counts) the others, rewriting the file; a missing file is an empty queue; a corrupt file is
  ``DeletionQueueInvalid`` naming it;
- a kill between the remote deletes and the rewrite of the file, during validation, or a
  cancelled flush: the next incarnation deletes again, harmlessly; a transient delete failure
  keeps the rest pending and is raised;
- the file format (version 1, a golden file), keys outside the tenant refused, deletes bounded
  by the io's concurrency, keys pushed during a validation wait for the next flush;
- a seeded randomized simulation (``DELETION_QUEUE_SEED``, default random, printed;
  ``DELETION_QUEUE_STEPS``) interleaving pushes, flushes, takeovers by another generation and
  kills with restarts, checking that no delete is ever executed unvalidated and that no pushed
  key is lost unless it is counted as leaked. The seed fixes every choice; thread timing may
  still move the instant of a kill made by cancellation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from helpers.engine_env import run
from pageserver_operator.engine import deletion_queue, errors, metrics, paths, remote_io
from pageserver_operator.formats import ids
from pageserver_operator.formats.generation import Generation
from pageserver_operator.remote import errors as remote_errors
from pageserver_operator.remote.local_fs import LocalFsStorage

LOG = logging.getLogger("test_deletion_queue")


class Killed(BaseException):
    """The process is killed at this instant: nothing of the queue runs after it."""


class Remote(LocalFsStorage):
    """``file://`` storage that records executed deletes and runs hooks around each."""

    def __init__(self, root: Path, concurrency: int = 4) -> None:
        super().__init__(root, concurrency)
        self.lock = threading.Lock()
        self.deleted: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.before: Callable[[str], None] | None = None
        self.after: Callable[[str], None] | None = None

    def delete(self, key: str) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.before is not None:
                self.before(key)
            super().delete(key)
            with self.lock:
                self.deleted.append(key)
            if self.after is not None:
                self.after(key)
        finally:
            with self.lock:
                self.in_flight -= 1


@dataclass
class Volume:
    """One tenant's queue file and its remote, shared by the incarnations of a test."""

    tmp: Path
    tenant_id: ids.TenantId = field(default_factory=ids.TenantId.generate)
    opened: list[remote_io.RemoteIO] = field(default_factory=list)

    @property
    def tenant_dir(self) -> Path:
        return self.tmp / "workdir" / paths.TENANTS_DIR / str(self.tenant_id)

    @property
    def path(self) -> Path:
        return self.tenant_dir / deletion_queue.QUEUE_FILE

    def key(self, name: str, generation: int = 1) -> str:
        return f"{paths.TENANTS_DIR}/{self.tenant_id}/timelines/{'0' * 32}/{name}-{generation:08x}"

    def remote(self, concurrency: int = 4) -> Remote:
        return Remote(self.tmp / "remote", concurrency)

    def queue(
        self, storage: Remote, generation: Generation, workers: int = 4
    ) -> deletion_queue.DeletionQueue:
        io = remote_io.RemoteIO(storage, workers=workers)
        self.opened.append(io)
        log = logging.LoggerAdapter(LOG, {"tenant_id": str(self.tenant_id)})
        return deletion_queue.DeletionQueue(self.path, io, generation, log, tenant_id=self.tenant_id)

    def plant(self, storage: Remote, keys: list[str]) -> None:
        for k in keys:
            storage.put_bytes(k, b"layer " + k.encode())

    def exists(self, storage: Remote, key: str) -> bool:
        return key in storage.list_objects(f"{paths.TENANTS_DIR}/{self.tenant_id}/")

    def write_file(self, doc: object) -> None:
        self.path.write_text(json.dumps(doc))

    def tree(self) -> list[str]:
        return sorted(p.name for p in self.tenant_dir.iterdir())


@pytest.fixture
def vol(tmp_path: Path) -> Iterator[Volume]:
    v = Volume(tmp_path)
    v.tenant_dir.mkdir(parents=True)
    try:
        yield v
    finally:
        for io in v.opened:
            io.close()
        metrics.forget_tenant(str(v.tenant_id))


def valid(result: bool = True) -> tuple[Callable[[], Awaitable[bool]], list[int]]:
    calls: list[int] = []

    async def validate() -> bool:
        calls.append(1)
        return result

    return validate, calls


def sample(name: str, tenant_id: ids.TenantId) -> float:
    return REGISTRY.get_sample_value(name, {"tenant_id": str(tenant_id)}) or 0.0


# ---- the ordinary paths ------------------------------------------------------------------------


def test_push_then_valid_flush_deletes_the_objects_and_removes_the_file(vol: Volume) -> None:
    storage = vol.remote()
    keys = [vol.key(f"layer{i}") for i in range(5)]
    vol.plant(storage, keys)
    (vol.tenant_dir / "config").write_text("x")
    q = vol.queue(storage, Generation(1))
    q.recover(None)
    validate, calls = valid(True)

    async def scenario() -> deletion_queue.FlushResult:
        await q.push(keys[:3])
        await q.push(keys[2:])  # a key pushed twice is recorded once
        assert q.pending == 5 and q.pending_keys == tuple(keys)
        doc = json.loads(vol.path.read_text())
        assert doc == {"version": 1, "entries": [{"generation": 1, "keys": keys}]}
        return await q.flush(validate)

    result = run(scenario)
    assert result == deletion_queue.FlushResult(deleted=5, leaked=0, stale=False)
    assert len(calls) == 1
    assert sorted(storage.deleted) == sorted(keys)
    assert not any(vol.exists(storage, k) for k in keys)
    assert vol.tree() == ["config"]  # the file is gone, no temp file left
    assert (q.pending, q.deleted, q.leaked) == (0, 5, 0)
    assert sample("pageserver_operator_deletions_total", vol.tenant_id) == 5


def test_flush_with_nothing_pending_does_not_validate(vol: Volume) -> None:
    q = vol.queue(vol.remote(), Generation(3))
    q.recover(Generation(2))
    validate, calls = valid(True)
    assert run(lambda: q.flush(validate)) == deletion_queue.FlushResult(0, 0, False)
    assert calls == []
    assert vol.tree() == []


def test_stale_flush_deletes_nothing_and_counts_the_keys_as_leaked(vol: Volume) -> None:
    storage = vol.remote()
    keys = [vol.key(f"layer{i}") for i in range(4)]
    vol.plant(storage, keys)
    q = vol.queue(storage, Generation(1))
    q.recover(None)
    validate, calls = valid(False)

    async def scenario() -> deletion_queue.FlushResult:
        await q.push(keys)
        return await q.flush(validate)

    assert run(scenario) == deletion_queue.FlushResult(deleted=0, leaked=4, stale=True)
    assert len(calls) == 1
    assert storage.deleted == []
    assert all(vol.exists(storage, k) for k in keys)
    assert (q.pending, q.deleted, q.leaked) == (0, 0, 4)
    assert not vol.path.exists()
    assert sample("pageserver_operator_deletions_leaked_total", vol.tenant_id) == 4
    metrics.forget_tenant(str(vol.tenant_id))
    assert sample("pageserver_operator_deletions_leaked_total", vol.tenant_id) == 0


def test_keys_pushed_during_a_validation_wait_for_the_next_flush(vol: Volume) -> None:
    storage = vol.remote()
    first, later = vol.key("first"), vol.key("later")
    vol.plant(storage, [first, later])
    q = vol.queue(storage, Generation(1))
    q.recover(None)

    async def scenario() -> None:
        async def validate() -> bool:
            await q.push([later])  # recorded after the batch was taken: not covered by this answer
            return True

        await q.push([first])
        assert await q.flush(validate) == deletion_queue.FlushResult(1, 0, False)
        assert q.pending_keys == (later,)
        assert json.loads(vol.path.read_text())["entries"] == [{"generation": 1, "keys": [later]}]
        validate2, calls = valid(True)
        assert await q.flush(validate2) == deletion_queue.FlushResult(1, 0, False)
        assert len(calls) == 1

    run(scenario)
    assert storage.deleted == [first, later]
    assert not vol.path.exists()


def test_generation_none_is_recorded_as_null(vol: Volume) -> None:
    storage = vol.remote()
    key = f"{paths.TENANTS_DIR}/{vol.tenant_id}/timelines/{'0' * 32}/legacy"
    q = vol.queue(storage, Generation.none())
    q.recover(None)
    run(lambda: q.push([key]))
    assert json.loads(vol.path.read_text())["entries"] == [{"generation": None, "keys": [key]}]
    q2 = vol.queue(vol.remote(), Generation.none())
    q2.recover(None)
    assert q2.pending_keys == (key,)


# ---- recovery ----------------------------------------------------------------------------------


def test_recover_adopts_the_previous_and_current_generations_and_drops_the_others(vol: Volume) -> None:
    k = {g: [vol.key(f"from{g}-{i}", g) for i in range(g)] for g in (2, 4, 5, 6)}
    none_key = f"{paths.TENANTS_DIR}/{vol.tenant_id}/timelines/{'0' * 32}/legacy"
    vol.write_file(
        {
            "version": 1,
            "entries": [
                {"generation": 2, "keys": k[2]},  # older than previous: not proven ours
                {"generation": 4, "keys": k[4]},  # previous
                {"generation": None, "keys": [none_key]},
                {"generation": 5, "keys": k[5]},  # current
                {"generation": 6, "keys": k[6]},  # newer than us: never ours
            ],
        }
    )
    q = vol.queue(vol.remote(), Generation(5))
    q.recover(Generation(4))
    assert q.pending_keys == tuple(k[4] + k[5])
    assert q.leaked == 2 + 1 + 6 and q.deleted == 0
    assert sample("pageserver_operator_deletions_leaked_total", vol.tenant_id) == 9
    # rewritten durably, all under the current generation: a restart as 6 with previous 5 adopts them
    assert json.loads(vol.path.read_text()) == {
        "version": 1,
        "entries": [{"generation": 5, "keys": k[4] + k[5]}],
    }
    q6 = vol.queue(vol.remote(), Generation(6))
    q6.recover(Generation(5))
    assert q6.pending_keys == tuple(k[4] + k[5]) and q6.leaked == 0


def test_recover_without_a_proven_previous_generation_drops_it(vol: Volume) -> None:
    keys = [vol.key("a", 4), vol.key("b", 4)]
    vol.write_file({"version": 1, "entries": [{"generation": 4, "keys": keys}]})
    q = vol.queue(vol.remote(), Generation(5))
    q.recover(None)  # another process may have held a generation in between
    assert (q.pending, q.leaked) == (0, 2)
    assert not vol.path.exists()  # nothing pending: the file is removed


def test_recover_of_a_missing_file_is_empty_and_removes_a_leftover_temp_file(vol: Volume) -> None:
    leftover = vol.path.with_name(deletion_queue.QUEUE_FILE + paths.TEMP_SUFFIX)
    leftover.write_text("{half a fi")
    q = vol.queue(vol.remote(), Generation(1))
    q.recover(None)
    assert (q.pending, q.leaked) == (0, 0)
    assert vol.tree() == []


def test_recover_leaves_an_unchanged_file_alone(vol: Volume) -> None:
    keys = [vol.key("a", 7)]
    vol.write_file({"version": 1, "entries": [{"generation": 7, "keys": keys}]})
    before = vol.path.stat()
    q = vol.queue(vol.remote(), Generation(7))
    q.recover(Generation(6))
    after = vol.path.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert q.pending_keys == tuple(keys)


def test_the_golden_version_1_file_parses(vol: Volume) -> None:
    """Format version 1 as written by this module (add a case for each new version)."""
    key = vol.key(
        "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__00000000016B59D8-00000000016B5A51",
        3,
    )
    golden = (
        '{\n "version": 1,\n "entries": [\n  {\n   "generation": 3,\n   "keys": [\n    "'
        + key
        + '"\n   ]\n  }\n ]\n}\n'
    )
    storage = vol.remote()
    q = vol.queue(storage, Generation(3))
    q.recover(None)
    run(lambda: q.push([key]))
    assert vol.path.read_text() == golden
    q2 = vol.queue(vol.remote(), Generation(3))
    q2.recover(None)
    assert q2.pending_keys == (key,)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"version": 1, "entries": [', "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", 'exactly "version" and "entries"'),
        (b'{"version": 2, "entries": []}', "unsupported version 2"),
        (b'{"version": true, "entries": []}', "unsupported version True"),
        (b'{"version": 1, "entries": {}}', '"entries" is not a list'),
        (
            b'{"version": 1, "entries": [{"generation": 1}]}',
            'entry 0: expected an object with exactly "generation"',
        ),
        (
            b'{"version": 1, "entries": [{"generation": "1", "keys": ["k"]}]}',
            "entry 0: generation '1' is not",
        ),
        (b'{"version": 1, "entries": [{"generation": 4294967296, "keys": ["k"]}]}', "entry 0: "),
        (b'{"version": 1, "entries": [{"generation": 1, "keys": []}]}', '"keys" is not a non-empty list'),
        (
            b'{"version": 1, "entries": [{"generation": 1, "keys": ["tenants/other/x"]}]}',
            "is not an object of this tenant",
        ),
        (
            b'{"version": 1, "entries": [{"generation": 1, "keys": [7]}]}',
            "key 7 is not an object of this tenant",
        ),
    ],
)
def test_a_corrupt_file_is_a_precise_error(vol: Volume, content: bytes, why: str) -> None:
    vol.path.write_bytes(content)
    q = vol.queue(vol.remote(), Generation(1))
    with pytest.raises(errors.EngineError) as info:
        q.recover(None)
    assert info.value.reason == "DeletionQueueInvalid"
    assert str(vol.path) in info.value.message and str(vol.tenant_id) in info.value.message
    assert why in info.value.message
    assert not info.value.transient
    assert vol.path.read_bytes() == content  # evidence kept
    with pytest.raises(RuntimeError, match="before recover"):
        run(lambda: q.push([vol.key("a")]))


def test_a_key_escaping_the_tenant_is_invalid(vol: Volume) -> None:
    bad = f"{paths.TENANTS_DIR}/{vol.tenant_id}/../{ids.TenantId.generate()}/x"
    vol.write_file({"version": 1, "entries": [{"generation": 1, "keys": [bad]}]})
    with pytest.raises(errors.EngineError, match="not a normalised object key"):
        vol.queue(vol.remote(), Generation(1)).recover(None)


def test_push_refuses_keys_outside_the_tenant_and_use_before_recover(vol: Volume) -> None:
    q = vol.queue(vol.remote(), Generation(1))
    validate, calls = valid(True)
    with pytest.raises(RuntimeError, match="before recover"):
        run(lambda: q.flush(validate))
    q.recover(None)
    with pytest.raises(RuntimeError, match="called twice"):
        q.recover(None)
    other = f"{paths.TENANTS_DIR}/{ids.TenantId.generate()}/timelines/x"
    with pytest.raises(ValueError, match="not an object of this tenant"):
        run(lambda: q.push([vol.key("ok"), other]))
    assert q.pending == 0 and not vol.path.exists() and calls == []


# ---- failures and kills ------------------------------------------------------------------------


def test_a_kill_between_the_deletes_and_the_rewrite_is_redone_harmlessly(vol: Volume) -> None:
    storage = vol.remote()
    keys = [vol.key(f"layer{i}") for i in range(6)]
    vol.plant(storage, keys)
    q = vol.queue(storage, Generation(1))
    q.recover(None)
    run(lambda: q.push(keys))

    def kill_after_the_last(key: str) -> None:
        if len(storage.deleted) == len(keys):
            raise Killed  # every object is gone, the file still names them all

    storage.after = kill_after_the_last
    validate, _ = valid(True)
    with pytest.raises(Killed):
        run(lambda: q.flush(validate))
    assert sorted(storage.deleted) == sorted(keys)
    assert json.loads(vol.path.read_text())["entries"][0]["keys"] == keys

    storage2 = vol.remote()
    q2 = vol.queue(storage2, Generation(2))
    q2.recover(Generation(1))
    assert q2.pending_keys == tuple(keys)
    validate2, calls = valid(True)
    assert run(lambda: q2.flush(validate2)) == deletion_queue.FlushResult(6, 0, False)
    assert sorted(storage2.deleted) == sorted(keys)  # deletes of missing objects: success
    assert len(calls) == 1 and not vol.path.exists()


def test_a_kill_during_validation_executes_nothing(vol: Volume) -> None:
    storage = vol.remote()
    keys = [vol.key("a"), vol.key("b")]
    vol.plant(storage, keys)
    q = vol.queue(storage, Generation(1))
    q.recover(None)
    run(lambda: q.push(keys))

    async def killed() -> bool:
        raise Killed

    with pytest.raises(Killed):
        run(lambda: q.flush(killed))
    assert storage.deleted == [] and q.pending == 2
    q2 = vol.queue(vol.remote(), Generation(2))
    q2.recover(Generation(1))
    assert q2.pending_keys == tuple(keys)


def test_a_cancelled_flush_keeps_everything_pending(vol: Volume) -> None:
    storage = vol.remote()
    keys = [vol.key(f"layer{i}") for i in range(4)]
    vol.plant(storage, keys)
    q = vol.queue(storage, Generation(1), workers=1)
    q.recover(None)
    run(lambda: q.push(keys))
    first_done = threading.Event()
    storage.after = lambda key: first_done.set()

    async def scenario() -> None:
        validate, _ = valid(True)
        task = asyncio.ensure_future(q.flush(validate))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, first_done.wait, 10.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario)
    assert q.pending == 4 and q.deleted == 0  # the file is not rewritten by a cancelled flush
    assert json.loads(vol.path.read_text())["entries"][0]["keys"] == keys
    storage.after = None
    validate, _ = valid(True)
    assert run(lambda: q.flush(validate)) == deletion_queue.FlushResult(4, 0, False)
    assert not vol.path.exists()


def test_a_transient_delete_failure_keeps_the_rest_pending_and_is_raised(vol: Volume) -> None:
    storage = vol.remote()
    keys = [vol.key(f"layer{i}") for i in range(5)]
    vol.plant(storage, keys)
    q = vol.queue(storage, Generation(1), workers=1)  # one at a time: the order is the queue's
    q.recover(None)
    run(lambda: q.push(keys))

    def fail_the_third(key: str) -> None:
        if key == keys[2]:
            raise remote_errors.TransientRemoteError(f"delete {key}: 503 SlowDown")

    storage.before = fail_the_third
    validate, _ = valid(True)
    with pytest.raises(remote_errors.TransientRemoteError, match="SlowDown"):
        run(lambda: q.flush(validate))
    assert storage.deleted == keys[:2]
    assert q.pending_keys == tuple(keys[2:]) and q.deleted == 2
    assert json.loads(vol.path.read_text())["entries"][0]["keys"] == keys[2:]
    storage.before = None
    assert run(lambda: q.flush(validate)) == deletion_queue.FlushResult(3, 0, False)
    assert (q.deleted, q.leaked) == (5, 0) and not vol.path.exists()


def test_a_failed_validation_changes_nothing(vol: Volume) -> None:
    storage = vol.remote()
    keys = [vol.key("a")]
    vol.plant(storage, keys)
    q = vol.queue(storage, Generation(1))
    q.recover(None)
    run(lambda: q.push(keys))

    async def unavailable() -> bool:
        raise ConnectionError("control plane unreachable")

    with pytest.raises(ConnectionError):
        run(lambda: q.flush(unavailable))
    assert storage.deleted == [] and q.pending_keys == tuple(keys) and vol.path.exists()


def test_deletes_are_bounded_by_the_io_concurrency(vol: Volume) -> None:
    storage = vol.remote(concurrency=8)
    keys = [vol.key(f"layer{i}") for i in range(20)]
    vol.plant(storage, keys)
    q = vol.queue(storage, Generation(1), workers=2)
    q.recover(None)
    run(lambda: q.push(keys))
    pairs = threading.Barrier(2, timeout=10.0)  # each delete waits for a second one in flight

    def in_pairs(key: str) -> None:
        pairs.wait()

    storage.before = in_pairs
    validate, _ = valid(True)
    assert run(lambda: q.flush(validate)) == deletion_queue.FlushResult(20, 0, False)
    assert storage.max_in_flight == 2


# ---- the randomized simulation -----------------------------------------------------------------


class ValidationUnavailable(Exception):
    """The control plane did not answer (the validator raises; nothing changes)."""


@dataclass
class World:
    """What is true outside the queue: the control plane's generations, the keys pushed, and
    which deletes the rules allow. A *lineage* is a run of incarnations each proven to be the
    direct successor of the previous one (their generations are one writer's)."""

    vol: Volume
    rng: random.Random
    cp_generation: int = 0
    lineage: int = 0
    may_leak: set[int] = field(default_factory=set)
    started: dict[int, set[str]] = field(default_factory=dict)
    pushing: set[str] = field(default_factory=set)  # keys of a push that has not ended yet
    acked: dict[str, int] = field(default_factory=dict)
    validated: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)
    leaked: int = 0
    kill_in: int = -1  # hook events until a Killed is raised (-1: none)
    faults: bool = True
    names: int = 0

    def event(self) -> None:
        if self.kill_in == 0:
            self.kill_in = -1
            raise Killed
        if self.kill_in > 0:
            self.kill_in -= 1


class Incarnation:
    def __init__(self, world: World, last: int | None, prove: bool) -> None:
        self.world = world
        world.cp_generation += 1
        self.generation = world.cp_generation
        proven = prove and last is not None and last == self.generation - 1
        if not proven:
            world.may_leak.add(world.lineage)
            world.lineage += 1
        self.lineage = world.lineage
        world.started.setdefault(self.lineage, set())
        self.storage = world.vol.remote()
        self.storage.before = self._before_delete
        self.storage.after = self._after_delete
        self.queue = world.vol.queue(
            self.storage, Generation(self.generation), workers=world.rng.choice([1, 2, 4])
        )
        self.queue.recover(Generation(last) if proven else None)
        self.tasks: list[asyncio.Task[object]] = []

    def _before_delete(self, key: str) -> None:
        w = self.world
        if key not in w.validated:
            w.violations.append(
                f"generation {self.generation} deleted {key} without a validation covering it"
            )
        if w.faults:
            w.event()
            if w.rng.random() < 0.05:
                raise remote_errors.TransientRemoteError(f"delete {key}: injected 503")

    def _after_delete(self, key: str) -> None:
        self.world.deleted.add(key)
        if self.world.faults:
            self.world.event()

    async def validate(self) -> bool:
        w = self.world
        if w.faults:
            w.event()
            if w.rng.random() < 0.1:
                raise ValidationUnavailable("control plane unavailable")
        # the answer is read now: it covers the keys recorded by pushes that already ended
        current = self.generation == w.cp_generation
        if current:
            w.validated |= w.started[self.lineage] - w.pushing
        for _ in range(w.rng.randint(0, 4)):  # the round trip to the control plane: pushes land meanwhile
            await self.queue.io.run(lambda: None)
        return current

    async def push(self, n: int) -> None:
        w = self.world
        keys = []
        for _ in range(n):
            w.names += 1
            keys.append(w.vol.key(f"layer{w.names}", self.generation))
        await self.queue.io.run(w.vol.plant, self.storage, keys)
        w.started[self.lineage].update(keys)
        w.pushing.update(keys)
        try:
            if w.faults:
                w.event()
            await self.queue.push(keys)
            for k in keys:
                w.acked[k] = self.lineage
        finally:
            w.pushing.difference_update(keys)

    async def flush(self) -> None:
        try:
            result = await self.queue.flush(self.validate)
        except (ValidationUnavailable, remote_errors.TransientRemoteError):
            return
        if result.stale:
            assert self.generation != self.world.cp_generation

    def spawn(self, coro: Awaitable[None]) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    async def settle(self) -> bool:
        """Wait for the tasks; True if one of them was killed."""
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        for r in results:
            if isinstance(r, Killed):
                return True
            if isinstance(r, BaseException):
                raise r
        return False

    async def kill(self) -> None:
        for t in self.tasks:
            t.cancel()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, (Killed, asyncio.CancelledError)):
                raise r
        self.queue.io.close()  # the threads it started finish before the next incarnation starts
        self.world.leaked += self.queue.leaked


def _seed() -> int:
    value = os.environ.get("DELETION_QUEUE_SEED")
    return int(value) if value else random.SystemRandom().randrange(1 << 32)


def test_randomized_push_flush_kill_restart_keeps_the_invariants(vol: Volume) -> None:
    seed = _seed()
    steps = int(os.environ.get("DELETION_QUEUE_STEPS", "150"))
    ctx = f"[DELETION_QUEUE_SEED={seed}]"
    print(f"deletion queue simulation: DELETION_QUEUE_SEED={seed} DELETION_QUEUE_STEPS={steps}", flush=True)
    w = World(vol, random.Random(seed))
    figures = {"kills": 0, "survived": 0, "takeovers": 0, "stale flushes": 0}

    def survived(inc: Incarnation, before: set[str]) -> bool:
        """After a restart in the same lineage: every acknowledged key of it is pending or deleted."""
        pending = set(inc.queue.pending_keys)
        lost = [k for k in before if k not in pending and k not in w.deleted]
        if lost:
            w.violations.append(f"{ctx} restart as {inc.generation} lost acknowledged keys {lost[:3]}")
        return not lost

    async def scenario() -> None:
        inc = Incarnation(w, None, prove=True)
        for _ in range(steps):
            op = w.rng.choices(["push", "flush", "both", "takeover", "kill"], weights=[4, 3, 3, 1, 2])[0]
            if op == "takeover":
                w.cp_generation += 1  # another process is attached now: we are stale
                w.may_leak.add(inc.lineage)
                figures["takeovers"] += 1
                continue
            killed = False
            if op in ("push", "both"):
                inc.spawn(inc.push(w.rng.randint(1, 5)))
            if op in ("flush", "both"):
                inc.spawn(inc.flush())
            if op == "kill":
                inc.spawn(inc.push(w.rng.randint(1, 5)))
                inc.spawn(inc.flush())
                for _ in range(w.rng.randint(0, 30)):
                    await asyncio.sleep(0)
                killed = True
            elif w.rng.random() < 0.3:
                w.kill_in = w.rng.randint(0, 6)  # a kill at one of the next hook events
                killed = await inc.settle()
                w.kill_in = -1
            else:
                killed = await inc.settle()
            if not killed:
                continue
            figures["kills"] += 1
            await inc.kill()
            old_lineage = inc.lineage
            before = {k for k, lineage in w.acked.items() if lineage == old_lineage}
            inc = Incarnation(w, inc.generation, prove=w.rng.random() < 0.9)
            if inc.lineage == old_lineage:
                ok = survived(inc, before)
            else:  # not proven ours: nothing recorded before may be adopted
                ok = inc.queue.pending == 0
                if not ok:
                    w.violations.append(
                        f"{ctx} restart as {inc.generation} adopted {inc.queue.pending_keys[:3]}"
                    )
            if ok and not w.violations:
                figures["survived"] += 1
        # the end: a restart proven ours, no faults, flushed until nothing is pending
        await inc.kill()
        w.faults = False
        inc = Incarnation(w, inc.generation, prove=True)
        result = await inc.queue.flush(inc.validate)
        assert not result.stale
        await inc.kill()

    run(scenario, timeout=120.0)
    remaining = {k for k in w.acked if k not in w.deleted}
    wrongly_kept = [k for k in remaining if w.acked[k] not in w.may_leak]
    objects = vol.remote().list_objects(f"{paths.TENANTS_DIR}/{vol.tenant_id}/")
    print(
        f"{ctx} {steps} steps: kills survived {figures['survived']} / {figures['kills']}, "
        f"{figures['takeovers']} takeovers; {len(w.acked)} keys pushed, {len(w.deleted)} deleted, "
        f"{w.leaked} dropped as stale (counted), {len(w.violations)} invariant violations",
        flush=True,
    )
    assert not w.violations, f"{ctx} {w.violations[:5]}"
    assert not wrongly_kept, f"{ctx} keys of a current lineage never deleted: {wrongly_kept[:5]}"
    assert len(remaining) <= w.leaked, (
        f"{ctx} {len(remaining)} keys left behind, only {w.leaked} counted leaked"
    )
    assert all(k in objects for k in remaining), f"{ctx} an object left behind is missing remotely"
    assert not any(k in objects for k in w.deleted), f"{ctx} a deleted object still exists"
    assert figures["survived"] == figures["kills"], f"{ctx} {figures}"
    assert not vol.path.exists() and vol.tree() == [], (
        f"{ctx} the tenant directory is not as before: {vol.tree()}"
    )
