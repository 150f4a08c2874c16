"""Engine metrics (Prometheus, default registry). Per-tenant series are removed on detach."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge

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
    "Remote objects deleted by the deletion queue after their generation was validated "
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


def forget_tenant(tenant_id: str) -> None:
    """Drop every per-tenant series (after detach)."""
    for metric in _PER_TENANT:
        with contextlib.suppress(KeyError):
            metric.remove(tenant_id)
    for labelled in (UPLOAD_QUEUE_UNFINISHED, UPLOAD_ERRORS):
        for labels in list(labelled._metrics):
            if labels[0] == tenant_id:
                labelled.remove(*labels)
