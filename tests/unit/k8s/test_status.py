"""`k8s.status` in process: the conditions, the status document, and what the status writer
sends and how often (issue 22: load, smaller defects; issue 20: an empty ``Timelines:`` and a
stale ``progress`` of a Broken tenant; issue 14 defect 11: ``Synced`` says why uploads fail;
a failed status patch is retried on its backoff)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pageserver_operator.engine import progress
from pageserver_operator.engine import snapshot as engine_snapshot
from pageserver_operator.engine.timeline import TimelineState
from pageserver_operator.formats import ids
from pageserver_operator.formats.lsn import Lsn
from pageserver_operator.k8s import controller, status

from .conftest import NS, TID, FakeKube, StandIn, body, settings, until


def snap(phase: str, done: int = 0, total: int = 0) -> engine_snapshot.TenantSnapshot:
    """A snapshot in the state whose phase is ``phase`` (a phase name, as the tests read them)."""
    p = progress.ProgressSnapshot(total, done, total * 10, done * 10, datetime.now(UTC), None)
    state = engine_snapshot.TenantState(phase)
    reason = "InvalidIndexPart" if state is engine_snapshot.TenantState.BROKEN else phase
    return engine_snapshot.TenantSnapshot(TID, state, reason, "m", p, [])


def test_a_broken_tenant_that_transferred_nothing_shows_no_progress_and_no_empty_timelines() -> None:
    """Issue 20: no ``progress.startedAt`` and zeroed counters, no empty ``Timelines:`` line in
    ``kubectl describe`` (sent as null: the merge patch removes what an earlier status had)."""
    st, _ = status.build_status(snap("Broken"), [], 1)
    assert st["progress"] is None
    assert st["timelines"] is None
    partial, _ = status.build_status(snap("Broken", done=1, total=3), [], 1)
    assert partial["progress"]["layersDone"] == 1  # what a failed attempt did transfer stays visible


def test_a_write_cancelled_by_stop_lands_before_the_final_one() -> None:
    """Defect 6: two status PATCHes never land out of order at close."""

    async def main() -> None:
        landed: list[str] = []
        gate = asyncio.Event()
        phase = ["Attaching"]

        called = asyncio.Event()

        async def patch(p: dict[str, Any]) -> None:
            called.set()
            if not landed and not gate.is_set():
                await gate.wait()  # the first write is slow
            await asyncio.sleep(0)
            landed.append(p["status"]["phase"])

        def current() -> engine_snapshot.TenantSnapshot:
            return snap(phase[0])

        w = status.StatusWriter(patch, current, 0.01)
        w.start()
        w.mark(urgent=True)
        await called.wait()
        phase[0] = "Active"
        stopping = asyncio.create_task(w.stop())
        await asyncio.sleep(0.05)
        gate.set()
        await stopping
        assert landed == ["Attaching", "Active"], landed

    asyncio.run(main())


def test_an_attach_shorter_than_the_interval_costs_one_write(tmp_path: Path) -> None:
    """Load: no Attaching patch for an attach that ends within the status interval."""

    async def main() -> None:
        kube = FakeKube()
        b = body("quick", TID)
        kube.add(b)
        t = StandIn(ids.TenantId.parse(TID), tmp_path)
        ctl = controller.TenantController((NS, "quick"), b, t, kube, settings(status_interval=0.5), True)  # type: ignore[arg-type]
        ctl.start()
        await until(lambda: kube.status("quick").get("phase") == "Active", "Active")
        await ctl.close()
        assert [p.get("phase") for p in kube.patches_of("quick")] == ["Active"]
        assert [h["phase"] for h in kube.status("quick")["history"]] == ["Attaching", "Active"]
        assert kube.events == [], "Events that repeat the status"

    asyncio.run(main())


def test_a_restart_of_an_active_tenant_writes_nothing(tmp_path: Path) -> None:
    """Load: a restart that reloads an Active tenant as it was writes no status and posts no
    Event; Ready stays True (no flap; its lastTransitionTime does not move)."""

    async def main() -> None:
        kube = FakeKube()
        b = body("steady", TID)
        kube.add(b)
        t = StandIn(ids.TenantId.parse(TID), tmp_path)
        first = controller.TenantController((NS, "steady"), b, t, kube, settings(), True)  # type: ignore[arg-type]
        first.start()
        await until(lambda: kube.status("steady").get("phase") == "Active", "Active")
        await first.close()
        ready_before = {c["type"]: c for c in kube.status("steady")["conditions"]}["Ready"]
        kube.patches.clear()

        async def reload(self: StandIn, config: Any) -> None:  # the engine's load after a restart
            self.progress.start(0, 0)
            self._set_state(engine_snapshot.TenantState.LOADING, "LoadStarted", "loading from the volume")
            await asyncio.sleep(0)
            self._set_state(engine_snapshot.TenantState.ACTIVE, "Active", "1 timeline active")

        again = StandIn(ids.TenantId.parse(TID), tmp_path)
        again.on_start = reload
        stored = {**b, "status": kube.status("steady")}
        second = controller.TenantController((NS, "steady"), stored, again, kube, settings(), True)  # type: ignore[arg-type]
        second.start()
        await until(lambda: again.state is engine_snapshot.TenantState.ACTIVE, "Active again")
        await second.close()
        patches = kube.patches_of("steady")
        assert patches == [], patches  # nothing changed for anyone reading the status
        ready_after = {c["type"]: c for c in kube.status("steady")["conditions"]}["Ready"]
        assert ready_after["status"] == "True"
        assert ready_after["lastTransitionTime"] == ready_before["lastTransitionTime"]
        assert kube.events == []

    asyncio.run(main())


def test_a_restart_that_attaches_a_tenant_shown_active_says_so_at_once(tmp_path: Path) -> None:
    """The stored status says Active (Ready=True) but the restarted operator finds an
    interrupted attach (the marker) and resumes it: Attaching is written at once, not held for
    the status interval (an hour here), so nobody reads Ready=True while the volume is being
    filled. (Seen in the operator crash suite, RELIABILITY_SEED=1330523247 round 7: the suite's
    wait for Synced passed on the stale status while the resume was still downloading.)"""

    async def main() -> None:
        kube = FakeKube()
        b = body("resumed", TID)
        kube.add(b)
        t = StandIn(ids.TenantId.parse(TID), tmp_path)
        first = controller.TenantController((NS, "resumed"), b, t, kube, settings(), True)  # type: ignore[arg-type]
        first.start()
        await until(lambda: kube.status("resumed").get("phase") == "Active", "Active")
        await first.close()
        release = asyncio.Event()

        async def resume(self: StandIn, config: Any) -> None:  # the marker is there: attach again
            self.progress.start(10, 10_000)
            self._set_state(engine_snapshot.TenantState.ATTACHING, "AttachStarted", "attaching (resuming)")
            await release.wait()
            self._set_state(engine_snapshot.TenantState.ACTIVE, "Active", "1 timeline active")

        again = StandIn(ids.TenantId.parse(TID), tmp_path)
        again.on_start = resume
        stored = {**b, "status": kube.status("resumed")}
        second = controller.TenantController(
            (NS, "resumed"), stored, again, kube, settings(status_interval=3600.0), True  # type: ignore[arg-type]
        )
        second.start()
        await until(lambda: kube.status("resumed").get("phase") == "Attaching", "Attaching written", timeout=5)
        ready = {c["type"]: c for c in kube.status("resumed")["conditions"]}["Ready"]
        assert ready["status"] == "False", ready
        release.set()
        await until(lambda: again.state is engine_snapshot.TenantState.ACTIVE, "Active again")
        await second.close()
        assert kube.status("resumed")["phase"] == "Active"

    asyncio.run(main())


def test_history_holds_the_last_ten_phases_shown() -> None:
    async def main() -> None:
        phases = ["Attaching", "Broken", "Active", "Loading"] * 4
        i = [0]

        async def patch(p: dict[str, Any]) -> None:
            return None

        w = status.StatusWriter(patch, lambda: snap(phases[i[0]]), 0.01)
        for n in range(len(phases)):
            i[0] = n
            await w.flush()
        assert [h["phase"] for h in w.history] == phases[-10:]

    asyncio.run(main())


def test_a_slow_restart_reload_with_nothing_to_fetch_is_not_shown_one_with_downloads_is(
    tmp_path: Path,
) -> None:
    """Load: with 1,000 tenants a restart's reload takes longer than the status interval; while
    it has nothing to download it stays shown Active (no write, no flap); a reload that must
    fetch layers shows Loading and its progress."""

    async def main() -> None:
        for missing, expect in ((0, []), (2, ["Loading", "Active"])):
            kube = FakeKube()
            name = f"slow{missing}"
            b = body(name, TID)
            kube.add(b)
            attached = StandIn(ids.TenantId.parse(TID), tmp_path)

            async def attach(self: StandIn, config: Any) -> None:
                self.progress.start(4, 40)
                self._set_state(engine_snapshot.TenantState.ATTACHING, "AttachStarted", "attaching")
                self.progress.start(4, 40, layers_done=4, bytes_done=40)
                self._set_state(engine_snapshot.TenantState.ACTIVE, "Active", "1 timeline active")

            attached.on_start = attach
            first = controller.TenantController((NS, name), b, attached, kube, settings(), True)  # type: ignore[arg-type]

            first.start()
            await until(lambda n=name, kb=kube: kb.status(n).get("phase") == "Active", "Active")  # type: ignore[misc]
            await first.close()
            kube.patches.clear()

            async def reload(self: StandIn, config: Any, missing: int = missing) -> None:
                self.progress.start(0, 0)
                self._set_state(engine_snapshot.TenantState.LOADING, "LoadStarted", "loading from the volume")
                await asyncio.sleep(0.2)  # listing, fetching indexes: 4 status intervals
                self.progress.start(4, 40, layers_done=4 - missing, bytes_done=40 - 10 * missing)
                await asyncio.sleep(0.2)
                self._set_state(engine_snapshot.TenantState.ACTIVE, "Active", "1 timeline active")

            again = StandIn(ids.TenantId.parse(TID), tmp_path)
            again.on_start = reload
            stored = {**b, "status": kube.status(name)}
            second = controller.TenantController((NS, name), stored, again, kube, settings(), True)  # type: ignore[arg-type]
            second.start()
            await until(lambda a=again: a.state is engine_snapshot.TenantState.ACTIVE, "Active again")  # type: ignore[misc]
            await second.close()
            phases = [p.get("phase") for p in kube.patches_of(name)]
            assert sorted(set(phases), key=phases.index) == expect, (missing, phases)

    asyncio.run(main())


# ---- conditions (issue 14 defect 11: Synced says why uploads keep failing) ------------------------

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


def active(*timelines: engine_snapshot.TimelineSnapshot) -> engine_snapshot.TenantSnapshot:
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
    """Before, a tenant whose uploads were refused (AccessDenied, NoSuchBucket) stayed Active
    with ``Synced=False`` and reason ``UploadsPending``: nothing said why."""
    message = (
        "timeline 22222222222222222222222222222222: upload_layer L failed: upload of s3://b/k rejected: "
        "AccessDenied (HTTP 403): Access Denied (not transient: retried at most every 60 s until fixed)"
    )
    failing = dataclasses.replace(
        TIMELINE, upload_error_reason="RemoteStorageRejected", upload_error_message=message,
        upload_error_permanent=True,
    )
    snap = active(failing)
    cond = synced(snap)
    assert cond["status"] == "False"
    assert cond["reason"] == "RemoteStorageRejected"
    assert cond["message"] == message
    assert snap.upload_error == ("RemoteStorageRejected", message)


def test_synced_without_an_error_is_unchanged() -> None:
    cond = synced(active(TIMELINE))
    assert (cond["status"], cond["reason"]) == ("False", "UploadsPending")
    assert active(TIMELINE).upload_error is None
    done = dataclasses.replace(TIMELINE, upload_lag_bytes=0, upload_queue_unfinished=0, lagging_layers=())
    assert (synced(active(done))["status"], synced(active(done))["reason"]) == ("True", "UpToDate")


def test_synced_names_at_most_three_lagging_layers_and_the_pending_uploads() -> None:
    many = dataclasses.replace(TIMELINE, lagging_layers=("A", "B", "C", "D"), upload_queue_unfinished=1)
    assert synced(active(many))["message"] == (
        "timeline 22222222222222222222222222222222: 4 layers (100 bytes) not in the remote index: "
        "A, B, C, ...; 1 upload operations pending"
    )
    queued = dataclasses.replace(TIMELINE, lagging_layers=(), upload_lag_bytes=0)
    assert synced(active(queued))["message"] == (
        "timeline 22222222222222222222222222222222: 2 upload operations pending"
    )


def test_a_tenant_that_is_not_active_is_neither_ready_nor_synced() -> None:
    _, conditions = status.build_status(snap("Loading"), [], 4)
    by_type = {c["type"]: c for c in conditions}
    assert (by_type["Ready"]["status"], by_type["Ready"]["reason"]) == ("False", "Loading")
    assert (by_type["Synced"]["status"], by_type["Synced"]["reason"]) == ("False", "NotActive")
    assert by_type["Synced"]["message"] == "tenant is Loading"
    assert {c["observedGeneration"] for c in conditions} == {4}


def test_a_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    old = [{"type": "Ready", "status": "True", "reason": "Active", "message": "m",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]  # fmt: skip
    same = status.set_condition(old, "Ready", True, "Active", "other message", None)
    assert same == [{"type": "Ready", "status": "True", "reason": "Active", "message": "other message",
                     "lastTransitionTime": "2026-01-01T00:00:00Z"}]  # fmt: skip
    (flipped,) = status.set_condition(old, "Ready", False, "", "m", 3)
    assert flipped["lastTransitionTime"] != "2026-01-01T00:00:00Z"
    assert (flipped["reason"], flipped["observedGeneration"]) == ("NotReady", 3)
    both = status.set_condition(old, "Synced", True, "", "m", None)
    assert [c["type"] for c in both] == ["Ready", "Synced"] and both[1]["reason"] == "Ready"


# ---- what is written, and its retry -------------------------------------------------------------


def test_a_failed_status_patch_is_retried_on_its_backoff_and_the_count_resets() -> None:
    """A failed write never stops the tenant: it is written again after
    `status.patch_retry_backoff` (``interval * 2**n``), also without a new change."""

    async def main() -> None:
        attempts: list[float] = []

        async def patch(p: dict[str, Any]) -> None:
            attempts.append(asyncio.get_running_loop().time())
            if len(attempts) <= 2:
                raise RuntimeError("the API server is restarting")

        interval = 0.02
        w = status.StatusWriter(patch, lambda: snap("Active"), interval)
        w.start()
        w.mark(urgent=True)
        await until(lambda: w.patches == 1, "the third attempt to land", timeout=5)
        await w.stop(flush=False)
        assert len(attempts) == 3 and w.failures == 0
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        want = [status.patch_retry_backoff(interval).delay(n) for n in (1, 2)]
        assert want == [2 * interval, 4 * interval]
        assert all(gap >= delay * 0.9 for gap, delay in zip(gaps, want, strict=True)), (gaps, want)

    asyncio.run(main())


def test_a_status_that_differs_only_in_its_eta_is_not_written_again() -> None:
    """The ETA is recomputed on every read: alone it is no reason to write; nor is the
    ``startedAt`` of an Active tenant (it only dates the last transfer) after a restart."""

    async def main() -> None:
        written: list[dict[str, Any]] = []

        async def patch(p: dict[str, Any]) -> None:
            written.append(p["status"])

        phase, eta, started = ["Attaching"], [10], [datetime(2026, 1, 1, tzinfo=UTC)]

        def current() -> engine_snapshot.TenantSnapshot:
            p = progress.ProgressSnapshot(4, 1, 40, 10, started[0], eta[0])
            return dataclasses.replace(snap(phase[0]), progress=p)

        w = status.StatusWriter(patch, current, 0.01)
        await w.flush()
        eta[0] = 9
        await w.flush()
        assert len(written) == 1
        phase[0] = "Active"
        await w.flush()
        assert len(written) == 2
        started[0], eta[0] = datetime(2026, 1, 2, tzinfo=UTC), 0
        restarted = status.StatusWriter(patch, current, 0.01, old=written[-1])
        await restarted.flush()
        assert len(written) == 2, "a restart wrote an Active status that differs only in startedAt and ETA"

    asyncio.run(main())
