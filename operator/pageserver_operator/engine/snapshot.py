"""What a tenant looks like from outside: its state, its history, and frozen snapshots of it.

`TenantState` is the state machine of a tenant (docs/architecture.md, "engine/"): Loading /
Attaching -> Active, any -> Broken on a failure that retrying cannot fix, Active -> Stopping on
detach. `Tenant` (engine/tenant.py) alone makes the transitions; everything here is a value.

Invariants: a snapshot is immutable and shares nothing mutable with the tenant it was taken
from (lists are copies), so the k8s layer can read it while the engine goes on; the history
keeps the last `HISTORY_LIMIT` transitions. Nothing here touches the disk or remote storage:
a crash loses nothing of it that is not rebuilt by the next start.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from pageserver_operator.engine import progress, timeline

#: Transitions a tenant keeps in its history.
HISTORY_LIMIT = 10


class TenantState(enum.StrEnum):
    LOADING = "Loading"
    ATTACHING = "Attaching"
    ACTIVE = "Active"
    BROKEN = "Broken"
    STOPPING = "Stopping"


@dataclass(frozen=True)
class Transition:
    time: datetime
    phase: str
    reason: str
    message: str


@dataclass(frozen=True)
class TimelineSnapshot:
    timeline_id: str
    ancestor_timeline_id: str | None
    ancestor_lsn: str
    disk_consistent_lsn: str
    remote_consistent_lsn: str | None
    latest_gc_cutoff_lsn: str
    pg_version: int
    layers: int
    resident_bytes: int
    upload_lag_bytes: int
    awaits_download: bool
    state: str
    upload_queue_unfinished: int
    #: names of the local layers the last completed remote index does not name (sorted)
    lagging_layers: tuple[str, ...] = ()
    #: why an upload of this timeline keeps failing (upload_queue.UploadError), None if none does
    upload_error_reason: str | None = None
    upload_error_message: str | None = None
    upload_error_permanent: bool = False


@dataclass(frozen=True)
class TenantSnapshot:
    tenant_id: str
    state: str | None
    reason: str
    message: str
    progress: progress.ProgressSnapshot
    timelines: list[TimelineSnapshot]
    history: list[Transition] = field(default_factory=list)

    @property
    def synced(self) -> bool:
        return all(t.upload_lag_bytes == 0 and t.upload_queue_unfinished == 0 for t in self.timelines)

    @property
    def upload_error(self) -> tuple[str, str] | None:
        """(reason, message) of the first timeline whose uploads keep failing, or None."""
        return next(
            ((t.upload_error_reason, t.upload_error_message or "") for t in self.timelines if t.upload_error_reason),
            None,
        )


def of_timeline(t: timeline.Timeline) -> TimelineSnapshot:
    """A frozen view of one timeline of a tenant (its metadata, layers and upload queue)."""
    m = t.metadata
    rcl = t.queue.remote_consistent_lsn
    return TimelineSnapshot(
        timeline_id=str(t.timeline_id),
        ancestor_timeline_id=str(m.ancestor_timeline) if m.ancestor_timeline else None,
        ancestor_lsn=str(m.ancestor_lsn),
        disk_consistent_lsn=str(m.disk_consistent_lsn),
        remote_consistent_lsn=str(rcl) if rcl is not None else None,
        latest_gc_cutoff_lsn=str(m.latest_gc_cutoff_lsn),
        pg_version=m.pg_version,
        layers=len(t.layers),
        resident_bytes=t.resident_bytes,
        upload_lag_bytes=t.upload_lag_bytes,
        awaits_download=t.awaits_download,
        state=t.state.value,
        upload_queue_unfinished=t.queue.unfinished,
        lagging_layers=tuple(sorted(str(n) for n in t.layers if n not in t.queue.remote_files)),
        upload_error_reason=error.reason if (error := t.queue.upload_error) else None,
        upload_error_message=error.message if error else None,
        upload_error_permanent=error.permanent if error else False,
    )
