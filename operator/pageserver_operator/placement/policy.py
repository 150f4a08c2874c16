"""Where each tenant goes (DESIGN §8.3): the placement leader's decisions, without I/O.

Rules, for one Tenant resource:
- a Tenant being deleted is never moved (its attached manager detaches it where it is);
- ``spec.placement.pageserver`` (a pin) is honoured when that pageserver exists and is alive (a
  tenant attached to another live pageserver is migrated there live: ``migrate_to``);
  a pin naming no Pageserver is said in ``status.placement`` (``PageserverNotFound``) and the
  tenant stays where it is (or unplaced);
- otherwise a tenant stays on its pageserver while that one is alive; one whose pageserver is
  offline (heartbeat not renewed for ``failoverSeconds``) fails over to the least loaded live
  one (the attaching manager then issues generation+1, which fences the old one);
- an unplaced tenant goes where another Tenant resource naming the same tenant id is attached
  (one volume then holds it and the volume's ownership rule picks one resource), else to the
  least loaded live pageserver whose scheduling is Active (not Draining, not Paused).

Load: the larger of disk use (the tenants' bytes over the volume's size) and tenants / capacity, counting the
placements decided in this pass (a burst of new tenants spreads instead of piling onto the one
that was least loaded before it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

ACTIVE = "Active"


@dataclass(frozen=True)
class Pageserver:
    name: str
    online: bool
    scheduling: str = ACTIVE
    capacity: int = 1000
    disk_fraction: float = 0.0

    @property
    def takes_new(self) -> bool:
        return self.online and self.scheduling == ACTIVE


@dataclass(frozen=True)
class TenantPlacement:
    key: tuple[str, str]
    tenant_id: str
    pin: str | None
    attached: str | None
    deleting: bool = False
    #: ``spec.placement.secondaries``: warm secondary locations wanted
    want_secondaries: int = 0
    #: ``status.placement.secondaries``: where they are
    secondaries: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """``attach_to``: the new ``status.placement.attached`` (None: unchanged). ``reason`` and
    ``message``: what ``status.placement`` says about it (None: nothing to say)."""

    attach_to: str | None = None
    reason: str | None = None
    message: str | None = None
    failover: bool = False
    #: start a live migration (DESIGN §8.4) to this pageserver instead of moving ``attached``
    migrate_to: str | None = None
    #: the new ``status.placement.secondaries`` (None: unchanged)
    secondaries: tuple[str, ...] | None = None


class Placer:
    """One placement pass: the pageservers of the group and every Tenant as the leader sees
    them. `decide` one tenant at a time, `commit` what was written."""

    def __init__(
        self, pageservers: Iterable[Pageserver], tenants: Iterable[TenantPlacement], offline: Callable[[str], bool]
    ) -> None:
        self.pageservers = {p.name: p for p in pageservers}
        self._offline = offline
        self.counts: dict[str, int] = dict.fromkeys(self.pageservers, 0)
        #: tenant id -> the pageserver one of its resources is attached to
        self.by_tenant_id: dict[str, str] = {}
        for t in tenants:
            if t.attached is not None:
                self.counts[t.attached] = self.counts.get(t.attached, 0) + 1
                self.by_tenant_id.setdefault(t.tenant_id, t.attached)

    def alive(self, name: str) -> bool:
        p = self.pageservers.get(name)
        if p is not None:
            return p.online
        return not self._offline(name)  # a name with no Pageserver: alive until it times out

    def load(self, name: str) -> float:
        p = self.pageservers[name]
        return max(p.disk_fraction, self.counts.get(name, 0) / max(p.capacity, 1))

    def least_loaded(self, exclude: str | None = None) -> str | None:
        candidates = [p.name for p in self.pageservers.values() if p.takes_new and p.name != exclude]
        if not candidates:
            return None
        # ties (volumes on one filesystem report the same used fraction): fewer tenants first
        return min(candidates, key=lambda n: (self.load(n), self.counts.get(n, 0), n))

    def decide(self, t: TenantPlacement) -> Decision:
        if t.deleting:
            return Decision()
        if t.pin is not None:
            return self._pinned(t, t.pin)
        if t.attached is not None and self.alive(t.attached):
            return Decision()
        if t.attached is None:
            sibling = self.by_tenant_id.get(t.tenant_id)
            if sibling is not None and self.alive(sibling):
                return Decision(attach_to=sibling)
        if t.attached is not None:  # failover: a warm secondary first (it has most of the layers)
            warm = next((s for s in t.secondaries if s != t.attached and self.alive(s)), None)
            if warm is not None:
                return Decision(attach_to=warm, failover=True)
        target = self.least_loaded(exclude=t.attached)
        if target is None:
            return Decision(reason="NoPageserverAvailable", message="no live pageserver takes new tenants")
        return Decision(attach_to=target, failover=t.attached is not None)

    def secondaries(self, t: TenantPlacement) -> tuple[str, ...] | None:
        """The secondary locations ``t`` should have (None: as it has): the live ones it has
        that are not its attached pageserver, then the least loaded others, up to
        ``want_secondaries``."""
        if t.deleting or t.attached is None:
            return None
        keep = [s for s in t.secondaries if s != t.attached and self.alive(s)][: t.want_secondaries]
        while len(keep) < t.want_secondaries:
            candidates = [
                p.name for p in self.pageservers.values() if p.takes_new and p.name != t.attached and p.name not in keep
            ]
            if not candidates:
                break
            keep.append(min(candidates, key=lambda n: (self.load(n), self.counts.get(n, 0), n)))
        return tuple(keep) if tuple(keep) != t.secondaries else None

    def _pinned(self, t: TenantPlacement, pin: str) -> Decision:
        if pin == t.attached:
            return Decision()
        p = self.pageservers.get(pin)
        if p is None:
            where = f"; it stays on {t.attached}" if t.attached else ""
            return Decision(
                reason="PageserverNotFound",
                message=f"pinned to pageserver {pin}, which does not exist (kubectl get pageservers){where}",
            )
        if not p.online:
            where = f"; it stays on {t.attached}" if t.attached else ""
            return Decision(reason="PageserverOffline", message=f"pinned to pageserver {pin}, which is offline{where}")
        if t.attached is not None and self.alive(t.attached):
            return Decision(migrate_to=pin)  # a live move: warm the pin first, then cut over
        return Decision(attach_to=pin, failover=t.attached is not None)

    def commit(self, t: TenantPlacement, attached: str) -> None:
        """``t`` is now attached to ``attached`` (the write succeeded)."""
        if t.attached is not None and t.attached in self.counts:
            self.counts[t.attached] -= 1
        self.counts[attached] = self.counts.get(attached, 0) + 1
        self.by_tenant_id.setdefault(t.tenant_id, attached)
