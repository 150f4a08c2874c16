"""`api.v1alpha1` in process: the resource's models, and the conversion of the engine's typed
snapshots (`TenantState`, `Lsn`) into the status text the resource and ``status --json`` show.

The expected documents are written out in full: a change of a field's name, of its text form
(``HI/LO`` LSNs, phase names) or of what is left out changes what users and scripts read.
"""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime

import pydantic
import pytest

from pageserver_operator.api import v1alpha1
from pageserver_operator.engine import progress
from pageserver_operator.engine.snapshot import TenantSnapshot, TenantState, TimelineSnapshot, Transition
from pageserver_operator.engine.timeline import TimelineState
from pageserver_operator.formats.lsn import Lsn

TID = "0123456789abcdef0123456789abcdef"
TL = "22222222222222222222222222222222"
T0 = datetime(2026, 12, 4, 23, 59, 58, 123456, tzinfo=UTC)


def timeline(**changes: object) -> TimelineSnapshot:
    fields: dict[str, object] = {
        "timeline_id": TL, "ancestor_timeline_id": None, "ancestor_lsn": Lsn.ZERO,
        "disk_consistent_lsn": Lsn.parse("1/16B5A50"), "remote_consistent_lsn": Lsn.parse("0/16B5A50"),
        "latest_gc_cutoff_lsn": Lsn.parse("0/1000000"), "pg_version": 15, "layers": 3,
        "resident_bytes": 300, "upload_lag_bytes": 100, "awaits_download": False,
        "state": TimelineState.ACTIVE, "upload_queue_unfinished": 0,
    }  # fmt: skip
    fields.update(changes)
    return TimelineSnapshot(**fields)  # type: ignore[arg-type]


def snapshot(
    state: TenantState | None,
    timelines: list[TimelineSnapshot] | None = None,
    p: progress.ProgressSnapshot | None = None,
    history: list[Transition] | None = None,
) -> TenantSnapshot:
    return TenantSnapshot(
        TID, state, "R", "m", p or progress.Progress().snapshot(), timelines or [], history or []
    )


# ---- phases: the engine's states and the resource's names ---------------------------------------


def test_every_engine_state_has_the_phase_of_its_name() -> None:
    assert set(v1alpha1.PHASES) == set(TenantState)
    assert set(v1alpha1.PHASES.values()) == set(typing.get_args(v1alpha1.Phase))
    for state, phase in v1alpha1.PHASES.items():
        assert phase == state.value
        assert v1alpha1.phase_name(state) == phase
        assert v1alpha1.parse_phase(phase) is state
    assert v1alpha1.phase_name(None) is None


@pytest.mark.parametrize("text", [None, "", "active", "Detached", "Suspended", 3, ["Active"]])
def test_a_phase_this_version_does_not_know_is_no_state(text: object) -> None:
    assert v1alpha1.parse_phase(text) is None


# ---- status_from_snapshot ---------------------------------------------------------------------


def test_a_timeline_status_shows_its_lsns_in_the_hi_lo_form_and_their_gap() -> None:
    status = v1alpha1.status_from_snapshot(snapshot(TenantState.ACTIVE, [timeline()]))
    (tl,) = status.model_dump(by_alias=True, exclude_none=True)["timelines"]
    assert tl == {
        "timelineId": TL,
        "ancestorLsn": "0/0",
        "diskConsistentLsn": "1/16B5A50",
        "remoteConsistentLsn": "0/16B5A50",
        "latestGcCutoffLsn": "0/1000000",
        "pgVersion": 15,
        "layers": 3,
        "residentBytes": 300,
        "uploadLagBytes": 100,
        "lsnLag": str(1 << 32),
        "awaitsDownload": False,
        "state": "Active",
    }


def test_no_remote_lsn_means_no_gap_and_a_remote_lsn_ahead_is_no_negative_gap() -> None:
    unknown = timeline(remote_consistent_lsn=None, ancestor_timeline_id=TID, ancestor_lsn=Lsn.parse("0/8"))
    ahead = timeline(remote_consistent_lsn=Lsn.parse("2/0"), state=TimelineState.SUSPENDED)
    status = v1alpha1.status_from_snapshot(snapshot(TenantState.LOADING, [unknown, ahead]))
    first, second = status.timelines or []
    assert (first.remote_consistent_lsn, first.lsn_lag) == (None, None)
    assert (first.ancestor_timeline_id, first.ancestor_lsn) == (TID, "0/8")
    assert (second.remote_consistent_lsn, second.lsn_lag, second.state) == ("2/0", "0", "Suspended")


