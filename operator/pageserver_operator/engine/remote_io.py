"""The engine's async view of a blocking remote storage backend.

boto3 and file fsyncs block, kopf is async: every blocking call runs on one bounded thread pool
shared by all tenants of the volume, sized to the backend's concurrency, so the event loop stays
free and the number of requests in flight never exceeds the configured limit.

The durable download (reference §6.10, with the directory fsync left to the caller, which
batches it per timeline before the metadata is written) has two halves:

- `download_to_temp` (on a worker thread, holding a request slot): stream into
  ``<layer>.temp_download`` and check the byte count against the index;
- `finish_download` (on one of `FSYNC_WORKERS` threads of its own, see `RemoteIO.finish_later`):
  fsync the file, then rename it over the final name.

The worker thread goes on to its next GET while the disk catches up, so fsync latency does not
idle a request slot; at most one downloaded file per worker waits for its fsync (the worker
blocks beyond that: bounded open files, bounded unsynced data, and a kill loses at most two
files per request slot: one being fetched, one waiting for its fsync). A final name is only
ever given to a complete, fsynced file. A crash leaves at most ``.temp_download`` files, which
the next attach or load deletes. `download_layer_blocking` does both halves in one call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import functools
import io
import os
import sys
import threading
import typing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, ParamSpec, TypeVar

from pageserver_operator.engine import paths
from pageserver_operator.remote import base

P = ParamSpec("P")
T = TypeVar("T")

#: Threads that fsync and rename downloaded files (shared by all tenants of the volume).
FSYNC_WORKERS = 4

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
    just written (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, asynchronous), so the fsync at
    the end of a large layer finds little left to write, and unsynced data per file stays
    bounded. It is only a hint: durability still comes from the fsync before the rename."""

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

    The data is written but not yet durable: hand the fd to `finish_download` (which closes it).
    """
    tmp = final.with_name(final.name + paths.TEMP_DOWNLOAD_SUFFIX)
    # A new file, never opened through whatever is at that name (a planted symlink included).
    # Usually nothing is there: the unlink (which locks the directory like the create does) only
    # when the exclusive create finds something.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
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


def finish_download(fd: int, final: Path) -> None:
    """fsync the temp file behind ``fd``, close it, rename it over ``final``."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(final.with_name(final.name + paths.TEMP_DOWNLOAD_SUFFIX), final)


def download_layer_blocking(
    storage: base.RemoteStorage,
    key: str,
    final: Path,
    expected_size: int | None,
    progress: base.ProgressCallback | None = None,
) -> int:
    n, fd = download_to_temp(storage, key, final, expected_size, progress)
    finish_download(fd, final)
    return n


class RemoteIO:
    """Async facade over one `RemoteStorage`, with a bounded worker pool."""

    def __init__(self, storage: base.RemoteStorage, workers: int | None = None) -> None:
        self.storage = storage
        self.workers = workers or storage.concurrency
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="remote-io")
        self._fsync_pool = ThreadPoolExecutor(max_workers=FSYNC_WORKERS, thread_name_prefix="remote-io-fsync")
        # Downloaded files that may wait for their fsync at once: one per request slot.
        self._unsynced = threading.BoundedSemaphore(self.workers)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        """``fn`` on the worker pool; the caller keeps the future (to know when a thread that
        outlived a cancelled awaiter is done)."""
        return self._pool.submit(fn, *args, **kwargs)

    def finish_later(self, fd: int, final: Path) -> concurrent.futures.Future[None]:
        """`finish_download` on the fsync threads (call from a worker thread: it blocks while
        one file per worker is already waiting). The fd belongs to the callee from here on."""
        self._unsynced.acquire()
        try:
            future = self._fsync_pool.submit(finish_download, fd, final)
        except BaseException:
            self._unsynced.release()
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        future.add_done_callback(lambda _: self._unsynced.release())
        return future

    async def list_dirs(self, prefix: str) -> list[str]:
        return await self.run(self.storage.list_dirs, prefix)

    async def get_bytes(self, key: str) -> bytes:
        return await self.run(self.storage.get_bytes, key)

    async def put_bytes(self, key: str, data: bytes) -> None:
        await self.run(self.storage.put_bytes, key, data)

    async def upload_file(
        self, key: str, path: Path, size: int, progress: base.ProgressCallback | None = None
    ) -> None:
        await self.run(self.storage.upload_file, key, path, size, progress)

    async def delete(self, key: str) -> None:
        await self.run(self.storage.delete, key)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._fsync_pool.shutdown(wait=True)  # never drop a pending fsync: it owns an open fd
        self.storage.close()
