"""kopf handlers: thin translations of resource events into controller calls.

- every watch event of a live Tenant (including the initial listing at start-up) makes sure its
  controller runs, and hands it the newest body (spec, generation, retry annotation);
- deletion (a finalizer, so the data is safe even if the operator is down) stops the controller,
  then detaches: Stopping -> drain uploads -> remove the local directory -> release.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from pageserver_operator.api import v1alpha1
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.k8s import controller

log = logging.getLogger(__name__)

REGISTRY: controller.Registry | None = None
DETACH_TIMEOUT = 600.0


def _registry() -> controller.Registry:
    assert REGISTRY is not None, "handlers used before runner.configure()"
    return REGISTRY


@kopf.on.startup()
def configure_kopf(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = f"{v1alpha1.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=v1alpha1.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=v1alpha1.GROUP, key="last-handled-configuration"
    )
    settings.peering.standalone = True
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.batching.worker_limit = 1000


@kopf.on.event(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
async def tenant_event(type: str, body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
    """Start (or update) the controller of a live Tenant."""
    if type == "DELETED" or body.metadata.get("deletionTimestamp"):
        return
    ctl = _registry().ensure((namespace or "", name), dict(body))
    ctl.start()


@kopf.on.delete(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
async def tenant_deleted(body: kopf.Body, namespace: str | None, name: str, retry: int, **_: Any) -> None:
    """Detach: nothing local-only is lost; the finalizer is released only after the directory is gone."""
    reg = _registry()
    key = (namespace or "", name)
    ctl = reg.ensure(key, dict(body))
    await ctl.stop()
    if not ctl.owns_tenant:
        await ctl.close()
        reg.release(key)
        return
    ctl.follow_detach()
    try:
        keep = (body.metadata.annotations or {}).get(v1alpha1.KEEP_LOCAL_ANNOTATION) == "true"
        await ctl.tenant.detach(timeout=DETACH_TIMEOUT, keep_local=keep)
    except EngineError as e:
        ctl.writer.mark(urgent=True)
        await ctl.writer.flush()
        delay = min(5 * 2**retry, 120)
        raise kopf.TemporaryError(f"detach blocked: {e.reason}: {e.message}", delay=delay) from e
    await ctl.event("Normal", "Detached", f"tenant {ctl.tenant.id} detached; remote data kept")
    await ctl.close()
    reg.release(key)


@kopf.on.cleanup()
async def shutdown(**_: Any) -> None:
    reg = REGISTRY
    if reg is None:
        return
    await asyncio.gather(*(c.close() for c in reg.controllers.values()), return_exceptions=True)
