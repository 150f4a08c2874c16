"""The placement controller: every manager runs it, the holder of the placement Lease acts.

Inputs: every Tenant of the watched namespaces (`observe`, fed by the watch events every
manager receives anyway), the group's Pageservers and heartbeat Leases (two LISTs per pass).
Output: ``status.placement.attached`` (and ``reason``/``message``) of Tenants, each written by
a merge patch carrying the Tenant's ``resourceVersion`` as observed (compare-and-swap: a
decision taken on an outdated picture of a Tenant fails with a conflict and is taken again at
the next event), and ``status.state: Offline`` of a pageserver whose heartbeat stopped.

The leader never issues generations: the manager a tenant is placed on issues generation+1 at
its bring-up (`generations.issue`, itself a compare-and-swap that requires ``attached`` to
name it), which fences the previous one. So a failover is: the leader moves ``attached``, the
new manager bumps the generation and attaches, the old one (if it ever comes back) finds the
tenant placed elsewhere and stale, and removes its local copy without deleting anything remote.

A pass runs after Tenant events (batched) and every heartbeat period. It runs only while this
manager leads (`leases.LeaderElection.leading`, checked again before every write); when
leadership is lost, what it learnt of heartbeats is forgotten (`liveness.Liveness.forget`).

Crash behaviour: nothing is local. A new leader starts from the API server's picture and
waits a full ``failover_seconds`` before declaring any pageserver offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import prometheus_client

from pageserver_operator.k8s import kube, leases, pageservers
from pageserver_operator.placement import liveness, policy
from pageserver_operator.relocation import migration

log = logging.getLogger(__name__)

LEADING = prometheus_client.Gauge(
    "pageserver_operator_placement_leader", "1 while this manager leads placement (holds the placement Lease)"
)
PLACEMENTS = prometheus_client.Counter(
    "pageserver_operator_placements_total",
    "status.placement.attached written by this manager as the placement leader, by kind (placed: an unplaced "
    "tenant; failover: its pageserver was offline; moved: a pin moved it)",
    ["kind"],
)
for _kind in ("placed", "failover", "moved", "migration"):
    PLACEMENTS.labels(_kind)  # every kind's series exists from the start (rate() sees the first one)
PAGESERVERS = prometheus_client.Gauge(
    "pageserver_operator_pageservers", "Pageservers of the placement group as the leader sees them, by state", ["state"]
)

Key = tuple[str, str]
#: Tenant placements written at once by a pass
WRITE_CONCURRENCY = 8
#: events are batched for this long before a pass
BATCH_SECONDS = 0.05


@dataclass
class Seen:
    """A Tenant as the last watch event showed it."""

    placement: policy.TenantPlacement
    resource_version: str
    reason: str | None
    migration: migration.Migration | None = None


def seen_of(body: Any) -> Seen:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    st = (body.get("status") or {}).get("placement") or {}
    key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
    return Seen(
        policy.TenantPlacement(
            key=key,
            tenant_id=str(spec.get("tenantId") or ""),
            pin=(spec.get("placement") or {}).get("pageserver") or None,
            attached=st.get("attached") or None,
            deleting=bool(meta.get("deletionTimestamp")),
            want_secondaries=int((spec.get("placement") or {}).get("secondaries") or 0),
            secondaries=tuple(str(x) for x in (st.get("secondaries") or [])),
        ),
        str(meta.get("resourceVersion") or ""),
        st.get("reason"),
        migration.of(st),
    )


@dataclass
class PlacementController:
    k: kube.Kube
    pageserver: str
    lease_namespace: str
    failover_seconds: float
    capacity: int
    drain_concurrency: int = 4
    tenants: dict[Key, Seen] = field(default_factory=dict)
    election: leases.LeaderElection = field(init=False)
    liveness: liveness.Liveness = field(init=False)
    passes: int = 0
    failovers: int = 0
    _dirty: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _offline_marked: set[str] = field(default_factory=set)
    #: Draining pageserver -> (tenants left to move, migrations in flight), as of the last pass
    drains: dict[str, tuple[int, int]] = field(default_factory=dict)
    _drain_written: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    #: Draining pageserver -> (monotonic time this leader first saw the drain, tenants to move then)
    _drain_started: dict[str, tuple[float, int]] = field(default_factory=dict)
    _election_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _last_step: float = -1e9

    def __post_init__(self) -> None:
        self.election = leases.LeaderElection(self.k, self.lease_namespace, self.pageserver, self.failover_seconds)
        self.liveness = liveness.Liveness(self.failover_seconds)

    @property
    def period(self) -> float:
        return min(max(self.failover_seconds / 4.0, 0.2), 10.0)

    # ---- inputs ---------------------------------------------------------------------------------

    def observe(self, body: Any, gone: bool = False) -> None:
        seen = seen_of(body)
        if gone:
            self.tenants.pop(seen.placement.key, None)
            return
        old = self.tenants.get(seen.placement.key)
        self.tenants[seen.placement.key] = seen
        if old is None or old.placement != seen.placement or old.reason != seen.reason or old.migration != seen.migration:
            self._dirty.set()

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="placement")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.election.release()

    async def _loop(self) -> None:
        while True:
            try:
                was = self.election.leading()
                leading = await self._step_election()
                LEADING.set(1 if leading else 0)
                if not leading and was:
                    self.liveness.forget()
                    self._offline_marked.clear()
                if leading:
                    await self.run_pass()
            except Exception as e:  # the loop outlives any failure: the next period tries again
                log.warning("placement: %s", e, extra={"pageserver": self.pageserver})
            waiter = asyncio.ensure_future(self._dirty.wait())
            try:
                await asyncio.wait({waiter}, timeout=self.period)
            finally:
                waiter.cancel()
            if self._dirty.is_set():
                await asyncio.sleep(BATCH_SECONDS)
            self._dirty.clear()

    async def _step_election(self, force: bool = False) -> bool:
        """Renew (or try to acquire) the placement lease at most every half period: a wake-up
        by Tenant events steps it only when it is due (a non-leader's GET of the Lease per
        event was 1.8 API requests per tenant at 10,000 tenants). One step at a time."""
        async with self._election_lock:
            now = time.monotonic()
            if force or now - self._last_step >= self.period / 2:
                self._last_step = now
                return await self.election.step()
            return self.election.leading(now)

    async def _still_leading(self) -> bool:
        """Before a write: still the leader, renewing first when less than a period is left (a
        long pass must not outlive the lease and drop its remaining writes)."""
        if self.election.leading(time.monotonic() + self.period):
            return True
        return await self._step_election(force=True)

    # ---- a pass ---------------------------------------------------------------------------------

    async def run_pass(self) -> None:
        group = await pageservers.list_group(self.k, self.lease_namespace)
        beats = await leases.list_heartbeats(self.k, self.lease_namespace)
        now = time.monotonic()
        if not self.election.leading(now):
            return
        self.liveness.observe(now, beats)
        views = []
        states = {"Active": 0, "Draining": 0, "Offline": 0}
        for p in group:
            online = not self.liveness.offline(p.name, now)
            states["Offline" if not online else ("Draining" if p.scheduling == "Draining" else "Active")] += 1
            views.append(policy.Pageserver(p.name, online, p.scheduling, p.capacity, p.disk_fraction))
            if not online and p.state != "Offline" and p.name not in self._offline_marked:
                silent = self.liveness.silent_for(p.name, now)
                await pageservers.set_state(
                    self.k, p.name, "Offline", f"heartbeat not renewed for {silent:.0f} s (failover after {self.failover_seconds:g} s)"
                )
                self._offline_marked.add(p.name)
                log.warning("pageserver %s is offline: no heartbeat for %.0f s", p.name, silent,
                            extra={"pageserver": p.name})
            elif online:
                self._offline_marked.discard(p.name)
        for state, n in states.items():
            PAGESERVERS.labels(state).set(n)
        seen = list(self.tenants.values())
        placer = policy.Placer(views, (s.placement for s in seen), lambda n: self.liveness.offline(n, now))
        work: list[tuple[Seen, policy.Decision]] = []
        repairs: list[tuple[Seen, migration.Repair]] = []
        draining = {p.name for p in group if p.scheduling == "Draining"}
        for s in seen:
            m = s.migration
            if m is not None:
                alive = {n: placer.alive(n) for n in (m.source, m.target)}
                r = migration.repair(m, s.placement.attached, alive, s.placement.pin, m.source in draining)
                if r is not None:
                    repairs.append((s, r))
                continue
            d = placer.decide(s.placement)
            if d.attach_to is None and d.migrate_to is None:
                wanted = placer.secondaries(s.placement)
                if wanted is not None:
                    d = policy.Decision(reason=d.reason, message=d.message, secondaries=wanted)
                    work.append((s, d))
                    continue
            if d.attach_to is not None:
                placer.commit(s.placement, d.attach_to)
                work.append((s, d))
            elif d.migrate_to is not None:
                placer.commit(s.placement, d.migrate_to)
                work.append((s, d))
            elif d.reason != s.reason:
                work.append((s, d))
        work += self._drains(placer, seen, draining, {id(s) for s, _ in work})
        self.passes += 1
        if work:
            sem = asyncio.Semaphore(WRITE_CONCURRENCY)

            async def one(s: Seen, d: policy.Decision) -> None:
                async with sem:
                    await self._write(s, d)

            await asyncio.gather(*(one(s, d) for s, d in work))
        for s, r in repairs:
            await self._repair(s, r)
        await self._report_drains(draining)

    def _drain_eta(self, name: str, left: int) -> dict[str, Any]:
        """``moved`` since this leader saw the drain start, and ``etaSeconds`` from that pace."""
        now = time.monotonic()
        started, total = self._drain_started.setdefault(name, (now, left))
        moved = max(total - left, 0)
        out: dict[str, Any] = {"moved": moved}
        if moved and left:
            out["etaSeconds"] = int(left * (now - started) / moved)
        elif not left:
            out["etaSeconds"] = 0
        return out

    async def _report_drains(self, draining: set[str]) -> None:
        """``status.drain`` of each Draining pageserver (written when it changes; cleared when
        the drain ends)."""
        for name in sorted(set(self._drain_written) | draining):
            if name in draining:
                left, in_flight = self.drains.get(name, (0, 0))
                value: dict[str, Any] | None = {"remaining": left, "inFlight": in_flight, **self._drain_eta(name, left + in_flight)}
            else:
                value = None
                self.drains.pop(name, None)
                self._drain_started.pop(name, None)
            if self._drain_written.get(name) == value:
                continue
            try:
                await pageservers.patch_status(self.k, name, {"drain": value})
            except RuntimeError as e:
                log.info("drain status of %s: %s", name, e)
                continue
            if value is None:
                self._drain_written.pop(name, None)
            else:
                self._drain_written[name] = value

    def _drains(
        self, placer: policy.Placer, seen: list[Seen], draining: set[str], taken: set[int]
    ) -> list[tuple[Seen, policy.Decision]]:
        """Migrations away from Draining pageservers, at most ``drain_concurrency`` in flight
        from each; pinned tenants stay."""
        out: list[tuple[Seen, policy.Decision]] = []
        for name in sorted(draining):
            in_flight = sum(1 for s in seen if s.migration is not None and s.migration.source == name)
            movable = [
                s for s in seen
                if s.placement.attached == name and s.migration is None and s.placement.pin is None
                and not s.placement.deleting and id(s) not in taken
            ]  # fmt: skip
            self.drains[name] = (len(movable), in_flight)
            for s in movable[: max(self.drain_concurrency - in_flight, 0)]:
                target = placer.least_loaded(exclude=name)
                if target is None:
                    break
                placer.commit(s.placement, target)
                out.append((s, policy.Decision(migrate_to=target, reason=None, message=None)))
        return out

    async def _repair(self, s: Seen, r: migration.Repair) -> None:
        placement: dict[str, Any] = {}
        if r.clear:
            placement["migration"] = None
        if r.attached is not None:
            placement["attached"] = r.attached
        m = s.migration
        if m is not None and r.clear:  # how it ended, where people look
            ended_on = r.attached or s.placement.attached
            placement["lastMigration"] = {
                "from": m.source, "to": m.target, "phase": "Done" if ended_on == m.target else "Aborted",
                "reason": "failover" if r.attached is not None else m.reason, "startedAt": m.started_at,
                "finishedAt": leases.micro_time(), "staleAt": m.stale_at, "windowSeconds": None, "message": r.why,
            }
        patch = {"metadata": {"resourceVersion": s.resource_version}, "status": {"placement": placement}}
        try:
            await self.k.patch_status(s.placement.key[0], s.placement.key[1], patch)
        except (RuntimeError, kube.StaleStatusWrite) as e:
            log.info("repairing the migration of %s/%s: %s", *s.placement.key, e)
            return
        log.warning("migration of %s/%s: %s", *s.placement.key, r.why, extra={"tenant_id": s.placement.tenant_id})

    async def _write(self, s: Seen, d: policy.Decision) -> None:
        if not await self._still_leading():
            return
        t = s.placement
        placement: dict[str, Any] = {"reason": d.reason, "message": d.message}
        if d.attach_to is not None:
            placement["attached"] = d.attach_to
            if d.attach_to in t.secondaries:  # a secondary promoted: no longer one
                placement["secondaries"] = [x for x in t.secondaries if x != d.attach_to]
        if d.secondaries is not None:
            placement["secondaries"] = list(d.secondaries)
        if d.migrate_to is not None and t.attached is not None:
            why = "pin" if t.pin == d.migrate_to else "drain"
            placement["migration"] = {
                "from": t.attached, "to": d.migrate_to, "phase": migration.WARMING, "reason": why,
                "startedAt": leases.micro_time(), "progress": None, "staleAt": None, "windowSeconds": None,
            }
        patch = {"metadata": {"resourceVersion": s.resource_version}, "status": {"placement": placement}}
        try:
            await self.k.patch_status(t.key[0], t.key[1], patch)
        except kube.Conflict:
            self._dirty.set()  # the Tenant changed: its next event brings the newer picture
            return
        except (RuntimeError, kube.StaleStatusWrite) as e:
            log.warning("placing %s/%s: %s", *t.key, e)
            return
        if d.migrate_to is not None:
            PLACEMENTS.labels("migration").inc()
            log.info("migrating %s/%s (tenant %s) from %s to %s", t.key[0], t.key[1], t.tenant_id, t.attached,
                     d.migrate_to, extra={"tenant_id": t.tenant_id, "pageserver": d.migrate_to})
        if d.attach_to is not None:
            PLACEMENTS.labels("failover" if d.failover else ("moved" if t.attached else "placed")).inc()
            if d.failover:
                self.failovers += 1
            log.info(
                "placed %s/%s (tenant %s) on %s%s", t.key[0], t.key[1], t.tenant_id, d.attach_to,
                f" (failover from {t.attached})" if d.failover else (f" (from {t.attached})" if t.attached else ""),
                extra={"tenant_id": t.tenant_id, "pageserver": d.attach_to},
            )


