"""One asyncio task per Tenant resource: engine calls in, status and Events out.

Lifecycle of a controller:
1. bring the tenant to Active with `Tenant.start` (marker -> resume attach, tenant on the volume
   -> load + reconcile_with_remote, nothing -> attach);
   - a transient failure (remote storage down, ...) is retried with capped backoff and shown in
     ``status.message``; the phase stays what it was;
   - a permanent failure makes the tenant Broken (reason, message, Event) and schedules an
     automatic retry with capped exponential backoff (``status.attempts``,
     ``status.nextRetryTime``); a new value of the ``pageserver.dev/retry`` annotation or a
     spec change retries at once;
2. while Active, sync every ``sync_period`` seconds (new local layers uploaded, then the index);
3. on deletion the handler cancels the task, then detaches (see handlers.py).

Only one resource may own a tenant id on this volume; a second one is Broken with
``TenantIdInUse`` and never touches the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pageserver_operator import settings as settings_mod
from pageserver_operator.api import v1alpha1
from pageserver_operator.engine import manager, tenant
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import ids
from pageserver_operator.k8s import kube, status

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def retry_delay(attempt: int, initial: float, cap: float) -> float:
    return float(min(initial * 2 ** max(attempt - 1, 0), cap))


_EVENTS: dict[str, tuple[str, str]] = {
    # engine state -> (event type, event reason)
    "Attaching": ("Normal", "AttachStarted"),
    "Loading": ("Normal", "LoadStarted"),
    "Active": ("Normal", "Active"),
    "Broken": ("Warning", "Broken"),
    "Stopping": ("Normal", "DetachStarted"),
}


class TenantController:
    def __init__(
        self,
        key: Key,
        body: dict[str, Any],
        tenant_: tenant.Tenant,
        k: kube.Kube,
        s: settings_mod.OperatorSettings,
        owns_tenant: bool,
    ) -> None:
        self.key = key
        self.tenant = tenant_
        self.kube = k
        self.settings = s
        self.owns_tenant = owns_tenant
        self.ref: dict[str, Any] = {}
        self.spec: dict[str, Any] = {}
        self.generation: int | None = None
        self.retry_token: str | None = None
        self.attempts = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._last_event_state: str | None = None
        self._last_event: asyncio.Future[None] | None = None
        old = (body.get("status") or {})
        if not tenant_.history:
            tenant_.history = [
                tenant.Transition(_parse_time(h["time"]), h["phase"], h.get("reason", ""), h.get("message", ""))
                for h in old.get("history") or []
                if h.get("time") and h.get("phase")
            ]
        self.writer = status.StatusWriter(
            self._patch, self.tenant.snapshot, s.status_interval, old.get("conditions") or []
        )
        self.update(body)

    # ---- inputs from watch events ---------------------------------------------------------------

    def update(self, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        self.ref = {"metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")}}
        generation = meta.get("generation")
        token = (meta.get("annotations") or {}).get(v1alpha1.RETRY_ANNOTATION)
        wake = False
        if self.generation is not None and generation != self.generation:
            wake = True
        if self.retry_token is not None or token is not None:
            wake = wake or (token != self.retry_token and self._task is not None)
        self.generation = generation
        self.writer.generation = generation
        self.retry_token = token
        self.spec = dict(body.get("spec") or {})
        if wake and not meta.get("deletionTimestamp"):
            self._wake.set()

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self.writer.start()
            self._task = asyncio.get_running_loop().create_task(self._main(), name=f"tenant {self.key}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def follow_detach(self) -> None:
        """While the delete handler detaches (the loop is stopped), the tenant's state changes
        (Stopping, "detach blocked: ...") still reach ``status`` and Events (DetachStarted)."""
        if self.owns_tenant and self.on_tenant_change not in self.tenant.listeners:
            self.tenant.listeners.append(self.on_tenant_change)

    async def close(self) -> None:
        await self.stop()
        with contextlib.suppress(ValueError):
            self.tenant.listeners.remove(self.on_tenant_change)
        await self.writer.stop()

    # ---- helpers --------------------------------------------------------------------------------

    async def _patch(self, patch: dict[str, Any]) -> None:
        await self.kube.patch_status(self.key[0], self.key[1], patch)

    def _config(self) -> dict[str, Any] | None:
        cfg = self.spec.get("config")
        if cfg is None:
            return None
        return v1alpha1.TenantConfigSpec.model_validate(cfg).overrides()

    def _post_event(self, type_: str, reason: str, message: str) -> asyncio.Future[None]:
        """Post an Event after every Event posted before it (posts run on a thread pool and
        would otherwise race: "RetryScheduled" landing before the "Broken" it follows)."""
        before = self._last_event
        ref = dict(self.ref)

        async def post() -> None:
            if before is not None:
                await asyncio.wait({before})
            await self.kube.event(ref, type_, reason, message)

        task = asyncio.get_running_loop().create_task(post())
        self._last_event = task
        return task

    async def event(self, type_: str, reason: str, message: str) -> None:
        # shielded: a caller cancelled meanwhile must not leave a gap in the chain
        await asyncio.shield(self._post_event(type_, reason, message))

    def on_tenant_change(self, t: tenant.Tenant) -> None:
        self.writer.on_tenant_change(t)
        state = t.state.value if t.state else None
        if state is not None and state != self._last_event_state:
            self._last_event_state = state
            type_, reason = _EVENTS[state]
            if state == "Broken":
                reason = t.reason or reason
                type_ = "Warning"
            self._post_event(type_, reason, t.message)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, or return early (True) when woken by a spec change or the retry annotation.

        Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives in the
        same tick as the wake-up (a deletion does both), and the controller would never stop."""
        if self._stopping:
            raise asyncio.CancelledError()
        self._wake.clear()
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait({waiter}, timeout=seconds)
        finally:
            waiter.cancel()
        if self._stopping:
            raise asyncio.CancelledError()
        return bool(done)

    # ---- the loop -------------------------------------------------------------------------------

    async def _main(self) -> None:
        if not self.owns_tenant:
            await self._refuse_duplicate()
            return
        self.tenant.listeners.append(self.on_tenant_change)
        try:
            while True:
                await self._bring_up()
                await self._sync_while_active()
        finally:
            with contextlib.suppress(ValueError):
                self.tenant.listeners.remove(self.on_tenant_change)

    async def _refuse_duplicate(self) -> None:
        msg = f"tenant {self.tenant.id} is already managed by another Tenant resource on this volume"
        self.writer.extra = {"phase": "Broken", "reason": "TenantIdInUse", "message": msg}
        await self.writer.flush()
        await self.event("Warning", "TenantIdInUse", msg)
        await asyncio.Event().wait()  # until deleted

    async def _bring_up(self) -> None:
        transient_delay = 1.0
        while True:
            try:
                await self.tenant.start(self._config())
                self.attempts = 0
                self.writer.extra = {"attempts": 0, "nextRetryTime": None}
                self.writer.mark(urgent=True)
                return
            except EngineError as e:
                if e.transient:
                    self.writer.mark(urgent=True)
                    await self._sleep(transient_delay)
                    transient_delay = min(transient_delay * 2, 60.0)
                    continue
                await self._retry_later(e)

    async def _retry_later(self, e: EngineError) -> None:
        """Broken: schedule the automatic retry (capped exponential backoff) and wait for it, or
        for the retry annotation or a spec change. Also after a failure found by a sync (a split
        brain): retrying at once would reload the tenant from the other writer's index."""
        self.attempts += 1
        delay = retry_delay(self.attempts, self.settings.retry_initial, self.settings.retry_max)
        when = datetime.now(UTC) + timedelta(seconds=delay)
        self.writer.extra = {"attempts": self.attempts, "nextRetryTime": v1alpha1.rfc3339(when)}
        self.writer.mark(urgent=True)
        await self.event(
            "Normal", "RetryScheduled", f"attempt {self.attempts} failed ({e.reason}); retrying in {delay:.0f} s"
        )
        woken = await self._sleep(delay)
        log.info(
            "retrying %s (%s)", self.tenant.id, "woken" if woken else "backoff elapsed",
            extra={"tenant_id": str(self.tenant.id)},
        )

    async def _sync_while_active(self) -> None:
        while True:
            woken = await self._sleep(self.settings.sync_period)
            try:
                if woken:
                    await self.tenant.apply_config(self._config())
                await self.tenant.sync(timeout=max(self.settings.sync_period * 10, 600))
                self.writer.mark()
            except EngineError as e:
                if e.transient:
                    self.tenant.note(f"sync: retrying after error: {e.message}")
                    continue
                self.tenant.mark_broken(e)
                await self._retry_later(e)
                return


@dataclass
class Registry:
    """Every controller of this operator, and which resource owns which tenant id."""

    manager: manager.TenantManager
    kube: kube.Kube
    settings: settings_mod.OperatorSettings
    controllers: dict[Key, TenantController] = field(default_factory=dict)
    owners: dict[ids.TenantId, Key] = field(default_factory=dict)

    def ensure(self, key: Key, body: dict[str, Any]) -> TenantController:
        ctl = self.controllers.get(key)
        if ctl is not None:
            ctl.update(body)
            return ctl
        tid = ids.TenantId.parse(str((body.get("spec") or {}).get("tenantId")))
        owner = self.owners.setdefault(tid, key)
        ctl = TenantController(key, body, self.manager.get(tid), self.kube, self.settings, owner == key)
        self.controllers[key] = ctl
        return ctl

    def release(self, key: Key) -> None:
        ctl = self.controllers.pop(key, None)
        if ctl is not None and self.owners.get(ctl.tenant.id) == key:
            del self.owners[ctl.tenant.id]
            self.manager.forget(ctl.tenant.id)
