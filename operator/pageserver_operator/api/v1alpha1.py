"""Spec and status of ``pageserver.dev/v1alpha1`` Tenant, as pydantic models.

What each field means to a user is in README.md ("A Tenant", "Status reference", "Phases and
what to do"); docs/status.md shows them as ``kubectl describe`` prints them.

The CRD's OpenAPI schema is generated from these models (`crd.py`) and a test fails when the
committed ``crds/`` file differs, so the schema and the code cannot drift. Field names are the
contract: camelCase on the wire, snake_case in Python.

This module is the edge between typed values and the resource's text: the engine's snapshots
carry `TenantState` and `Lsn`; `status_from_snapshot`, `phase_name` and `history_entry` write
them as phase names and ``HI/LO`` LSNs, and `parse_phase` reads a phase name back (a status
written by an earlier process). Nothing else turns one into the other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from pageserver_operator.engine import snapshot as engine_snapshot
from pageserver_operator.engine.snapshot import TenantState
from pageserver_operator.formats.lsn import Lsn

GROUP = "pageserver.dev"
VERSION = "v1alpha1"
KIND = "Tenant"
PLURAL = "tenants"
SINGULAR = "tenant"
SHORT_NAMES = ["pst"]
TENANT_ID_PATTERN = r"^[0-9a-f]{32}$"
RETRY_ANNOTATION = f"{GROUP}/retry"
#: The Pageserver resource (DESIGN §8.3): cluster-scoped, one per pageserver manager.
PAGESERVER_KIND = "Pageserver"
PAGESERVER_PLURAL = "pageservers"
PAGESERVER_SINGULAR = "pageserver"
PAGESERVER_SHORT_NAMES = ["ps"]
#: The label on a Pageserver naming the namespace of its heartbeat Lease: managers that share a
#: lease namespace form one group, and the placement leader of a group places only on its members.
LEASE_NAMESPACE_LABEL = f"{GROUP}/lease-namespace"
#: Pod annotation "true": drain this pageserver (the same as ``spec.scheduling: Draining``).
DRAIN_ANNOTATION = f"{GROUP}/drain"
#: A Kubernetes object name (DNS subdomain): a pageserver's name.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
#: "true": if a deleted Tenant's local data cannot be uploaded, keep it as <tid>.kept.<N> and let go.
KEEP_LOCAL_ANNOTATION = f"{GROUP}/keep-local-on-detach"

Phase = Literal["Loading", "Attaching", "Active", "Broken", "Stopping"]

#: The engine's states as the resource's phases (one for each `TenantState`).
PHASES: dict[TenantState, Phase] = {
    TenantState.LOADING: "Loading",
    TenantState.ATTACHING: "Attaching",
    TenantState.ACTIVE: "Active",
    TenantState.BROKEN: "Broken",
    TenantState.STOPPING: "Stopping",
}
_STATES: dict[str, TenantState] = {phase: state for state, phase in PHASES.items()}
#: the phase of a history entry of a detached tenant (it has no state any more)
DETACHED = "Detached"


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class TenantConfigSpec(Model):
    """Tenant config overrides, written to the tenant's ``config`` file (pageserver TOML)."""

    checkpoint_distance: int | None = Field(None, ge=0, description="Bytes of WAL between checkpoints")
    checkpoint_timeout: str | None = Field(None, description="Duration, e.g. '10 m'")
    compaction_target_size: int | None = Field(None, ge=0, description="Bytes")
    compaction_period: str | None = Field(None, description="Duration, e.g. '20 s'")
    compaction_threshold: int | None = Field(None, ge=0)
    gc_horizon: int | None = Field(None, ge=0, description="Bytes")
    gc_period: str | None = Field(None, description="Duration, e.g. '100 s'")
    image_creation_threshold: int | None = Field(None, ge=0)
    pitr_interval: str | None = Field(None, description="Duration, e.g. '30 days'")
    walreceiver_connect_timeout: str | None = Field(None, description="Duration")
    lagging_wal_timeout: str | None = Field(None, description="Duration")
    max_lsn_wal_lag: int | None = Field(None, ge=0, description="Bytes")
    trace_read_requests: bool | None = None

    def overrides(self) -> dict[str, object]:
        """The set fields, camelCase (the keys `formats.tenant_config` renders)."""
        return self.model_dump(by_alias=True, exclude_none=True)


class PlacementSpec(Model):
    """Where the tenant should be attached (DESIGN §8.3)."""

    pageserver: str | None = Field(
        None, max_length=253, pattern=NAME_PATTERN,
        description="Pin: attach the tenant on this pageserver (a Pageserver resource's name); "
        "empty: the least loaded one",
    )
    secondaries: int = Field(0, ge=0, le=3, description="Warm secondary locations kept besides the attached one")


