"""What a tenant looks like from outside: its state, its history, and frozen snapshots of it.

`TenantState` is the state machine of a tenant (docs/architecture.md, "engine/"): Loading /
Attaching -> Active, any -> Broken on a failure that retrying cannot fix, Active -> Stopping on
detach. `Tenant` (engine/tenant.py) alone makes the transitions; everything here is a value.

Invariants: a snapshot is immutable and shares nothing mutable with the tenant it was taken
from (lists are copies), so the k8s layer can read it while the engine goes on; the history
keeps the last `HISTORY_LIMIT` transitions. Values are typed, never text: a state is a
`TenantState` (a timeline's a `timeline.TimelineState`), a position in the WAL an `Lsn`
(checked at construction: a string is refused); only ``api/`` turns them into the resource's
text (phase names, ``HI/LO`` LSNs). Nothing here touches the disk or remote storage: a crash
loses nothing of it that is not rebuilt by the next start.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from pageserver_operator.engine import progress, timeline
from pageserver_operator.formats.generation import Generation
from pageserver_operator.formats.lsn import Lsn

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
    #: the state entered; None: the tenant was detached (its local data removed)
    phase: TenantState | None
    reason: str
    message: str

    def __post_init__(self) -> None:
        _check(self, "phase", TenantState, optional=True)


@dataclass(frozen=True)
class TimelineSnapshot:
    timeline_id: str
    ancestor_timeline_id: str | None
    ancestor_lsn: Lsn
    disk_consistent_lsn: Lsn
    #: None: not known (no upload completed yet, or the remote index was not read)
    remote_consistent_lsn: Lsn | None
    latest_gc_cutoff_lsn: Lsn
    pg_version: int
    layers: int
    resident_bytes: int
    upload_lag_bytes: int
    awaits_download: bool
    state: timeline.TimelineState
    upload_queue_unfinished: int
    #: names of the local layers the last completed remote index does not name (sorted)
    lagging_layers: tuple[str, ...] = ()
    #: why an upload of this timeline keeps failing (upload_queue.UploadError), None if none does
    upload_error_reason: str | None = None
    upload_error_message: str | None = None
    upload_error_permanent: bool = False

    def __post_init__(self) -> None:
        for name in ("ancestor_lsn", "disk_consistent_lsn", "latest_gc_cutoff_lsn"):
            _check(self, name, Lsn)
        _check(self, "remote_consistent_lsn", Lsn, optional=True)
        _check(self, "state", timeline.TimelineState)


@dataclass(frozen=True)
class TenantSnapshot:
    tenant_id: str
    #: None: nothing started yet, or detached
    state: TenantState | None
    reason: str
    message: str
    progress: progress.ProgressSnapshot
    timelines: list[TimelineSnapshot]
    history: list[Transition] = field(default_factory=list)
    #: the generation of the attachment (`status.placement.generation`); None: not known
    generation: Generation | None = None
    #: remote deletions of this attachment: (pending, executed, leaked); None: no queue open
    deletions: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        _check(self, "state", TenantState, optional=True)

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


def _check(snap: object, name: str, kind: type, optional: bool = False) -> None:
    """A field holds a ``kind`` (a str where a `TenantState` or an `Lsn` belongs is refused:
    text would compare unequal, or equal by accident, to the typed values everywhere else)."""
    value = getattr(snap, name)
    if not (isinstance(value, kind) or (optional and value is None)):
        raise TypeError(f"{type(snap).__name__}.{name} must be a {kind.__name__}, got {value!r}")


def of_timeline(t: timeline.Timeline) -> TimelineSnapshot:
    """A frozen view of one timeline of a tenant (its metadata, layers and upload queue)."""
    m = t.metadata
    rcl = t.queue.validated_consistent_lsn  # what survives a takeover: validated after its upload
    return TimelineSnapshot(
        timeline_id=str(t.timeline_id),
        ancestor_timeline_id=str(m.ancestor_timeline) if m.ancestor_timeline else None,
        ancestor_lsn=m.ancestor_lsn,
        disk_consistent_lsn=m.disk_consistent_lsn,
        remote_consistent_lsn=rcl,
        latest_gc_cutoff_lsn=m.latest_gc_cutoff_lsn,
        pg_version=m.pg_version,
        layers=len(t.layers),
        resident_bytes=t.resident_bytes,
        upload_lag_bytes=t.upload_lag_bytes,
        awaits_download=t.awaits_download,
        state=t.state,
        upload_queue_unfinished=t.queue.unfinished,
        lagging_layers=tuple(sorted(str(n) for n in t.layers if n not in t.queue.remote_files)),
        upload_error_reason=error.reason if (error := t.queue.upload_error) else None,
        upload_error_message=error.message if error else None,
        upload_error_permanent=error.permanent if error else False,
    )
