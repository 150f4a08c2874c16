"""`k8s.generations` and the controller's use of it (DESIGN §8.2, issue 16): every bring-up by a
new process issues a new generation with a compare-and-swap, two managers never share one, and
a manager whose generation is no longer current stops writing (Broken ``Stale``, a Warning
Event, its status writes refused) until the retry annotation asks it to take over.

The Kube stand-in applies the API server's two rules (conftest.FakeKube): a resourceVersion in
a patch is a precondition, and ``status.placement.generation`` never decreases."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from pageserver_operator.engine import snapshot as engine_snapshot
from pageserver_operator.formats import ids
from pageserver_operator.formats.generation import Generation
from pageserver_operator.k8s import controller, generations

from .conftest import NS, PAGESERVER, TID, FakeKube, StandIn, body, settings, until


def place(kube: FakeKube, name: str, pageserver: str) -> None:
    """The placement leader's write: ``status.placement.attached``."""
    obj = kube.objects.get((NS, name)) or body(name, TID)
    obj.setdefault("status", {}).setdefault("placement", {})["attached"] = pageserver
    kube.add(obj)


def _controller(kube: FakeKube, tmp_path: Path, name: str, pageserver: str, **overrides: Any) -> tuple[controller.TenantController, StandIn]:
    t = StandIn(ids.TenantId.parse(TID), tmp_path)
    place(kube, name, pageserver)
    stored = kube.objects[(NS, name)]
    ctl = controller.TenantController((NS, name), stored, t, kube, settings(pageserver=pageserver, **overrides), True)  # type: ignore[arg-type]
    return ctl, t


def test_every_start_of_a_manager_issues_a_new_generation(kube: FakeKube, tmp_path: Path) -> None:
    async def main() -> None:
        seen = []
        for restart in range(20):
            ctl, t = _controller(kube, tmp_path, "g", "ps-0")
            ctl.start()
            await until(lambda t=t: t.state is engine_snapshot.TenantState.ACTIVE, "Active")  # type: ignore[misc]
            assert t.generation == Generation(restart + 1)
            seen.append(kube.status("g")["placement"]["generation"])
            await ctl.close()
        assert seen == list(range(1, 21)), seen
        assert kube.status("g")["placement"]["attached"] == "ps-0"

    asyncio.run(main())


def test_concurrent_bumps_never_share_a_generation(kube: FakeKube) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    kube.add(body("c", TID))

    async def main() -> list[generations.Issued]:
        async def one(i: int) -> generations.Issued:
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
            return await generations.issue(kube, NS, "c", PAGESERVER)  # type: ignore[arg-type]

        return list(await asyncio.gather(*(one(i) for i in range(12))))

    issued = asyncio.run(main())
    values = [i.generation.value for i in issued]
    assert sorted(values) == list(range(1, 13)), (seed, values)


def test_the_previous_generation_is_adopted_only_from_the_same_manager(kube: FakeKube) -> None:
    kube.add(body("p", TID))

    async def main() -> None:
        place(kube, "p", "ps-0")
        first = await generations.issue(kube, NS, "p", "ps-0")  # type: ignore[arg-type]
        assert first == generations.Issued(Generation(1), None)
        again = await generations.issue(kube, NS, "p", "ps-0")  # type: ignore[arg-type]
        assert again == generations.Issued(Generation(2), Generation(1))
        place(kube, "p", "ps-1")
        other = await generations.issue(kube, NS, "p", "ps-1")  # type: ignore[arg-type]
        assert other == generations.Issued(Generation(3), None)
        assert await generations.is_current(kube, NS, "p", Generation(3), "ps-1")  # type: ignore[arg-type]
        assert not await generations.is_current(kube, NS, "p", Generation(2), "ps-1")  # type: ignore[arg-type]
        assert not await generations.is_current(kube, NS, "p", Generation(3), "ps-0")  # type: ignore[arg-type]


def test_only_the_pageserver_the_tenant_is_placed_on_may_bump(kube: FakeKube) -> None:
    kube.add(body("q", TID, attached="ps-1"))

    async def main() -> None:
        try:
            await generations.issue(kube, NS, "q", "ps-0")  # type: ignore[arg-type]
        except generations.PlacedElsewhere as e:
            assert "placed on ps-1, not ps-0" in str(e)
        else:
            raise AssertionError("ps-0 bumped the generation of a tenant placed on ps-1")
        assert not kube.bumps_of("q")

    asyncio.run(main())

    asyncio.run(main())


def test_a_stale_manager_stops_and_its_status_writes_are_refused(kube: FakeKube, tmp_path: Path) -> None:
    async def main() -> None:
        a, ta = _controller(kube, tmp_path, "s", "ps-a")
        a.start()
        await until(lambda: ta.state is engine_snapshot.TenantState.ACTIVE, "A Active")
        b, tb = _controller(kube, tmp_path, "s", "ps-b")
        b.start()
        await until(lambda: tb.state is engine_snapshot.TenantState.ACTIVE, "B Active")
        assert kube.status("s")["placement"] == {"generation": 2, "attached": "ps-b"}
        # A writes again (anything changes): the API server refuses it, A learns it is stale
        ta.note("a change of A's")
        await until(lambda: a.stale, "A to find itself stale")
        assert ta.state is engine_snapshot.TenantState.BROKEN and ta.reason == "Stale", (ta.reason, ta.message)
        await until(lambda: any(e[2] == "Stale" for e in kube.events), "a Stale Event")
        assert kube.status("s")["placement"]["generation"] == 2
        assert kube.status("s")["phase"] == "Active", "the stale manager overwrote the current one's status"
        syncs = ta.count("sync")
        # a spec change does not make A take the tenant back ...
        a.update(body("s", TID, generation=2))
        await asyncio.sleep(0.05)
        assert not kube.bumps_of("s")[2:], kube.bumps_of("s")
        assert ta.count("sync") == syncs and ta.count("start") == 1
        # ... the retry annotation does, once the tenant is placed on A again
        place(kube, "s", "ps-a")
        a.update(body("s", TID, generation=2, annotations={"pageserver.dev/retry": "1"}))
        await until(lambda: ta.state is engine_snapshot.TenantState.ACTIVE and ta.generation == Generation(3), "A takes over")
        assert kube.status("s")["placement"] == {"generation": 3, "attached": "ps-a"}
        await a.close()
        await b.close()

    asyncio.run(main())


def test_a_bump_goes_past_the_newest_generation_in_remote_storage(kube: FakeKube, tmp_path: Path) -> None:
    """A second Tenant resource naming the same tenant and bucket has a counter of its own: the
    bump goes past the indexes the other one left in remote storage."""

    async def main() -> None:
        ctl, t = _controller(kube, tmp_path, "f", "ps-0")
        t.remote_newest = Generation(5)
        ctl.start()
        await until(lambda: t.state is engine_snapshot.TenantState.ACTIVE, "Active")
        assert t.generation == Generation(6) and kube.bumps_of("f") == [6]
        await ctl.close()

    asyncio.run(main())
