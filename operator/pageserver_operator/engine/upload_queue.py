"""Per-timeline upload queue with the launch rules of Neon's ``RemoteTimelineClient`` (docs/architecture.md, "engine/", Upload queue).

Invariants:
- FIFO; only the head of the queue may start, nothing overtakes.
- Layer uploads run in parallel with each other.
- An index upload starts only when nothing is in flight, so every layer an index names has
  been uploaded before the index that names it.
- A deletion starts only when everything in flight is a deletion, and is always preceded by an
  index upload that no longer names the file (`schedule_layer_deletion`). A deletion here only
  hands the unlinked objects' keys to the tenant's durable deletion queue (`on_unlinked`,
  engine/deletion_queue.py), which deletes them once the generation is validated (DESIGN §8.2).
- A barrier (`wait_completion`) resolves when everything scheduled before it has completed.
- `remote_consistent_lsn` is the ``disk_consistent_lsn`` of the last *completed* index upload;
  `validated_consistent_lsn` (what the status shows) follows it only when the tenant's
  generation was validated after that upload (`confirm`).

The queue is not persisted: after a crash, reconcile_with_remote rebuilds it from the remote
index and the local files. Accepted leaks (as in the original): a layer uploaded but never
indexed, a layer unlinked by an index but not yet deleted.

Fix over the original (Neon #5635): a layer whose upload can never succeed because its local file
disappeared is *abandoned*: later index uploads leave it out instead of naming an object that
does not exist. A layer stays abandoned only until an upload of the same name succeeds (the
pageserver may write a file of that name again): from then on indexes name it again.

An index is self-consistent (docs/reliability.md, "The writer protocol"): a layer abandoned from an index's snapshot leaves a
gap in the LSN range its metadata claims (compaction wrote an L1 over it and removed it; the L1
is not in this snapshot). Such an index is uploaded with the metadata of the last index that
completed (its disk_consistent_lsn does not move over the gap; the layers it names are a
superset of that index's, so it is consistent), or not at all when no index completed yet; and
`latest_metadata` steps back to it, so that the next scan schedules the real index. `abandons`
counts abandoned uploads: a sync that sees it move during its pass scans again (tenant.py).

Failures are retried for ever, never skipped (skipping an upload would let the next index name
a missing object): a transient one (remote storage unreachable, a local file still being
written) with `Backoff.delay`, a permanent one (AccessDenied, NoSuchBucket: only a fix of the
bucket or the credentials helps) with the same backoff under the longer `Backoff.permanent_cap`.
While an operation fails, `upload_error` says why (reason + message of the latest failure still
unresolved; the `Synced` condition shows it), each failed attempt counts in
``pageserver_operator_upload_errors_total{reason}``, and `on_change` is called when the shown
error appears, changes or clears.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pageserver_operator import backoff as backoff_mod
from pageserver_operator.engine import metrics, paths, remote_io
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import generation as generation_mod
from pageserver_operator.formats import ids, index_part, layer_name, lsn, metadata
from pageserver_operator.formats.generation import Generation
from pageserver_operator.remote import errors as remote_errors

log = logging.getLogger(__name__)


class OpKind(enum.Enum):
    UPLOAD_LAYER = "upload_layer"
    UPLOAD_INDEX = "upload_index"
    DELETE = "delete"
    BARRIER = "barrier"


_GAUGE_LABELS = {
    OpKind.UPLOAD_LAYER: ("layer", "upload"),
    OpKind.UPLOAD_INDEX: ("index", "upload"),
    OpKind.DELETE: ("layer", "delete"),
}


@dataclass
class Op:
    kind: OpKind
    name: layer_name.LayerName | None = None
    size: int | None = None
    files: dict[layer_name.LayerName, int | None] = field(default_factory=dict)
    metadata: metadata.TimelineMetadata | None = None
    barrier: asyncio.Future[None] | None = None
    keys: tuple[str, ...] = ()
    """DELETE: the keys of the objects the index before it unlinked (each with its generation)."""


class QueueStopped(EngineError):
    def __init__(self, message: str) -> None:
        super().__init__("UploadQueueStopped", message, transient=True)


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff between attempts of one queued operation (`backoff.Backoff`
    with two caps: the failure's kind chooses)."""

    base: float = 0.1
    factor: float = 2.0
    cap: float = 10.0
    permanent_cap: float = 60.0
    """The cap after a permanent failure (AccessDenied, NoSuchBucket): retried, but not hammered."""

    def delay(self, attempt: int, *, permanent: bool = False) -> float:
        """0 before the first failure; then `backoff.Backoff` under the cap of the failure's kind."""
        return backoff_mod.Backoff(self.base, self.factor, self.permanent_cap if permanent else self.cap).delay(attempt)


