"""What the volume alone says about a tenant, without running it (``status`` of the CLI).

Read-only: nothing is cleaned or written. A marker means an attach was interrupted (phase
Attaching, resumable); unreadable metadata means the tenant would be Broken at load; a timeline
directory load would skip (no metadata yet, an ``___uninit`` sibling: the pageserver is creating
it) is not listed; with a remote index at hand (optional) the remote consistent LSN and the
upload lag are filled in.
"""

from __future__ import annotations

import os
from pathlib import Path

from pageserver_operator.engine import paths, progress, remote_index, snapshot, timeline
from pageserver_operator.engine.errors import EngineError, TenantNotFound
from pageserver_operator.formats import errors as format_errors
from pageserver_operator.formats import ids, index_part
from pageserver_operator.formats.generation import Generation
from pageserver_operator.formats.lsn import Lsn
from pageserver_operator.remote import base
from pageserver_operator.remote import errors as remote_errors


def inspect_tenant(
    workdir: Path, tenant_id: ids.TenantId, storage: base.RemoteStorage | None = None
) -> snapshot.TenantSnapshot:
    tp = paths.TenantPaths(workdir, tenant_id)
    if not tp.tenant_dir.is_dir():
        raise TenantNotFound(f"tenant {tenant_id} not found in {tp.tenants_root}")
    empty = progress.Progress().snapshot()
    if tp.marker.exists():
        return snapshot.TenantSnapshot(
            str(tenant_id), snapshot.TenantState.ATTACHING, "AttachIncomplete",
            "an attach was interrupted; run attach again to resume it", empty, [],
        )
    timelines: list[snapshot.TimelineSnapshot] = []
    try:
        names = sorted(os.listdir(tp.timelines_dir))
    except FileNotFoundError:
        return snapshot.TenantSnapshot(
            str(tenant_id), snapshot.TenantState.BROKEN, "TimelinesDirMissing", f"{tp.timelines_dir} is missing", empty, []
        )
    # as load sees them (`setup.TimelineSetup.read_local_timelines`): a timeline the pageserver is creating
    # (an ``___uninit`` sibling, or no metadata yet) is not a timeline of the tenant yet
    uninit = {n.removesuffix("." + paths.UNINIT_SUFFIX) for n in names if n.endswith(paths.UNINIT_SUFFIX)}
    newest: Generation | None = None  # the highest index generation in remote storage (read: the current one)
    try:
        for name in names:
            if name in uninit:
                continue
            try:
                tlid = ids.TimelineId.parse(name)
            except format_errors.FormatError:
                continue
            if not os.path.lexists(tp.metadata(tlid)) and tp.timeline_dir(tlid).is_dir():
                continue
            meta = timeline.read_local_metadata(tp.metadata(tlid), tenant_id, tlid)
            scan = timeline.scan_timeline_dir(tp.timeline_dir(tlid), meta.disk_consistent_lsn)
            rcl: Lsn | None = None
            remote_names: set[object] = set()
            if storage is not None:
                try:
                    gens = remote_index.generations_of(storage.list_objects(paths.remote_index_prefix(tenant_id, tlid)))
                    if not gens:
                        raise remote_errors.NotFound(f"no index of timeline {tlid}")
                    newest = gens[-1] if newest is None else max(newest, gens[-1])
                    idx = index_part.IndexPart.parse(storage.get_bytes(paths.remote_index_key(tenant_id, tlid, gens[-1])))
                    rcl = idx.metadata.disk_consistent_lsn
                    remote_names = set(idx.layers)
                except remote_errors.NotFound:
                    pass
            lag = sum(s for n, s in scan.layers.items() if n not in remote_names) if storage else 0
            timelines.append(
                snapshot.TimelineSnapshot(
                    timeline_id=str(tlid),
                    ancestor_timeline_id=str(meta.ancestor_timeline) if meta.ancestor_timeline else None,
                    ancestor_lsn=meta.ancestor_lsn,
                    disk_consistent_lsn=meta.disk_consistent_lsn,
                    remote_consistent_lsn=rcl,
                    latest_gc_cutoff_lsn=meta.latest_gc_cutoff_lsn,
                    pg_version=meta.pg_version,
                    layers=len(scan.layers),
                    resident_bytes=sum(scan.layers.values()),
                    upload_lag_bytes=lag,
                    awaits_download=False,
                    state=timeline.TimelineState.ACTIVE,
                    upload_queue_unfinished=0,
                )
            )
    except EngineError as e:
        return snapshot.TenantSnapshot(
            str(tenant_id), snapshot.TenantState.BROKEN, e.reason, e.message, empty, timelines, generation=newest
        )
    n = len(timelines)
    return snapshot.TenantSnapshot(
        str(tenant_id), snapshot.TenantState.ACTIVE, "Active", f"{n} timeline{'s' if n != 1 else ''} on the volume",
        empty, timelines, generation=newest,
    )
