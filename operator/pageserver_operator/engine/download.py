"""Downloads of layer files into a tenant's timeline directories, and the worker threads of a tenant.

The durable download of one layer (docs/architecture.md, "engine/",
Layer download) has two halves, so that flushing to disk does not idle a request slot:

- `download_to_temp` (on a worker thread of `remote_io.RemoteIO`, holding a request slot):
  stream into ``<layer>.temp_download`` (a new file, never opened through a planted symlink) and
  check the byte count against the index;
- the group commit (`group_commit.GroupCommit`, through `remote_io.RemoteIO.finish_later`):
  one ``syncfs`` for every file waiting, then each file renamed over its final name. The
  directory fsync is left to the caller, which batches it per timeline before the metadata is
  written.

The files waiting for their commit are bounded (`remote_io.UNSYNCED_FILES` and
`remote_io.UNSYNCED_BYTES`; a worker blocks beyond): bounded open files and unsynced data, and a
kill loses at most those files and the ones being fetched. A final name is only ever given to a
complete, durable file; a crash leaves at most ``.temp_download`` files, which the next attach or
load deletes.

`DownloadPool` is one tenant's share of the volume's worker threads: `DownloadPool.download_all`
runs every planned download of an attach, load or sync in batches of at most `BATCH_SECONDS`
per worker thread (fairness between tenants; the event loop is woken once per batch, not per
file), and `DownloadPool.run` runs any other blocking call of the tenant. Invariants: every
batch and every pending rename counts as busy until it ended, and every worker-thread call is
recorded until it returned, so `DownloadPool.stop` and `DownloadPool.quiesce` can tell when
nothing of this tenant writes into its directory any more (a detach removes the directory only
after that; an abandoned attach stops its threads at their next chunk).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ctypes
import io
import logging
import os
import sys
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from pageserver_operator.engine import group_commit, metrics, paths, progress, remote_io, timeline
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import ids, layer_name
from pageserver_operator.remote import base
from pageserver_operator.remote import errors as remote_errors

T = TypeVar("T")

#: A worker thread takes downloads of one tenant for at most this long before it returns to
#: the shared pool (fairness between tenants; the event loop is woken once per batch).
BATCH_SECONDS = 0.05
#: How long `DownloadPool.stop` and a failed `DownloadPool.download_all` wait for the download
#: threads of the tenant to notice they must stop (a thread blocked in a request longer than
#: this is not waited for).
STOP_TIMEOUT = 60.0

#: Start the writeback of a large file every this many bytes (see `_FdWriter`).
WRITE_BEHIND = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range`` (Linux), or None."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return typing.cast(Callable[[int, int, int, int], int], fn)


_sync_file_range = _load_sync_file_range() if sys.platform.startswith("linux") else None


class _FdWriter:
    """What `RemoteStorage.download_to` calls on ``out`` (``seek(0)``, ``truncate()``,
    ``write``), straight on a file descriptor with the position and size tracked here: a fresh
    temp file costs no ``lseek``/``ftruncate``, and each chunk (1 MiB, or a whole small layer)
    is one ``write(2)`` -- no copy into a Python-side buffer.

    Write-behind: every `WRITE_BEHIND` bytes the kernel is asked to start writing the range
    just written (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, asynchronous), so the flush at
    the end of a large layer finds little left to write, and unsynced data per file stays
    bounded. It is only a hint: durability still comes from the group commit before the rename."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pos = 0
        self._size = 0
        self._kicked = 0  # writeback started for [0, _kicked)

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET:
            raise io.UnsupportedOperation("only absolute seeks")
        if pos != self._pos:
            os.lseek(self._fd, pos, os.SEEK_SET)
            self._pos = pos
            self._kicked = min(self._kicked, pos)
        return pos

    def tell(self) -> int:
        return self._pos

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if size != self._size:
            os.ftruncate(self._fd, size)
            self._size = size
        return size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        total = view.nbytes
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._pos += total
        self._size = max(self._size, self._pos)
        if _sync_file_range is not None and self._pos - self._kicked >= WRITE_BEHIND:
            _sync_file_range(self._fd, self._kicked, self._pos - self._kicked, _SYNC_FILE_RANGE_WRITE)
            self._kicked = self._pos
        return total

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        """Write ``data`` at ``offset`` (parts of a ranged download, from several threads; the
        position is not moved), and start the writeback of that range (see above)."""
        view = memoryview(data)
        pos = offset
        while view:
            n = os.pwrite(self._fd, view, pos)
            view = view[n:]
            pos += n
        if _sync_file_range is not None:
            _sync_file_range(self._fd, offset, pos - offset, _SYNC_FILE_RANGE_WRITE)

    def flush(self) -> None:
        pass


