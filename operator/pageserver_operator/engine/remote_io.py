"""The engine's async view of a blocking remote storage backend.

boto3 and file fsyncs block, kopf is async: every blocking call runs on one bounded thread pool
shared by all tenants of the volume, sized to the backend's concurrency, so the event loop stays
free and the number of requests in flight never exceeds the configured limit. Downloaded files
are made durable and renamed by one committer thread in groups (`group_commit.GroupCommit`, one
``syncfs`` per group) while the request slot goes on to the next GET; at most
`UNSYNCED_FILES` files (or as many as the pool has workers, if more) and `UNSYNCED_BYTES` bytes
wait for it.

Nothing here writes to the volume by itself; `RemoteIO.close` waits until every file handed to
the committer is durable and renamed (each owns an open file descriptor) before it returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from pageserver_operator.engine import group_commit
from pageserver_operator.remote import base

P = ParamSpec("P")
T = TypeVar("T")

#: Downloaded files (and their bytes) that may wait for their group commit at once.
UNSYNCED_FILES = 256
UNSYNCED_BYTES = 256 << 20


class RemoteIO:
    """Async facade over one `RemoteStorage`, with a bounded worker pool."""

    def __init__(self, storage: base.RemoteStorage, workers: int | None = None) -> None:
        self.storage = storage
        self.workers = workers or storage.concurrency
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="remote-io")
        self._commit = group_commit.GroupCommit(
            max_files=max(UNSYNCED_FILES, self.workers), max_bytes=UNSYNCED_BYTES
        )

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        """``fn`` on the worker pool; the caller keeps the future (to know when a thread that
        outlived a cancelled awaiter is done)."""
        return self._pool.submit(fn, *args, **kwargs)

    def finish_later(self, fd: int, final: Path, size: int, done: group_commit.Done) -> None:
        """Make the downloaded ``<final>.temp_download`` (``size`` bytes, open as ``fd``) durable
        and rename it to ``final``, in the committer's next group (call from a worker thread: it
        blocks while the committer's bounds are reached). The fd belongs to the committer from
        here on; ``done`` is called (on the committer's thread) once the file has its final name
        (None) or failed (the error)."""
        self._commit.submit(fd, final, size, done)

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
        self._commit.close()  # never drop a waiting file: it owns an open fd
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
