"""Engine metrics (Prometheus, default registry).

Cardinality (README "Metrics", docs/observability.md): the only labels that grow with the fleet
are ``tenant_id`` (and ``timeline_id`` on the upload queue gauge). They exist for one person's
question, "what is this tenant doing" (the dashboard's drill-down). A large fleet turns them off
with `set_per_tenant` (``PAGESERVER_OPERATOR_PER_TENANT_METRICS=false``): every per-tenant label
value is then ``""`` (Prometheus drops empty labels), so each metric keeps one series per other
label set on each manager, and every fleet query (``sum(...)``) reads the same. Everything else
here has labels from closed sets (phase, file/op kind, error reason).

Invariants:
- Per-tenant series are removed on detach (`forget_tenant`); the shared series of the
  per-tenant-off mode are never removed (gauges there are incremented and decremented in pairs).
- `pageserver_operator_upload_lag_bytes` is computed at scrape time from the live tenants
  (`track`), which the metrics thread reads while the event loop changes them: a read that meets
  a dictionary being resized is retried, and a tenant is never kept alive by being tracked.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

UPLOAD_QUEUE_UNFINISHED = Gauge(
    "pageserver_operator_upload_queue_unfinished_tasks",
    "Upload queue operations queued or in flight (barriers not counted)",
    ["tenant_id", "timeline_id", "file_kind", "op_kind"],
)
LAYER_DOWNLOADS = Counter(
    "pageserver_operator_layer_downloads_total",
    "Layer files downloaded by attach/load (a resumed attach counts only what it fetched again)",
    ["tenant_id"],
)
LAYER_DOWNLOAD_BYTES = Counter(
    "pageserver_operator_layer_download_bytes_total",
    "Bytes of layer files downloaded by attach/load",
    ["tenant_id"],
)
LAYER_UPLOADS = Counter(
    "pageserver_operator_layer_uploads_total", "Layer files uploaded by the upload queues", ["tenant_id"]
)
UPLOAD_ERRORS = Counter(
    "pageserver_operator_upload_errors_total",
    "Failed attempts of upload queue operations (each is retried), by reason: RemoteStorageRejected "
    "(AccessDenied, NoSuchBucket: retried at most every minute until fixed), RemoteStorageUnavailable, ...",
    ["tenant_id", "reason"],
)
DELETIONS = Counter(
    "pageserver_operator_deletions_total",
    "Remote object deletions done by the deletion queue after their generation was validated "
    "(a delete redone after a crash may be counted again)",
    ["tenant_id"],
)
DELETIONS_LEAKED = Counter(
    "pageserver_operator_deletions_leaked_total",
    "Remote object deletions dropped, never executed, because their generation was stale "
    "(at a validation, or at recovery after another generation was issued): the objects are left behind",
    ["tenant_id"],
)
TENANTS = Gauge("pageserver_operator_tenants", "Tenants known to this operator, by phase", ["phase"])

_PER_TENANT = (LAYER_DOWNLOADS, LAYER_DOWNLOAD_BYTES, LAYER_UPLOADS, DELETIONS, DELETIONS_LEAKED)

_per_tenant = True


def set_per_tenant(enabled: bool) -> None:
    """Per-tenant label values on (default) or off (``""``: one series per manager). Set once at
    start-up, before any tenant exists: series created before keep their labels."""
    global _per_tenant
    _per_tenant = enabled


def per_tenant() -> bool:
    return _per_tenant


def tenant_label(tenant_id: object) -> str:
    """The ``tenant_id`` label value of ``tenant_id`` (``""`` when per-tenant metrics are off)."""
    return str(tenant_id) if _per_tenant else ""


def timeline_label(timeline_id: object) -> str:
    """The ``timeline_id`` label value (``""`` when per-tenant metrics are off)."""
    return str(timeline_id) if _per_tenant else ""


def forget_tenant(tenant_id: str) -> None:
    """Drop every per-tenant series (after detach)."""
    if not tenant_id:
        return
    for metric in _PER_TENANT:
        with contextlib.suppress(KeyError):
            metric.remove(tenant_id)
    for labelled in (UPLOAD_QUEUE_UNFINISHED, UPLOAD_ERRORS):
        for labels in list(labelled._metrics):
            if labels[0] == tenant_id:
                with contextlib.suppress(KeyError):
                    labelled.remove(*labels)


# ---- upload lag, computed at scrape time ------------------------------------------------------------


class _Timeline(Protocol):
    @property
    def upload_lag_bytes(self) -> int: ...


class Tracked(Protocol):
    """What the upload lag collector reads of an engine Tenant."""

    @property
    def id(self) -> object: ...

    @property
    def timelines(self) -> Mapping[Any, _Timeline]: ...


_TRACKED: weakref.WeakSet[Tracked] = weakref.WeakSet()
#: attempts to read a tenant that the event loop is changing before giving up for this scrape
_READ_ATTEMPTS = 5


def track(tenant: Tracked) -> None:
    """Count ``tenant``'s upload lag from now on (until it is garbage collected or `untrack`ed)."""
    _TRACKED.add(tenant)


def untrack(tenant: Tracked) -> None:
    _TRACKED.discard(tenant)


def _lag_of(tenant: Tracked) -> int | None:
    for _ in range(_READ_ATTEMPTS):
        try:
            return sum(t.upload_lag_bytes for t in list(tenant.timelines.values()))
        except RuntimeError:  # "dictionary changed size during iteration": the loop moved on
            continue
    return None


class UploadLagCollector(Collector):
    """``pageserver_operator_upload_lag_bytes{tenant_id}``: bytes of local layers that the last
    completed remote index of their timeline does not name (the status' ``uploadLagBytes``),
    summed per tenant, or over every tenant of this manager when per-tenant metrics are off.
    Every attached tenant has its series (0 when in sync); the per-manager sum is always there."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "pageserver_operator_upload_lag_bytes",
            "Bytes of local layers the last completed remote index does not name, by tenant "
            "(tenant_id empty: every tenant of this manager, when per-tenant metrics are off)",
            labels=["tenant_id"],
        )
        total = 0
        for tenant in list(_TRACKED):
            lag = _lag_of(tenant)
            if lag is None:
                continue
            if _per_tenant:
                family.add_metric([str(tenant.id)], float(lag))
            else:
                total += lag
        if not _per_tenant:
            family.add_metric([""], float(total))
        yield family


REGISTRY.register(UploadLagCollector())
