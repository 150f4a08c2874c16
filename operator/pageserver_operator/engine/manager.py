"""All tenants of one volume: the engine's entry point for the CLI and the operator.

One `RemoteIO` (one worker pool, one concurrency limit) is shared by every tenant. The start-up
scan (docs/architecture.md, "engine/", Startup scan) never lets one bad directory stop the others: ``<tid>.___temp`` leftovers of
an interrupted detach are removed, everything else that is not a tenant id is reported, not
touched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pageserver_operator.engine import crashsafe, fence, paths, remote_io, tenant, upload_queue
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import errors as format_errors
from pageserver_operator.formats import generation as generation_mod
from pageserver_operator.formats import ids
from pageserver_operator.formats.generation import Generation
from pageserver_operator.remote import base

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a command of the CLI rides out transient failures (remote storage down) by default.
DEFAULT_RETRY_TIMEOUT = 120.0


@dataclass
class VolumeScan:
    tenants: list[ids.TenantId] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


class TenantManager:
    def __init__(
        self,
        workdir: Path,
        storage: base.RemoteStorage,
        *,
        workers: int | None = None,
        backoff: upload_queue.Backoff = upload_queue.DEFAULT_BACKOFF,
        generation: Generation = generation_mod.NONE,
    ) -> None:
        self.workdir = workdir
        self.io = remote_io.RemoteIO(storage, workers)
        self.backoff = backoff
        #: The generation every tenant created here starts with (the CLI's ``--generation``;
        #: the operator sets each tenant's own after bumping it).
        self.generation = generation
        self.tenants: dict[ids.TenantId, tenant.Tenant] = {}

    @property
    def tenants_root(self) -> Path:
        return self.workdir / paths.TENANTS_DIR

    def get(self, tenant_id: ids.TenantId) -> tenant.Tenant:
        t = self.tenants.get(tenant_id)
        if t is None:
            t = tenant.Tenant(self.workdir, tenant_id, self.io, backoff=self.backoff, generation=self.generation)
            self.tenants[tenant_id] = t
        return t

    def forget(self, tenant_id: ids.TenantId) -> None:
        self.tenants.pop(tenant_id, None)

    def scan_volume(self) -> VolumeScan:
        """List tenant directories on the volume; remove leftovers of interrupted detaches."""
        scan = VolumeScan()
        try:
            entries = sorted(os.listdir(self.tenants_root))
        except FileNotFoundError:
            return scan
        for name in entries:
            full = self.tenants_root / name
            if name.endswith("." + paths.TEMP_SUFFIX):
                log.info("removing leftover of an interrupted detach: %s", full)
                crashsafe.remove_tree(full, full)
                continue
            fenced = fence.tenant_of(name)
            if fenced is not None:  # a detach killed after its fence: the tenant is put back
                fence.recover(paths.TenantPaths(self.workdir, fenced))
                if fenced not in scan.tenants and (self.tenants_root / str(fenced)).is_dir():
                    scan.tenants.append(fenced)
                continue
            try:
                tid = ids.TenantId.parse(name)
            except format_errors.FormatError:
                scan.unknown.append(name)
                continue
            if full.is_dir():
                scan.tenants.append(tid)
            else:
                scan.unknown.append(name)
        return scan

    def close(self) -> None:
        for t in self.tenants.values():
            t.stop()
        self.io.close()


async def retry_transient(
    op: Callable[[], Awaitable[T]],
    timeout: float,
    on_retry: Callable[[EngineError, float], None],
    backoff: upload_queue.Backoff = upload_queue.DEFAULT_BACKOFF,
) -> T:
    """Run ``op`` again after a transient `EngineError` (remote storage unreachable, a timeout),
    with the engine's capped backoff (the upload queue's), for up to ``timeout`` seconds; then
    the last error is raised. A permanent error is raised at once. ``on_retry(error, delay)`` is
    told before each wait. Every engine operation is idempotent (a resumed attach, a reload), so
    running it again is safe: this is what the operator's controller does for a tenant, for the
    CLI (the backends' own retries give up after seconds)."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            return await op()
        except EngineError as e:
            if not e.transient:
                raise
            attempt += 1
            delay = backoff.delay(attempt)
            if time.monotonic() + delay > deadline:
                raise
            on_retry(e, delay)
            await asyncio.sleep(delay)


async def unless_uploads_refused(t: tenant.Tenant, op: Awaitable[T]) -> T:
    """``op`` (a sync, or a wait for the upload queues to drain), ended early by a permanent
    upload failure (AccessDenied, NoSuchBucket): the CLI says so and exits at once instead of
    waiting for its timeout while the queue retries on its capped schedule. (The operator does
    not use this: an Active tenant keeps retrying and shows the reason in its status.) The
    tenant's queues are stopped when it ends early; nothing is lost, a later run redoes it."""

    def refused() -> upload_queue.UploadError | None:
        for _, tl in sorted(t.timelines.items()):
            error = tl.queue.upload_error
            if error is not None and error.permanent:
                return error
        return None

    seen = asyncio.Event()

    def check(_: tenant.Tenant) -> None:
        if refused() is not None:
            seen.set()

    t.listeners.append(check)
    task = asyncio.ensure_future(op)
    waiter = asyncio.ensure_future(seen.wait())
    try:
        check(t)
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        error = refused()
        assert error is not None
        t.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise EngineError(error.reason, f"uploads refused by remote storage: {error.message}")
    finally:
        t.listeners.remove(check)
        waiter.cancel()
        if not task.done():
            task.cancel()