def download_to_temp(
    storage: base.RemoteStorage,
    key: str,
    final: Path,
    expected_size: int | None,
    progress: base.ProgressCallback | None = None,
) -> tuple[int, int]:
    """Download ``key`` into ``<final>.temp_download``; return (bytes, open fd of the temp file).

    The data is written but not yet durable: hand the fd to `remote_io.RemoteIO.finish_later`
    (which closes it).
    """
    tmp = final.with_name(final.name + paths.TEMP_DOWNLOAD_SUFFIX)
    # A new file, never opened through whatever is at that name (a planted symlink included).
    # Usually nothing is there: the unlink (which locks the directory like the create does) only
    # when the exclusive create finds something.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with group_commit.NAMESPACE_LOCK:
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileExistsError:
            os.unlink(tmp)
            fd = os.open(tmp, flags, 0o644)
    try:
        n = storage.download_to(key, typing.cast(BinaryIO, _FdWriter(fd)), expected_size, progress)
    except BaseException:
        os.close(fd)
        raise
    return n, fd


class DownloadCancelled(BaseException):
    """Raised inside a download thread to stop it at the next chunk (a BaseException so that no
    retry loop mistakes it for a failure worth retrying)."""


#: (timeline, layer, size in the index or None for a v0 index)
Download = tuple[timeline.Timeline, layer_name.LayerName, int | None]


@dataclass
class _Batch:
    """The downloads of one `DownloadPool.download_all`, shared with its worker threads."""

    pending: collections.deque[Download]
    #: (timeline, layer, size in the index, bytes) of every file renamed, not yet accounted
    done: collections.deque[tuple[timeline.Timeline, layer_name.LayerName, int | None, int]] = field(
        default_factory=collections.deque
    )
    #: files handed to the group commit and not yet renamed or failed, and the first failure
    committing: int = 0
    failure: BaseException | None = None
    committed: threading.Condition = field(default_factory=threading.Condition)
    #: set when the download ends (also on failure): threads take nothing more
    stop: threading.Event = field(default_factory=threading.Event)


def _wait_committed(batch: _Batch) -> None:
    """Until every file of ``batch`` handed to the group commit is renamed or failed."""
    with batch.committed:
        while batch.committing:
            batch.committed.wait()


