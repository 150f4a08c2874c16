"""`k8s.leases`: heartbeats and the placement leader's election, against a stand-in of the
Lease API with the API server's compare-and-swap (a replace carrying an old resourceVersion
is a conflict)."""

from __future__ import annotations

import asyncio
import copy
import random
from typing import Any
from unittest import mock

from pageserver_operator.k8s import kube, leases


class FakeCoordination:
    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.rv = 0

    def _stamp(self, body: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(self.rv)
        self.leases[body["metadata"]["name"]] = body
        return copy.deepcopy(body)

    def read_namespaced_lease(self, name: str, namespace: str) -> dict[str, Any] | None:
        got = self.leases.get(name)
        return copy.deepcopy(got) if got else None

    def create_namespaced_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        if body["metadata"]["name"] in self.leases:
            raise kube.Conflict("exists")
        return self._stamp(body)

    def replace_namespaced_lease(self, name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        stored = self.leases.get(name)
        if stored is None:
            return None  # type: ignore[return-value]
        if body["metadata"].get("resourceVersion") != stored["metadata"]["resourceVersion"]:
            raise kube.Conflict("changed")
        return self._stamp(body)

    def patch_namespaced_lease(self, name: str, namespace: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        stored = self.leases.get(name)
        if stored is None:
            return None
        stored = copy.deepcopy(stored)
        stored["spec"].update(patch["spec"])
        return self._stamp(stored)

    def list_namespaced_lease(self, namespace: str, label_selector: str = "") -> dict[str, Any]:
        return {"items": [copy.deepcopy(v) for v in self.leases.values() if label_selector in (v["metadata"].get("labels") or {})]}


class FakeKube:
    def __init__(self, coord: FakeCoordination) -> None:
        self.coordination = coord

    async def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return fn(*args, **kwargs)


def test_a_heartbeat_is_created_then_renewed_and_listed() -> None:
    coord = FakeCoordination()

    async def main() -> None:
        hb = leases.Heartbeat(FakeKube(coord), "ns", "ps-0", 30.0)  # type: ignore[arg-type]
        await hb.renew()
        first = await leases.list_heartbeats(FakeKube(coord), "ns")  # type: ignore[arg-type]
        await hb.renew()
        second = await leases.list_heartbeats(FakeKube(coord), "ns")  # type: ignore[arg-type]
        assert set(first) == {"ps-0"} and first != second

    asyncio.run(main())


def test_one_leader_at_a_time_and_a_dead_leader_is_replaced_after_the_lease_duration() -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    coord = FakeCoordination()
    clock = [1000.0]

    async def main() -> None:
        with mock.patch.object(leases.time, "monotonic", lambda: clock[0]):
            cands = [leases.LeaderElection(FakeKube(coord), "ns", f"ps-{i}", 10.0) for i in range(3)]  # type: ignore[arg-type]
            results = await asyncio.gather(*(c.step() for c in cands))
            assert sum(results) == 1, results
            leader = results.index(True)
            for _ in range(20):  # renewals keep it; nobody else wins meanwhile
                clock[0] += rng.uniform(0.5, 3.0)
                for i in rng.sample(range(3), 3):
                    won = await cands[i].step()
                    assert won == (i == leader), (seed, i, leader)
            # the leader dies: the others take over only after watching `duration` without renewals
            dead = leader
            clock[0] += 5.0
            assert not any([await cands[i].step() for i in range(3) if i != dead])
            clock[0] += 10.1
            won = [await cands[i].step() for i in range(3) if i != dead]
            assert sum(won) == 1, won
            # the dead one, resumed (a SIGSTOP ended), no longer counts as leading and loses the CAS
            assert not cands[dead].leading()
            assert not await cands[dead].step()

    asyncio.run(main())


def test_a_restarted_leader_leads_again_at_once_and_a_released_lease_is_taken_at_once() -> None:
    coord = FakeCoordination()
    clock = [0.0]

    async def main() -> None:
        with mock.patch.object(leases.time, "monotonic", lambda: clock[0]):
            first = leases.LeaderElection(FakeKube(coord), "ns", "ps-0", 10.0)  # type: ignore[arg-type]
            assert await first.step()
            again = leases.LeaderElection(FakeKube(coord), "ns", "ps-0", 10.0)  # type: ignore[arg-type]
            assert await again.step(), "the same pageserver restarted: it holds the lease already"
            await again.release()
            other = leases.LeaderElection(FakeKube(coord), "ns", "ps-1", 10.0)  # type: ignore[arg-type]
            assert await other.step(), "a released lease (no holder) is taken at once"

    asyncio.run(main())
