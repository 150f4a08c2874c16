"""The `Synced` condition says why uploads keep failing (issue 14, defect 11).

Before, a tenant whose uploads were refused (AccessDenied, NoSuchBucket) stayed Active with
``Synced=False`` and reason ``UploadsPending``: nothing said why. The engine snapshot now
carries each timeline's upload error; the condition shows its reason and message.
"""

from __future__ import annotations

import dataclasses

from pageserver_operator.engine import progress
from pageserver_operator.engine import snapshot as engine_snapshot
from pageserver_operator.engine.timeline import TimelineState
from pageserver_operator.formats.lsn import Lsn
from pageserver_operator.k8s import status

TIMELINE = engine_snapshot.TimelineSnapshot(
    timeline_id="22222222222222222222222222222222",
    ancestor_timeline_id=None,
    ancestor_lsn=Lsn.ZERO,
    disk_consistent_lsn=Lsn.parse("0/1100000"),
    remote_consistent_lsn=Lsn.parse("0/1000000"),
    latest_gc_cutoff_lsn=Lsn.parse("0/1000000"),
    pg_version=15,
    layers=2,
    resident_bytes=300,
    upload_lag_bytes=100,
    awaits_download=False,
    state=TimelineState.ACTIVE,
    upload_queue_unfinished=2,
    lagging_layers=("L",),
)


def snapshot(*timelines: engine_snapshot.TimelineSnapshot) -> engine_snapshot.TenantSnapshot:
    return engine_snapshot.TenantSnapshot(
        tenant_id="11111111111111111111111111111111",
        state=engine_snapshot.TenantState.ACTIVE,
        reason="Active",
        message="1 timeline active",
        progress=progress.Progress().snapshot(),
        timelines=list(timelines),
    )


def synced(snap: engine_snapshot.TenantSnapshot) -> dict[str, object]:
    return next(c for c in status.synced_condition([], snap, 1) if c["type"] == "Synced")


def test_synced_shows_the_reason_and_message_of_a_failing_upload() -> None:
    message = (
        "timeline 22222222222222222222222222222222: upload_layer L failed: upload of s3://b/k rejected: "
        "AccessDenied (HTTP 403): Access Denied (not transient: retried at most every 60 s until fixed)"
    )
    failing = dataclasses.replace(
        TIMELINE, upload_error_reason="RemoteStorageRejected", upload_error_message=message,
        upload_error_permanent=True,
    )
    snap = snapshot(failing)
    cond = synced(snap)
    assert cond["status"] == "False"
    assert cond["reason"] == "RemoteStorageRejected"
    assert cond["message"] == message
    assert snap.upload_error == ("RemoteStorageRejected", message)


def test_synced_without_an_error_is_unchanged() -> None:
    cond = synced(snapshot(TIMELINE))
    assert (cond["status"], cond["reason"]) == ("False", "UploadsPending")
    assert snapshot(TIMELINE).upload_error is None
    done = dataclasses.replace(TIMELINE, upload_lag_bytes=0, upload_queue_unfinished=0, lagging_layers=())
    assert (synced(snapshot(done))["status"], synced(snapshot(done))["reason"]) == ("True", "UpToDate")
