"""`engine.snapshot`: snapshots carry typed values (issue 15 item 5). A phase is a
`TenantState`, a timeline's state a `TimelineState`, a WAL position an `Lsn`; text where one of
them belongs is refused when the snapshot is made, so it cannot compare unequal (or equal by
accident) further on. api/ writes the text (tests/unit/api/test_v1alpha1.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from pageserver_operator.engine import progress, snapshot
from pageserver_operator.engine.snapshot import TenantState
from pageserver_operator.engine.timeline import TimelineState
from pageserver_operator.formats.lsn import Lsn

TL = snapshot.TimelineSnapshot(
    timeline_id="22222222222222222222222222222222", ancestor_timeline_id=None, ancestor_lsn=Lsn.ZERO,
    disk_consistent_lsn=Lsn(0x16B5A50), remote_consistent_lsn=None, latest_gc_cutoff_lsn=Lsn.ZERO,
    pg_version=15, layers=1, resident_bytes=10, upload_lag_bytes=0, awaits_download=False,
    state=TimelineState.ACTIVE, upload_queue_unfinished=0,
)  # fmt: skip


@pytest.mark.parametrize(
    ("field", "text"),
    [("ancestor_lsn", "0/0"), ("disk_consistent_lsn", "0/16B5A50"), ("remote_consistent_lsn", "0/16B5A50"),
     ("latest_gc_cutoff_lsn", "0/0"), ("state", "Active")],
)  # fmt: skip
def test_a_timeline_snapshot_refuses_text_for_a_typed_value(field: str, text: str) -> None:
    with pytest.raises(TypeError, match=field):
        dataclasses.replace(TL, **{field: text})  # type: ignore[arg-type]


def test_a_tenant_snapshot_and_a_transition_refuse_a_phase_name_for_a_state() -> None:
    empty = progress.Progress().snapshot()
    with pytest.raises(TypeError, match="state"):
        snapshot.TenantSnapshot("t", "Active", "Active", "m", empty, [])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="phase"):
        snapshot.Transition(datetime.now(UTC), "Detached", "Detached", "m")  # type: ignore[arg-type]
    # None: nothing started yet (a snapshot), a detach (a transition)
    assert snapshot.TenantSnapshot("t", None, "", "", empty, []).state is None
    assert snapshot.Transition(datetime.now(UTC), None, "Detached", "m").phase is None
    assert snapshot.TenantSnapshot("t", TenantState.BROKEN, "R", "m", empty, [TL]).timelines == [TL]


def test_synced_and_upload_error_read_the_timelines() -> None:
    empty = progress.Progress().snapshot()
    lagging = dataclasses.replace(TL, upload_lag_bytes=5)
    failing = dataclasses.replace(TL, upload_error_reason="RemoteStorageRejected", upload_error_message="no")
    assert snapshot.TenantSnapshot("t", TenantState.ACTIVE, "", "", empty, [TL]).synced
    assert not snapshot.TenantSnapshot("t", TenantState.ACTIVE, "", "", empty, [TL, lagging]).synced
    snap = snapshot.TenantSnapshot("t", TenantState.ACTIVE, "", "", empty, [TL, failing])
    assert snap.upload_error == ("RemoteStorageRejected", "no")
