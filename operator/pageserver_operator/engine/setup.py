"""Planning and setting up a tenant's timelines from the volume and the remote indexes.

Attach, load and a sync that finds new timelines all go through `TimelineSetup.setup_timelines`
(Neon's ``setup_timeline`` and ``reconcile_with_remote``; docs/architecture.md, "engine/",
Timeline setup): choose each
timeline's metadata (local or remote, whichever is ahead, `timeline.choose_metadata`), clean its
directory, plan the downloads (a local layer the remote index names with another size is set
aside as ``.N.old`` and planned again; a layer from the future is skipped), download everything
in one bounded pool (engine/download.py), then per timeline, ancestors first, fsync the
directory, write ``metadata`` last and schedule the uploads of local-only layers and the index.

Invariants:
- Nothing is written outside ``<workdir>/tenants/<tid>`` (paths come from `paths.TenantPaths`,
  and no symbolic link under the tenant directory is followed: `refuse_symlinks`).
- Nothing is deleted that could be the only copy of data, and nothing the writer owns is
  touched (docs/reliability.md, "The writer protocol"): ``___temp``/``___uninit`` entries and
  timeline directories without metadata nor remote index are the pageserver's and are skipped;
  only our ``.temp_download`` files are removed; future layers are set aside only by an attach
  (no writer can run), never by load or sync.
- A timeline's ``metadata`` is written only after all its layers are on the volume and its
  directory fsynced, so a crash at any point leaves either no metadata (the timeline is
  completed by the next attach or load) or a timeline whose layers are all there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from pageserver_operator.engine import (
    ancestry,
    crashsafe,
    download,
    paths,
    progress,
    remote_index,
    remote_io,
    timeline,
    upload_queue,
)
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import errors as format_errors
from pageserver_operator.formats import ids, index_part, layer_name, tenant_config
from pageserver_operator.formats.generation import Generation

#: what sets up timelines: attach (no writer), load (after a restart), sync (while Active)
Mode = Literal["attach", "load", "sync"]


class TimelineSetup:
    """The steps of attach and load of one tenant that read the volume and remote storage and
    build its `timeline.Timeline` objects; `publish` hands the new timelines to the tenant
    (before their downloads start, so that progress and status show them), `notify` tells its
    listeners that something changed."""

    def __init__(
        self,
        tenant_paths: paths.TenantPaths,
        io: remote_io.RemoteIO,
        pool: download.DownloadPool,
        backoff: upload_queue.Backoff,
        progress_: progress.Progress,
        log: logging.LoggerAdapter[logging.Logger],
        notify: Callable[[], None],
        publish: Callable[[list[timeline.Timeline]], None],
    ) -> None:
        self.paths = tenant_paths
        self.id = tenant_paths.tenant_id
        self.io = io
        self.pool = pool
        self.backoff = backoff
        self.progress = progress_
        self._log = log
        self.notify = notify
        self.publish = publish
        #: The tenant's generation: keys of what it writes, the highest index it may read.
        self.generation = Generation.none()
        #: The generation of the index each timeline was set up from (its own or an older one).
        self.index_generations: dict[ids.TimelineId, Generation] = {}
        #: Takes the keys of remote objects an uploaded index unlinked (the deletion queue).
        self.on_unlinked: Callable[[Sequence[str]], Awaitable[None]] | None = None

    @property
    def where(self) -> str:
        return f"tenant {self.id}"

    def refuse_symlinks(self, *more: Any) -> None:
        """Nothing is followed out of the tenant directory: a tenant, ``timelines`` or timeline
        directory that is a symbolic link would make attach/load write wherever it points."""
        for path in (self.paths.tenant_dir, self.paths.timelines_dir, *more):
            if path.is_symlink():
                raise EngineError(
                    "UnsafeLocalPath",
                    f"{self.where}: {path} is a symbolic link (to {os.readlink(path)}); refusing to "
                    "write through it (only real directories belong under the tenant directory)",
                )

    def create_marker(self) -> None:
        p = self.paths
        self.refuse_symlinks()
        crashsafe.durable_mkdir(p.tenant_dir)
        crashsafe.create_marker(p.marker)
        crashsafe.durable_mkdir(p.timelines_dir)

    async def write_config(self, config: Mapping[str, Any] | None) -> None:
        if config is None:
            return
        text = tenant_config.render_tenant_config(config).encode()
        path = self.paths.config

        def write() -> None:
            try:
                if path.read_bytes() == text:
                    return
            except FileNotFoundError:
                pass
            crashsafe.durable_mkdir(path.parent)
            crashsafe.durable_write(path, text)

        await self.pool.run(write)

    def check_config(self) -> None:
        try:
            text = self.paths.config.read_text()
        except FileNotFoundError:
            return
        try:
            tenant_config.parse_tenant_config(text)
        except format_errors.FormatError as e:
            raise EngineError("TenantConfigInvalid", f"{self.where}: {self.paths.config}: {e}") from e

    def read_local_timelines(self, unfinished: bool) -> dict[ids.TimelineId, Any]:
        """Scan ``timelines/`` once, then read each metadata (fix of #4458).

        Nothing here is removed (docs/reliability.md, "The writer protocol"): ``___temp`` and ``___uninit`` entries, and a
        timeline directory with an ``___uninit`` sibling, are the pageserver's timeline
        creation in progress and are skipped. A timeline directory without ``metadata`` is
        skipped too, or with ``unfinished`` (load) returned with None for its metadata."""
        tdir = self.paths.timelines_dir
        try:
            entries = sorted(os.listdir(tdir))
        except FileNotFoundError as e:
            raise EngineError("TimelinesDirMissing", f"{self.where}: {tdir} is missing") from e
        uninit = {e.removesuffix("." + paths.UNINIT_SUFFIX) for e in entries if e.endswith(paths.UNINIT_SUFFIX)}
        found: dict[ids.TimelineId, Any] = {}
        for name in entries:
            if name.endswith((paths.TEMP_SUFFIX, paths.UNINIT_SUFFIX)) or name in uninit:
                continue
            try:
                tlid = ids.TimelineId.parse(name)
            except format_errors.FormatError:
                self._log.warning("ignoring unrecognised entry %s in %s", name, tdir)
                continue
            path = self.paths.metadata(tlid)
            if not os.path.lexists(path) and (tdir / name).is_dir():
                if unfinished:
                    found[tlid] = None
                continue
            found[tlid] = timeline.read_local_metadata(path, self.id, tlid)
        return found

    async def list_remote_timelines(self) -> list[ids.TimelineId]:
        names = await self.io.list_dirs(paths.remote_timelines_prefix(self.id))
        result = []
        for name in names:
            try:
                result.append(ids.TimelineId.parse(name))
            except format_errors.FormatError as e:
                raise EngineError(
                    "InvalidRemoteTimeline",
                    f"{self.where}: remote storage has an entry {name!r} under "
                    f"{paths.remote_timelines_prefix(self.id)} that is not a timeline id",
                ) from e
        return sorted(result)

    async def fetch_indexes(
        self, timeline_ids: set[ids.TimelineId], required: set[ids.TimelineId]
    ) -> dict[ids.TimelineId, index_part.IndexPart]:
        own = self.generation

        async def fetch(tlid: ids.TimelineId) -> tuple[ids.TimelineId, index_part.IndexPart | None]:
            fetched = await remote_index.fetch_latest(self.io, self.id, tlid, own)
            if fetched is None:
                if tlid in required:
                    key = paths.remote_index_key(self.id, tlid, own)
                    raise EngineError(
                        "RemoteIndexMissing",
                        f"timeline {self.id}/{tlid}: no index of generation {own} or older exists in "
                        f"remote storage (looked for {key})",
                    )
                return tlid, None
            key, data = fetched.key, fetched.data
            self.index_generations[tlid] = fetched.generation
            try:
                # off the event loop: a huge index takes seconds to parse, and the loop serves
                # every other tenant (and the liveness probe) meanwhile
                index = await self.pool.run(index_part.IndexPart.parse, data)
                meta = index.metadata
            except format_errors.FormatError as e:
                raise EngineError(e.reason, f"timeline {self.id}/{tlid}: {key}: {e}") from e
            if index.ignored_metadata_keys:  # as the original: never used, so harmless
                ignored = index.ignored_metadata_keys
                self._log.warning(
                    "timeline %s: %s: ignoring %d layer_metadata entries that timeline_layers does not "
                    "list (first: %s)", tlid, key, len(ignored), format_errors.show(ignored[0]),
                )
            if meta.disk_consistent_lsn != index.disk_consistent_lsn:
                # The field is a copy of the metadata's for humans, never read by Neon's
                # pageserver: metadata_bytes are authoritative, the next index we upload
                # carries the metadata's value (docs/reliability.md, "The writer protocol").
                self._log.warning(
                    "timeline %s: %s: disk_consistent_lsn %s differs from metadata_bytes (%s); using "
                    "the metadata's", tlid, key, index.disk_consistent_lsn, meta.disk_consistent_lsn,
                )
            if meta.ancestor_timeline == tlid:
                raise EngineError(
                    "AncestorCycle", f"timeline {self.id}/{tlid}: {key}: the timeline is its own ancestor"
                )
            return tlid, index

        results = await remote_io.gather_first_error([fetch(t) for t in sorted(timeline_ids)])
        return {tlid: index for tlid, index in results if index is not None}

    async def setup_timelines(
        self,
        local: Mapping[ids.TimelineId, Any],
        indexes: Mapping[ids.TimelineId, index_part.IndexPart],
        mode: Mode,
        loaded: Mapping[ids.TimelineId, ids.TimelineId | None] | None = None,
    ) -> None:
        """Shared by attach, load and sync (docs/architecture.md, "engine/", Timeline setup), all timelines at once:
        choose metadata, clean directories, plan downloads, download everything in one bounded
        pool, then per timeline (ancestors first) fsync the directory, write metadata last and
        schedule the uploads of local-only layers and the index.

        ``mode``: "attach" (no writer: stale future layers are set aside), "load" (a writer
        may be running: future layers stay; a layer the index names with another size is set
        aside and downloaded again), "sync" (new timelines while Active: nothing is moved)."""
        parents = {
            tlid: (local.get(tlid) or indexes[tlid].metadata).ancestor_timeline
            for tlid in set(local) | set(indexes)
        }
        # ``loaded``: timelines already set up (sync while Active) that new ones may branch from
        order = [t for t in ancestry.ancestors_first({**(loaded or {}), **parents}, self.where) if t in parents]
        prepared = await self.pool.run(self._prepare_timelines, order, local, indexes, mode)
        self.publish([t for t, _ in prepared])
        downloads = [(t, name, size) for t, plan in prepared for name, size in plan]
        done_bytes = sum(t.resident_bytes for t, _ in prepared)
        done_layers = sum(len(t.layers) for t, _ in prepared)
        self.progress.start(
            done_layers + len(downloads), done_bytes + sum(s or 0 for _, _, s in downloads), done_layers, done_bytes
        )
        self.notify()
        learnt = await self.pool.download_all(downloads)
        for t, _ in prepared:
            await self.pool.run(self._finish_timeline, t, mode)
            # A timeline that never had a remote index gets one (fix of #3865); a v0 index whose
            # sizes are now known is rewritten as v1 -- also when the sizes were learnt from
            # layers already on the volume (a rerun after a crash before that index upload).
            index = indexes.get(t.timeline_id)
            sizes_learnt = index is not None and any(
                m.file_size is None and t.queue.latest_files.get(n) is not None for n, m in index.layers.items()
            )
            removed = sorted(t.removed_at_load, key=lambda n: n.sort_key())
            if removed and index is not None and timeline.vanished_wholesale(len(index.layers), removed, t.layers, t.metadata):
                raise EngineError(
                    "LocalLayersVanished",
                    f"{t.where}: {len(removed)} of the {len(index.layers)} layers the remote index names are "
                    f"gone from the volume (first: {removed[0]}), and the layers left do not account for "
                    "them (no compaction or GC output covers them): damage; nothing is deleted remotely",
                )
            # an index of an older generation is continued at once with one of ours: our claim
            # is visible in remote storage before anything else is written (DESIGN §8.2)
            older = not self.generation.is_none() and t.queue.index_generation != self.generation
            t.schedule_local_only(
                force_index=index is None or sizes_learnt or t.timeline_id in learnt or older, removed=removed
            )

    async def warm_timelines(self, indexes: Mapping[ids.TimelineId, index_part.IndexPart]) -> int:
        """A secondary's download (`Tenant.warm`): the layers of ``indexes`` that are not on the
        volume with the right size, in one bounded pool, and nothing else (no metadata, no
        upload queue started). Returns the bytes planned."""
        parents = {tlid: index.metadata.ancestor_timeline for tlid, index in indexes.items()}
        order = [t for t in ancestry.ancestors_first(parents, self.where) if t in parents]
        prepared = await self.pool.run(self._prepare_timelines, order, {}, indexes, "attach")
        downloads = [(t, name, size) for t, plan in prepared for name, size in plan]
        done_bytes = sum(t.resident_bytes for t, _ in prepared)
        done_layers = sum(len(t.layers) for t, _ in prepared)
        planned = sum(s or 0 for _, _, s in downloads)
        self.progress.start(done_layers + len(downloads), done_bytes + planned, done_layers, done_bytes)
        self.notify()
        await self.pool.download_all(downloads)
        for t, _ in prepared:
            await self.pool.run(crashsafe.fsync_dir, t.directory)
        return planned

    def _prepare_timelines(
        self,
        order: list[ids.TimelineId],
        local: Mapping[ids.TimelineId, Any],
        indexes: Mapping[ids.TimelineId, index_part.IndexPart],
        mode: Mode,
    ) -> list[tuple[timeline.Timeline, list[tuple[layer_name.LayerName, int | None]]]]:
        prepared = []
        for tlid in order:
            index = indexes.get(tlid)
            where = f"timeline {self.id}/{tlid}"
            chosen = timeline.choose_metadata(local.get(tlid), index.metadata if index else None, where)
            directory = self.paths.timeline_dir(tlid)
            self.refuse_symlinks(directory)
            # never the tenant directory: one a detach removed meanwhile stays removed
            crashsafe.durable_mkdir(directory, parents=False)
            scan = timeline.scan_timeline_dir(directory, chosen.disk_consistent_lsn)
            timeline.clean_timeline_dir(directory, scan, attaching=mode == "attach")
            queue = upload_queue.UploadQueue(
                self.io, self.id, tlid, directory, self.backoff, generation=self.generation
            )
            queue.on_change = self.notify  # an upload error appears or clears: status, Event
            queue.on_unlinked = self.on_unlinked
            if index is not None:
                queue.init_from_index(index, self.index_generations.get(tlid))
            else:
                queue.init_empty(chosen)
            t = timeline.Timeline(self.id, tlid, directory, chosen, queue)
            t.layers = scan.layers
            # At load, the volume's layers are what the writer kept: one the index names that is
            # gone was removed by it (compaction, GC) while we were down -- a deletion, not a
            # download (an attach completed before, so every indexed layer was here once).
            deletions = mode == "load" and local.get(tlid) is not None
            occupied = scan.in_use()
            plan = self._plan_downloads(
                t, index, set_aside=mode != "sync", missing_are_deletions=deletions, occupied=occupied
            )
            t.awaits_download = bool(plan)
            prepared.append((t, plan))
        return prepared

    def _plan_downloads(
        self,
        t: timeline.Timeline,
        index: index_part.IndexPart | None,
        *,
        set_aside: bool,
        missing_are_deletions: bool = False,
        occupied: set[str] | None = None,
    ) -> list[tuple[layer_name.LayerName, int | None]]:
        """Wrong-size local files set aside, missing ones planned, future ones skipped
        (docs/architecture.md, "Where the engine's rules come from", Download plan).

        Without ``set_aside`` (a timeline found by a sync while Active: the writer owns it) a local
        layer is never moved: one of another size than the index says stays, and is neither
        downloaded nor uploaded (the index keeps naming the remote object)."""
        if index is None:
            return []
        plan: list[tuple[layer_name.LayerName, int | None]] = []
        for name, meta in index.layers.items():  # sorted by name (IndexPart.layers)
            if missing_are_deletions and meta.file_size is not None and str(name) not in (occupied or set()):
                t.removed_at_load.append(name)  # removed by the writer: unlinked, not downloaded
                continue
            if name in t.layers:
                size = t.layers[name]
                if meta.file_size is None:
                    # v0 index: the local copy cannot be checked, and its size must not become the
                    # layer's size in the next index (a damaged copy would poison it for every
                    # later attach). Download the object again; its size is learnt from it.
                    del t.layers[name]
                elif size == meta.file_size or not set_aside:
                    continue
                else:
                    aside = crashsafe.set_aside(t.directory / str(name))
                    self._log.warning(
                        "removing local file %s because it has unexpected length %d (index: %d); kept as %s",
                        name, size, meta.file_size, aside.name,
                    )
                    del t.layers[name]
            if name.is_future(t.metadata.disk_consistent_lsn):
                self._log.warning("%s: skipping layer %s from the future", t.where, name)
                continue
            plan.append((name, meta.file_size))
        return plan

    def _finish_timeline(self, t: timeline.Timeline, mode: Mode) -> None:
        """Write ``metadata`` last. While attaching (no writer) whenever it differs from the
        chosen one; at load and sync only when there is none (an interrupted download of ours
        completed): an existing file is the writer's, which may have rewritten it since we read
        it -- writing back what we read would move its disk_consistent_lsn backwards."""
        crashsafe.fsync_dir(t.directory)
        if t.metadata.ancestor_timeline is None and not t.layers:
            raise EngineError("NoLayers", f"{t.where}: timeline has no ancestor and no layer files")
        try:
            on_disk: bytes | None = t.directory.joinpath(paths.METADATA_FILE).read_bytes()
        except FileNotFoundError:
            on_disk = None
        if on_disk is None or (mode == "attach" and on_disk != t.metadata.to_bytes()):
            t.write_metadata()
        t.awaits_download = False

