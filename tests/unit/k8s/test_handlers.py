"""The kopf handlers and `ownership.Registry` in process: the real handler functions called
as kopf calls them (``tenant_claims`` is kopf's index: every Tenant naming a tenant id), with a
scripted engine and an in-memory Kube. Ownership, the finalizer, and ``DELETED`` (issue 22
defects 1 and 3)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest

from pageserver_operator.formats import ids
from pageserver_operator.k8s import handlers, ownership

from .conftest import NS, TID, FakeKube, StandIn, StandInManager, body, registry, until

OLD, NEW = "2026-12-01T00:00:00Z", "2026-12-01T00:05:00Z"


@pytest.fixture
def reg(tmp_path: Path, kube: FakeKube) -> Iterator[ownership.Registry]:
    r = registry(tmp_path, kube)
    handlers.REGISTRY = r
    yield r
    handlers.REGISTRY = None


def index(*bodies: dict[str, Any]) -> dict[str, list[ownership.Claim]]:
    """kopf's index as the handlers get it."""
    out: dict[str, list[ownership.Claim]] = {}
    for b in bodies:
        out.setdefault(b["spec"]["tenantId"], []).append(ownership.claim_of(b))
    return out


async def event(
    b: dict[str, Any], claims: dict[str, list[ownership.Claim]], type_: str | None = None
) -> None:
    await handlers.tenant_event(
        type=type_, body=kopf.Body(b), namespace=NS, name=b["metadata"]["name"], tenant_claims=claims
    )


async def delete(b: dict[str, Any], claims: dict[str, list[ownership.Claim]]) -> None:
    await handlers.tenant_deleted(
        body=kopf.Body(b), namespace=NS, name=b["metadata"]["name"], retry=0, tenant_claims=claims
    )


def engine(reg: ownership.Registry) -> StandIn:
    m: StandInManager = reg.manager  # type: ignore[assignment]
    return m.made[-1]


def test_after_a_restart_the_oldest_tenant_owns_even_if_the_copy_is_seen_first(
    reg: ownership.Registry, kube: FakeKube
) -> None:
    """Defect 1: ownership does not depend on which event arrives first (a restart lists the
    copy first: "copy" < "owner" by name): the copy never writes its config into the tenant."""

    async def main() -> None:
        owner = body("owner", TID, created=OLD, config={"gcPeriod": "1 h"})
        copy = body("copy", TID, created=NEW, config={"gcPeriod": "9 h"})
        for b in (owner, copy):
            kube.add(b)
        claims = index(owner, copy)
        await event(copy, claims)
        await event(owner, claims)
        t = engine(reg)
        await until(lambda: kube.status("owner").get("phase") == "Active", "the owner Active")
        await until(lambda: kube.status("copy").get("reason") == "TenantIdInUse", "the copy refused")
        assert [c for c in t.calls if c[0] == "start"] == [("start", {"gcPeriod": "1 h"})]
        assert reg.owners[ids.TenantId.parse(TID)] == (NS, "owner")
        await handlers.shutdown()

    asyncio.run(main())


def test_a_duplicate_shows_its_own_status_never_the_owners(reg: ownership.Registry, kube: FakeKube) -> None:
    """Defect 1: the copy is Broken TenantIdInUse with Ready=False, no timelines, no progress and
    no history of the owner's (``kubectl wait --for=condition=Ready`` must not succeed on it)."""

    async def main() -> None:
        owner, copy = body("owner", TID, created=OLD), body("copy", TID, created=NEW)
        for b in (owner, copy):
            kube.add(b)
        await event(owner, index(owner))
        await until(lambda: kube.status("owner").get("phase") == "Active", "the owner Active")
        await event(copy, index(owner, copy))
        await until(lambda: kube.status("copy").get("reason") == "TenantIdInUse", "the copy refused")
        await handlers.shutdown()
        st = kube.status("copy")
        ready = {c["type"]: c for c in st["conditions"]}["Ready"]
        assert (st["phase"], ready["status"], ready["reason"]) == ("Broken", "False", "TenantIdInUse")
        assert "owner" in st["message"]
        assert [h["phase"] for h in st["history"]] == ["Broken"]
        assert "timelines" not in st and "progress" not in st
        assert ("copy", "Warning", "TenantIdInUse") in [e[:3] for e in kube.events]

    asyncio.run(main())


def test_deleting_the_copy_never_detaches_the_owners_tenant_even_after_a_restart(
    reg: ownership.Registry, kube: FakeKube
) -> None:
    """Defect 1: after a restart the copy's delete handler may run before the owner's first
    event: it must not take the tenant over and detach it."""

    async def main() -> None:
        owner, copy = body("owner", TID, created=OLD), body("copy", TID, created=NEW, deleting=True)
        for b in (owner, copy):
            kube.add(b)
        claims = index(owner, copy)
        await delete(copy, claims)
        t = engine(reg)
        assert t.count("detach") == 0 and t.count("start") == 0
        claims.get(TID, [None, None]).pop()
        await event(owner, claims)
        await until(lambda: kube.status("owner").get("phase") == "Active", "the owner Active")
        assert t.count("detach") == 0
        await handlers.shutdown()

    asyncio.run(main())


