"""`k8s.controller.TenantController` in process: a scripted engine tenant (conftest.StandIn) and
a Kube that keeps the status in memory. Each test names the defect of issue 22 it guards; the
last ones check the retries of a Broken tenant and of a transient failure against their
backoffs (the formulas themselves: tests/unit/test_backoff.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pageserver_operator import backoff
from pageserver_operator.api import v1alpha1
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import ids
from pageserver_operator.k8s import controller

from .conftest import NS, PAGESERVER, TID, FakeKube, StandIn, body, settings, until


def make(
    kube: FakeKube, tmp_path: Path, b: dict[str, Any], **overrides: Any
) -> tuple[controller.TenantController, StandIn]:
    t = StandIn(ids.TenantId.parse(TID), tmp_path)
    kube.add(b)
    ctl = controller.TenantController((NS, b["metadata"]["name"]), b, t, kube, settings(**overrides), True)  # type: ignore[arg-type]
    return ctl, t


def test_spec_change_during_the_attach_is_applied_and_observed_generation_says_what_was(
    kube: FakeKube, tmp_path: Path
) -> None:
    """Defect 2: a spec change arriving while the attach runs (outside the controller's sleep)
    is applied afterwards; until then observedGeneration stays the generation attached with."""

    async def main() -> None:
        ctl, t = make(kube, tmp_path, body("a", TID, generation=1, config={"gcPeriod": "1 h"}))
        release = asyncio.Event()

        async def slow(self: StandIn, config: Any) -> None:
            await release.wait()
            await StandIn.become_active(self, config)

        t.on_start = slow
        t.apply_gate = asyncio.Event()
        ctl.start()
        await until(lambda: t.count("start") == 1, "the attach to start")
        ctl.update(body("a", TID, generation=2, config={"gcPeriod": "2 h"}))
        release.set()
        await until(lambda: t.count("apply_config") == 1, "the new spec to be applied")
        assert ("apply_config", {"gcPeriod": "2 h"}) in t.calls
        await ctl.writer.flush()
        assert kube.status("a")["phase"] == "Active"
        assert kube.status("a")["observedGeneration"] == 1, "observedGeneration claims a spec not yet applied"
        t.apply_gate.set()
        await until(lambda: kube.status("a").get("observedGeneration") == 2, "observedGeneration 2")
        await ctl.close()

    asyncio.run(main())


def test_retry_annotation_during_a_failing_attempt_is_not_lost(kube: FakeKube, tmp_path: Path) -> None:
    """Defect 2: the retry annotation set while an attempt is still running (its failure not yet
    known) retries at once, not after the backoff (an hour here)."""

    async def main() -> None:
        ctl, t = make(kube, tmp_path, body("b", TID))
        release = asyncio.Event()

        async def fail_first(self: StandIn, config: Any) -> None:
            if self.count("start") == 1:
                await release.wait()
                raise EngineError("InvalidIndexPart", "index is garbage")
            await StandIn.become_active(self, config)

        t.on_start = fail_first
        ctl.start()
        await until(lambda: t.count("start") == 1, "the first attempt")
        ctl.update(body("b", TID, annotations={v1alpha1.RETRY_ANNOTATION: "1"}))
        release.set()
        await until(lambda: t.count("start") == 2, "the retry asked for by the annotation", timeout=3)
        await until(lambda: kube.status("b").get("phase") == "Active", "Active")
        await ctl.close()

    asyncio.run(main())


def test_backoff_grows_when_only_the_sync_finds_the_failure(kube: FakeKube, tmp_path: Path) -> None:
    """Defect 4: bring-up succeeds, every sync fails permanently: attempts grow 1, 2, 3 (and the
    delay doubles) instead of restarting at 1 after each successful load."""

    async def main() -> None:
        ctl, t = make(kube, tmp_path, body("c", TID), sync_period=0.01, retry_initial=0.01, retry_max=10.0)

        async def split_brain(self: StandIn, _: Any) -> None:
            raise EngineError("SplitBrainDetected", "another writer")

        t.on_sync = split_brain
        ctl.start()
        await until(lambda: (kube.status("c").get("attempts") or 0) >= 3, "attempts to reach 3", timeout=10)
        await ctl.close()
        seen: list[int] = []
        for p in kube.patches_of("c"):
            if p.get("attempts") and p["attempts"] not in seen:
                seen.append(p["attempts"])
        assert seen[:3] == [1, 2, 3], seen

    asyncio.run(main())


def test_attempts_reset_once_a_sync_succeeds(kube: FakeKube, tmp_path: Path) -> None:
    async def main() -> None:
        ctl, t = make(kube, tmp_path, body("c2", TID), sync_period=0.01, retry_initial=0.01)

        async def fail_twice(self: StandIn, _: Any) -> None:
            if self.count("sync") <= 2:
                raise EngineError("SplitBrainDetected", "another writer")

        t.on_sync = fail_twice
        ctl.start()
        await until(lambda: t.count("sync") >= 4, "two successful syncs", timeout=10)
        await until(lambda: kube.status("c2").get("attempts") == 0, "attempts reset")
        await ctl.close()

    asyncio.run(main())


def test_transient_sync_message_clears_once_the_error_clears(kube: FakeKube, tmp_path: Path) -> None:
    """Defect 5."""

    async def main() -> None:
        ctl, t = make(kube, tmp_path, body("d", TID), sync_period=0.01)
        seen = asyncio.Event()

        async def flaky(self: StandIn, _: Any) -> None:
            if self.count("sync") == 1:
                raise EngineError("RemoteStorageUnavailable", "503 Slow Down", transient=True)
            await seen.wait()

        t.on_sync = flaky
        ctl.start()
        await until(lambda: "503" in (kube.status("d").get("message") or ""), "the transient message")
        seen.set()
        await until(lambda: t.count("sync") >= 3, "later syncs")
        await until(lambda: kube.status("d").get("message") == "1 timeline active", "the message to clear")
        ready = next(c for c in kube.status("d")["conditions"] if c["type"] == "Ready")
        assert "503" not in ready["message"]
        await ctl.close()

    asyncio.run(main())


def test_restart_clears_a_stale_retry_time_at_once(kube: FakeKube, tmp_path: Path) -> None:
    """Defect 6: after a restart, a Broken tenant's old nextRetryTime does not stay while the
    first bring-up runs (it is running now); attempts keep counting."""

    async def main() -> None:
        old = {"phase": "Broken", "reason": "InvalidIndexPart", "message": "x", "attempts": 3,
               "nextRetryTime": "2099-01-01T00:00:00Z"}  # fmt: skip
        ctl, t = make(kube, tmp_path, body("e", TID, status=old))
        kube.objects[(NS, "e")]["status"] = {**old, "placement": {"attached": PAGESERVER}}
        release = asyncio.Event()

        async def slow(self: StandIn, config: Any) -> None:
            from pageserver_operator.engine.snapshot import TenantState

            self._set_state(TenantState.ATTACHING, "AttachStarted", "attaching")
            await release.wait()
            await StandIn.become_active(self, config)

        t.on_start = slow
        ctl.start()
        await until(lambda: t.count("start") == 1, "the bring-up")
        await ctl.writer.flush()
        assert "nextRetryTime" not in kube.status("e"), kube.status("e")
        assert kube.status("e")["attempts"] == 3
        release.set()
        await until(lambda: kube.status("e").get("phase") == "Active", "Active")
        await ctl.close()

    asyncio.run(main())


def test_transient_retries_add_no_history_entries(
    kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 6: three transient failures of an attach add one Attaching entry, not two each."""
    monkeypatch.setattr(controller, "TRANSIENT_BACKOFF", backoff.Backoff(base=0.01, factor=2.0, cap=60.0))

    async def main() -> None:
        ctl, t = make(kube, tmp_path, body("f", TID))

        async def flaky(self: StandIn, config: Any) -> None:
            from pageserver_operator.engine.snapshot import TenantState

            self._set_state(TenantState.ATTACHING, "AttachStarted", "attaching")
            if self.count("start") <= 3:
                raise EngineError("RemoteStorageUnavailable", "connection refused", transient=True)
            self._set_state(TenantState.ACTIVE, "Active", "1 timeline active")

        t.on_start = flaky
        ctl.start()
        await until(lambda: kube.status("f").get("phase") == "Active", "Active", timeout=20)
        await ctl.close()
        phases = [h["phase"] for h in kube.status("f")["history"]]
        assert phases == ["Attaching", "Active"], phases

    asyncio.run(main())


def test_events_only_for_what_needs_attention(kube: FakeKube, tmp_path: Path) -> None:
    """Load: no Event repeats the status (AttachStarted, Active); three attempts failing the
    same way post one Warning (plus one RetryScheduled each), not one Warning per attempt."""

    async def main() -> None:
        ctl, t = make(kube, tmp_path, body("g", TID), retry_initial=0.01, retry_max=0.02)

        async def fail_thrice(self: StandIn, config: Any) -> None:
            from pageserver_operator.engine.snapshot import TenantState

            self._set_state(TenantState.ATTACHING, "AttachStarted", "attaching")
            if self.count("start") <= 3:
                raise EngineError("RemoteLayerMissing", "layer X is missing")
            self._set_state(TenantState.ACTIVE, "Active", "1 timeline active")

        t.on_start = fail_thrice
        ctl.start()
        await until(lambda: kube.status("g").get("phase") == "Active", "Active", timeout=10)
        await ctl.close()
        reasons = [e[2] for e in kube.events]
        assert reasons == ["RemoteLayerMissing"] + ["RetryScheduled"] * 3, reasons

    asyncio.run(main())


def test_an_upload_failing_while_active_posts_one_warning_per_distinct_failure(
    kube: FakeKube, tmp_path: Path
) -> None:
    """Issue 14 defect 11: uploads that keep failing while Active (the bucket gone, access
    denied) are an Event, not only the Synced condition: one Warning per distinct failure,
    none again while it persists, a new one when it comes back after clearing."""

    async def main() -> None:
        ctl, t = make(kube, tmp_path, body("u", TID), sync_period=3600)
        ctl.start()
        await until(lambda: kube.status("u").get("phase") == "Active", "Active")
        denied = ("RemoteStorageRejected", "timeline x: upload of layer y: access denied (attempt 3)")
        t.scripted_upload_error = denied
        t._notify()
        t._notify()  # the same failure again: no second Event
        await until(lambda: len(kube.events) >= 1, "the Warning")
        t.scripted_upload_error = None
        t._notify()
        t.scripted_upload_error = denied
        t._notify()
        await until(lambda: len(kube.events) >= 2, "the Warning after the failure came back")
        await ctl.close()
        assert [(e[1], e[2]) for e in kube.events] == [("Warning", "RemoteStorageRejected")] * 2, kube.events

    asyncio.run(main())


# ---- the retry of a Broken tenant and of a transient failure (their backoffs) ---------------------


def test_a_broken_attempt_schedules_its_retry_on_the_capped_backoff(kube: FakeKube, tmp_path: Path) -> None:
    """``attempts`` counts the failed bring-ups, ``nextRetryTime`` is now + `retry_delay`
    (RETRY_INITIAL doubling per attempt up to RETRY_MAX), and the RetryScheduled Event says how
    long; the retry annotation retries before it."""

    async def main() -> None:
        ctl, t = make(kube, tmp_path, body("r", TID), retry_initial=3600.0, retry_max=5400.0)

        async def fail_twice(self: StandIn, config: Any) -> None:
            if self.count("start") <= 2:
                raise EngineError("InvalidIndexPart", "index is garbage")
            await StandIn.become_active(self, config)

        t.on_start = fail_twice
        ctl.start()
        for attempt, delay, token in ((1, 3600, "1"), (2, 5400, "2")):  # 7200 capped at 5400
            await until(lambda a=attempt: kube.status("r").get("attempts") == a, f"attempt {attempt}")  # type: ignore[misc]
            st = kube.status("r")
            when = datetime.strptime(st["nextRetryTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            ahead = (when - datetime.now(UTC)).total_seconds()
            assert delay - 5 <= ahead <= delay + 1, (attempt, st["nextRetryTime"], ahead)
            await until(lambda a=attempt: len(kube.events) >= a + 1, "the RetryScheduled Event")  # type: ignore[misc]
            assert kube.events[-1][1:] == (
                "Normal", "RetryScheduled", f"attempt {attempt} failed (InvalidIndexPart); retrying in {delay} s"
            )
            ctl.update(body("r", TID, annotations={v1alpha1.RETRY_ANNOTATION: token}))
        await until(lambda: kube.status("r").get("phase") == "Active", "Active")
        await ctl.close()
        assert t.count("start") == 3

    asyncio.run(main())


def test_a_transient_bring_up_failure_retries_on_the_transient_backoff_and_counts_no_attempt(
    kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transient failure (remote storage down) is no Broken attempt: the bring-up is retried
    after `controller.TRANSIENT_BACKOFF`'s delay for the n-th failure in a row, with no
    ``attempts``, ``nextRetryTime`` or RetryScheduled Event."""
    asked: list[int] = []

    class Recording:
        def delay(self, attempt: int) -> float:
            asked.append(attempt)
            return 0.001

    monkeypatch.setattr(controller, "TRANSIENT_BACKOFF", Recording())

    async def main() -> None:
        ctl, t = make(kube, tmp_path, body("tr", TID))

        async def flaky(self: StandIn, config: Any) -> None:
            if self.count("start") <= 3:
                raise EngineError("RemoteStorageUnavailable", "connection refused", transient=True)
            await StandIn.become_active(self, config)

        t.on_start = flaky
        ctl.start()
        await until(lambda: kube.status("tr").get("phase") == "Active", "Active")
        await ctl.close()
        st = kube.status("tr")
        assert asked == [1, 2, 3]
        assert (st.get("attempts"), st.get("nextRetryTime")) == (0, None), st
        assert kube.events == []

    asyncio.run(main())


def test_the_transient_backoff_is_one_second_doubling_to_a_minute() -> None:
    assert [controller.TRANSIENT_BACKOFF.delay(n) for n in (1, 2, 3, 7, 8, 100)] == [1, 2, 4, 60, 60, 60]
    assert [controller.retry_delay(n, 30.0, 3600.0) for n in (0, 1, 2, 8)] == [30, 30, 60, 3600]


def test_at_most_max_concurrent_attaches_bring_ups_run_and_the_others_say_they_wait(
    kube: FakeKube, tmp_path: Path
) -> None:
    """Issue 19 item 4: the manager's bound on bring-ups at once (``max_concurrent_attaches``,
    one semaphore shared by its controllers): a burst of 5 with a bound of 2 runs 2 at a time,
    the waiting ones say so in their message, and every one ends Active."""

    async def main() -> None:
        limit = 2
        slots = asyncio.Semaphore(limit)
        running = 0
        most = 0
        gate = asyncio.Event()

        async def slow(self: StandIn, config: Any) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await gate.wait()
            running -= 1
            await StandIn.become_active(self, config)

        ctls: list[tuple[controller.TenantController, StandIn]] = []
        for i in range(5):
            tid = f"{i + 1:032x}"
            b = body(f"t{i}", tid)
            t = StandIn(ids.TenantId.parse(tid), tmp_path)
            t.on_start = slow
            kube.add(b)
            ctl = controller.TenantController(
                (NS, f"t{i}"), b, t, kube, settings(max_concurrent_attaches=limit), True, slots  # type: ignore[arg-type]
            )
            ctls.append((ctl, t))
            ctl.start()
        await until(lambda: running == limit, "two bring-ups running")
        waiting = [t for _, t in ctls if t.count("start") == 0]
        await until(lambda: all("waiting for a free attach slot" in t.message for t in waiting),
                    "the waiting ones to say so")
        assert len(waiting) == 3, [t.message for _, t in ctls]
        gate.set()
        await until(lambda: all(t.state is not None and t.state.value == "Active" for _, t in ctls), "all Active")
        assert most == limit, most
        for ctl, _ in ctls:
            await ctl.close()

    asyncio.run(main())