class TenantSpec(Model):
    tenant_id: str = Field(
        ...,
        pattern=TENANT_ID_PATTERN,
        description="The tenant's id: 32 lowercase hex characters; immutable",
    )
    config: TenantConfigSpec | None = Field(None, description="Tenant config overrides")
    placement: PlacementSpec | None = Field(None, description="Where to attach the tenant")


class Condition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    last_transition_time: str
    observed_generation: int | None = None


class Progress(Model):
    layers_total: int = 0
    layers_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    started_at: str | None = None
    eta_seconds: int | None = None
    percent: int | None = Field(None, description="bytesDone / bytesTotal, 0-100 (for printer columns)")


class TimelineStatus(Model):
    timeline_id: str
    ancestor_timeline_id: str | None = None
    ancestor_lsn: str
    disk_consistent_lsn: str
    remote_consistent_lsn: str | None = None
    latest_gc_cutoff_lsn: str
    pg_version: int
    layers: int
    resident_bytes: int
    upload_lag_bytes: int
    lsn_lag: str | None = Field(None, description="disk_consistent_lsn - remote_consistent_lsn, bytes of WAL")
    awaits_download: bool
    state: str


class MigrationStatus(Model):
    """A relocation from one pageserver to another (DESIGN §8.4)."""

    from_: str | None = Field(None, alias="from", description="The source pageserver")
    to: str | None = Field(None, description="The target pageserver")
    phase: str | None = Field(None, description="Warming, SourceStale, Cutover or SourceDetach (Done in lastMigration)")
    started_at: str | None = None
    progress: Progress | None = None
    reason: str | None = Field(None, description="Why it moves: pin, drain or failover")
    stale_at: str | None = Field(None, description="When the source stopped (flushed, deletions held)")
    finished_at: str | None = None
    window_seconds: float | None = Field(
        None, description="Unavailability window: from the source stopping to the target Active"
    )
    message: str | None = Field(None, description="How the placement leader ended it, when it did (Aborted, failover)")


class PlacementStatus(Model):
    """Where the tenant is attached and under which generation (DESIGN §8.2, §8.3)."""

    attached: str | None = Field(None, description="The pageserver (manager) the tenant is attached to")
    generation: int | None = Field(
        None, ge=0, le=0xFFFFFFFF,
        description="The generation of the current attachment: issued by the control plane, bumped with a "
        "resourceVersion precondition on every attach and every start of a pageserver manager; never decreases",
    )
    secondaries: list[str] | None = Field(None, description="Pageservers holding a warm secondary copy")
    migration: MigrationStatus | None = Field(None, description="A relocation in progress (DESIGN §8.4)")
    last_migration: MigrationStatus | None = Field(None, description="The last relocation that completed")
    reason: str | None = Field(
        None, description="Why the tenant is not placed where asked (e.g. PageserverNotFound); empty when it is"
    )
    message: str | None = Field(None, description="The same, for people")


class DeletionsStatus(Model):
    """Remote objects the pageserver no longer needs (DESIGN §8.1): deleted only after the
    generation was validated; dropped (leaked) when it was not current any more."""

    pending: int = Field(0, description="Unlinked by an uploaded index, waiting for the validation of the generation")
    deleted: int = Field(0, description="Deleted since this pageserver manager started")
    leaked: int = Field(
        0, description="Dropped, never deleted: recorded under a generation that was no longer current"
    )


class HistoryEntry(Model):
    time: str
    phase: str
    reason: str
    message: str


class TenantStatus(Model):
    phase: Phase | None = None
    reason: str | None = None
    message: str | None = None
    has_in_progress_downloads: bool | None = None
    observed_generation: int | None = None
    conditions: list[Condition] | None = None
    progress: Progress | None = None
    timelines: list[TimelineStatus] | None = None
    attempts: int | None = None
    next_retry_time: str | None = None
    history: list[HistoryEntry] | None = None
    placement: PlacementStatus | None = None
    deletions: DeletionsStatus | None = None
    timeline_count: int | None = Field(None, description="Number of timelines (printer column)")


def rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def phase_name(state: TenantState | None) -> Phase | None:
    """The resource's phase of an engine state (None: no state, no phase)."""
    return PHASES[state] if state is not None else None


def parse_phase(text: object) -> TenantState | None:
    """The engine state a resource's phase names; None for no phase or one this version does
    not know."""
    return _STATES.get(text) if isinstance(text, str) else None