def test_a_waiting_copy_takes_over_when_the_owner_is_deleted(
    reg: ownership.Registry, kube: FakeKube
) -> None:
    """Defect 1: a copy is re-checked when the owner goes; it becomes the owner and starts."""

    async def main() -> None:
        owner, copy = body("owner", TID, created=OLD), body("copy", TID, created=NEW)
        for b in (owner, copy):
            kube.add(b)
        claims = index(owner, copy)
        await event(owner, claims)
        await event(copy, claims)
        await until(lambda: kube.status("owner").get("phase") == "Active", "the owner Active")
        await until(lambda: kube.status("copy").get("reason") == "TenantIdInUse", "the copy refused")
        first = engine(reg)
        owner["metadata"]["deletionTimestamp"] = "2026-12-02T00:00:00Z"
        await delete(owner, claims)
        assert first.count("detach") == 1
        await until(lambda: kube.status("copy").get("phase") == "Active", "the copy Active")
        assert reg.owners[ids.TenantId.parse(TID)] == (NS, "copy")
        await handlers.shutdown()

    asyncio.run(main())


def test_nothing_starts_before_the_finalizer_is_there(reg: ownership.Registry, kube: FakeKube) -> None:
    """Defect 3: a Tenant deleted before kopf added the finalizer must not leave a controller."""

    async def main() -> None:
        b = body("early", TID, finalizer=False)
        kube.add(b)
        await event(b, index(b), "ADDED")
        assert not reg.controllers
        assert not [t for t in reg.manager.made if t.calls]  # type: ignore[attr-defined]

    asyncio.run(main())


def test_deleted_without_the_delete_handler_stops_and_releases(
    reg: ownership.Registry, kube: FakeKube
) -> None:
    """Defect 3: the finalizer removed by hand: DELETED stops the controller (no more syncs) and
    releases the tenant id, so a new Tenant naming it owns it (no TenantIdInUse)."""

    async def main() -> None:
        gone = body("gone", TID, created=OLD)
        kube.add(gone)
        await event(gone, index(gone))
        await until(lambda: kube.status("gone").get("phase") == "Active", "Active")
        first = engine(reg)
        await event(gone, {}, "DELETED")
        assert not reg.controllers and not reg.owners
        assert ("detach", None) not in first.calls
        new = body("new", TID, created=NEW)
        kube.add(new)
        await event(new, index(new))
        await until(lambda: kube.status("new").get("phase") == "Active", "the new Tenant Active")
        await handlers.shutdown()

    asyncio.run(main())


def test_a_detach_after_a_restart_shows_stopping(reg: ownership.Registry, kube: FakeKube) -> None:
    """Defect 6: the delete handler of a Tenant whose controller never ran in this process
    (deleted while the operator was down) shows Stopping while it detaches."""

    async def main() -> None:
        b = body(
            "leaving", TID, deleting=True, status={"phase": "Active", "reason": "Active", "message": "m"}
        )
        kube.add(b)
        kube.objects[(NS, "leaving")]["status"] = dict(b["status"])
        started = asyncio.Event()
        release = asyncio.Event()

        async def slow(self: StandIn, _: Any) -> None:
            started.set()
            await release.wait()

        m: StandInManager = reg.manager  # type: ignore[assignment]
        m.get(ids.TenantId.parse(TID)).on_detach = slow
        task = asyncio.create_task(delete(b, index(b)))
        await started.wait()
        await until(lambda: kube.status("leaving").get("phase") == "Stopping", "Stopping shown")
        release.set()
        await task

    asyncio.run(main())


def test_no_diff_base_annotation() -> None:
    """Load: kopf keeps no ``last-handled-configuration`` annotation (nothing reads it)."""
    settings = kopf.OperatorSettings()
    handlers.configure_kopf(settings=settings)
    patch = kopf.Patch()
    settings.persistence.diffbase_storage.store(
        body=kopf.Body(body("x", TID)), patch=patch, essence={"spec": {}}
    )  # type: ignore[arg-type]
    assert not patch


def test_kopf_runs_a_worker_for_every_tenant_of_the_initial_listing() -> None:
    """Restart defect (bench.controlplane 2000: none of 2,000 Tenants Active after 900 s): with
    the `tenant_claims` index each kopf worker waits for the whole initial listing to be indexed
    while it holds its slot, so any worker limit below the number of Tenants deadlocks the start.
    Shown with a limit of 10 and 30 Tenants (docs/performance.md); the bound on the work itself is
    ``max_concurrent_attaches``."""
    settings = kopf.OperatorSettings()
    settings.queueing.worker_limit = 1000  # kopf's value before configure (ours, before the fix)
    handlers.configure_kopf(settings=settings)
    assert settings.queueing.worker_limit is None


