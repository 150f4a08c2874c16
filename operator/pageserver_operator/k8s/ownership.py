"""Which Tenant resource owns a tenant id on this volume, and the registry of every controller.

Ownership: only one resource may own a tenant id on this volume. The owner is the oldest claim
(``creationTimestamp``, then ``uid``) among the Tenant resources naming it, which every
operator process computes the same way from what the API server holds (kopf's index of all
Tenants is complete before any handler runs), so it survives restarts. A non-owner gets its own
status (Broken ``TenantIdInUse``, nothing of the owner's) and never touches the data; when the
owner goes, the oldest waiting claim is promoted.

`Claim` is one resource's claim (as kopf's index of all Tenants holds it); `Registry` keeps the
controllers (`controller.TenantController`, one per resource) and gives each its role when a
claim comes or goes (`Registry.ensure`, `Registry.release`): the oldest claim with a controller
owns the tenant id, the others wait as duplicates, and the oldest waiting claim is promoted when
the owner goes. Settling is serialized per tenant id (a lock), so two events of one id never
hand it out twice.

Crash behaviour: nothing here is durable; a restarted operator rebuilds the registry from the
API server's index (an incumbent's status keeps its rank: `Claim.newcomer`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pageserver_operator import settings as settings_mod
from pageserver_operator.engine import manager, tenant
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.engine.snapshot import TenantState
from pageserver_operator.formats import ids
from pageserver_operator.k8s import kube
from pageserver_operator.k8s.controller import Key, TenantController

log = logging.getLogger(__name__)

#: A moved tenant's final sync before its copy here is removed (then it is removed as stale).
LET_GO_TIMEOUT = 60.0


@dataclass(frozen=True, order=True)
class Claim:
    """A Tenant resource naming a tenant id. The smallest claim owns it: an incumbent first
    (``newcomer`` False: its status shows it has been acting as the owner, which survives a
    restart), then ``created`` (the RFC 3339 ``creationTimestamp``, sortable as text), then
    ``uid``. ``creationTimestamp`` has whole seconds: two Tenants created in the same second
    would otherwise be ordered by their random uids, and a copy applied right after its owner
    became Active could take the tenant over."""

    newcomer: bool
    created: str
    uid: str
    key: Key
    #: the pageserver it is placed on (``status.placement.attached``): only the claims placed on
    #: this manager compete for the volume
    attached: str | None = field(default=None, compare=False)


def claim_of(body: Any) -> Claim:
    meta = body.get("metadata") or {}
    st = body.get("status") or {}
    acting = bool(st.get("phase")) and st.get("reason") != "TenantIdInUse"
    return Claim(
        not acting,
        str(meta.get("creationTimestamp") or ""),
        str(meta.get("uid") or ""),
        (str(meta.get("namespace") or ""), str(meta.get("name") or "")),
        attached_of(body),
    )


def attached_of(body: Any) -> str | None:
    """The pageserver a Tenant is placed on (None: not placed yet)."""
    return ((body.get("status") or {}).get("placement") or {}).get("attached") or None


def tenant_id_of(body: Any) -> ids.TenantId:
    return ids.TenantId.parse(str((body.get("spec") or {}).get("tenantId")))


@dataclass
class Registry:
    """Every controller of this operator, and which resource owns which tenant id.

    Ownership is decided by `settle` from the claims (every Tenant resource naming the id, as
    the API server holds them): the oldest claim with a controller owns it; the others wait."""

    manager: manager.TenantManager
    kube: kube.Kube
    settings: settings_mod.OperatorSettings
    controllers: dict[Key, TenantController] = field(default_factory=dict)
    owners: dict[ids.TenantId, Key] = field(default_factory=dict)
    #: the keys of the controllers of each tenant id
    named: dict[ids.TenantId, set[Key]] = field(default_factory=dict)
    _locks: dict[ids.TenantId, asyncio.Lock] = field(default_factory=dict)
    #: bring-ups at once (settings ``max_concurrent_attaches``), shared by every controller
    bring_ups: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.bring_ups = asyncio.Semaphore(self.settings.max_concurrent_attaches)

    def _lock(self, tid: ids.TenantId) -> asyncio.Lock:
        return self._locks.setdefault(tid, asyncio.Lock())

    async def ensure(
        self, key: Key, body: dict[str, Any], claims: Iterable[Claim], start: bool = True
    ) -> TenantController:
        """The controller of ``key`` with the newest ``body``, in the role ``claims`` give it;
        started when ``start``."""
        tid = tenant_id_of(body)
        async with self._lock(tid):
            ctl = self.controllers.get(key)
            if ctl is None:
                ctl = TenantController(
                    key, body, self.manager.get(tid), self.kube, self.settings, False, self.bring_ups
                )
                self.controllers[key] = ctl
                self.named.setdefault(tid, set()).add(key)
            else:
                ctl.update(body)
            await self._settle(tid, [*claims, claim_of(body)])
            if start:
                ctl.start()
            return ctl

    async def release(
        self, key: Key, claims: Iterable[Claim], gone: bool = False, tid: ids.TenantId | None = None
    ) -> None:
        """``key`` no longer manages anything (detached, a duplicate deleted, or ``gone``: the
        resource vanished without the delete handler); a waiting duplicate may take over (also
        when ``key`` never had a controller: an older claim gone before its finalizer landed)."""
        ctl = self.controllers.get(key)
        if ctl is None:
            if tid is not None:
                async with self._lock(tid):
                    await self._settle(tid, [c for c in claims if c.key != key])
            return
        tid = ctl.tenant.id
        async with self._lock(tid):
            if self.controllers.pop(key, None) is None:
                return
            self.named.get(tid, set()).discard(key)
            await ctl.close(write=not gone)
            if self.owners.get(tid) == key:
                del self.owners[tid]
                if gone:
                    ctl.tenant.stop()  # its upload queues: a new owner reloads from the volume
                self.manager.forget(tid)
            await self._settle(tid, [c for c in claims if c.key != key])

    async def _settle(self, tid: ids.TenantId, claims: list[Claim]) -> None:
        """Give ``tid`` to its oldest claim that has a controller; every other controller of
        ``tid`` waits as a duplicate. A claim without a controller yet (its first event not
        handled, no finalizer yet) still counts: nobody younger may act meanwhile."""
        live = {c.key: c for c in claims}
        oldest = min(live.values()) if live else None
        owner = oldest.key if oldest is not None else None
        current = self.owners.get(tid)
        if current is not None and current != owner:
            old = self.controllers.get(current)
            del self.owners[tid]
            if old is not None:
                log.warning("tenant %s: %s/%s is no longer its oldest resource", tid, *current)
                await old.set_role(False, old.tenant, owner)
        if owner is not None and owner in self.controllers and self.owners.get(tid) != owner:
            self.owners[tid] = owner
            ctl = self.controllers[owner]
            await ctl.set_role(True, self.manager.get(tid), None)
        for key in sorted(self.named.get(tid, ())):
            other = self.controllers.get(key)
            if key != owner and other is not None:
                await other.set_role(False, other.tenant, owner)

    async def placed_elsewhere(self, key: Key, body: dict[str, Any], claims: Iterable[Claim], why: str) -> None:
        """``key`` is placed on another pageserver: its controller here (if any) stops without
        writing (the status is the other manager's now), and a local copy of its tenant that
        no resource placed here claims is removed: after a final sync if it can still be
        uploaded (a move), else as a stale copy (a failover): nothing remote is deleted."""
        tid = tenant_id_of(body)
        if key not in self.controllers and not self.named.get(tid) and not (self.manager.tenants_root / str(tid)).exists():
            return  # the common case: another pageserver's tenant, nothing of it here
        async with self._lock(tid):
            ctl = self.controllers.pop(key, None)
            # graceful (upload, then remove) only while no newer generation was issued: after a
            # failover or a cutover the new owner's generation fences this copy -- it is stale
            stored = ((body.get("status") or {}).get("placement") or {}).get("generation")
            graceful = (
                ctl is not None and ctl.owns_tenant and not ctl.stale and ctl.tenant.state is TenantState.ACTIVE
                and ctl.issued is not None and stored == ctl.issued.generation.value
            )
            if ctl is not None:
                self.named.get(tid, set()).discard(key)
                await ctl.close(write=False)
                if self.owners.get(tid) == key:
                    del self.owners[tid]
            if self.named.get(tid):
                await self._settle(tid, list(claims))  # another resource placed here keeps it
                return
            t = self.manager.get(tid)
            if t.local_state() != "absent" or t.state is not None:
                detached = await self._let_go(t, why, graceful)
                me = self.settings.pageserver
                meta = body.get("metadata") or {}
                ref = {"metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")}}
                if detached:
                    await self.kube.event(ref, "Normal", "CopyDetached", f"pageserver {me} uploaded and removed its copy ({why})")
                else:
                    await self.kube.event(
                        ref, "Warning", "StaleCopyRemoved",
                        f"pageserver {me} removed its stale local copy ({why}, under a newer generation); nothing remote was deleted",
                    )
            self.manager.forget(tid)

    async def _let_go(self, t: tenant.Tenant, why: str, graceful: bool) -> bool:
        """``graceful`` (it was Active here, not known stale): upload what is local-only and
        remove the copy (a detach: a move while this manager is alive); otherwise, or if that
        fails (the new owner's generation fences it), remove it as a stale copy."""
        try:
            if graceful:
                await asyncio.wait_for(t.detach(timeout=LET_GO_TIMEOUT), LET_GO_TIMEOUT + 5)
                log.info("tenant %s moved to another pageserver: detached here (%s)", t.id, why)
                return True
        except (TimeoutError, EngineError) as e:
            log.warning("tenant %s: detaching before the move failed (%s); removing the stale copy", t.id, e)
        await t.discard(why)
        return False

    def unmanaged(self, on_volume: Iterable[ids.TenantId]) -> list[str]:
        """Tenant directories that no Tenant resource of this operator names."""
        return sorted(str(t) for t in on_volume if not self.named.get(t))
