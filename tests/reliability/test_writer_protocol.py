"""Writer simulation: a pageserver stand-in writes to the tenant while the engine syncs, loads,
detaches and is killed (DESIGN §8.1, issue 14).

The writer (`helpers.writer.Writer`, seeded) flushes layers (temp file, rename, then ``metadata``
rewritten in place), branches timelines (directory, layers, ``metadata`` last), compacts (L1 over
L0s, ``metadata``, then the L0s removed) and keeps ephemeral and temp files of its own. It runs
in this thread, one file operation at a time, *while* each engine operation runs:

- ``sync``: the operator's periodic sync of an Active tenant, in process (`engine.tenant.Tenant`
  on an event-loop thread), reacting to its errors as the controller does (transient: go on;
  otherwise Broken, then the retry reloads the same Tenant). Some syncs get a short timeout.
- ``restart``: the in-process operator stops (its queues drained of what is in flight) and a new
  one loads the tenant (reconcile_with_remote) while the writer writes.
- ``cli-sync`` / ``cli-load``: ``pageserver-operator sync`` / ``load`` in a child process, killed
  with SIGKILL at a random point half of the time (then run again to completion).
- ``detach``: in process (sometimes with a short timeout, then retried like the controller) or by
  the CLI (killed half of the time, then run again); then ``attach`` by the CLI (sometimes
  killed and run again) and the writer takes the fresh tenant over.

After every writer step and every operation, the invariants (each violation is counted once,
with the step, and the run goes on; the test fails at the end if there was any):

- ``index-layer-missing``: every layer a remote ``index_part.json`` names exists remotely with
  the indexed size;
- ``index-gap``: the layers an index names cover every key from the timeline's base up to its
  ``disk_consistent_lsn`` and none is from the future (`helpers.writer.coverage_gaps`);
- ``index-went-back``: per timeline, the ``disk_consistent_lsn`` of the remote index never
  decreases over every index observed, and an index never disappears (``index-unreadable``: it
  does not parse);
- ``writer-file-touched``: every file of the writer (layers, ``metadata``, ``ephemeral-*``,
  ``*___temp``) is still there with its content unless the writer removed it (a detach removes
  everything legitimately);
- ``detach-lost``: when a detach returns, every layer the writer had flushed (its ``metadata``
  written) is in the remote index and the index is at least at the writer's last
  ``disk_consistent_lsn``;
- ``op-failed``: an operation the writer's legal behaviour should not break failed (Broken, a
  non-zero exit that was not our kill, a rerun after a kill that failed);
- ``final-not-equal``: after the writer stops and a last sync, every local layer is in the remote
  index with its size and each remote ``metadata_bytes`` equals the local ``metadata``.

Figures (printed, and in the "reliability figures" summary): ``steps / invariant violations`` and
``kills survived / kills``. A kill is survived when the rerun of the killed command succeeds and
no invariant was violated from the kill to the end of that rerun.

Knobs: ``WRITER_SIM_SEED`` (default random, printed; the seed fixes the writer's and the
driver's choices, not the thread timing, so a replay explores the same scenario, not the same
interleaving), ``WRITER_SIM_STEPS`` (operations per profile; default 24, the CI profile),
``WRITER_SIM_REMOTE`` (comma-separated profiles; default ``file,s3-slow``): ``file`` (a
``file://`` remote: fast), ``s3`` (the SeaweedFS server), ``s3-slow`` (SeaweedFS through
`reliability.faultproxy` with latency only, no errors, and an engine concurrency of 2: uploads,
index PUTs and drains then overlap what the writer does, which is where the races are).
Long soak (docs/reliability.md): ``python -m tests.reliability.soak --cli 0 --operator 0
--writer 400`` (400 steps in each of the three profiles).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from e2e.conftest import Remote, new_tenant_id
from helpers import cli
from helpers.writer import Writer, coverage_gaps
from pageserver_operator import testdata
from pageserver_operator.engine import paths, remote_io, snapshot, tenant
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import errors as format_errors
from pageserver_operator.formats import ids, index_part, layer_name, lsn, metadata
from pageserver_operator.remote import base
from pageserver_operator.remote import errors as remote_errors
from pageserver_operator.remote import factory as remote_factory
from pageserver_operator.remote import url as remote_url
from reliability import faultproxy
from reliability.figures import record

pytestmark = [pytest.mark.integration]

STEPS = int(os.environ.get("WRITER_SIM_STEPS", "24"))
PROFILES = ("file", "s3", "s3-slow")
REMOTES = [p for p in os.environ.get("WRITER_SIM_REMOTE", "file,s3-slow").split(",") if p]
#: the slow profile: S3 through the fault proxy with latency only (no errors), fewer workers,
#: so that uploads, index PUTs and drains overlap what the writer does
SLOW_LATENCY = (0.01, 0.25)
SLOW_RATE = 0.6
SLOW_CONCURRENCY = 2
SHAPE = testdata.TenantShape(timelines=2, layers=5, layer_size=6 << 10, seed=5)
OP_WEIGHTS = {"sync": 4.0, "cli-sync": 2.0, "cli-load": 1.5, "restart": 1.0, "detach": 0.7}
OP_TIMEOUT = 180.0


def sim_seed() -> int:
    value = os.environ.get("WRITER_SIM_SEED")
    return int(value) if value else random.SystemRandom().randrange(1 << 31)


# ---- the checks ------------------------------------------------------------------------------


@dataclass
class Violations:
    items: list[tuple[int, str, str]] = field(default_factory=list)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def add(self, step: int, invariant: str, detail: str, key: str | None = None) -> bool:
        """Record a violation once per (invariant, ``key``) (``key``: the detail by default)."""
        if (invariant, key or detail) in self._seen:
            return False
        self._seen.add((invariant, key or detail))
        self.items.append((step, invariant, detail))
        print(f"VIOLATION step {step} {invariant}: {detail}", flush=True)
        return True

    def by_invariant(self) -> dict[str, int]:
        return dict(collections.Counter(inv for _, inv, _ in self.items))


def read_index(storage: base.RemoteStorage, key: str) -> bytes | None:
    try:
        return storage.get_bytes(key)
    except remote_errors.NotFound:
        return None


class RemoteWatch:
    """Reads every remote index of the tenant and checks it (module docstring)."""

    def __init__(self, storage: base.RemoteStorage, tid: ids.TenantId) -> None:
        self.storage = storage
        self.tid = tid
        self.max_dcl: dict[str, lsn.Lsn] = {}
        self.indexes_seen = 0

    def check(self, report: Any) -> dict[str, index_part.IndexPart]:
        out: dict[str, index_part.IndexPart] = {}
        names = set(self.storage.list_dirs(paths.remote_timelines_prefix(self.tid)))
        for name in sorted(names | set(self.max_dcl)):
            tlid = ids.TimelineId.parse(name)
            key = paths.remote_index_key(self.tid, tlid)
            prefix = paths.remote_timeline_prefix(self.tid, tlid)
            # index, listing, index again: a listing taken while the index changed proves nothing
            for _ in range(5):
                data = read_index(self.storage, key)
                objects = self.storage.list_objects(prefix)
                if data == read_index(self.storage, key):
                    break
            if data is None:
                if name in self.max_dcl:
                    report("index-went-back", f"{name[:8]}: index_part.json disappeared")
                continue
            try:
                idx = index_part.IndexPart.parse(data)
            except format_errors.FormatError as e:
                report("index-unreadable", f"{name[:8]}: {e}")
                continue
            self.indexes_seen += 1
            out[name] = idx
            for layer, meta in idx.layers.items():
                size = objects.get(prefix + str(layer))
                if size is None:
                    report("index-layer-missing", f"{name[:8]}: {layer} is named but not in remote storage")
                elif meta.file_size is not None and size != meta.file_size:
                    report("index-layer-missing", f"{name[:8]}: {layer} is {size} bytes, the index says {meta.file_size}")
            for gap in coverage_gaps(idx.layers, idx.metadata):
                # one hole is reported once, however far later indexes advance over it
                report("index-gap", f"{name[:8]} (index at {idx.disk_consistent_lsn}): {gap}", f"{name}: {gap.split('..0/')[0]}")
            dcl = idx.metadata.disk_consistent_lsn
            old = self.max_dcl.get(name)
            if old is not None and dcl < old:
                report("index-went-back", f"{name[:8]}: disk_consistent_lsn {old} -> {dcl}")
            self.max_dcl[name] = max(dcl, old) if old is not None else dcl
        return out


def local_layers(directory: Path, meta: metadata.TimelineMetadata) -> dict[layer_name.LayerName, int]:
    out = {}
    for p in directory.iterdir():
        try:
            name = layer_name.parse_layer_name(p.name)
        except format_errors.FormatError:
            continue
        if not name.is_future(meta.disk_consistent_lsn):
            out[name] = p.stat().st_size
    return out


# ---- the engine: in process, or the CLI in a child ---------------------------------------------


class InProcess:
    """The operator's engine in this process: one Tenant at a time on an event-loop thread."""

    def __init__(self, workdir: Path, url: str, concurrency: int, tid: ids.TenantId) -> None:
        self.workdir = workdir
        self.url = url
        self.concurrency = concurrency
        self.tid = tid
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="engine-loop", daemon=True)
        self.thread.start()
        self.io: remote_io.RemoteIO | None = None
        self.tenant: tenant.Tenant | None = None

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def new_tenant(self) -> tenant.Tenant:
        if self.io is None:
            self.io = remote_io.RemoteIO(remote_factory.open_remote(remote_url.parse_remote_url(self.url, self.concurrency)))
        self.tenant = tenant.Tenant(self.workdir, self.tid, self.io)
        return self.tenant

    def shutdown(self) -> None:
        """The operator stops: queues stopped, what is in flight finishes (a process exit)."""
        t, self.tenant = self.tenant, None
        if t is not None:
            t.stop()

            async def drained() -> None:
                deadline = time.monotonic() + 60
                while any(tl.queue.unfinished for tl in t.timelines.values()) and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)

            self.submit(drained()).result(90)
        if self.io is not None:
            self.io.close()
            self.io = None

    def close(self) -> None:
        self.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Tally:
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    kills: collections.Counter[str] = field(default_factory=collections.Counter)
    survived: collections.Counter[str] = field(default_factory=collections.Counter)
    writer_steps: int = 0
    checks: int = 0