def history_entry(t: engine_snapshot.Transition) -> HistoryEntry:
    """One ``status.history`` entry of a transition."""
    return HistoryEntry(time=rfc3339(t.time), phase=phase_name(t.phase) or DETACHED, reason=t.reason, message=t.message)


def _lsn(value: Lsn | None) -> str | None:
    return str(value) if value is not None else None


def _lsn_gap(disk: Lsn, remote: Lsn | None) -> str | None:
    if remote is None:
        return None
    return str(max(disk - remote, 0))


def status_from_snapshot(snap: engine_snapshot.TenantSnapshot) -> TenantStatus:
    """The engine's view of a tenant, in the resource's status vocabulary."""
    p = snap.progress
    percent = None
    if p.bytes_total:
        percent = min(100, int(100 * p.bytes_done / p.bytes_total))
    elif snap.state is TenantState.ACTIVE:
        percent = 100
    return TenantStatus(
        phase=phase_name(snap.state),
        reason=snap.reason,
        message=snap.message,
        has_in_progress_downloads=snap.state in (TenantState.LOADING, TenantState.ATTACHING),
        progress=Progress(
            layers_total=p.layers_total,
            layers_done=p.layers_done,
            bytes_total=p.bytes_total,
            bytes_done=p.bytes_done,
            started_at=rfc3339(p.started_at) if p.started_at else None,
            # a Broken tenant's transfer is not moving: no ETA (not the last estimate, often 0)
            eta_seconds=None if snap.state is TenantState.BROKEN else p.eta_seconds,
            percent=percent,
        ),
        timelines=[
            TimelineStatus(
                timeline_id=t.timeline_id,
                ancestor_timeline_id=t.ancestor_timeline_id,
                ancestor_lsn=str(t.ancestor_lsn),
                disk_consistent_lsn=str(t.disk_consistent_lsn),
                remote_consistent_lsn=_lsn(t.remote_consistent_lsn),
                latest_gc_cutoff_lsn=str(t.latest_gc_cutoff_lsn),
                pg_version=t.pg_version,
                layers=t.layers,
                resident_bytes=t.resident_bytes,
                upload_lag_bytes=t.upload_lag_bytes,
                lsn_lag=_lsn_gap(t.disk_consistent_lsn, t.remote_consistent_lsn),
                awaits_download=t.awaits_download,
                state=t.state.value,
            )
            for t in snap.timelines
        ],
        history=[history_entry(h) for h in snap.history],
        # the generation is the fencing token of every status write (crd.GENERATION_NEVER_DECREASES)
        placement=(
            PlacementStatus(generation=snap.generation.value)
            if snap.generation is not None and snap.generation.value is not None
            else None
        ),
        deletions=(
            DeletionsStatus(pending=snap.deletions[0], deleted=snap.deletions[1], leaked=snap.deletions[2])
            if snap.deletions is not None and any(snap.deletions)
            else None
        ),
    )


# ---- the Pageserver resource ----------------------------------------------------------------------

Scheduling = Literal["Active", "Draining", "Paused"]
PageserverState = Literal["Active", "Draining", "Offline"]


class DrainStatus(Model):
    remaining: int = Field(0, description="Tenants still attached here that will move")
    in_flight: int = Field(0, description="Migrations away from here in progress")
    moved: int = Field(0, description="Tenants moved away since the drain started (as this leader saw)")
    eta_seconds: int | None = None


class PageserverSpec(Model):
    scheduling: Scheduling = Field(
        "Active",
        description="Active: takes new tenants; Draining: its tenants move away; Paused: no new tenants",
    )


class PageserverStatus(Model):
    state: PageserverState | None = Field(None, description="Active, Draining or Offline (heartbeat lost)")
    tenants: int | None = Field(None, ge=0, description="Tenants attached here")
    bytes: int | None = Field(None, ge=0, description="Bytes of tenant data on its volume")
    capacity: int | None = Field(None, ge=1, description="Tenants it is sized for (--capacity)")
    disk_used_bytes: int | None = Field(None, ge=0, description="Used bytes of the volume's filesystem")
    disk_total_bytes: int | None = Field(None, ge=0, description="Size of the volume's filesystem")
    last_heartbeat: str | None = Field(None, description="When its heartbeat Lease was last renewed (as last seen)")
    lease_namespace: str | None = Field(None, description="The namespace of its heartbeat Lease")
    message: str | None = None
    drain: DrainStatus | None = Field(None, description="Progress of a drain (spec.scheduling Draining)")
    drain_requested: bool | None = Field(
        None, description="The manager's pod carries the pageserver.dev/drain annotation (\"true\"): drained as if Draining"
    )
