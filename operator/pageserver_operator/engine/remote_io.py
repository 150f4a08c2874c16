"""The engine's async view of a blocking remote storage backend.

boto3 and file fsyncs block, kopf is async: every blocking call runs on one bounded thread pool
shared by all tenants of the volume, sized to the backend's concurrency, so the event loop stays
free and the number of requests in flight never exceeds the configured limit.

`download_layer_blocking` is the one durable download (reference §6.10, with the directory fsync left to
the caller, which batches it per timeline before the metadata is written): stream into
``<layer>.temp_download``, check the byte count against the index, fsync, rename over the final
name. A crash leaves at most a ``.temp_download`` file, which the next attach or load deletes.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from pageserver_operator.engine import paths
from pageserver_operator.remote import base

P = ParamSpec("P")
T = TypeVar("T")

_WRITE_BUFFER = 1 << 20


def download_layer_blocking(
    storage: base.RemoteStorage,
    key: str,
    final: Path,
    expected_size: int | None,
    progress: base.ProgressCallback | None = None,
) -> int:
    tmp = final.with_name(final.name + paths.TEMP_DOWNLOAD_SUFFIX)
    with open(tmp, "wb", buffering=_WRITE_BUFFER) as out:
        n = storage.download_to(key, out, expected_size, progress)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, final)
    return n


class RemoteIO:
    """Async facade over one `RemoteStorage`, with a bounded worker pool."""

    def __init__(self, storage: base.RemoteStorage, workers: int | None = None) -> None:
        self.storage = storage
        self.workers = workers or storage.concurrency
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="remote-io")

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

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
        self.storage.close()
