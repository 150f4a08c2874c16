"""Generations issued by the control plane (DESIGN §8.2): the Tenant resource is the authority.

`issue` bumps ``status.placement.generation`` of a Tenant by one with a ``resourceVersion``
precondition (etcd's compare-and-swap behind the API server): of two managers bumping at once,
one wins and the other reads again and bumps past it, so two processes never share a
generation. The operator issues one on every bring-up of a tenant by a new process (every
start: Neon's re-attach) and before anything of the tenant is written remotely. `is_current`
validates one by an uncached read (a GET without ``resourceVersion`` is a quorum read, never a
watch cache).

Fencing of the status itself: every status write of a manager carries its generation
(``status.placement.generation``) and the CRD refuses a write that would lower it
(`api.crd.GENERATION_NEVER_DECREASES`), so a stale manager cannot overwrite its successor's
status either, whatever it believes.

Crash behaviour: a bump is one atomic write; a crash after it wastes a generation (harmless:
the next start bumps again). Nothing else here writes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from pageserver_operator import backoff
from pageserver_operator.formats.generation import Generation
from pageserver_operator.k8s import kube

log = logging.getLogger(__name__)

#: Conflicting bumps (another manager bumped between our read and our write) retried at once
#: before the caller sees a failure (and retries later).
MAX_CONFLICTS = 20
_CONFLICT_BACKOFF = backoff.Backoff(base=0.05, factor=2.0, cap=1.0, jitter=True)


class IssueFailed(RuntimeError):
    """The generation could not be bumped (the resource is gone, or it kept changing)."""


class PlacedElsewhere(IssueFailed):
    """The placement leader attached the tenant to another pageserver: not ours to bump."""


@dataclass(frozen=True)
class Issued:
    generation: Generation
    """The generation issued to this manager."""
    previous: Generation | None
    """The generation this same manager held before the bump (its earlier incarnation, nobody
    in between): what it recorded under it may be adopted (the deletion queue). None when
    another manager held the tenant, or nobody did."""


def placement_of(obj: dict[str, Any]) -> tuple[int | None, str | None]:
    """(generation, attached) of a Tenant's ``status.placement``."""
    placement = (obj.get("status") or {}).get("placement") or {}
    value = placement.get("generation")
    return (int(value) if value is not None else None), placement.get("attached")


async def issue(
    k: kube.Kube, namespace: str, name: str, pageserver: str, floor: Generation | None = None
) -> Issued:
    """Bump the Tenant's generation for ``pageserver`` (compare-and-swap on resourceVersion), only
    while the placement leader has it attached there (`PlacedElsewhere` otherwise), past ``floor`` too: the newest generation found in remote storage, so that a second Tenant
    resource naming the same tenant and bucket (its own counter) still gets a higher one."""
    for attempt in range(MAX_CONFLICTS):
        obj = await k.get_tenant(namespace, name)
        if obj is None:
            raise IssueFailed(f"Tenant {namespace}/{name} does not exist")
        current, attached = placement_of(obj)
        if attached != pageserver:
            raise PlacedElsewhere(f"Tenant {namespace}/{name} is placed on {attached or 'no pageserver yet'}, not {pageserver}")
        base = max(current or 0, floor.value if floor is not None and floor.value is not None else 0)
        new = Generation(base + 1)
        patch = {
            "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
            "status": {"placement": {"generation": new.value, "attached": pageserver}},
        }
        try:
            await k.patch_status(namespace, name, patch)
        except kube.Conflict:
            await asyncio.sleep(_CONFLICT_BACKOFF.delay(attempt + 1))
            continue
        previous = Generation(current) if current is not None and attached == pageserver else None
        log.info(
            "issued generation %s of %s/%s to %s (was %s, attached to %s)",
            new.value, namespace, name, pageserver, current, attached,
            extra={"generation": new.value, "pageserver": pageserver},
        )
        return Issued(new, previous)
    raise IssueFailed(f"Tenant {namespace}/{name}: the generation kept changing during {MAX_CONFLICTS} attempts to bump it")


async def is_current(k: kube.Kube, namespace: str, name: str, generation: Generation, pageserver: str) -> bool:
    """True if ``generation`` is still the Tenant's and the tenant is still placed on
    ``pageserver`` (an uncached read): a manager whose tenant was moved stops deleting at once,
    before its successor even bumped. A Tenant that no longer exists has no current generation:
    False."""
    obj = await k.get_tenant(namespace, name)
    if obj is None:
        return False
    current, attached = placement_of(obj)
    return current is not None and current == generation.value and attached == pageserver