def test_a_copy_waiting_for_an_owner_that_never_got_its_finalizer_takes_over_when_it_vanishes(
    reg: ownership.Registry, kube: FakeKube
) -> None:
    """Defects 1 and 3: the older Tenant is deleted before kopf added its finalizer (it never had a
    controller); the younger copy, refused meanwhile, owns the id once the older one is gone."""

    async def main() -> None:
        owner, copy = body("owner", TID, created=OLD, finalizer=False), body("copy", TID, created=NEW)
        for b in (owner, copy):
            kube.add(b)
        claims = index(owner, copy)
        await event(owner, claims, "ADDED")
        await event(copy, claims)
        await until(lambda: kube.status("copy").get("reason") == "TenantIdInUse", "the copy refused")
        await event(owner, index(copy), "DELETED")
        await until(lambda: kube.status("copy").get("phase") == "Active", "the copy Active")
        await handlers.shutdown()

    asyncio.run(main())


# ---- placement (issue 17): a manager acts only on the Tenants placed on it -------------------------


def test_a_tenant_placed_on_another_pageserver_starts_nothing_here(reg: ownership.Registry, kube: FakeKube) -> None:
    async def main() -> None:
        b = body("elsewhere", TID, attached="ps-other")
        kube.add(b)
        await event(b, index(b))
        assert not reg.controllers
        m: StandInManager = reg.manager  # type: ignore[assignment]
        assert all(t.count("start") == 0 for t in m.made)

    asyncio.run(main())


def test_a_tenant_moved_away_stops_here_and_its_copy_is_let_go(reg: ownership.Registry, kube: FakeKube) -> None:
    async def main() -> None:
        b = body("moving", TID)
        kube.add(b)
        await event(b, index(b))
        await until(lambda: kube.status("moving").get("phase") == "Active", "Active here")
        t = engine(reg)
        (t.paths.tenant_dir).mkdir(parents=True)
        writes = len(kube.patches)
        moved = body("moving", TID, attached="ps-other", status={"placement": {"generation": 1}})
        await event(moved, index(moved))
        assert not reg.controllers
        # it was Active and no newer generation exists yet: detached (uploads first), then its copy is gone
        assert t.count("detach") == 1, t.calls
        assert len(kube.patches) == writes, "a moved tenant's status is the other manager's now"
        assert ("moving", "Normal", "CopyDetached") in [e[:3] for e in kube.events]

    asyncio.run(main())


def test_a_copy_fenced_by_a_newer_generation_is_removed_without_a_detach(reg: ownership.Registry, kube: FakeKube) -> None:
    """After a failover (the new owner bumped the generation) the copy here is stale: removed
    at once, nothing uploaded under the fenced generation."""

    async def main() -> None:
        b = body("fenced", TID)
        kube.add(b)
        await event(b, index(b))
        await until(lambda: kube.status("fenced").get("phase") == "Active", "Active here")
        t = engine(reg)
        t.paths.tenant_dir.mkdir(parents=True)
        moved = body("fenced", TID, attached="ps-other", status={"placement": {"generation": 2}})
        await event(moved, index(moved))
        assert t.count("detach") == 0 and t.count("discard") == 1, t.calls
        assert ("fenced", "Warning", "StaleCopyRemoved") in [e[:3] for e in kube.events]

    asyncio.run(main())


def test_a_stale_copy_found_at_start_is_removed_without_a_detach(reg: ownership.Registry, kube: FakeKube) -> None:
    """After a restart (or a SIGCONT) a tenant directory on the volume whose Tenant is placed
    elsewhere is a stale copy: removed, nothing uploaded or deleted remotely."""

    async def main() -> None:
        b = body("stale", TID, attached="ps-other")
        kube.add(b)
        m: StandInManager = reg.manager  # type: ignore[assignment]
        t = m.get(ids.TenantId.parse(TID))
        t.paths.tenant_dir.mkdir(parents=True)
        (t.paths.tenant_dir / "config").write_text("")
        await event(b, index(b))
        assert t.count("discard") == 1 and t.count("detach") == 0, t.calls
        assert ("stale", "Warning", "StaleCopyRemoved") in [e[:3] for e in kube.events]

    asyncio.run(main())


def test_deleting_a_tenant_attached_elsewhere_waits_for_that_pageserver_unless_it_is_offline(
    reg: ownership.Registry, kube: FakeKube
) -> None:
    async def main() -> None:
        b = body("gone", TID, attached="ps-other", deleting=True)
        kube.add(b)
        kube.add_pageserver("ps-other", "Active")
        with pytest.raises(kopf.TemporaryError, match="attached on pageserver ps-other"):
            await delete(b, index(b))
        kube.add_pageserver("ps-other", "Offline")
        await delete(b, index(b))  # released here: the finalizer goes
        unplaced = body("never", TID, deleting=True)
        unplaced["status"]["placement"] = {}
        kube.add(unplaced)
        await delete(unplaced, index(unplaced))

    asyncio.run(main())
