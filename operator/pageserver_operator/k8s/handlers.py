"""kopf handlers: thin translations of resource events into controller calls.

- `tenant_claims`, a kopf index of every Tenant by tenant id: kopf fills it from the initial
  listing before any other handler runs, so ownership (`ownership.Registry`) is decided on the
  whole picture, the same way after every restart;
- every watch event of a live Tenant that carries the finalizer (including the initial listing
  at start-up) makes sure its controller runs, and hands it the newest body (spec, generation,
  retry annotation). Without the finalizer nothing starts: kopf adds it first, and a Tenant
  deleted before that never had data to protect;
- deletion (the finalizer, so the data is safe even if the operator is down) stops the
  controller, then detaches the owner's tenant: Stopping -> drain uploads -> remove the local
  directory -> release. A duplicate is only released; it never touches the data;
- a Tenant that is gone (``DELETED``) without the delete handler (its finalizer removed by hand)
  stops its controller and releases its tenant id; the data stays on the volume (reported as
  unmanaged).

kopf keeps no diff-base on the objects: no handler here reacts to field changes (the
controllers compare generations themselves), so ``last-handled-configuration`` would be a write
per Tenant that nobody reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import kopf

from pageserver_operator import backoff
from pageserver_operator.api import v1alpha1
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.k8s import ownership, pageservers, placement, relocation
from pageserver_operator.relocation import migration

log = logging.getLogger(__name__)

REGISTRY: ownership.Registry | None = None
#: the placement controller (every manager keeps the picture; the leader acts)
PLACEMENT: placement.PlacementController | None = None
#: this manager's steps in migrations (DESIGN §8.4)
RELOCATOR: relocation.Relocator | None = None
DETACH_TIMEOUT = 600.0
#: kopf's retries of a blocked detach (kopf's ``retry`` is 0 at the first retry): 5 s doubling up to 2 min
DETACH_BACKOFF = backoff.Backoff(base=5.0, factor=2.0, cap=120.0)
FINALIZER = f"{v1alpha1.GROUP}/finalizer"


def _registry() -> ownership.Registry:
    assert REGISTRY is not None, "handlers used before runner.configure()"
    return REGISTRY


class NoDiffBase(kopf.DiffBaseStorage):
    """Stores nothing: kopf's change detection is unused here (no create/update handlers)."""

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


@kopf.on.startup()
def configure_kopf(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # per pageserver: every manager runs the delete handler of every Tenant (only the attached
    # one detaches); one manager's retries and delays must not hold up another's
    me = REGISTRY.settings.pageserver if REGISTRY is not None else "operator"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=f"{me}.{v1alpha1.GROUP}")
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.peering.standalone = True
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    # No limit on kopf's per-object workers: with an index (`tenant_claims`) every worker waits,
    # holding its slot, until the whole initial listing is indexed, so a limit below the number of
    # Tenants deadlocks a start (2,000 Tenants with a limit of 1,000: none Active after 900 s).
    # What costs is bounded where it runs: bring-ups by ``max_concurrent_attaches``.
    settings.queueing.worker_limit = None


