"""The placement controller's passes (k8s/placement.py) over an in-memory API server: the leader
acts on the picture its watch gave it, which may lag its own writes."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from pageserver_operator.k8s import pageservers, placement

from .conftest import NS, FakeKube, body

DRAINED = "ps-a"
GROUP = (DRAINED, "ps-b", "ps-c")


def _controller(monkeypatch: pytest.MonkeyPatch, k: FakeKube, concurrency: int) -> placement.PlacementController:
    group = [
        pageservers.Observed(name, "Draining" if name == DRAINED else "Active", "Active", 1000, 0.0) for name in GROUP
    ]

    async def list_group(_k: Any, _ns: str) -> list[pageservers.Observed]:
        return group

    async def list_heartbeats(_k: Any, _ns: str) -> dict[str, str]:
        return {name: "1" for name in GROUP}

    async def patch_pageserver_status(_k: Any, _name: str, _status: dict[str, Any]) -> None:
        return None

    monkeypatch.setattr(placement.pageservers, "list_group", list_group)
    monkeypatch.setattr(placement.leases, "list_heartbeats", list_heartbeats)
    monkeypatch.setattr(placement.pageservers, "patch_status", patch_pageserver_status)
    ctl = placement.PlacementController(
        k, "ps-b", NS, failover_seconds=10.0, capacity=1000, drain_concurrency=concurrency  # type: ignore[arg-type]
    )
    monkeypatch.setattr(ctl.election, "leading", lambda now=None: True)
    return ctl


def _on_drained(k: FakeKube, ctl: placement.PlacementController, n: int) -> None:
    """``n`` Tenants attached to the drained pageserver, in the API server and in the leader's picture."""
    for i in range(n):
        t = body(f"t{i}", f"{i + 1:032x}", attached=DRAINED)
        t["metadata"]["resourceVersion"] = "1"
        k.add(t)
        ctl.observe(copy.deepcopy(t))


def _migrating(k: FakeKube) -> list[str]:
    return sorted(
        name for (_, name), obj in k.objects.items()
        if ((obj.get("status") or {}).get("placement") or {}).get("migration")
    )  # fmt: skip


def test_a_drain_counts_the_migrations_it_started_before_their_watch_events_arrive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watch delivers the leader's own writes later than the write returns; a pass that runs
    in between (another Tenant's event, the period) sees the migrations it started as not
    started, and picks the same tenants again (the first movable ones): their compare-and-swap
    writes fail, so no more than ``drainConcurrency`` are ever in flight."""
    k = FakeKube()
    ctl = _controller(monkeypatch, k, concurrency=2)
    _on_drained(k, ctl, 8)

    async def scenario() -> None:
        await ctl.run_pass()
        assert len(_migrating(k)) == 2
        # the watch events of those two writes have not arrived yet: a second pass
        await ctl.run_pass()
        assert len(_migrating(k)) == 2, f"{_migrating(k)}: more than drainConcurrency 2 in flight"
        # they arrive: still 2 (no event lost its count, none is counted twice)
        for obj in list(k.objects.values()):
            ctl.observe(copy.deepcopy(obj))
        await ctl.run_pass()
        assert len(_migrating(k)) == 2
        assert ctl.drains[DRAINED] == (6, 2)
        # one ends (the source clears it): one more starts, and its event is late again
        done = _migrating(k)[0]
        await k.patch_status(NS, done, {"status": {"placement": {"migration": None, "attached": "ps-b"}}})
        ctl.observe(copy.deepcopy(k.objects[(NS, done)]))
        await ctl.run_pass()
        await ctl.run_pass()
        assert len(_migrating(k)) == 2, _migrating(k)

    asyncio.run(scenario())


def test_a_tenant_deleted_while_it_migrates_frees_its_place_in_the_drain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    k = FakeKube()
    ctl = _controller(monkeypatch, k, concurrency=1)
    _on_drained(k, ctl, 3)

    async def scenario() -> None:
        await ctl.run_pass()
        (first,) = _migrating(k)
        gone = k.objects.pop((NS, first))
        ctl.observe(gone, gone=True)  # its DELETED event: no other event of it will come
        await ctl.run_pass()
        assert len(_migrating(k)) == 1 and _migrating(k) != [first]

    asyncio.run(scenario())
