"""This manager as a member of its placement group: registered, heartbeating, reporting.

At start (`Membership.start`) the manager registers its ``Pageserver`` and renews its heartbeat
Lease once before anything else runs, so a placement leader sees it at once. Then every
``period`` seconds: renew the Lease, and report the Pageserver's status (state, tenants, bytes,
the volume's use, ``lastHeartbeat``). A failed renewal is logged and retried at the next
period: only the leader decides what a missed heartbeat means.

``period`` is a quarter of ``failover_seconds`` (at most 10 s): three renewals may fail in a
row before anybody declares this pageserver offline.

Crash behaviour: nothing is local; a restart registers (adopts) and renews again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pageserver_operator.api import v1alpha1
from pageserver_operator.k8s import kube, leases, pageservers

log = logging.getLogger(__name__)


#: the pod's drain annotation is read at every this many reports (a GET each: 1.3 requests/s for
#: 10 managers when read at every one)
DRAIN_CHECK_EVERY = 4


def heartbeat_period(failover_seconds: float) -> float:
    return min(max(failover_seconds / 4.0, 0.2), 10.0)


@dataclass
class Load:
    tenants: int
    bytes: int


@dataclass
class Membership:
    k: kube.Kube
    name: str
    lease_namespace: str
    failover_seconds: float
    capacity: int
    workdir: Path
    load: Callable[[], Load]
    heartbeat: leases.Heartbeat = field(init=False)
    scheduling: str = "Active"
    _task: asyncio.Task[None] | None = None
    _reports: int = 0
    _drain: bool = False

    def __post_init__(self) -> None:
        self.heartbeat = leases.Heartbeat(self.k, self.lease_namespace, self.name, self.failover_seconds)

    @property
    def period(self) -> float:
        return heartbeat_period(self.failover_seconds)

    async def start(self) -> None:
        got = await pageservers.register(self.k, self.name, self.lease_namespace)
        self.scheduling = str((got.get("spec") or {}).get("scheduling") or "Active")
        await self.heartbeat.renew()
        await self._report()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="membership")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            try:
                await self.heartbeat.renew()
                await self._report()
            except Exception as e:  # the loop outlives any failure: the next period tries again
                log.warning("heartbeat of pageserver %s: %s", self.name, e, extra={"pageserver": self.name})

    async def _drain_requested(self) -> bool:
        """The ``pageserver.dev/drain`` annotation on this manager's pod (named like the
        pageserver, in the lease namespace); False outside a pod."""
        try:
            pod = await self.k.call(
                f"GET pod {self.lease_namespace}/{self.name}", self.k.core.read_namespaced_pod, self.name, self.lease_namespace
            )
        except RuntimeError:
            return False
        annotations = ((pod or {}).get("metadata") or {}).get("annotations") or {}
        return annotations.get(v1alpha1.DRAIN_ANNOTATION) == "true"

    async def _report(self) -> None:
        load = self.load()
        if self._reports % DRAIN_CHECK_EVERY == 0:  # the pod's annotation, every few reports
            self._drain = await self._drain_requested()
        self._reports += 1
        drain = self._drain
        used, total = pageservers.disk_usage(self.workdir)
        state = "Draining" if self.scheduling == "Draining" or drain else "Active"
        status = v1alpha1.PageserverStatus(
            state=state,
            tenants=load.tenants,
            bytes=load.bytes,
            capacity=self.capacity,
            disk_used_bytes=used,
            disk_total_bytes=total,
            last_heartbeat=leases.micro_time(),
            lease_namespace=self.lease_namespace,
            drain_requested=drain,
        )
        got = await pageservers.report(self.k, self.name, status)
        if got is None:  # deleted by a person while this manager runs: register it again
            got = await pageservers.register(self.k, self.name, self.lease_namespace)
        self.scheduling = str((got.get("spec") or {}).get("scheduling") or "Active")
