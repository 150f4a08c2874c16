"""`k8s.status` in process: what the status writer sends, and how often (issue 22: load,
smaller defects; issue 20: an empty ``Timelines:`` and a stale ``progress`` of a Broken tenant)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pageserver_operator.engine import progress
from pageserver_operator.engine import snapshot as engine_snapshot
from pageserver_operator.formats import ids
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