@dataclass(frozen=True)
class UploadError:
    """Why an operation of the queue is failing (the latest failure not yet resolved)."""

    reason: str
    """CamelCase, e.g. ``RemoteStorageRejected`` (AccessDenied, NoSuchBucket)."""
    message: str
    """Names the timeline, the operation and the error."""
    permanent: bool
    """Retrying alone will not fix it (retried with `Backoff.permanent_cap`)."""
    attempts: int
    """Failed attempts of that operation so far."""


DEFAULT_BACKOFF = Backoff()


class UploadQueue:
    def __init__(
        self,
        io: remote_io.RemoteIO,
        tenant_id: ids.TenantId,
        timeline_id: ids.TimelineId,
        timeline_dir: Path,
        backoff: Backoff = DEFAULT_BACKOFF,
        *,
        generation: Generation = generation_mod.NONE,
    ) -> None:
        self.io = io
        #: Ours: the suffix of every object this queue writes (DESIGN §8.2).
        self.generation = generation
        self.tenant_id = tenant_id
        self.timeline_id = timeline_id
        self.timeline_dir = timeline_dir
        # The tenant's upload counter exists from 0 on: rate() and increase() see the first upload.
        metrics.LAYER_UPLOADS.labels(metrics.tenant_label(tenant_id))
        self.backoff = backoff
        self.initialized = False
        self.stopped = False
        #: The desired remote file set, including everything queued or in flight.
        self.latest_files: dict[layer_name.LayerName, int | None] = {}
        self.latest_metadata: metadata.TimelineMetadata | None = None
        self.remote_consistent_lsn: lsn.Lsn | None = None
        #: `remote_consistent_lsn` as of the last validation of the generation (`confirm`)
        self.validated_consistent_lsn: lsn.Lsn | None = None
        #: an index of our own generation completed (older generations' indexes are obsolete)
        self.own_index_uploaded = False
        #: takes the keys a completed index unlinked (the tenant's durable deletion queue)
        self.on_unlinked: Callable[[Sequence[str]], Awaitable[None]] | None = None
        #: Names of layers known to be in the remote index that has completed last.
        self.remote_files: dict[layer_name.LayerName, int | None] = {}
        #: Called (no arguments) when `upload_error` appears, changes or clears.
        self.on_change: Callable[[], None] | None = None
        self._failing: dict[int, UploadError] = {}
        self._stopping = asyncio.Event()
        self._shown: UploadError | None = None
        #: The generation of each layer of `latest_files` that an earlier generation uploaded
        #: (from the index); a layer missing here is one this queue uploads, under its own.
        self.generations: dict[layer_name.LayerName, Generation] = {}
        #: The generation of the index this queue was initialised from (None: no index).
        self.index_generation: Generation | None = None
        #: A failure that stopped the queue for good.
        self.fatal: EngineError | None = None
        self.abandoned: set[layer_name.LayerName] = set()
        #: Uploads abandoned so far (the caller rescans when it moved during a sync).
        self.abandons = 0
        #: The metadata of the index that completed last (None: no index yet).
        self.remote_metadata: metadata.TimelineMetadata | None = None
        self._queued: list[Op] = []
        self._in_flight: dict[int, Op] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_id = 0
        self._log = logging.LoggerAdapter(
            log,
            {
                "tenant_id": str(tenant_id),
                "timeline_id": str(timeline_id),
                "generation": "none" if generation.value is None else str(generation.value),
            },
        )

    # ---- initialisation -------------------------------------------------------------------

    def init_from_index(self, index: index_part.IndexPart, loaded_from: Generation | None = None) -> None:
        """Start from ``index`` (written by generation ``loaded_from``; None: unknown, ours)."""
        self._init()
        self.index_generation = self.generation if loaded_from is None else loaded_from
        self.latest_files = {name: meta.file_size for name, meta in index.layers.items()}
        self.generations = {name: meta.generation for name, meta in index.layers.items()}
        self.remote_files = dict(self.latest_files)
        self.latest_metadata = index.metadata
        self.remote_metadata = index.metadata
        self.remote_consistent_lsn = index.metadata.disk_consistent_lsn  # metadata_bytes are authoritative
        self.validated_consistent_lsn = self.remote_consistent_lsn

    def init_empty(self, meta: metadata.TimelineMetadata) -> None:
        self._init()
        self.latest_metadata = meta
        self.remote_consistent_lsn = None

    def _init(self) -> None:
        if self.initialized:
            raise RuntimeError("upload queue initialised twice")
        self.initialized = True

    def record_size(self, name: layer_name.LayerName, size: int) -> bool:
        """Remember a size learnt by downloading (v0 index); True if it was unknown before."""
        if name in self.latest_files and self.latest_files[name] is None:
            self.latest_files[name] = size
            return True
        return False

    # ---- scheduling -----------------------------------------------------------------------

    def schedule_layer_upload(self, name: layer_name.LayerName, size: int) -> None:
        self._check_open()
        self.latest_files[name] = size
        self._enqueue(Op(OpKind.UPLOAD_LAYER, name=name, size=size))

    def schedule_index_upload(self, meta: metadata.TimelineMetadata) -> None:
        self._check_open()
        self.latest_metadata = meta
        self._enqueue(Op(OpKind.UPLOAD_INDEX, files=dict(self.latest_files), metadata=meta))

    def schedule_layer_deletion(self, names: list[layer_name.LayerName]) -> None:
        """Unlink ``names`` from the index (uploaded first), then delete the objects."""
        self._check_open()
        if self.latest_metadata is None:
            raise RuntimeError("no index to unlink the layers from yet")
        keys = self.unlink(names)
        self._enqueue(Op(OpKind.UPLOAD_INDEX, files=dict(self.latest_files), metadata=self.latest_metadata))
        self.schedule_deletion(keys)

    def unlink(self, names: Sequence[layer_name.LayerName]) -> tuple[str, ...]:
        """Take ``names`` out of the desired remote state (the next index scheduled leaves them
        out); returns their objects' keys for `schedule_deletion` after that index."""
        self._check_open()
        keys = tuple(
            paths.remote_layer_key(self.tenant_id, self.timeline_id, name, self.layer_generation(name)) for name in names
        )
        for name in names:
            self.latest_files.pop(name, None)
            self.generations.pop(name, None)
        return keys

    def schedule_deletion(self, keys: Sequence[str]) -> None:
        """Hand ``keys`` to the deletion queue once everything scheduled before has completed
        (the index that unlinked them among it)."""
        self._check_open()
        self._enqueue(Op(OpKind.DELETE, keys=tuple(keys)))

    def confirm(self) -> None:
        """The generation was validated after the last completed index upload: what it made
        consistent remotely is so for good (``remoteConsistentLsn`` may move)."""
        self.validated_consistent_lsn = self.remote_consistent_lsn

    @property
    def unconfirmed(self) -> bool:
        """An index upload completed since the last `confirm`."""
        return self.remote_consistent_lsn != self.validated_consistent_lsn

    def layer_generation(self, name: layer_name.LayerName) -> Generation:
        """The generation whose key holds layer ``name`` (an older one's, or ours)."""
        return self.generations.get(name, self.generation)

    async def wait_completion(self) -> None:
        """Barrier: returns when everything scheduled before the call has completed."""
        if self.fatal is not None:
            raise self.fatal
        self._check_open()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(Op(OpKind.BARRIER, barrier=fut))
        await fut

    def stop(self, error: EngineError | None = None) -> None:
        """Drop queued operations (failing pending barriers); in-flight attempts finish by themselves."""
        if self.stopped:
            return
        self.stopped = True
        self._stopping.set()
        for op in self._queued:
            if op.barrier is not None and not op.barrier.done():
                op.barrier.set_exception(
                    error or QueueStopped("wait_completion aborted because upload queue was stopped")
                )
            self._gauge(op, -1)
        self._queued.clear()

    async def join(self) -> None:
        """Return once nothing of this queue is in flight any more. After `stop` that is when
        the attempts still running have ended: a queue that replaces this one (a reload) waits
        for it, so an old index PUT can never land after a newer one."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ---- introspection --------------------------------------------------------------------

    @property
    def upload_error(self) -> UploadError | None:
        """The latest failure of an operation that has not succeeded since (None: all is well)."""
        if self.fatal is not None:
            return UploadError(self.fatal.reason, self.fatal.message, permanent=True, attempts=1)
        return next(reversed(self._failing.values()), None)

    @property
    def last_error(self) -> str | None:
        error = self.upload_error
        return error.message if error is not None else None

    @property
    def unfinished(self) -> int:
        """Operations queued or in flight, barriers not counted."""
        return sum(1 for op in self._queued if op.kind is not OpKind.BARRIER) + len(self._in_flight)

    def in_flight_kinds(self) -> list[OpKind]:
        return [op.kind for op in self._in_flight.values()]

    def queued_kinds(self) -> list[OpKind]:
        return [op.kind for op in self._queued]

    def pending_upload_bytes(self) -> int:
        """Bytes of layers scheduled for upload that have not completed yet."""
        ops = [*self._queued, *self._in_flight.values()]
        return sum(op.size or 0 for op in ops if op.kind is OpKind.UPLOAD_LAYER)

    # ---- launching ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if not self.initialized:
            raise RuntimeError("upload queue is in state Uninitialized")
        if self.stopped:
            raise QueueStopped(f"upload queue of timeline {self.timeline_id} is stopped")

    def _enqueue(self, op: Op) -> None:
        self._queued.append(op)
        self._gauge(op, +1)
        self._launch()

    def _gauge(self, op: Op, delta: int) -> None:
        labels = _GAUGE_LABELS.get(op.kind)
        if labels is not None:
            metrics.UPLOAD_QUEUE_UNFINISHED.labels(
                metrics.tenant_label(self.tenant_id), metrics.timeline_label(self.timeline_id), *labels
            ).inc(delta)

    def _may_start(self, op: Op) -> bool:
        if op.kind is OpKind.UPLOAD_LAYER:
            return True
        if op.kind is OpKind.DELETE:
            return all(o.kind is OpKind.DELETE for o in self._in_flight.values())
        return not self._in_flight  # UPLOAD_INDEX and BARRIER

    def _launch(self) -> None:
        while self._queued and not self.stopped and self._may_start(self._queued[0]):
            op = self._queued.pop(0)
            if op.kind is OpKind.BARRIER:
                assert op.barrier is not None
                if not op.barrier.done():
                    op.barrier.set_result(None)
                continue
            task_id = self._next_id
            self._next_id += 1
            self._in_flight[task_id] = op
            task = asyncio.get_running_loop().create_task(self._execute(task_id, op))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute(self, task_id: int, op: Op) -> None:
        attempt = 0
        try:
            while not self.stopped:
                try:
                    await self._perform(op)
                    if op.kind is OpKind.UPLOAD_LAYER and op.name is not None:
                        self.abandoned.discard(op.name)  # the object exists now
                        self.generations.pop(op.name, None)  # under our key from now on
                    break
                except FileNotFoundError as e:
                    if op.kind is OpKind.UPLOAD_LAYER and op.name is not None:
                        self._log.error("abandoning upload of %s: local file is gone (%s)", op.name, e)
                        self.abandoned.add(op.name)
                        self.abandons += 1
                        if not self._another_upload_of(op):
                            self.latest_files.pop(op.name, None)
                        break
                    self._record_failure(task_id, op, e, attempt)
                except Exception as e:
                    # Remote errors and OSErrors are expected; anything else is retried the same way:
                    # leaving the loop would unblock the next index as if this op had succeeded.
                    self._record_failure(task_id, op, e, attempt)
                attempt += 1
                delay = self.backoff.delay(attempt, permanent=self._failing[task_id].permanent)
                with contextlib.suppress(TimeoutError):  # `stop` ends the wait: `join` is prompt
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            self._in_flight.pop(task_id, None)
            self._gauge(op, -1)
            self._failing.pop(task_id, None)
            self._error_changed()
        if not self.stopped:
            self._launch()

    def _another_upload_of(self, op: Op) -> bool:
        """True if the layer of ``op`` was scheduled for upload again (queued or in flight)."""
        return any(
            o is not op and o.kind is OpKind.UPLOAD_LAYER and o.name == op.name
            for o in (*self._queued, *self._in_flight.values())
        )

    def _record_failure(self, task_id: int, op: Op, e: BaseException, attempt: int) -> None:
        what = f"{op.kind.value} {op.name}" if op.name else op.kind.value
        permanent = isinstance(e, remote_errors.PermanentRemoteError)
        message = f"timeline {self.timeline_id}: {what} failed: {e}"
        if permanent:
            message += f" (not transient: retried at most every {self.backoff.permanent_cap:.0f} s until fixed)"
        error = UploadError(_reason(e), message, permanent, attempt + 1)
        self._failing.pop(task_id, None)
        self._failing[task_id] = error  # the latest failure last
        metrics.UPLOAD_ERRORS.labels(metrics.tenant_label(self.tenant_id), error.reason).inc()
        self._log.warning("%s (attempt %d), retrying", message, attempt + 1)
        self._error_changed()

    def _error_changed(self) -> None:
        """Call `on_change` when the reason or message of `upload_error` changed."""
        shown = self.upload_error
        before = self._shown
        self._shown = shown
        key = None if shown is None else (shown.reason, shown.message)
        if key != (None if before is None else (before.reason, before.message)) and self.on_change is not None:
            self.on_change()

    async def _perform(self, op: Op) -> None:
        if op.kind is OpKind.UPLOAD_LAYER:
            assert op.name is not None and op.size is not None
            local = self.timeline_dir / str(op.name)
            actual = (await self.io.run(local.stat)).st_size
            if actual != op.size:
                raise OSError(f"local layer {local} has {actual} bytes, {op.size} were scheduled")
            await self.io.upload_file(
                paths.remote_layer_key(self.tenant_id, self.timeline_id, op.name, self.generation), local, op.size
            )
            metrics.LAYER_UPLOADS.labels(metrics.tenant_label(self.tenant_id)).inc()
        elif op.kind is OpKind.UPLOAD_INDEX:
            assert op.metadata is not None
            files = {n: s for n, s in op.files.items() if n not in self.abandoned}
            meta = op.metadata
            if len(files) < len(op.files):  # a gap: see the module docstring
                lost = sorted(str(n) for n in op.files if n not in files)
                if self.remote_metadata is None:
                    self._log.warning(
                        "not uploading the first index (disk_consistent_lsn %s): %d layer(s) vanished "
                        "before their upload (%s); the next scan brings what replaced them",
                        meta.disk_consistent_lsn, len(lost), lost[0],
                    )
                    if self.latest_metadata == op.metadata:
                        self.latest_metadata = None  # makes the next scan schedule an index
                    return
                meta = self.remote_metadata
                self._log.warning(
                    "index upload keeps disk_consistent_lsn %s (not %s): %d layer(s) vanished before "
                    "their upload (%s); the next scan brings what replaced them",
                    meta.disk_consistent_lsn, op.metadata.disk_consistent_lsn, len(lost), lost[0],
                )
            # sizes learnt by downloads since the snapshot was taken (v0 upgrade)
            for n, s in files.items():
                if s is None and self.latest_files.get(n) is not None:
                    files[n] = self.latest_files[n]
            index = index_part.IndexPart.build(
                {n: index_part.LayerFileMetadata(s, self.layer_generation(n)) for n, s in files.items()}, meta
            )
            data = index.to_json_bytes()
            await self.io.put_bytes(paths.remote_index_key(self.tenant_id, self.timeline_id, self.generation), data)
            self.remote_consistent_lsn = meta.disk_consistent_lsn
            self.remote_metadata = meta
            self.own_index_uploaded = True
            self.remote_files = files
            if meta is not op.metadata and self.latest_metadata == op.metadata:
                self.latest_metadata = meta  # makes the next scan schedule the real index
        elif op.kind is OpKind.DELETE:
            if self.on_unlinked is None:
                raise RuntimeError(f"timeline {self.timeline_id}: no deletion queue to hand {len(op.keys)} unlinked object(s) to")
            await self.on_unlinked(op.keys)


def _reason(e: BaseException) -> str:
    """A CamelCase reason for a failed attempt (as `Tenant` classifies errors)."""
    if isinstance(e, EngineError | remote_errors.RemoteError):
        return e.reason
    if isinstance(e, TimeoutError):
        return "Timeout"
    if isinstance(e, OSError):
        return "LocalIOError"
    return "InternalError"
