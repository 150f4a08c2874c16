"""The engine's async view of a blocking remote storage backend.

boto3 and file fsyncs block, kopf is async: every blocking call runs on one bounded thread pool
shared by all tenants of the volume, sized to the backend's concurrency, so the event loop stays
free and the number of requests in flight never exceeds the configured limit. A second, small
pool (`FSYNC_WORKERS` threads) fsyncs and renames downloaded files (engine/download.py) while
the request slot goes to the next GET; at most one file per request slot waits for it.

Nothing here writes to the volume by itself; `RemoteIO.close` waits for every pending fsync
(each owns an open file descriptor) before it returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from pageserver_operator.remote import base

P = ParamSpec("P")
T = TypeVar("T")

#: Threads that fsync and rename downloaded files (shared by all tenants of the volume).
FSYNC_WORKERS = 4

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

    def finish_later(
        self, finish: Callable[[int, Path], None], fd: int, final: Path
    ) -> concurrent.futures.Future[None]:
        """``finish(fd, final)`` (`download.finish_download`) on the fsync threads (call from a
        worker thread: it blocks while one file per worker is already waiting). The fd belongs
        to the callee from here on (closed here if it cannot be handed over)."""
        self._unsynced.acquire()
        try:
            future = self._fsync_pool.submit(finish, fd, final)
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


async def gather_first_error(coros: list[Any]) -> list[Any]:
    """Run ``coros`` concurrently; on the first failure cancel the rest and raise that failure."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    if not tasks:
        return []
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            exc = t.exception()
            if exc is not None:
                raise exc
        return [t.result() for t in tasks]
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