def test_the_whole_status_of_an_attaching_tenant_as_status_json_prints_it() -> None:
    p = progress.ProgressSnapshot(4, 1, 4000, 1500, T0, 12)
    status = v1alpha1.status_from_snapshot(snapshot(TenantState.ATTACHING, [], p))
    text = json.dumps(status.model_dump(by_alias=True, exclude_none=True), indent=2)
    assert text == json.dumps(
        {
            "phase": "Attaching",
            "reason": "R",
            "message": "m",
            "hasInProgressDownloads": True,
            "progress": {
                "layersTotal": 4, "layersDone": 1, "bytesTotal": 4000, "bytesDone": 1500,
                "startedAt": "2026-12-04T23:59:58Z", "etaSeconds": 12, "percent": 37,
            },
            "timelines": [],
            "history": [],
        },
        indent=2,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("state", "phase", "downloading"),
    [
        (TenantState.LOADING, "Loading", True),
        (TenantState.ATTACHING, "Attaching", True),
        (TenantState.ACTIVE, "Active", False),
        (TenantState.BROKEN, "Broken", False),
        (TenantState.STOPPING, "Stopping", False),
        (None, None, False),
    ],
)
def test_the_phase_and_whether_downloads_are_in_progress(
    state: TenantState | None, phase: str | None, downloading: bool
) -> None:
    status = v1alpha1.status_from_snapshot(snapshot(state))
    assert (status.phase, status.has_in_progress_downloads) == (phase, downloading)


def test_percent_is_of_the_bytes_and_an_active_tenant_with_nothing_to_transfer_is_at_100() -> None:
    nothing = progress.Progress().snapshot()
    assert v1alpha1.status_from_snapshot(snapshot(TenantState.ACTIVE, p=nothing)).progress.percent == 100  # type: ignore[union-attr]
    assert v1alpha1.status_from_snapshot(snapshot(TenantState.LOADING, p=nothing)).progress.percent is None  # type: ignore[union-attr]
    over = progress.ProgressSnapshot(1, 1, 10, 11, T0, 0)
    assert v1alpha1.status_from_snapshot(snapshot(TenantState.LOADING, p=over)).progress.percent == 100  # type: ignore[union-attr]


def test_a_broken_tenant_shows_no_eta() -> None:
    p = progress.ProgressSnapshot(4, 1, 4000, 1000, T0, 0)
    assert v1alpha1.status_from_snapshot(snapshot(TenantState.BROKEN, p=p)).progress.eta_seconds is None  # type: ignore[union-attr]
    assert v1alpha1.status_from_snapshot(snapshot(TenantState.ATTACHING, p=p)).progress.eta_seconds == 0  # type: ignore[union-attr]


def test_history_entries_name_their_phase_and_a_detach_is_detached() -> None:
    history = [
        Transition(T0, TenantState.ATTACHING, "AttachStarted", "attaching"),
        Transition(T0, TenantState.ACTIVE, "Active", "1 timeline active"),
        Transition(T0, None, "Detached", "local data removed"),
    ]
    status = v1alpha1.status_from_snapshot(snapshot(None, history=history))
    dumped = status.model_dump(by_alias=True, exclude_none=True)["history"]
    assert dumped == [
        {"time": "2026-12-04T23:59:58Z", "phase": "Attaching", "reason": "AttachStarted", "message": "attaching"},
        {"time": "2026-12-04T23:59:58Z", "phase": "Active", "reason": "Active", "message": "1 timeline active"},
        {"time": "2026-12-04T23:59:58Z", "phase": "Detached", "reason": "Detached", "message": "local data removed"},
    ]
    assert v1alpha1.history_entry(history[1]).model_dump(by_alias=True) == dumped[1]


def test_rfc3339_drops_the_fraction_of_a_second() -> None:
    assert v1alpha1.rfc3339(T0) == "2026-12-04T23:59:58Z"


# ---- the models -------------------------------------------------------------------------------


def test_the_spec_is_read_in_camel_case_and_refuses_unknown_fields_and_bad_ids() -> None:
    spec = v1alpha1.TenantSpec.model_validate({"tenantId": TID, "config": {"checkpointDistance": 1024}})
    assert spec.tenant_id == TID
    assert spec.config is not None and spec.config.checkpoint_distance == 1024
    for bad in ({"tenantId": TID.upper()}, {"tenantId": TID[:-1]}, {"tenantId": TID, "tenantID": TID}, {}):
        with pytest.raises(pydantic.ValidationError):
            v1alpha1.TenantSpec.model_validate(bad)


def test_config_overrides_are_the_set_fields_in_camel_case() -> None:
    cfg = v1alpha1.TenantConfigSpec.model_validate(
        {"gcHorizon": 0, "pitrInterval": "30 days", "traceReadRequests": False}
    )
    assert cfg.overrides() == {"gcHorizon": 0, "pitrInterval": "30 days", "traceReadRequests": False}
    assert v1alpha1.TenantConfigSpec().overrides() == {}
    with pytest.raises(pydantic.ValidationError):
        v1alpha1.TenantConfigSpec.model_validate({"gcHorizon": -1})


def test_a_status_written_by_an_earlier_process_is_read_back() -> None:
    stored = {
        "phase": "Broken", "reason": "InvalidIndexPart", "message": "m", "attempts": 3,
        "nextRetryTime": "2026-12-04T23:59:58Z", "observedGeneration": 2, "timelineCount": 0,
        "conditions": [{"type": "Ready", "status": "False", "reason": "InvalidIndexPart", "message": "m",
                        "lastTransitionTime": "2026-12-04T23:59:58Z", "observedGeneration": 2}],
    }  # fmt: skip
    status = v1alpha1.TenantStatus.model_validate(stored)
    assert status.model_dump(by_alias=True, exclude_none=True) == stored
    with pytest.raises(pydantic.ValidationError):
        v1alpha1.TenantStatus.model_validate({"phase": "Detached"})