@kopf.index(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
def tenant_claims(body: kopf.Body, **_: Any) -> dict[str, ownership.Claim]:
    """tenant id -> the claims of every Tenant naming it."""
    return {str(ownership.tenant_id_of(body)): ownership.claim_of(body)}


def _placement_of(body: Any) -> dict[str, Any]:
    return dict(((body.get("status") or {}).get("placement")) or {})


def _claims(index: Any, body: Any, pageserver: str) -> list[ownership.Claim]:
    """The claims on the tenant id of ``body`` placed on ``pageserver`` (only they compete for
    this volume)."""
    store: Iterable[ownership.Claim] = index.get(str(ownership.tenant_id_of(body)), ()) if index else ()
    return [c for c in store if c.attached == pageserver]


@kopf.on.event(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
async def tenant_event(
    type: str | None, body: kopf.Body, namespace: str | None, name: str, tenant_claims: Any = None, **_: Any
) -> None:
    """Start (or update) the controller of a live Tenant; stop the controller of a vanished one."""
    reg = _registry()
    key = (namespace or "", name)
    if PLACEMENT is not None:
        PLACEMENT.observe(body, gone=type == "DELETED")
    me = reg.settings.pageserver
    if type == "DELETED":
        await reg.release(key, _claims(tenant_claims, body, me), gone=True, tid=ownership.tenant_id_of(body))
        return
    if body.metadata.get("deletionTimestamp"):
        return
    if FINALIZER not in (body.metadata.get("finalizers") or []):
        return  # kopf adds it; the event of that change starts the work
    step = RELOCATOR.observe(key, body) if RELOCATOR is not None else migration.Step.NONE
    attached = ownership.attached_of(body)
    if attached == me:
        await reg.ensure(key, dict(body), _claims(tenant_claims, body, me))
    elif migration.keeps_local_copy(migration.of((body.get("status") or {}).get("placement")), me):
        return  # the target of a migration: its warm copy stays
    elif attached is not None:
        await reg.placed_elsewhere(key, dict(body), _claims(tenant_claims, body, me), f"the tenant is placed on {attached}")
        if step is migration.Step.CLEAR and RELOCATOR is not None:
            await RELOCATOR.clear(key, body)


def _placed_here_or_blocked(body: kopf.Body, **_: Any) -> bool:
    """Whether this manager needs the finalizer on ``body``: the manager a Tenant is placed on
    adds it (kopf adds it for a matching delete handler); once it is there every manager keeps
    it (a non-matching handler would make kopf remove it). Not every manager adding it: that was
    one PATCH per manager per Tenant (10 of the 18 API requests per tenant at 10 managers)."""
    reg = REGISTRY
    if reg is None:
        return True
    return ownership.attached_of(body) == reg.settings.pageserver or FINALIZER in (body.metadata.get("finalizers") or [])


@kopf.on.delete(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL, when=_placed_here_or_blocked)
async def tenant_deleted(
    body: kopf.Body, namespace: str | None, name: str, retry: int, tenant_claims: Any = None, **_: Any
) -> None:
    """Detach: nothing local-only is lost; the finalizer is released only after the directory is gone."""
    reg = _registry()
    key = (namespace or "", name)
    me = reg.settings.pageserver
    claims = _claims(tenant_claims, body, me)
    attached = ownership.attached_of(body)
    if attached != me:
        await _deleted_elsewhere(reg, key, dict(body), claims, attached)
        return
    ctl = await reg.ensure(key, dict(body), claims, start=False)
    await ctl.stop()
    if not ctl.owns_tenant:
        await reg.release(key, claims)
        return
    ctl.follow_detach()
    try:
        keep = (body.metadata.annotations or {}).get(v1alpha1.KEEP_LOCAL_ANNOTATION) == "true"
        await ctl.tenant.detach(timeout=DETACH_TIMEOUT, keep_local=keep)
    except EngineError as e:
        ctl.writer.mark(urgent=True)
        await ctl.writer.flush()
        delay = DETACH_BACKOFF.delay(retry + 1)
        raise kopf.TemporaryError(f"detach blocked: {e.reason}: {e.message}", delay=delay) from e
    await ctl.event("Normal", "Detached", f"tenant {ctl.tenant.id} detached; remote data kept")
    await reg.release(key, claims)


async def _deleted_elsewhere(
    reg: ownership.Registry, key: tuple[str, str], body: dict[str, Any], claims: list[ownership.Claim], attached: str | None
) -> None:
    """A Tenant being deleted that is not placed here: a copy here is let go of; the deletion
    completes here (kopf releases the finalizer) only when no live pageserver has it attached,
    else the attached one detaches it (uploads first) and releases it."""
    if attached is not None:
        await reg.placed_elsewhere(key, body, claims, f"the tenant is placed on {attached}")
        try:
            ps = await pageservers.get(reg.kube, attached)
        except RuntimeError as e:
            raise kopf.TemporaryError(f"reading Pageserver {attached}: {e}", delay=DETACH_BACKOFF.delay(1)) from e
        state = ((ps or {}).get("status") or {}).get("state")
        if ps is not None and state != "Offline":
            raise kopf.TemporaryError(
                f"attached on pageserver {attached}, which detaches it", delay=max(reg.settings.failover_seconds / 2, 1.0)
            )
        log.warning(
            "Tenant %s/%s deleted while its pageserver %s is %s: released; its local copy there (if any) stays "
            "on that volume (reported as unmanaged); nothing remote is deleted",
            *key, attached, "offline" if ps is not None else "gone",
        )
    await reg.release(key, claims)


@kopf.on.cleanup()
async def shutdown(**_: Any) -> None:
    reg = REGISTRY
    if reg is None:
        return
    if RELOCATOR is not None:
        await RELOCATOR.close()
    await asyncio.gather(*(c.close() for c in reg.controllers.values()), return_exceptions=True)
