"""One timeline of a tenant: its chosen metadata, its resident layers, its upload queue.

The local directory scan (docs/architecture.md, "engine/", Directory scan) is split into *scan* (read the directory once, classify
every entry) and *clean* (act on the classification): Neon's pageserver mutated the directory while
iterating a snapshot of it (#4458).

The writer protocol (docs/reliability.md): a pageserver may write to the directory at any time, also
while we load after a restart of ours. Every file that is neither a layer nor ``metadata``
(``ephemeral-*``, ``*___temp``, anything else) belongs to it, and so does a layer "from the
future" (flushed, its ``metadata`` update still to come). Cleaning therefore removes only our
own partial downloads (``*.temp_download``, a suffix reserved for us) and never touches another
file; future layers are left where they are (not indexed until a ``metadata`` covers them),
except while the tenant is Attaching: no writer can use an unattached tenant, so a future layer
then is stale and is set aside as ``<name>.<N>.old`` (never deleted), and a ``metadata___temp``
is the leftover of our own metadata write killed half way (removed).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pageserver_operator.engine import crashsafe, paths, upload_queue
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import errors as format_errors
from pageserver_operator.formats import ids, layer_name, lsn, metadata

log = logging.getLogger(__name__)


class TimelineState(enum.StrEnum):
    ACTIVE = "Active"
    SUSPENDED = "Suspended"
    STOPPING = "Stopping"
    BROKEN = "Broken"


@dataclass
class DirScan:
    """The classified content of a timeline directory."""

    layers: dict[layer_name.LayerName, int] = field(default_factory=dict)
    #: layers beyond the disk_consistent_lsn of the scan (the writer's, until its metadata)
    future: list[layer_name.LayerName] = field(default_factory=list)
    #: our own partial downloads (``*.temp_download``): the only files we ever remove
    removable: list[str] = field(default_factory=list)
    #: the writer's own files (``ephemeral-*``, ``*___temp``): never touched
    writer: list[str] = field(default_factory=list)
    #: anything else that is not a layer nor ``metadata``: never touched, reported
    unknown: list[str] = field(default_factory=list)
    #: layer names with a copy set aside (``<name>.<N>.old``): a repair of ours was under way
    set_aside: set[str] = field(default_factory=set)
    has_metadata: bool = False

    def in_use(self) -> set[str]:
        """Layer names something on the volume stands for: a layer file (of any size), another
        kind of entry by that name, one from the future, our partial download of it, or a copy
        we set aside to download it again. A name the index lists and this does not is gone:
        the writer removed it (load treats it as a deletion, DESIGN §8.1)."""
        partial = {n.removesuffix(paths.TEMP_DOWNLOAD_SUFFIX) for n in self.removable}
        return {str(n) for n in self.layers} | {str(n) for n in self.future} | set(self.unknown) | partial | self.set_aside


def scan_timeline_dir(directory: Path, disk_consistent_lsn: lsn.Lsn) -> DirScan:
    scan = DirScan()
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return scan
    for entry in entries:
        name = entry.name
        if name == paths.METADATA_FILE:
            scan.has_metadata = True
        elif name.endswith(paths.TEMP_DOWNLOAD_SUFFIX):
            scan.removable.append(name)
        elif name.endswith(paths.TEMP_SUFFIX) or name.startswith("ephemeral-"):
            scan.writer.append(name)
        elif name.endswith(paths.OLD_SUFFIX):
            scan.set_aside.add(name.rsplit(".", 2)[0])
            continue
        else:
            try:
                parsed = layer_name.parse_layer_name(name)
            except format_errors.FormatError:
                scan.unknown.append(name)
                continue
            if not entry.is_file(follow_symlinks=False):
                scan.unknown.append(name)
            elif parsed.is_future(disk_consistent_lsn):
                scan.future.append(parsed)
            else:
                try:
                    scan.layers[parsed] = entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue  # removed since the listing (compaction, GC): gone, not a failure
    return scan


def clean_timeline_dir(directory: Path, scan: DirScan, *, attaching: bool = False) -> None:
    """Remove our partial downloads; while ``attaching`` (no writer), set future layers aside."""
    for name in scan.removable:
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    if attaching:
        # no writer runs while Attaching: a ``metadata___temp`` is our own (a metadata write
        # killed half way, `crashsafe.durable_write`)
        with contextlib.suppress(FileNotFoundError):
            (directory / (paths.METADATA_FILE + paths.TEMP_SUFFIX)).unlink()
        for future in scan.future:
            aside = crashsafe.set_aside(directory / str(future))
            log.warning("set aside layer %s from the future: %s", future, aside.name)
    elif scan.future:
        log.info(
            "%s: %d layer(s) beyond disk_consistent_lsn left in place until a metadata update covers them",
            directory, len(scan.future),
        )
    for name in scan.unknown:
        log.warning("ignoring unrecognised file %s in %s", name, directory)


def read_local_metadata(path: Path, tenant_id: ids.TenantId, timeline_id: ids.TimelineId) -> metadata.TimelineMetadata:
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise EngineError(
            "LocalMetadataMissing", f"timeline {tenant_id}/{timeline_id}: local file {path} is missing"
        ) from e
    try:
        return metadata.TimelineMetadata.from_bytes(data)
    except format_errors.FormatError as e:
        raise EngineError(
            "LocalMetadataInvalid", f"timeline {tenant_id}/{timeline_id}: local file {path}: {e}"
        ) from e


def choose_metadata(
    local: metadata.TimelineMetadata | None,
    remote: metadata.TimelineMetadata | None,
    where: str,
) -> metadata.TimelineMetadata:
    """Local wins unless remote is ahead in dcl or gc cutoff (another writer).

    The rule of Neon's pageserver: docs/architecture.md, "Where the engine's rules come from"."""
    if local is None and remote is None:
        raise EngineError("NoMetadata", f"{where}: neither local nor remote metadata exists")
    if local is None:
        assert remote is not None
        return remote
    if remote is None:
        return local
    if (
        remote.disk_consistent_lsn > local.disk_consistent_lsn
        or remote.latest_gc_cutoff_lsn > local.latest_gc_cutoff_lsn
    ):
        raise EngineError(
            "RemoteAheadOfLocal",
            f"{where}: remote metadata appears to be ahead of local metadata "
            f"(remote disk_consistent_lsn {remote.disk_consistent_lsn}, gc cutoff "
            f"{remote.latest_gc_cutoff_lsn}; local {local.disk_consistent_lsn}, "
            f"{local.latest_gc_cutoff_lsn}): another writer uploaded this timeline",
        )
    return local


