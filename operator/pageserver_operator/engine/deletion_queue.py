"""The durable deletion queue of one tenant (DESIGN §8.1 deletion rule, §8.2; Neon's RFC 025).

A layer removed locally while the tenant is Active leaves the next index; once that index is
uploaded, the caller `push`es the layer's remote object keys here. They are executed by `flush`
only after the caller's ``validate()`` proved, by an uncached read of the control plane, that the
generation they were recorded under is still current. If it is not, they are dropped: the
objects are leaked (counted in `leaked` and ``pageserver_operator_deletions_leaked_total``),
never deleted, because a newer generation may have loaded an index that names them.

The queue lives in one small JSON file inside the tenant directory (`QUEUE_FILE`)::

    {"version": 1, "entries": [{"generation": 7, "keys": ["tenants/<tid>/timelines/...", ...]}]}

``generation`` is the u32 the keys were recorded under, or null for generation "none" (a tenant
run without generations). The file is written only by `crashsafe.durable_write` (temp file,
fsync, rename, fsync of the directory); when nothing is pending it is removed (and the directory
fsynced), so a tenant without pending deletions has exactly the tree it had before.

Recovery (`recover`, once, before anything else): entries recorded under the current generation
or under ``previous`` are adopted and re-recorded under the current generation. ``previous`` is
the caller's own earlier incarnation, given only when the control plane proves that nobody held a
generation in between (Neon's rule: the same disk served both generations, so they are one
writer). Entries of any other generation are dropped and counted as leaked. A file that does not
parse is an `EngineError` ``DeletionQueueInvalid`` naming it: never ignored, never guessed at.

Invariants:

- A key is deleted remotely only by a `flush` whose single ``validate()`` call returned True
  *after* the key was durably recorded under this queue's generation (the batch is taken before
  validation; keys pushed meanwhile wait for the next flush).
- `push` returns only once its keys are on disk; a pushed key leaves the file only after its
  object was deleted (a delete of a missing object succeeds), or when it is dropped as stale,
  which is counted.
- Every key belongs to this tenant (``tenants/<tid>/``): `push` refuses others (a bug), and a
  file naming one is invalid. Nothing outside the tenant's prefix can be deleted through it.
- One flush at a time; the in-memory state and the file change together, under one lock, and
  writes of the file never overlap (a write still running in a thread after its caller was
  cancelled cannot overwrite a newer one).
- `deleted` and `leaked` (and their metrics) count a key when the write of the file that removes
  it has landed: a drop is counted even if its caller was cancelled meanwhile, and a removal
  superseded by a newer write that still names the key is not (the key is counted when it
  finally leaves). Counters live in memory: a kill loses them, never the file's content.

Crash behaviour: a kill at any instant leaves the old file or the new one (plus at most a
``deletion_queue.json___temp`` that `recover` removes). It never loses a key whose `push`
returned, and never executes a delete that was not validated: deletes run only between a True
validation and the rewrite of the file, so a kill there leaves keys whose objects may already be
gone in the file; the next incarnation validates again and deletes them again, which is harmless
(a delete of a missing object succeeds, and a generation-suffixed key is never written again by
anyone else). A `push` killed or cancelled before it returned may or may not be recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pageserver_operator.engine import crashsafe, errors, metrics, paths, remote_io
from pageserver_operator.formats import errors as format_errors
from pageserver_operator.formats import ids
from pageserver_operator.formats.generation import Generation

#: Name of the queue file inside the tenant directory (``<workdir>/tenants/<tid>/<QUEUE_FILE>``).
QUEUE_FILE = "deletion_queue.json"
#: Version of the file format written (and the only one read).
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FlushResult:
    """What one `DeletionQueue.flush` did."""

    deleted: int
    """Keys whose objects were deleted (or already missing) and that left the queue."""
    leaked: int
    """Keys dropped because the generation is stale (their objects are left behind)."""
    stale: bool
    """The validation said our generation is no longer current."""


class DeletionQueue:
    """The pending remote deletions of one tenant, durable in one file."""

    def __init__(
        self,
        path: Path,
        io: remote_io.RemoteIO,
        generation: Generation,
        log: logging.LoggerAdapter[logging.Logger],
        *,
        tenant_id: ids.TenantId,
    ) -> None:
        self.path = path
        self.io = io
        self.generation = generation
        self.tenant_id = tenant_id
        self.deleted = 0
        """Keys deleted and removed from the queue since construction."""
        self.leaked = 0
        """Keys dropped as stale since construction (recovery included)."""
        self._log = log
        self._prefix = f"{paths.TENANTS_DIR}/{tenant_id}/"
        self._pending: dict[str, None] = {}  # an ordered set, all under self.generation
        self._recovered = False
        self._flush_lock = asyncio.Lock()
        self._state_lock = asyncio.Lock()
        # file writes run in worker threads: the newest version wins, even over a thread that
        # outlived its cancelled caller
        self._file_lock = threading.Lock()
        self._version = 0
        self._written = 0

    @property
    def pending(self) -> int:
        """Keys recorded and not yet deleted nor dropped."""
        return len(self._pending)

    @property
    def pending_keys(self) -> tuple[str, ...]:
        """The pending keys, oldest first (for status, tools and tests)."""
        return tuple(self._pending)

    @property
    def where(self) -> str:
        return f"tenant {self.tenant_id}: deletion queue {self.path}"

    # ---- recovery -----------------------------------------------------------------------------

    def recover(self, previous: Generation | None) -> None:
        """Load the file (missing = empty); adopt entries of the current generation and of
        ``previous`` (None: no earlier incarnation is proven ours), drop and count the others.
        Blocking: call it once, before `push` and `flush`, off the event loop if it matters."""
        if self._recovered:
            raise RuntimeError(f"{self.where}: recover() called twice")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path.with_name(self.path.name + paths.TEMP_SUFFIX))
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = None
        entries = [] if raw is None else self._parse(raw)
        adopt = {self.generation} if previous is None else {self.generation, previous}
        pending: dict[str, None] = {}
        dropped = 0
        for generation, keys in entries:
            if generation in adopt:
                pending.update(dict.fromkeys(keys))
            else:
                dropped += len(keys)
                self._log.warning(
                    "%s: dropping %d deletions recorded under generation %s (ours is %s, previous %s): "
                    "their objects are leaked",
                    self.where,
                    len(keys),
                    generation,
                    self.generation,
                    "unproven" if previous is None else previous,
                )
        rewritten = [(self.generation, list(pending))] if pending else []
        if raw is not None and entries != rewritten:
            self._version += 1
            self._write(self._render(pending), self._version, leaked=dropped)
        self._pending = pending
        self._recovered = True
        if pending:
            self._log.info("%s: %d deletions pending from before the restart", self.where, len(pending))

    def _parse(self, raw: bytes) -> list[tuple[Generation, list[str]]]:
        def invalid(why: str) -> errors.EngineError:
            return errors.EngineError("DeletionQueueInvalid", f"{self.where} is invalid: {why}")

        try:
            doc: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise invalid(f"not JSON ({e})") from e
        if not isinstance(doc, dict) or set(doc) != {"version", "entries"}:
            raise invalid('expected an object with exactly "version" and "entries"')
        if doc["version"] != FORMAT_VERSION or isinstance(doc["version"], bool):
            raise invalid(
                f"unsupported version {format_errors.show(doc['version'])} (expected {FORMAT_VERSION})"
            )
        if not isinstance(doc["entries"], list):
            raise invalid('"entries" is not a list')
        out: list[tuple[Generation, list[str]]] = []
        for n, entry in enumerate(doc["entries"]):
            if not isinstance(entry, dict) or set(entry) != {"generation", "keys"}:
                raise invalid(f'entry {n}: expected an object with exactly "generation" and "keys"')
            value = entry["generation"]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise invalid(f"entry {n}: generation {format_errors.show(value)} is not an integer or null")
            try:
                generation = Generation(value)
            except format_errors.FormatError as e:
                raise invalid(f"entry {n}: {e}") from e
            keys = entry["keys"]
            if not isinstance(keys, list) or not keys:
                raise invalid(f'entry {n}: "keys" is not a non-empty list')
            for key in keys:
                problem = self._key_problem(key)
                if problem:
                    raise invalid(f"entry {n}: {problem}")
            out.append((generation, keys))
        return out

    def _key_problem(self, key: object) -> str:
        if not isinstance(key, str) or not key.startswith(self._prefix) or key == self._prefix:
            return f"key {format_errors.show(key)} is not an object of this tenant (under {self._prefix})"
        if ".." in key.split("/") or "" in key.split("/") or "\0" in key:
            return f"key {format_errors.show(key)} is not a normalised object key"
        return ""

    # ---- recording ----------------------------------------------------------------------------

    async def push(self, keys: Sequence[str]) -> None:
        """Record ``keys`` (remote object keys of this tenant, no longer named by the uploaded
        index) as pending under our generation; returns once they are durably on disk."""
        self._check_recovered()
        for key in keys:
            problem = self._key_problem(key)
            if problem:
                raise ValueError(f"{self.where}: refusing to record {problem}")
        if not keys:
            return
        async with self._state_lock:
            new = [k for k in dict.fromkeys(keys) if k not in self._pending]
            if not new:
                return
            pending = dict(self._pending)
            pending.update(dict.fromkeys(new))
            await self._commit(pending)
        self._log.debug("%s: %d deletions recorded (%d pending)", self.where, len(new), len(self._pending))

    # ---- execution ----------------------------------------------------------------------------

    async def flush(self, validate: Callable[[], Awaitable[bool]]) -> FlushResult:
        """Validate once and execute (True) or drop (False) everything pending now.

        ``validate`` must return False only when our generation is proven stale, and raise when
        it cannot tell (nothing changes then). A failed delete keeps the keys not deleted
        pending and re-raises; a cancelled flush leaves them all pending (redone later)."""
        self._check_recovered()
        async with self._flush_lock:
            batch = list(self._pending)
            if not batch:
                return FlushResult(0, 0, False)
            if not await validate():
                await self._forget(batch, leaked=True)
                self._log.warning(
                    "%s: generation %s is stale: %d deletions dropped, their objects are leaked",
                    self.where,
                    self.generation,
                    len(batch),
                )
                return FlushResult(0, len(batch), True)
            done: list[str] = []
            try:
                await self._delete_all(batch, done)
            except Exception:
                if done:
                    try:
                        await self._forget(done, leaked=False)
                    except Exception:
                        self._log.exception(
                            "%s: recording %d executed deletions failed", self.where, len(done)
                        )
                raise
            await self._forget(batch, leaked=False)
            self._log.info(
                "%s: %d objects deleted (generation %s validated)", self.where, len(batch), self.generation
            )
            return FlushResult(len(batch), 0, False)

    async def _delete_all(self, keys: list[str], done: list[str]) -> None:
        """Delete ``keys`` with at most the io's concurrency in flight; append each deleted key
        to ``done``; the first failure cancels the rest and is raised."""
        todo = iter(keys)

        async def worker() -> None:
            for key in todo:
                await self.io.delete(key)
                done.append(key)

        await remote_io.gather_first_error([worker() for _ in range(max(1, min(self.io.workers, len(keys))))])

    # ---- the file -----------------------------------------------------------------------------

    async def _forget(self, keys: Iterable[str], *, leaked: bool) -> None:
        """Remove ``keys`` from the queue, counted as deleted or as leaked."""
        async with self._state_lock:
            pending = dict(self._pending)
            for key in keys:
                pending.pop(key, None)
            n = len(self._pending) - len(pending)
            if n:
                await self._commit(pending, deleted=0 if leaked else n, leaked=n if leaked else 0)

    async def _commit(self, pending: dict[str, None], *, deleted: int = 0, leaked: int = 0) -> None:
        """Make ``pending`` the durable and the in-memory state (call under the state lock)."""
        self._version += 1
        await self.io.run(self._write, self._render(pending), self._version, deleted=deleted, leaked=leaked)
        self._pending = pending

    def _render(self, pending: dict[str, None]) -> bytes | None:
        if not pending:
            return None
        entries = [{"generation": self.generation.value, "keys": list(pending)}]
        return json.dumps({"version": FORMAT_VERSION, "entries": entries}, indent=1).encode() + b"\n"

    def _write(self, data: bytes | None, version: int, *, deleted: int = 0, leaked: int = 0) -> None:
        """Blocking: write (or remove, for None) the file, unless a newer version is written.

        The keys this write removes are counted here, once it has landed: a count is never
        lost by a caller cancelled meanwhile, and never made for a removal that did not happen
        (a skipped write was superseded by one that still names the keys)."""
        with self._file_lock:
            if version <= self._written:
                return
            if data is not None:
                crashsafe.durable_write(self.path, data)
            elif self.path.exists():
                self.path.unlink()
                crashsafe.fsync_dir(self.path.parent)
            self._written = version
            if deleted:
                self.deleted += deleted
                metrics.DELETIONS.labels(metrics.tenant_label(self.tenant_id)).inc(deleted)
            if leaked:
                self.leaked += leaked
                metrics.DELETIONS_LEAKED.labels(metrics.tenant_label(self.tenant_id)).inc(leaked)

    # ---- bookkeeping --------------------------------------------------------------------------

    def _check_recovered(self) -> None:
        if not self._recovered:
            raise RuntimeError(f"{self.where}: used before recover() (its file could be overwritten)")
