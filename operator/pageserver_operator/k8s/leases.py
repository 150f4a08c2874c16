"""``coordination.k8s.io`` Leases: each manager's heartbeat, and the placement leader's lease.

- `Heartbeat`: the Lease ``pageserver-<name>`` in the lease namespace, renewed by a merge patch
  of ``spec.renewTime`` every ``period`` seconds (created at the first renewal). The placement
  leader reads all of them with one LIST (label ``pageserver.dev/heartbeat``) and judges them
  by its own clock (`placement.liveness`).
- `LeaderElection`: the Lease ``pageserver-operator-placement``. Acquired when absent, when
  this manager already holds it (a restart of the same pageserver leads again at once), or when
  its holder did not renew it for ``duration`` seconds as watched by this candidate. Every
  write is a replace carrying the read ``resourceVersion`` (compare-and-swap), so two
  candidates never both win. A leader counts as leading only until ``LEADING_FRACTION`` of
  ``duration`` after the start of its last successful renewal (by its monotonic clock): a leader
  frozen (SIGSTOP) or cut off stops acting before anybody else may take over.

Crash behaviour: nothing is local; a restarted manager renews its heartbeat and runs for
leadership again. A leader that dies is replaced after ``duration`` seconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pageserver_operator.api import v1alpha1
from pageserver_operator.k8s import kube

log = logging.getLogger(__name__)

LEADER_LEASE = "pageserver-operator-placement"
HEARTBEAT_LABEL = f"{v1alpha1.GROUP}/heartbeat"
#: a leader acts for this fraction of the lease duration after its last renewal started
LEADING_FRACTION = 0.75


def heartbeat_lease(pageserver: str) -> str:
    return f"pageserver-{pageserver}"[:253]


def micro_time(t: datetime | None = None) -> str:
    """A ``MicroTime`` as the API server writes it (RFC 3339, microseconds, Z)."""
    return (t or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _lease(name: str, namespace: str, holder: str, duration: float, labels: dict[str, str]) -> dict[str, Any]:
    now = micro_time()
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": max(round(duration), 1),
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        },
    }


@dataclass
class Heartbeat:
    k: kube.Kube
    namespace: str
    pageserver: str
    duration: float
    renewals: int = 0

    @property
    def name(self) -> str:
        return heartbeat_lease(self.pageserver)

    async def renew(self) -> None:
        """One renewal (a PATCH; a CREATE the first time). Raises RuntimeError when refused."""
        c = self.k.coordination
        patch = {"spec": {"holderIdentity": self.pageserver, "renewTime": micro_time()}}
        got = await self.k.call(
            f"PATCH Lease {self.namespace}/{self.name}", c.patch_namespaced_lease, self.name, self.namespace, patch
        )
        if got is None:
            body = _lease(self.name, self.namespace, self.pageserver, self.duration, {HEARTBEAT_LABEL: "true"})
            try:
                await self.k.call(f"CREATE Lease {self.namespace}/{self.name}", c.create_namespaced_lease, self.namespace, body)
            except kube.Conflict:
                return  # created meanwhile (a restart racing itself): the next renewal patches it
        self.renewals += 1


async def list_heartbeats(k: kube.Kube, namespace: str) -> dict[str, str]:
    """pageserver name -> a version of its heartbeat that changes at every renewal."""
    got = await k.call(
        f"LIST Leases in {namespace}", k.coordination.list_namespaced_lease, namespace, label_selector=HEARTBEAT_LABEL
    )
    out: dict[str, str] = {}
    for item in (got or {}).get("items", []):
        spec = item.get("spec") or {}
        holder = spec.get("holderIdentity")
        if holder:
            out[str(holder)] = f"{spec.get('renewTime')}/{item['metadata'].get('resourceVersion')}"
    return out


@dataclass
class LeaderElection:
    k: kube.Kube
    namespace: str
    identity: str
    duration: float
    name: str = LEADER_LEASE
    #: monotonic deadline until which this candidate may act as the leader
    _leading_until: float = 0.0
    _body: dict[str, Any] | None = None
    #: (resourceVersion, monotonic time first seen) of another holder's lease
    _observed: tuple[str, float] | None = None
    transitions: int = field(default=0)

    def leading(self, now: float | None = None) -> bool:
        return (now if now is not None else time.monotonic()) < self._leading_until

    async def step(self) -> bool:
        """Renew, or try to acquire; True if this candidate leads now."""
        started = time.monotonic()
        c = self.k.coordination
        what = f"Lease {self.namespace}/{self.name}"
        try:
            if self._body is not None and self.leading(started):
                body = self._renewed(self._body)
                self._body = await self.k.call(f"PUT {what}", c.replace_namespaced_lease, self.name, self.namespace, body)
                if self._body is not None:
                    self._leading_until = started + LEADING_FRACTION * self.duration
                    return True
            got = await self.k.call(f"GET {what}", c.read_namespaced_lease, self.name, self.namespace)
            if got is None:
                body = _lease(self.name, self.namespace, self.identity, self.duration, {})
                self._body = await self.k.call(f"CREATE {what}", c.create_namespaced_lease, self.namespace, body)
                return self._won(started)
            spec = got.get("spec") or {}
            holder = spec.get("holderIdentity")
            rv = str(got["metadata"].get("resourceVersion"))
            if holder != self.identity and holder:
                if self._observed is None or self._observed[0] != rv:
                    self._observed = (rv, started)
                    self._lost()
                    return False
                if started - self._observed[1] < self.duration:
                    self._lost()
                    return False
            body = self._renewed(got)
            if holder != self.identity:
                body["spec"]["holderIdentity"] = self.identity
                body["spec"]["acquireTime"] = body["spec"]["renewTime"]
                body["spec"]["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            self._body = await self.k.call(f"PUT {what}", c.replace_namespaced_lease, self.name, self.namespace, body)
            return self._won(started)
        except kube.Conflict:
            self._body = None
            self._lost()
            return False

    def _renewed(self, body: dict[str, Any]) -> dict[str, Any]:
        spec: dict[str, Any] = dict(body.get("spec") or {})
        spec["renewTime"] = micro_time()
        spec["leaseDurationSeconds"] = max(round(self.duration), 1)
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": dict(body["metadata"]), "spec": spec}

    def _won(self, started: float) -> bool:
        if self._body is None:
            return False
        if not self.leading(started):
            self.transitions += 1
            log.info("leading placement (lease %s/%s)", self.namespace, self.name, extra={"pageserver": self.identity})
        self._observed = None
        self._leading_until = started + LEADING_FRACTION * self.duration
        return True

    def _lost(self) -> None:
        if self._leading_until:
            log.info("no longer leading placement", extra={"pageserver": self.identity})
        self._leading_until = 0.0

    async def release(self) -> None:
        """Give the lease up at shutdown (another candidate leads at once instead of after
        ``duration``): a replace with an empty holder."""
        if self._body is None or not self.leading():
            return
        body = self._renewed(self._body)
        body["spec"]["holderIdentity"] = ""
        self._leading_until = 0.0
        try:
            await self.k.call(f"PUT Lease {self.namespace}/{self.name}", self.k.coordination.replace_namespaced_lease,
                              self.name, self.namespace, body)
        except (kube.Conflict, RuntimeError) as e:
            log.info("could not release the placement lease: %s", e)