class Timeline:
    def __init__(
        self,
        tenant_id: ids.TenantId,
        timeline_id: ids.TimelineId,
        directory: Path,
        meta: metadata.TimelineMetadata,
        queue: upload_queue.UploadQueue,
    ) -> None:
        self.tenant_id = tenant_id
        self.timeline_id = timeline_id
        self.directory = directory
        self.metadata = meta
        self.queue = queue
        self.layers: dict[layer_name.LayerName, int] = {}
        self.state = TimelineState.SUSPENDED
        self.awaits_download = False
        #: the indexes of older generations were recorded for deletion (once per attachment)
        self.old_indexes_unlinked = False
        #: layers the remote index names that load found gone from the volume (the writer's removals)
        self.removed_at_load: list[layer_name.LayerName] = []

    @property
    def where(self) -> str:
        return f"timeline {self.tenant_id}/{self.timeline_id}"

    @property
    def resident_bytes(self) -> int:
        return sum(self.layers.values())

    @property
    def upload_lag_bytes(self) -> int:
        """Bytes of local layers the last completed remote index does not name."""
        remote = self.queue.remote_files
        return sum(size for name, size in self.layers.items() if name not in remote)

    def local_only(self) -> dict[layer_name.LayerName, int]:
        """Resident layers the desired remote state does not have yet."""
        latest = self.queue.latest_files
        return {n: s for n, s in self.layers.items() if n not in latest}

    def schedule_local_only(
        self, *, force_index: bool = False, removed: list[layer_name.LayerName] | None = None
    ) -> int:
        """Upload every local-only layer, then the index (without the ``removed`` layers: the
        writer deleted them locally), then hand the removed layers' objects to the deletion
        queue. One index carries both the replacements and the removal, so it is
        self-consistent. Returns the number of operations scheduled (0: nothing to do)."""
        only = self.local_only()
        for name, size in sorted(only.items(), key=lambda kv: kv[0].sort_key()):
            self.queue.schedule_layer_upload(name, size)
        unlinked = self.queue.unlink(removed) if removed else ()
        if only or unlinked or force_index or self.queue.latest_metadata != self.metadata:
            self.queue.schedule_index_upload(self.metadata)
            if unlinked:
                self.queue.schedule_deletion(unlinked)
            return len(only) + 1 + (1 if unlinked else 0)
        return 0

    def removed_layers(self) -> list[layer_name.LayerName]:
        """Layers of the desired remote state that are no longer on the volume (sorted)."""
        return sorted((n for n in self.queue.latest_files if n not in self.layers), key=lambda n: n.sort_key())

    def write_metadata(self) -> None:
        crashsafe.durable_write(self.directory / paths.METADATA_FILE, self.metadata.to_bytes())


#: More than this fraction of a timeline's layers gone at once is a wholesale disappearance when
#: what is left does not account for them (DESIGN §8.1): damage, not compaction or GC.
VANISHED_FRACTION = 0.5


def accounted_for(
    gone: layer_name.LayerName, remaining: Iterable[layer_name.LayerName], gc_cutoff: lsn.Lsn
) -> bool:
    """True if the removal of ``gone`` is what compaction or GC do: remaining layers cover its
    keys (together: compaction partitions the key space) over its whole LSN range -- deltas that
    span it, or images at or after its end (GC after image creation) -- or it ends at or below
    the GC cutoff."""
    if isinstance(gone, layer_name.DeltaLayerName):
        start, end = gone.lsn_start.value, gone.lsn_end.value
    else:
        start, end = gone.lsn.value, gone.lsn.value + 1
    if end <= gc_cutoff.value:
        return True
    spans = []
    for r in remaining:
        if isinstance(r, layer_name.DeltaLayerName):
            covers = r.lsn_start.value <= start and end <= r.lsn_end.value
        else:
            covers = r.lsn.value + 1 >= end
        if covers:
            spans.append((r.key_start.value, r.key_end.value))
    reached = gone.key_start.value
    for lo, hi in sorted(spans):
        if lo > reached:
            break
        reached = max(reached, hi)
        if reached >= gone.key_end.value:
            return True
    return False


def vanished_wholesale(
    known: int,
    removed: list[layer_name.LayerName],
    remaining: Iterable[layer_name.LayerName],
    meta: metadata.TimelineMetadata,
) -> bool:
    """True when ``removed`` (of ``known`` layers) disappearing at once is damage: more than
    `VANISHED_FRACTION` of them (at least two), and what is left does not account for all of
    them (`accounted_for`)."""
    if len(removed) < 2 or len(removed) <= known * VANISHED_FRACTION:
        return False
    left = list(remaining)
    return not all(accounted_for(g, left, meta.latest_gc_cutoff_lsn) for g in removed)