# ---- the simulation --------------------------------------------------------------------------


class Simulation:
    def __init__(
        self, seed: int, workdir: Path, url: str, concurrency: int, storage: base.RemoteStorage, tid: ids.TenantId
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.workdir = workdir
        self.url = url
        self.storage = storage
        self.tid = tid
        self.tp = paths.TenantPaths(workdir, tid)
        self.writer = Writer(workdir, tid, random.Random(self.rng.getrandbits(64)))
        self.watch = RemoteWatch(storage, tid)
        self.violations = Violations()
        self.engine = InProcess(workdir, url, concurrency, tid)
        self.args = ["--workdir", str(workdir), "--remote", url, "--concurrency", str(concurrency), str(tid)]
        self.tally = Tally()
        self.step = 0
        self.durations: dict[str, float] = {}
        self.log: collections.deque[str] = collections.deque(maxlen=40)
        #: this step's writer actions and outcomes, printed at its end (replaying a seed)
        self.trace: list[str] = []
        self.writer_on = True  # the writer writes during the operation
        self.detaching = False
        self.op = "attach"

    # -- checks --

    def report(self, invariant: str, detail: str, key: str | None = None) -> None:
        self.violations.add(self.step, invariant, f"({self.op}) {detail}", key or detail)

    def check(self, remote: bool = True) -> None:
        self.tally.checks += 1
        if remote:
            self.watch.check(self.report)
        if self.detaching and not self.tp.tenant_dir.exists():
            return  # the detach removed the tenant, the writer's files with it (legitimately)
        found = self.writer.check_files()
        if self.detaching and not self.tp.tenant_dir.exists():
            # renamed aside while we looked: what vanished went with it (legitimately)
            found = [f for f in found if f.problem != "deleted"]
        # each is a separate event (check_files reports a file once, then tracks its next write)
        for f in found:
            self.report("writer-file-touched", f"{f.subject} {f.problem}", f"{self.tally.checks} {f.subject}")
        for f in self.writer.findings:
            self.report("writer-file-touched", f"{f.subject}: {f.problem}", f"{self.tally.checks} {f.subject}")
        self.writer.findings.clear()

    def writer_step(self, remote_check: bool = True, prefer: str | None = None) -> None:
        if not self.writer_on:
            return
        what = self.writer.step(prefer)
        self.tally.writer_steps += 1
        self.log.append(f"w:{what}")
        self.trace.append(what)
        self.check(remote_check)

    # -- running an operation with the writer alongside --

    def during(
        self,
        done: Callable[[], bool],
        wait: Callable[[float], object],
        kill_at: float | None = None,
        kill: Callable[[], None] | None = None,
    ) -> bool:
        """Step the writer (a random number of actions) until ``done()``; kill at ``kill_at``.
        Returns whether the kill landed. A third of the time the writer works in a burst, as fast
        as it can (its files checked after each action, the remote indexes after the burst):
        a compaction (started first, when one can) then races the uploads of the layers it removes."""
        budget = self.rng.randint(0, 8)
        burst = self.rng.random() < 0.35
        prefer = "compact" if burst else None
        while not done():
            if kill is not None and kill_at is not None and time.monotonic() >= kill_at:
                kill()
                return True
            if budget > 0:
                budget -= 1
                self.writer_step(remote_check=not burst, prefer=prefer)
                prefer = None
                if burst:
                    continue
            elif burst:
                burst = False
                self.check()
            wait(self.rng.uniform(0.0, 0.05))
        return False

    def in_process(self, what: str, coro: Coroutine[Any, Any, Any]) -> BaseException | None:
        fut = self.engine.submit(coro)
        self.during(fut.done, lambda s: concurrent.futures.wait([fut], timeout=s))
        try:
            fut.result(OP_TIMEOUT)
        except BaseException as e:  # reported by the caller
            self.trace.append(f"[{what} in process: {type(e).__name__}]")
            return e
        self.trace.append(f"[{what} in process: ok]")
        return None

    def run_cli(self, command: str, kill_p: float) -> tuple[bool, int, str]:
        """Run a CLI command with the writer alongside, killed at a random point with
        probability ``kill_p``. Returns (killed, exit code, stderr)."""
        args = [command, *self.args]
        kill_at = None
        if self.rng.random() < kill_p:
            kill_at = time.monotonic() + self.rng.uniform(0.2, self.durations.get(command, 2.0) * 1.1)
        t0 = time.monotonic()
        proc = subprocess.Popen([*cli.CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))

        def wait(s: float) -> None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(s)

        killed = self.during(lambda: proc.poll() is not None, wait, kill_at, proc.kill)
        _, err = proc.communicate(timeout=OP_TIMEOUT)
        if not killed:
            self.durations[command] = time.monotonic() - t0
        last_line = (err.decode(errors="replace").strip().splitlines() or [""])[-1]
        return killed, proc.returncode, last_line

    def cli_op(self, command: str, kill_p: float) -> None:
        killed, rc, err = self.run_cli(command, kill_p)
        self.log.append(f"{command}:{'kill' if killed else rc}")
        self.trace.append(f"[{command}: {'KILLED' if killed else f'exit {rc}'}]")
        if not killed:
            if rc != 0:
                self.report("op-failed", f"{command} exited {rc}: {err}")
            return
        self.tally.kills[command] += 1
        before = len(self.violations.items)
        self.check()
        killed2, rc, err = self.run_cli(command, 0.0)
        assert not killed2
        self.log.append(f"{command}(rerun):{rc}")
        self.trace.append(f"[{command} rerun: exit {rc}]")
        if rc != 0:
            self.report("op-failed", f"{command} rerun after a kill exited {rc}: {err}")
        self.check()
        if rc == 0 and len(self.violations.items) == before:
            self.tally.survived[command] += 1

    # -- in-process operations --

    def ensure_tenant(self) -> tenant.Tenant | None:
        t = self.engine.tenant
        if t is not None and t.state is snapshot.TenantState.ACTIVE:
            return t
        if t is None:
            t = self.engine.new_tenant()
        err = self.in_process("start", t.start())  # the controller's bring-up (or its retry)
        if err is not None:
            self.report("op-failed", f"load (operator start) failed: {err}")
            self.engine.shutdown()
            return None
        return t

    def op_sync(self) -> None:
        t = self.ensure_tenant()
        if t is None:
            return
        timeout = self.rng.uniform(0.005, 0.3) if self.rng.random() < 0.3 else OP_TIMEOUT
        err = self.in_process("sync", t.sync(timeout=timeout))
        self.log.append(f"sync({timeout:.2f}):{type(err).__name__ if err else 'ok'}")
        if err is None:
            return
        if isinstance(err, EngineError) and err.transient:
            return  # the controller notes it and syncs again later
        if isinstance(err, EngineError):
            t.mark_broken(err)  # the controller's reaction; its retry reloads this same Tenant
            if timeout == OP_TIMEOUT:
                self.report("op-failed", f"sync failed: {err.reason}: {err.message}")
            else:
                self.report("op-failed", f"sync timing out after {timeout:.2f}s made the tenant Broken: {err.reason}")
        else:
            self.report("op-failed", f"sync raised {type(err).__name__}: {err}")

    def op_restart(self) -> None:
        self.engine.shutdown()
        self.ensure_tenant()

    def op_detach(self) -> None:
        self.detaching = True
        try:
            self._detach()
            flushed, written = self.writer.flushed(), self.writer.written_lsn()
            if not self.tp.tenant_dir.exists():
                self.writer.forget()
        finally:
            self.detaching = False
        if self.tp.tenant_dir.exists():
            self.report("op-failed", "detach returned, the tenant directory is still there")
            return
        # everything the writer flushed before the detach returned is in the remote index
        indexes = self.watch.check(self.report)
        for tlid, dcl in written.items():
            idx = indexes.get(str(tlid))
            if idx is None:
                self.report("detach-lost", f"{str(tlid)[:8]}: no remote index after the detach (local {dcl})")
                continue
            if idx.disk_consistent_lsn < dcl:
                self.report("detach-lost", f"{str(tlid)[:8]}: remote at {idx.disk_consistent_lsn}, the writer flushed {dcl}")
            missing = sorted(str(n) for n in flushed.get(tlid, {}) if n not in idx.layers)
            if missing:
                self.report("detach-lost", f"{str(tlid)[:8]}: flushed layers not in the index: {missing[:2]}")
        self.writer_on = False  # nothing writes to a tenant that is not attached
        self.cli_op("attach", 0.3)
        self.writer_on = True
        if self.tp.tenant_dir.is_dir() and not self.tp.marker.exists():
            self.writer.adopt()
        else:
            self.report("op-failed", "attach did not leave an attached tenant")

    def _detach(self) -> None:
        if self.rng.random() < 0.5:
            self.engine.shutdown()
            self.cli_op("detach", 0.5)
        else:
            t = self.ensure_tenant()
            if t is None:
                self.engine.shutdown()
                self.cli_op("detach", 0.0)
            else:
                timeout = self.rng.uniform(0.05, 0.5) if self.rng.random() < 0.4 else OP_TIMEOUT
                err = self.in_process("detach", t.detach(timeout=timeout))
                if err is not None:  # the controller retries the detach (same Tenant)
                    self.log.append(f"detach({timeout:.2f}):{type(err).__name__}")
                    if not (isinstance(err, EngineError) and err.transient):
                        self.report("op-failed", f"detach failed: {err}")
                    err = self.in_process("detach", t.detach(timeout=OP_TIMEOUT))
                    if err is not None:
                        self.report("op-failed", f"retried detach failed: {err}")
                self.engine.tenant = None
                self.engine.shutdown()

    # -- the whole run --

    def run(self, steps: int) -> None:
        self.check()
        r = cli.run(["attach", *self.args])
        assert r.returncode == 0, cli.describe(r)
        self.writer.adopt()
        ops = list(OP_WEIGHTS)
        while self.step < steps:
            self.step += 1
            op = self.rng.choices(ops, [OP_WEIGHTS[o] for o in ops])[0]
            self.tally.ops[op] += 1
            self.op = op
            self.log.append(f"#{self.step} {op}")
            for _ in range(self.rng.randint(0, 3)):  # the writer works between operations too
                self.writer_step()
            if op == "sync":
                self.op_sync()
            elif op == "restart":
                self.op_restart()
            elif op in ("cli-sync", "cli-load"):
                self.engine.shutdown()
                self.cli_op(op.removeprefix("cli-"), 0.5)
            else:
                self.op_detach()
            self.check()
            print(f"step {self.step} {op}: " + "; ".join(self.trace), flush=True)
            self.trace.clear()
        self.finish()

    def finish(self) -> None:
        """The writer stops; a last sync; then the remote state equals the local one."""
        self.step += 1
        self.op = "final"
        self.writer.finish()
        self.writer_on = False  # the writer has stopped: nothing writes during the last sync
        self.check()
        t = self.ensure_tenant()
        if t is not None:
            err = self.in_process("sync", t.sync(timeout=OP_TIMEOUT))
            if err is not None:
                self.report("op-failed", f"last sync failed: {err}")
            if os.environ.get("WRITER_SIM_DEBUG"):
                for tl in t.timelines.values():
                    q = tl.queue
                    print(f"DEBUG {str(tl.timeline_id)[:8]} meta {tl.metadata.disk_consistent_lsn} rcl {q.remote_consistent_lsn} "
                          f"latest {q.latest_metadata.disk_consistent_lsn if q.latest_metadata else None} unfinished {q.unfinished} "
                          f"abandoned {len(q.abandoned)} stopped {q.stopped} state {t.state}")
        self.engine.shutdown()
        indexes = self.watch.check(self.report)
        for d in sorted(self.tp.timelines_dir.iterdir()):
            meta_path = d / paths.METADATA_FILE
            if not meta_path.is_file():
                continue
            meta_bytes = meta_path.read_bytes()
            local = local_layers(d, metadata.TimelineMetadata.from_bytes(meta_bytes))
            idx = indexes.get(d.name)
            if idx is None:
                self.report("final-not-equal", f"{d.name[:8]}: no remote index")
                continue
            if idx.metadata_bytes != meta_bytes:
                self.report(
                    "final-not-equal",
                    f"{d.name[:8]}: remote metadata at {idx.disk_consistent_lsn}, local at "
                    f"{metadata.TimelineMetadata.from_bytes(meta_bytes).disk_consistent_lsn}",
                )
            for name, size in sorted(local.items(), key=lambda kv: kv[0].sort_key()):
                m = idx.layers.get(name)
                if m is None or m.file_size != size:
                    self.report("final-not-equal", f"{d.name[:8]}: local {name} ({size} bytes) not indexed as such")


@pytest.fixture
def seed() -> int:
    return sim_seed()


@pytest.fixture(params=REMOTES)
def sim_remote(
    request: pytest.FixtureRequest, tmp_path: Path, seed: int
) -> Iterator[tuple[str, base.RemoteStorage, int]]:
    """(URL for the engine, storage client for the test, the engine's concurrency) of the profile."""
    assert request.param in PROFILES, f"WRITER_SIM_REMOTE: {request.param!r} is not one of {PROFILES}"
    if request.param == "file":
        url = f"file://{tmp_path / 'remote'}"
        (tmp_path / "remote").mkdir()
        storage = remote_factory.open_remote(remote_url.parse_remote_url(url))
        try:
            yield url, storage, remote_url.DEFAULT_CONCURRENCY
        finally:
            storage.close()
    elif request.param == "s3":
        r: Remote = request.getfixturevalue("remote")
        yield r.url, r.open(), remote_url.DEFAULT_CONCURRENCY
    else:
        r = request.getfixturevalue("remote")
        parts = urlsplit(r.server.endpoint)
        assert parts.hostname is not None and parts.port is not None
        weights = {"latency": 1.0}
        proxy = faultproxy.FaultProxy(
            (parts.hostname, parts.port), rate=SLOW_RATE, seed=seed, weights=weights, latency=SLOW_LATENCY
        )
        proxy.start()
        try:
            url = f"s3://{r.bucket}?endpoint={proxy.endpoint}&region={r.server.region}"
            yield url, r.open(), SLOW_CONCURRENCY
        finally:
            print(f"fault proxy (latency only): {proxy.snapshot().summary()}")
            proxy.stop()


def test_writer_protocol(
    tmp_path: Path, sim_remote: tuple[str, base.RemoteStorage, int], seed: int, request: pytest.FixtureRequest
) -> None:
    url, storage, concurrency = sim_remote
    kind = request.node.callspec.params["sim_remote"]
    print(f"writer simulation: WRITER_SIM_SEED={seed} WRITER_SIM_STEPS={STEPS} remote {kind}", flush=True)
    tid = ids.TenantId.parse(new_tenant_id())
    testdata.make_remote_tenant(storage, SHAPE, tid)
    workdir = tmp_path / "volume"
    sim = Simulation(seed, workdir, url, concurrency, storage, tid)
    t0 = time.monotonic()
    try:
        sim.run(STEPS)
    finally:
        sim.engine.close()
    t = sim.tally
    kills = sum(t.kills.values())
    per = ", ".join(f"{c} {t.survived[c]}/{t.kills[c]}" for c in sorted(t.kills))
    record(
        f"writer simulation ({kind}, seed {seed}): steps / invariant violations = {STEPS} / "
        f"{len(sim.violations.items)}; kills survived / kills = {sum(t.survived.values())} / {kills}"
        f"{f' ({per})' if per else ''}; {t.writer_steps} writer actions "
        f"({', '.join(f'{k} {v}' for k, v in sorted(sim.writer.counts.items()))}), "
        f"{sim.watch.indexes_seen} indexes checked, ops {dict(sorted(t.ops.items()))}, "
        f"{time.monotonic() - t0:.0f} s"
    )
    if sim.violations.items:
        lines = [f"  step {s} {inv}: {d}" for s, inv, d in sim.violations.items[:30]]
        pytest.fail(
            f"[WRITER_SIM_SEED={seed}] {len(sim.violations.items)} invariant violations "
            f"{sim.violations.by_invariant()}:\n" + "\n".join(lines) + "\nlast steps: " + " ".join(sim.log),
            pytrace=False,
        )
