"""A tenant on the volume: its entry points (start, attach, load, sync, detach, stop, snapshot).

`Tenant` is the state machine (`snapshot.TenantState`; docs/architecture.md, "engine/"):
Loading / Attaching -> Active, any -> Broken on a failure that retrying cannot fix, Active ->
Stopping on detach. Transient failures (remote storage unreachable, timeouts) leave the state
where it was with the error in `message` and raise an `EngineError` with ``transient=True``
(`errors.classify` decides): the caller retries (the operator with backoff, the CLI user by
running the command again). One operation at a time per tenant (an asyncio lock); the
planning and setup of timelines is `setup.TimelineSetup`, every blocking call and download
runs through the tenant's `download.DownloadPool`.

Crash consistency, at any instant:
- Attach: the ``attaching`` marker is created (fsynced) before anything else and removed only
  after every timeline's ``metadata`` was written, which happens after all its layers were
  downloaded and its directory fsynced. A marker on disk therefore means "attach incomplete":
  running attach again resumes (complete layers of the right size are reused, partial
  ``.temp_download`` files removed, the metadata write is an idempotent replace).
- Load: works from the local timelines only (a remote-only timeline is not downloaded); what
  it may move or remove, and what it never touches, is stated in engine/setup.py.
- Sync: while Active, uploads what the writer flushed (layers, then the index, in the upload
  queues); nothing local is moved.
- Detach: every local layer is in the remote index (uploaded, then indexed) before the tenant
  directory is renamed aside and removed; a crash leaves either the whole tenant or a
  ``<tid>.___temp`` directory that the next start removes. No worker thread of the tenant
  runs any more when the directory is removed (`download.DownloadPool.quiesce`).
- Nothing is written outside ``<workdir>/tenants/<tid>`` (paths come from `paths.TenantPaths`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pageserver_operator.engine import (
    attachment,
    crashsafe,
    download,
    errors,
    fence,
    metrics,
    paths,
    progress,
    remote_io,
    setup,
    snapshot,
    timeline,
    upload_queue,
)
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.engine.snapshot import TenantSnapshot, TenantState, Transition
from pageserver_operator.formats import generation as generation_mod
from pageserver_operator.formats import ids
from pageserver_operator.formats.generation import Generation

log = logging.getLogger(__name__)

Listener = Callable[["Tenant"], None]


#: Extra scans of one sync after uploads were abandoned during its pass (compaction meanwhile).
SYNC_RESCANS = 3


class Tenant:
    def __init__(
        self,
        workdir: os.PathLike[str] | str,
        tenant_id: ids.TenantId,
        io: remote_io.RemoteIO,
        *,
        backoff: upload_queue.Backoff = upload_queue.DEFAULT_BACKOFF,
        generation: Generation = generation_mod.NONE,
    ) -> None:
        self.id = tenant_id
        self.paths = paths.TenantPaths(Path(workdir), tenant_id)
        self.io = io
        self.backoff = backoff
        self.state: TenantState | None = None
        self.reason = ""
        self.message = ""
        self.timelines: dict[ids.TimelineId, timeline.Timeline] = {}
        self.progress = progress.Progress()
        self.history: list[Transition] = []
        self.listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self._log_context: dict[str, object] = {"tenant_id": str(tenant_id)}
        self._log = logging.LoggerAdapter(log, self._log_context)
        #: every blocking call of this tenant runs through it (downloads included)
        self._pool = download.DownloadPool(io, tenant_id, self.progress, self._log)
        self._setup = setup.TimelineSetup(
            self.paths, io, self._pool, backoff, self.progress, self._log, self._notify, self._publish
        )
        #: generation, its issuer and validation, deletions (engine/attachment.py)
        self.attachment = attachment.Attachment(self.paths, io, self._pool, self._setup, self._log, self._log_context)
        self.generation = generation

    @property
    def generation(self) -> Generation:
        """The generation of this attachment (`attachment.Attachment.generation`). Set before
        attach/load (the operator's issuer, the CLI from ``--generation``)."""
        return self.attachment.generation

    @generation.setter
    def generation(self, value: Generation) -> None:
        self.attachment.generation = value

    # ---- state --------------------------------------------------------------------------------

    @property
    def where(self) -> str:
        return f"tenant {self.id}"

    def _set_state(self, state: TenantState, reason: str, message: str) -> None:
        changed = (state, reason, message) != (self.state, self.reason, self.message)
        old = self.state
        self.state, self.reason, self.message = state, reason, message
        if not changed:
            return
        if old is not None:
            metrics.TENANTS.labels(old.value).dec()
        metrics.TENANTS.labels(state.value).inc()
        metrics.track(self)
        self.history.append(Transition(datetime.now(UTC), state, reason, message))
        del self.history[:-snapshot.HISTORY_LIMIT]
        level = logging.ERROR if state is TenantState.BROKEN else logging.INFO
        self._log.log(level, "%s: %s %s", state.value, reason, message)
        self._notify()

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener(self)

    def _publish(self, new: list[timeline.Timeline]) -> None:
        self.timelines = {**self.timelines, **{t.timeline_id: t for t in new}}

    def note(self, message: str) -> None:
        """Update the human message without a transition (e.g. "retrying after ...")."""
        if message != self.message:
            self.message = message
            self._notify()

    @property
    def upload_error(self) -> tuple[str, str] | None:
        """(reason, message) of the first timeline whose uploads keep failing, or None; cheap
        (no snapshot). Listeners are notified when it appears, changes or clears."""
        for _, t in sorted(self.timelines.items()):
            error = t.queue.upload_error
            if error is not None:
                return error.reason, error.message
        return None

    def snapshot(self) -> TenantSnapshot:
        return TenantSnapshot(
            tenant_id=str(self.id),
            state=self.state,
            reason=self.reason,
            message=self.message,
            progress=self.progress.snapshot(),
            timelines=[snapshot.of_timeline(t) for _, t in sorted(self.timelines.items())],
            history=list(self.history),
            generation=self.generation,
            deletions=(
                (q.pending, q.deleted, q.leaked) if (q := self.attachment.deletions) is not None else None
            ),
        )

    # ---- entry points -------------------------------------------------------------------------

    def local_state(self) -> str:
        """What the volume says: "attaching" (marker), "present" (tenant data), or "absent".
        A detach killed after it fenced the directory is undone first (`fence.recover`)."""
        p = self.paths
        fence.recover(p)
        if p.marker.exists():
            return "attaching"
        if p.tenant_dir.is_dir() and any(p.tenant_dir.iterdir()):
            return "present"
        return "absent"

    async def start(self, config: Mapping[str, Any] | None = None) -> None:
        """Bring the tenant to Active from whatever the volume holds (operator start-up)."""
        if self.local_state() == "present":
            await self.load(config)
        else:
            await self.attach(config)

    async def attach(self, config: Mapping[str, Any] | None = None) -> None:
        """Attach from remote storage, or resume an interrupted attach; a loaded tenant is reloaded."""
        async with self._lock:
            if self.local_state() == "present":
                await self._guarded(TenantState.LOADING, self._load, config)
            else:
                await self._guarded(TenantState.ATTACHING, self._attach, config)

    async def load(self, config: Mapping[str, Any] | None = None) -> None:
        """Load from the volume; an interrupted attach (marker present) is resumed."""
        async with self._lock:
            if self.local_state() == "attaching":
                await self._guarded(TenantState.ATTACHING, self._attach, config)
            else:
                await self._guarded(TenantState.LOADING, self._load, config)

    async def sync(self, timeout: float | None = None) -> None:
        """Upload local-only layers, then the index; return when the queues are drained."""
        async with self._lock:
            if self.state is not TenantState.ACTIVE:
                raise EngineError(
                    "TenantNotActive", f"{self.where} is not Active (state {self.state}): cannot sync"
                )
            try:
                await self._sync_once(timeout)
            except Exception as e:
                raise errors.classify(e, self.where) from e

    async def settle(self) -> None:
        """Wait for the upload queues, then validate the generation if anything waits for it
        (recorded deletions, an index upload not yet confirmed) and act on the answer: the
        CLI's attach and load end with it (the operator's next sync does it)."""
        async with self._lock:
            if self.state is not TenantState.ACTIVE:
                return
            try:
                await asyncio.gather(*(t.queue.wait_completion() for t in self.timelines.values()))
                if await self.attachment.settle(self.timelines):
                    self._notify()
            except Exception as e:
                err = errors.classify(e, self.where)
                if not err.transient:
                    self.mark_broken(err)
                raise err from e

    async def detach(self, timeout: float | None = None, keep_local: bool = False) -> None:
        """Drain uploads (nothing local-only is lost), then remove the local tenant directory.

        When local data cannot be checked against remote storage or uploaded (a corrupt local
        metadata file, remote ahead of local), detach fails and keeps everything, unless
        ``keep_local``: then the directory is renamed to ``<tid>.kept.<N>`` beside the other
        tenants (nothing deleted; reported as an unmanaged entry) and the detach completes."""
        async with self._lock:
            try:
                await self._detach(timeout, keep_local)
            except Exception as e:
                err = errors.classify(e, self.where)
                self.note(f"detach blocked: {err.message}")
                raise err from e

    async def warm(self) -> int:
        """Download the newest remote index's layers as a secondary location (DESIGN §8.4,
        ``Warming``): nothing is written remotely (no generation is issued, no index uploaded,
        nothing deleted), no ``metadata`` is written and the ``attaching`` marker stays, so the
        tenant is not attached here: the attach of the cutover resumes this one and downloads
        only what changed since. Progress is `progress` (as an attach's). Returns the bytes
        still to download when it started (0: already warm).

        Crash behaviour: as an attach's (temp file, fsync, rename; the marker first): a kill
        leaves a resumable secondary."""
        async with self._lock:
            if self.local_state() == "present":
                raise EngineError("AlreadyAttached", f"{self.where} is attached on this volume: nothing to warm")
            own = self._setup.generation
            self._setup.generation = Generation.MAX  # read the newest index, whoever wrote it
            try:
                await self._pool.run(self._setup.create_marker)
                remote_ids = await self._setup.list_remote_timelines()
                indexes = await self._setup.fetch_indexes(set(remote_ids), required=set())
                return await self._setup.warm_timelines(indexes)
            except Exception as e:
                await self._pool.stop()
                raise errors.classify(e, self.where) from e
            finally:
                self._setup.generation = own
                self.timelines = {}

    async def discard(self, why: str) -> None:
        """Remove the local copy of a tenant attached elsewhere under a newer generation (a
        stale copy, DESIGN §8.3): nothing is uploaded (it would be under a fenced generation,
        never referenced) and nothing remote is deleted; recorded deletions are dropped with
        the directory (leaked, never executed). Crash-safe like a detach (renamed aside, then
        removed): a kill leaves either the copy or nothing of it."""
        async with self._lock:
            self.stop()
            await self._pool.quiesce()
            p = self.paths
            if p.tenant_dir.exists():
                await self._pool.run(crashsafe.remove_tree, p.tenant_dir, p.deleting_dir)
            self._log.warning("removed the stale local copy: %s", why)
            self._gone("StaleCopyRemoved", why)

    def mark_broken(self, err: EngineError) -> None:
        """Record a failure found outside attach/load (e.g. by sync) as Broken."""
        self.stop()
        self._set_state(TenantState.BROKEN, err.reason, err.message)

    async def apply_config(self, config: Mapping[str, Any] | None) -> None:
        """Write the tenant config overrides (idempotent; a no-op when unchanged)."""
        try:
            await self._setup.write_config(config)
        except Exception as e:
            raise errors.classify(e, self.where) from e

    def stop(self) -> None:
        """Stop the upload queues (shutdown); queued work is redone by reconcile at next start."""
        for t in self.timelines.values():
            t.queue.stop()

    # ---- error handling -----------------------------------------------------------------------

    async def _guarded(self, initial: TenantState, fn: Callable[..., Any], *args: Any) -> None:
        self.progress.start(0, 0)
        try:
            await fn(*args)
        except asyncio.CancelledError:
            self.stop()
            await self._pool.stop()
            raise
        except Exception as e:
            await self._pool.stop()
            err = errors.classify(e, self.where)
            if err.transient:
                self._set_state(self.state or initial, err.reason, f"retrying after error: {err.message}")
            else:
                self.stop()
                self._set_state(TenantState.BROKEN, err.reason, err.message)
            raise err from e

    # ---- attach / load ------------------------------------------------------------------------

    async def _attach(self, config: Mapping[str, Any] | None) -> None:
        p = self.paths
        await self._reset_timelines()
        await self.attachment.ensure_generation()
        # Resuming only if an earlier attempt got as far as a timeline directory: a retry of an
        # attach that failed before (e.g. nothing found in remote storage) starts afresh.
        resuming = p.marker.exists() and p.timelines_dir.is_dir() and any(p.timelines_dir.iterdir())
        self._set_state(
            TenantState.ATTACHING,
            "AttachStarted",
            f"attaching from {self.io.storage.describe()}" + (" (resuming)" if resuming else ""),
        )
        await self._pool.run(self._setup.create_marker)
        await self.attachment.open_deletions()
        await self._setup.write_config(config)
        remote_ids = await self._setup.list_remote_timelines()
        if not remote_ids:
            raise EngineError(
                "NoRemoteTimelines",
                f"{self.where}: no timelines found in remote storage under "
                f"{paths.remote_timelines_prefix(self.id)} of {self.io.storage.describe()}; "
                "check the tenant id, the bucket and the prefix",
            )
        await self.attachment.refuse_if_stale(remote_ids)
        indexes = await self._setup.fetch_indexes(set(remote_ids), required=set())
        skipped = sorted(str(t) for t in set(remote_ids) - set(indexes))
        if skipped:
            # A prefix without an index: a timeline whose first upload never completed (or an
            # emptied folder the server keeps listing). It is not part of the remote state.
            self._log.warning("skipping remote timelines without index_part.json: %s", ", ".join(skipped))
        if not indexes:
            raise EngineError(
                "NoRemoteTimelines",
                f"{self.where}: no timeline under {paths.remote_timelines_prefix(self.id)} has an "
                f"index_part.json ({len(remote_ids)} listed); check the tenant id, the bucket and "
                "the prefix",
            )
        await self._setup.setup_timelines({}, indexes, "attach")
        await self._pool.run(crashsafe.remove_marker, p.marker)
        self._activate()

    async def _load(self, config: Mapping[str, Any] | None, *, detaching: bool = False) -> None:
        """Load + reconcile_with_remote. ``detaching``: the load a detach runs to learn what is
        local-only; the tenant stays Stopping (not Loading, not Active) whatever happens."""
        await self._reset_timelines()
        if not detaching:
            self._set_state(TenantState.LOADING, "LoadStarted", "loading from the volume")
        await self.attachment.ensure_generation()
        await self._pool.run(self._setup.refuse_symlinks)
        await self.attachment.open_deletions()
        await self._setup.write_config(config)
        await self._pool.run(self._setup.check_config)
        # Load works from the local timelines only (docs/architecture.md, "engine/", Load):
        # a timeline that exists only remotely is not downloaded (the pageserver may have
        # deleted it here). A directory without metadata is completed from its remote index
        # (an interrupted download of ours) or, without one, left to the writer creating it.
        found = await self._pool.run(self._setup.read_local_timelines, True)
        await self.attachment.refuse_if_stale(found)
        indexes = await self._setup.fetch_indexes(set(found), required=set())
        local = {tlid: meta for tlid, meta in found.items() if meta is not None or tlid in indexes}
        creating = sorted(str(tlid) for tlid in set(found) - set(local))
        if creating:
            self._log.info("skipping timeline directories without metadata nor remote index: %s", ", ".join(creating))
        await self._setup.setup_timelines(local, indexes, "load")
        if not detaching:
            self._activate()

    async def _reset_timelines(self) -> None:
        """Attach and load rebuild every timeline from the volume and the remote index, once
        the previous upload queues have nothing in flight any more: a stopped queue's index
        PUT still running could otherwise land after the new queue's (the remote index would
        go backwards, and the next sync report a false split brain)."""
        self.stop()
        old = list(self.timelines.values())
        self.timelines = {}
        busy = [t for t in old if t.queue.unfinished]
        if busy:
            self._log.info("waiting for the in-flight uploads of %d stopped upload queue(s)", len(busy))
        await asyncio.gather(*(t.queue.join() for t in old))

    def _activate(self) -> None:
        for t in self.timelines.values():
            t.state = timeline.TimelineState.ACTIVE
            t.awaits_download = False
        n = len(self.timelines)
        self._set_state(TenantState.ACTIVE, "Active", f"{n} timeline{'s' if n != 1 else ''} active")

    # ---- sync ---------------------------------------------------------------------------------

    async def _sync_once(self, timeout: float | None) -> int:
        """`_sync_pass`, again while an upload was abandoned during the pass (its file vanished:
        compaction), at most `SYNC_RESCANS` more times: the index uploaded meanwhile kept its
        previous disk_consistent_lsn (upload_queue), a rescan finds what replaced the layer.
        Returns the number of operations scheduled by all passes."""
        scheduled = 0
        for _ in range(SYNC_RESCANS + 1):
            before = {tlid: t.queue.abandons for tlid, t in self.timelines.items()}
            scheduled += await self._sync_pass(timeout)
            if all(t.queue.abandons == before.get(tlid, 0) for tlid, t in self.timelines.items()):
                break
        if await self.attachment.settle(self.timelines):
            self._notify()
        return scheduled

    async def _sync_pass(self, timeout: float | None) -> int:
        """Scan the volume, schedule what is new (layers, then the index), wait for the queues
        to drain. Returns the number of operations scheduled (a new timeline counts as one)."""
        local = await self._pool.run(self._setup.read_local_timelines, False)
        new = {tlid: meta for tlid, meta in local.items() if tlid not in self.timelines}
        scheduled = len(new)
        if new:
            remote = await self._setup.fetch_indexes(set(new), required=set())
            existing = dict(self.timelines)
            await self._setup.setup_timelines(
                new, remote, "sync", {tlid: t.metadata.ancestor_timeline for tlid, t in existing.items()}
            )
            for t in self.timelines.values():
                t.state = timeline.TimelineState.ACTIVE
        vanished = sorted(str(tlid) for tlid in self.timelines if tlid not in local)
        if vanished:
            raise EngineError(
                "LocalLayersVanished",
                f"{self.where}: the directory (or the metadata) of timeline {vanished[0]} disappeared from the "
                "volume while Active: damage, not a deletion; nothing is deleted remotely",
            )
        for tlid, meta in local.items():
            t = self.timelines[tlid]
            if tlid in new:
                continue
            if meta.disk_consistent_lsn < t.metadata.disk_consistent_lsn:
                raise EngineError(
                    "LocalMetadataWentBackwards",
                    f"{t.where}: local metadata disk_consistent_lsn went backwards "
                    f"({t.metadata.disk_consistent_lsn} -> {meta.disk_consistent_lsn})",
                )
            scan = await self._pool.run(timeline.scan_timeline_dir, t.directory, meta.disk_consistent_lsn)
            t.metadata, t.layers = meta, scan.layers
            present = scan.in_use()  # a name still standing for something on the volume is not removed
            removed = [n for n in t.removed_layers() if str(n) not in present]
            if removed and timeline.vanished_wholesale(len(t.queue.latest_files), removed, t.layers, meta):
                raise EngineError(
                    "LocalLayersVanished",
                    f"{t.where}: {len(removed)} of {len(t.queue.latest_files)} layers disappeared from the volume "
                    f"at once (first: {removed[0]}), and the layers left do not account for them (no "
                    "compaction or GC output covers them): damage; nothing is deleted remotely",
                )
            scheduled += t.schedule_local_only(removed=removed)
        self._notify()
        await asyncio.wait_for(
            asyncio.gather(*(t.queue.wait_completion() for t in self.timelines.values())), timeout
        )
        self._notify()
        return scheduled

    # ---- detach -------------------------------------------------------------------------------

    async def _detach(self, timeout: float | None, keep_local: bool) -> None:
        p = self.paths
        await self._pool.quiesce()
        state = self.local_state()
        removing = p.tenant_dir
        if state == "present":
            try:
                removing = await self._upload_and_fence(timeout)
            except EngineError as e:
                if not keep_local:
                    raise
                kept = await self._pool.run(self._keep_aside)
                self._log.warning("detach: %s; local data kept at %s", e.message, kept)
        else:
            # Nothing local, or a marker: attach never completed, every local layer came from remote.
            what = "removing an incomplete attach" if state == "attaching" else "nothing on the volume"
            self._set_state(TenantState.STOPPING, "DetachStarted", what)
        self.stop()
        await self._pool.run(crashsafe.remove_tree, removing, p.deleting_dir)
        self._gone("Detached", "local data removed")

    def _gone(self, reason: str, message: str) -> None:
        """The local copy is removed: no state, no timelines, no metric series of it."""
        metrics.forget_tenant(str(self.id))
        metrics.untrack(self)
        if self.state is not None:
            metrics.TENANTS.labels(self.state.value).dec()
        self.state = None
        self.timelines = {}
        self.history.append(Transition(datetime.now(UTC), None, reason, message))
        self._notify()

    async def _upload_and_fence(self, timeout: float | None) -> Path:
        """Upload and index everything, then fence the directory (`fence`): returns the fenced
        directory once a look at it found nothing the last sync did not see; else it is put
        back and the sync runs again, until ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            await self._upload_before_detach(left)
            fenced = await self._pool.run(fence.fence, self.paths)
            new = await self._pool.run(fence.new_since_sync, fenced, dict(self.timelines))
            if not new:
                return fenced
            await self._pool.run(fence.unfence, self.paths)
            self._log.info("detach: flushed during the final scan (%s): syncing again", "; ".join(new))
            if deadline is not None and time.monotonic() >= deadline:
                raise EngineError(
                    "UploadIncomplete",
                    f"{self.where}: the writer kept flushing during the detach for {timeout:.0f} s ({new[0]})",
                    transient=True,
                )

    def _keep_aside(self) -> str:
        p = self.paths
        n = 0
        while (target := p.tenants_root / f"{self.id}.kept.{n}").exists():
            n += 1
        os.rename(p.tenant_dir, target)
        crashsafe.fsync_dir(p.tenants_root)
        return str(target)

    async def _upload_before_detach(self, timeout: float | None) -> None:
        """Make every local layer part of the remote index (uploaded, then indexed)."""
        if self.state is not TenantState.ACTIVE:
            # Not loaded (or Broken): load it to learn what is local-only; if that fails,
            # the local data stays where it is. The tenant is Stopping from here on (a blocked
            # detach of a Broken tenant must not show Loading with downloads in progress).
            self._set_state(TenantState.STOPPING, "DetachStarted", "checking local layers against remote storage")
            try:
                await self._load(None, detaching=True)
            except Exception as e:
                err = errors.classify(e, self.where)
                raise EngineError(
                    err.reason,
                    f"{err.message}; the local directory {self.paths.tenant_dir} is kept because its "
                    "layers could not be checked against remote storage",
                    transient=err.transient,
                ) from e
        self._set_state(TenantState.STOPPING, "DetachStarted", "uploading local-only layers")
        # The writer protocol (docs/reliability.md): syncing stops only after a final scan taken once the queues are drained
        # found nothing new (a layer + metadata flushed during the detach is uploaded and
        # indexed, or the detach does not complete: a writer that never stops keeps it waiting
        # until the timeout).
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(deadline - time.monotonic(), 0.001)

        await self._sync_once(left())  # drains also what earlier syncs left in the queues
        while await self._sync_once(left()):  # each scan here follows a drain
            if deadline is not None and time.monotonic() >= deadline:
                raise EngineError(
                    "UploadIncomplete",
                    f"{self.where}: new layers kept appearing during the detach for {timeout:.0f} s",
                    transient=True,
                )
        lagging = [t.where for t in self.timelines.values() if t.local_only() or t.upload_lag_bytes]
        if lagging:
            raise EngineError(
                "UploadIncomplete", f"local-only layers not uploaded for {', '.join(lagging)}", transient=True
            )

