"""One tenant's attachment (DESIGN §8.2): its generation, how it is issued and validated, and the
remote deletions that wait for the validation.

`Tenant` (engine/tenant.py) owns one `Attachment` and calls it at fixed points: `ensure_generation`
first thing in attach and load (a new generation when one is due, before any remote write);
`open_deletions` once the tenant directory exists; `refuse_if_stale` before a CLI attach or
load; `settle` once the upload queues drained (sync; the CLI's attach and load).

Invariants:
- Nothing is deleted remotely and ``remoteConsistentLsn`` does not move before a validation that
  follows the index upload concerned: the control plane's uncached answer (the operator), and no
  index of a higher generation in remote storage (also the CLI's only authority).
- A stale verdict drops the recorded deletions (leaked, counted) and raises ``Stale``; the
  tenant stops writing.
- The indexes of older generations are deleted only after an index of ours completed and was
  validated; they are not queued durably: the next attachment finds them again by a LIST.

Crash behaviour: the deletion queue is durable (engine/deletion_queue.py); everything else here
is recomputed by the next start (a new generation, a new validation).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from pageserver_operator.engine import (
    deletion_queue,
    download,
    errors,
    paths,
    remote_index,
    remote_io,
    setup,
    timeline,
)
from pageserver_operator.formats import ids
from pageserver_operator.formats.generation import Generation


class Attachment:
    def __init__(
        self,
        tenant_paths: paths.TenantPaths,
        io: remote_io.RemoteIO,
        pool: download.DownloadPool,
        timeline_setup: setup.TimelineSetup,
        log: logging.LoggerAdapter[logging.Logger],
        log_context: dict[str, object],
    ) -> None:
        self.paths = tenant_paths
        self.id = tenant_paths.tenant_id
        self.io = io
        self._pool = pool
        self._setup = timeline_setup
        self._log = log
        self._log_context = log_context
        #: How the tenant learns that its generation is still current: the operator's reads the
        #: Tenant resource; None: remote storage decides (the CLI has no control plane: an index
        #: of a generation above ours means another attachment is newer).
        self.control_plane: Callable[[], Awaitable[bool]] | None = None
        #: The generation this same manager held before ``generation`` (proven by the control
        #: plane): the deletions it recorded then are adopted (`deletion_queue`). None: dropped.
        self.previous_generation: Generation | None = None
        #: Remote objects unlinked by an uploaded index, deleted once the generation is validated.
        self.deletions: deletion_queue.DeletionQueue | None = None
        #: Issues a new generation before anything is written remotely (the operator: a
        #: compare-and-swap on the Tenant resource), given the newest generation in remote
        #: storage; it sets `generation`. Used when `needs_generation`; None: the generation is
        #: given (the CLI's ``--generation``).
        self.issuer: Callable[[Generation | None], Awaitable[None]] | None = None
        self.needs_generation = False
        #: While the tenant is the source of a migration past ``SourceStale`` (DESIGN §8.4): no
        #: remote deletion (recorded ones wait, old indexes stay); uploads go on.
        self.deletions_held = False
        timeline_setup.on_unlinked = self.unlinked

    @property
    def where(self) -> str:
        return f"tenant {self.id}"

    @property
    def generation(self) -> Generation:
        """The suffix of every object this attachment writes, the highest index it reads."""
        return self._setup.generation

    @generation.setter
    def generation(self, value: Generation) -> None:
        self._setup.generation = value
        self._log_context["generation"] = errors.show_generation(value)  # on every line of the tenant

    async def ensure_generation(self) -> None:
        """A new generation when one is due (before the deletion queue is opened under it and
        before any remote write)."""
        if self.issuer is None or not self.needs_generation:
            return
        await self.issuer(await self.newest_remote_generation())
        self.needs_generation = False

    async def newest_remote_generation(self) -> Generation | None:
        """The highest generation of any index of the tenant in remote storage (None: no index)."""
        newest: Generation | None = None
        try:
            for tlid in await self._setup.list_remote_timelines():
                gens = await remote_index.list_generations(self.io, self.id, tlid)
                if gens and (newest is None or gens[-1] > newest):
                    newest = gens[-1]
        except Exception as e:
            raise errors.classify(e, self.where) from e
        return newest

    async def open_deletions(self) -> None:
        """The deletion queue under the current generation; what an earlier incarnation recorded
        is adopted when the control plane proved it was ours (`previous_generation`)."""
        q = deletion_queue.DeletionQueue(
            self.paths.tenant_dir / deletion_queue.QUEUE_FILE, self.io, self.generation, self._log, tenant_id=self.id
        )
        await self._pool.run(q.recover, self.previous_generation)
        self.deletions = q

    async def unlinked(self, keys: Sequence[str]) -> None:
        """An uploaded index no longer names these objects: record them for deletion."""
        if self.deletions is None:
            raise RuntimeError(f"{self.where}: no deletion queue")
        await self.deletions.push(keys)

    async def refuse_if_stale(self, timeline_ids: Iterable[ids.TimelineId]) -> None:
        """Without a control plane (the CLI), remote storage tells whether a newer attachment
        exists: an index of a generation above ours. Such a tenant is not ours to write
        (Broken ``Stale``; the caller passes a higher ``--generation`` to take it over)."""
        if self.control_plane is not None:
            return  # the control plane issued our generation just now
        newer = self._newer(await self._listing(timeline_ids))
        if newer is not None:
            raise errors.stale(self.where, self.generation, newer[1], f"timeline {newer[0]}")

    async def _listing(self, timeline_ids: Iterable[ids.TimelineId]) -> dict[ids.TimelineId, list[Generation]]:
        """The index generations of each timeline in remote storage (one LIST per timeline)."""
        return {tlid: await remote_index.list_generations(self.io, self.id, tlid) for tlid in sorted(timeline_ids)}

    def _newer(self, listing: Mapping[ids.TimelineId, list[Generation]]) -> tuple[ids.TimelineId, Generation] | None:
        """A timeline with an index of a generation above ours, and the highest such generation."""
        for tlid, gens in listing.items():
            if gens and gens[-1] > self.generation:
                return tlid, gens[-1]
        return None

    async def settle(self, timelines: Mapping[ids.TimelineId, timeline.Timeline]) -> bool:
        """Once the queues drained: validate the generation (only if something waits for it:
        one LIST of index objects per timeline, shared by the validation and the search for
        older indexes, and one uncached read of the control plane), then advance
        ``remoteConsistentLsn``, execute the recorded deletions and delete the indexes of older
        generations -- or, if a newer generation exists, drop the deletions (leaked, counted)
        and raise ``Stale``. The listing is taken after every key of the batch was recorded.
        True if it acted."""
        q = self.deletions
        if q is None:
            return False
        unconfirmed = [t for t in timelines.values() if t.queue.unconfirmed]
        cleaning = [
            t for t in timelines.values()
            if not self.generation.is_none() and t.queue.own_index_uploaded and not t.old_indexes_unlinked
        ]  # fmt: skip
        if not unconfirmed and not q.pending and not cleaning:
            return False
        listing = await self._listing(timelines)
        old = [
            (t, paths.remote_index_key(self.id, t.timeline_id, g))
            for t in cleaning
            for g in listing[t.timeline_id]
            if g < self.generation
        ]
        verdict: list[bool] = []

        async def validate() -> bool:
            if not verdict:
                current = self.control_plane is None or await self.control_plane()
                verdict.append(current and self._newer(listing) is None)
            return verdict[0]

        if self.deletions_held:
            result, old, cleaning = deletion_queue.FlushResult(0, 0, False), [], []
        else:
            result = await q.flush(validate)
        if (unconfirmed or cleaning) and await validate():
            for t in unconfirmed:
                t.queue.confirm()
            await remote_io.gather_first_error([self.io.delete(key) for _, key in old])
            for t in cleaning:
                t.old_indexes_unlinked = True
        if result.deleted or result.leaked or old:
            self._log.info(
                "deletions: %d executed, %d leaked; %d index(es) of older generations", result.deleted, result.leaked, len(old)
            )
        if verdict and not verdict[0]:
            raise errors.stale(
                self.where, self.generation, None,
                f"found when validating it before deleting or confirming uploads; {result.leaked} deletion(s) dropped",
            )
        return True