class DownloadPool:
    """One tenant's use of the volume's worker threads (`remote_io.RemoteIO`): its downloads,
    and every other blocking call it makes, each recorded until it returned."""

    def __init__(
        self,
        io: remote_io.RemoteIO,
        tenant_id: ids.TenantId,
        progress_: progress.Progress,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.io = io
        self.tenant_id = tenant_id
        self.progress = progress_
        self._log = log
        self._cancel = threading.Event()
        self._busy = 0
        self._busy_lock = threading.Lock()
        #: every worker-thread call of this tenant still running (see `run`, `quiesce`)
        self._threads: set[concurrent.futures.Future[Any]] = set()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker thread, recorded until it returns: a cancelled awaiter
        (a Tenant deleted while Attaching) does not stop the thread, so `quiesce` waits."""
        future = self.io.submit(fn, *args)
        with self._busy_lock:
            self._threads.add(future)

        def forget(f: concurrent.futures.Future[Any]) -> None:
            with self._busy_lock:
                self._threads.discard(f)

        future.add_done_callback(forget)
        return await asyncio.wrap_future(future)

    async def stop(self) -> None:
        """Make download threads still running stop at their next chunk, and wait for them, so
        that nothing writes into the tenant directory after an attach was abandoned."""
        self._cancel.set()
        await self._until_idle(0.02)
        self._cancel.clear()

    async def quiesce(self) -> None:
        """Return once no worker thread of this tenant runs and no download writes into its
        directory (the threads of a cancelled attach or load included): a detach removes the
        directory only after this, so nothing re-creates it afterwards."""
        await self.stop()
        with self._busy_lock:
            pending = list(self._threads)
        if pending:
            self._log.info("waiting for %d worker thread(s) of an earlier operation", len(pending))
            await asyncio.wait([asyncio.wrap_future(f) for f in pending])

    async def _until_idle(self, poll: float) -> None:
        """Until no batch or rename of this tenant is running, polled every ``poll`` seconds,
        for at most `STOP_TIMEOUT` seconds."""
        deadline = time.monotonic() + STOP_TIMEOUT
        while self._busy and time.monotonic() < deadline:
            await asyncio.sleep(poll)

    async def download_all(self, downloads: list[Download]) -> set[ids.TimelineId]:
        """Download in parallel, bounded by the remote's concurrency. Returns timelines whose
        index lacked some sizes (v0) that are now known.

        ``io.workers`` loops run `_download_batch` on the worker threads until nothing is left:
        the event loop is woken once per batch, not per file. A request slot is held only
        while the bytes flow; the flush + rename of each file runs in the group commit while
        the slot goes to the next GET. Every file handed to them is renamed (durable) before
        this returns, also when it fails, so nothing writes into the tenant directory
        afterwards."""
        batch = _Batch(collections.deque(downloads))
        learnt: set[ids.TimelineId] = set()
        layer_downloads = metrics.LAYER_DOWNLOADS.labels(metrics.tenant_label(self.tenant_id))
        layer_download_bytes = metrics.LAYER_DOWNLOAD_BYTES.labels(metrics.tenant_label(self.tenant_id))

        def account() -> None:
            while batch.done:
                t, name, size, n = batch.done.popleft()
                t.layers[name] = n
                layer_downloads.inc()
                layer_download_bytes.inc(n)
                if size is None:
                    self.progress.unknown_size_done(n)
                    if t.queue.record_size(name, n):
                        learnt.add(t.timeline_id)

        async def worker() -> None:
            while batch.pending:
                await self.run(self._download_batch, batch)
                account()

        try:
            await remote_io.gather_first_error([worker() for _ in range(min(self.io.workers, len(downloads)))])
        except BaseException:
            # Batches of cancelled waiters are still running: stop them at their next chunk
            # and wait until they and their renames are done. Every layer that did land on the
            # volume is still accounted (metrics, the timeline's layers): a retry reuses it.
            batch.stop.set()
            await self._until_idle(0.005)
            account()
            raise
        batch.stop.set()
        if batch.committing:  # one wait on a worker thread, not one event-loop wakeup per file
            await self.run(_wait_committed, batch)
        account()
        if batch.failure is not None:
            raise batch.failure
        return learnt

    def _download_batch(self, batch: _Batch) -> None:
        """On a worker thread: take downloads from ``batch.pending`` for up to `BATCH_SECONDS`
        (so that one tenant never holds a worker for long), each into its temp file, and hand
        every file to the group commit (`remote_io.RemoteIO.finish_later`); a file counts as
        downloaded once it is renamed. The whole batch counts as busy, the commit stage too, so
        `stop` also waits for renames into the tenant directory."""
        with self._busy_lock:
            self._busy += 1
        try:
            deadline = time.monotonic() + BATCH_SECONDS

            def progress_cb(n: int) -> None:
                if self._cancel.is_set() or batch.stop.is_set():
                    raise DownloadCancelled()
                self.progress.add_bytes(n)

            while not batch.stop.is_set() and time.monotonic() < deadline:
                try:
                    item = batch.pending.popleft()
                except IndexError:
                    return
                t, name, size = item
                if self._cancel.is_set():
                    raise DownloadCancelled()
                key = paths.remote_layer_key(self.tenant_id, t.timeline_id, name, t.queue.layer_generation(name))
                try:
                    n, fd = download_to_temp(self.io.storage, key, t.directory / str(name), size, progress_cb)
                except remote_errors.NotFound as e:
                    raise EngineError(
                        "RemoteLayerMissing",
                        f"{t.where}: index_part.json names layer {name} but {key} does not exist",
                    ) from e
                except remote_errors.PermanentRemoteError as e:
                    raise EngineError("LayerDownloadFailed", f"{t.where}: layer {name}: {e}") from e
                with self._busy_lock:
                    self._busy += 1
                with batch.committed:
                    batch.committing += 1

                def done(exc: BaseException | None, item: Download = item, n: int = n) -> None:
                    if exc is None:
                        batch.done.append((*item, n))
                        self.progress.add_layer()
                    with batch.committed:
                        if exc is not None and batch.failure is None:
                            batch.failure = exc
                        batch.committing -= 1
                        batch.committed.notify_all()
                    self._not_busy()

                try:
                    self.io.finish_later(fd, t.directory / str(name), n, done)
                except BaseException as exc:
                    done(exc)
                    raise
        finally:
            self._not_busy()

    def _not_busy(self) -> None:
        with self._busy_lock:
            self._busy -= 1
