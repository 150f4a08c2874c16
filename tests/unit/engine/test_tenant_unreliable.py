"""A `Tenant` in process over `remote.unreliable.UnreliableStorage` (the first calls of every
target fail, as when the backend's own retries gave up), with the pageserver stand-in writing,
and `manager.retry_transient`, the engine-level retry the CLI uses (issue 14, defect 13):

- an attach whose every index GET and layer download fails once (transient) ends Active with the
  exact tree when run through `retry_transient`, which says "retrying" once per failure;
- a sync whose layer and index uploads each fail twice still uploads and indexes what the writer
  flushed (the upload queue retries), and never touches the writer's files;
- `retry_transient`: a permanent error is raised at once, a transient one is retried until it
  succeeds or until the time is up (then the last error is raised).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import tree
from helpers.engine_env import FAST, EngineEnv, Writer, make_tenant, run
from pageserver_operator.engine import manager, remote_io
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.remote.local_fs import LocalFsStorage
from pageserver_operator.remote.unreliable import UnreliableStorage


@pytest.fixture
def base(tmp_path: Path) -> Iterator[LocalFsStorage]:
    yield LocalFsStorage(tmp_path / "remote")


def env_over(tmp_path: Path, storage: UnreliableStorage) -> EngineEnv:
    workdir = tmp_path / "workdir"
    workdir.mkdir(exist_ok=True)
    return EngineEnv(workdir, storage, remote_io.RemoteIO(storage, workers=4))


def test_attach_through_failing_reads_with_the_engine_retry(tmp_path: Path, base: LocalFsStorage) -> None:
    gen = make_tenant(base, seed=11)
    remote = tree.RemoteTenant.capture(base, gen.tenant_id)
    flaky = UnreliableStorage(base, fail_first=1, ops={"get", "download"})
    env = env_over(tmp_path, flaky)
    said: list[EngineError] = []
    try:
        t = env.tenant(gen.tenant_id)
        run(lambda: manager.retry_transient(t.attach, 30, lambda e, _delay: said.append(e), FAST))
        assert t.state is not None and t.state.value == "Active", (t.reason, t.message)
        assert said and all(e.transient for e in said), said
        assert flaky.injected > 0
        tree.assert_matches_remote(env.workdir, remote)
    finally:
        env.close()


def test_sync_through_failing_uploads_indexes_what_the_writer_flushed(tmp_path: Path, base: LocalFsStorage) -> None:
    gen = make_tenant(base, seed=12)
    tid, tl = gen.tenant_id, gen.timelines[0]
    flaky = UnreliableStorage(base, fail_first=2, ops={"upload", "put"})
    env = env_over(tmp_path, flaky)
    try:
        t = env.tenant(tid)
        run(t.attach)
        w = Writer(env.workdir, tid)
        own = w.own_files(tl)
        flushed = [w.flush(tl), w.flush(tl)]
        run(lambda: t.sync(timeout=30))
        idx = env.remote_index(tid, tl)
        assert {str(n) for n in flushed} <= {str(n) for n in idx.layers}
        assert idx.metadata.disk_consistent_lsn == w.dcl(tl)
        assert w.snapshot(tl, own) == own
        assert flaky.injected >= 2 * (len(flushed) + 1)
    finally:
        env.close()


def test_retry_transient_permanent_at_once_transient_until_done_or_time_is_up() -> None:
    calls: list[int] = []
    said: list[float] = []

    async def permanent() -> None:
        calls.append(1)
        raise EngineError("InvalidIndexPart", "bad")

    with pytest.raises(EngineError) as e:
        run(lambda: manager.retry_transient(permanent, 60, lambda _e, d: said.append(d), FAST))
    assert e.value.reason == "InvalidIndexPart" and len(calls) == 1 and said == []

    async def twice_then_ok() -> str:
        calls.append(2)
        if calls.count(2) <= 2:
            raise EngineError("RemoteStorageUnavailable", "down", transient=True)
        return "ok"

    assert run(lambda: manager.retry_transient(twice_then_ok, 60, lambda _e, d: said.append(d), FAST)) == "ok"
    assert calls.count(2) == 3 and len(said) == 2

    async def always() -> None:
        calls.append(3)
        raise EngineError("RemoteStorageUnavailable", "down", transient=True)

    with pytest.raises(EngineError) as e:
        run(lambda: manager.retry_transient(always, 0.05, lambda _e, d: None, FAST))
    assert e.value.transient and calls.count(3) >= 2
    with pytest.raises(EngineError):
        run(lambda: manager.retry_transient(always, 0, lambda _e, d: pytest.fail("retried with timeout 0"), FAST))
