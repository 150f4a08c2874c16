"""One asyncio task per Tenant resource: engine calls in, status and Events out.

Lifecycle of a controller:
1. bring the tenant to Active with `Tenant.start` (marker -> resume attach, tenant on the volume
   -> load + reconcile_with_remote, nothing -> attach);
   - a transient failure (remote storage down, ...) is retried with capped backoff and shown in
     ``status.message``; the phase stays what it was;
   - a permanent failure makes the tenant Broken (reason, message, a Warning Event) and
     schedules an automatic retry with capped exponential backoff (``status.attempts``,
     ``status.nextRetryTime``); a new value of the ``pageserver.dev/retry`` annotation or a
     spec change retries at once. ``attempts`` is reset only once a sync succeeded, so a
     failure that only a sync finds (a split brain) backs off too;
   at most ``max_concurrent_attaches`` bring-ups of one manager run at once (a semaphore of the
   `ownership.Registry`): the others wait with their status message saying so;
2. while Active, sync every ``sync_period`` seconds (new local layers uploaded, then the index);
3. on deletion the handler cancels the task, then detaches (see handlers.py).

Inputs are never lost: a spec change or a retry annotation sets a wake flag that is cleared
only when it is consumed (right before the newest spec is read), so one arriving during an
attach, a sync or an Event post is acted on at the next wait. ``observedGeneration`` is the
generation of the spec the engine was last given (by a bring-up that ended, or an
``apply_config`` that succeeded), never merely the newest one seen.

Ownership (which resource's controller drives a tenant id, and which wait as duplicates) is
decided by `ownership.Registry`; a controller only plays the role it is given (`set_role`): a
non-owner shows its own status (Broken ``TenantIdInUse``) and never touches the data.

Crash behaviour: nothing here is durable except what the API server holds (status, the
finalizer); a restarted operator recomputes ownership and restarts every controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pageserver_operator import backoff
from pageserver_operator import settings as settings_mod
from pageserver_operator.api import v1alpha1
from pageserver_operator.engine import errors as engine_errors
from pageserver_operator.engine import progress, tenant
from pageserver_operator.engine import snapshot as engine_snapshot
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats.generation import Generation
from pageserver_operator.k8s import generations, kube, status

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


def retry_delay(attempt: int, initial: float, cap: float) -> float:
    """The automatic retry of a Broken tenant: ``initial`` (settings RETRY_INITIAL) doubling per
    attempt up to ``cap`` (RETRY_MAX); attempt 0 waits as long as attempt 1."""
    return backoff.Backoff(initial, 2.0, cap).delay(max(attempt, 1))


#: delays between retries of a transient failure of a bring-up (1 s doubling up to a minute)
TRANSIENT_BACKOFF = backoff.Backoff(base=1.0, factor=2.0, cap=60.0)

_NO_PROGRESS = progress.ProgressSnapshot(0, 0, 0, 0, None, None)


class TenantController:
    def __init__(
        self,
        key: Key,
        body: dict[str, Any],
        tenant_: tenant.Tenant,
        k: kube.Kube,
        s: settings_mod.OperatorSettings,
        owns_tenant: bool,
        bring_ups: asyncio.Semaphore | None = None,
    ) -> None:
        self.key = key
        #: the manager's bound on bring-ups at once (settings ``max_concurrent_attaches``); None: none
        self.bring_ups = bring_ups
        self.tenant = tenant_
        self.kube = k
        self.settings = s
        self.owns_tenant = owns_tenant
        #: the owner's key while this resource waits as a duplicate
        self.refused_by: Key | None = None
        self.ref: dict[str, Any] = {}
        self.spec: dict[str, Any] = {}
        self.generation: int | None = None
        self.retry_token: str | None = None
        old = body.get("status") or {}
        self.attempts = int(old.get("attempts") or 0)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._warned: tuple[str, str] | None = None  # (reason, message) of the last Warning Event
        #: (reason, message) of the failing upload last posted as a Warning while Active
        self._upload_warned: tuple[str, str] | None = None
        self._last_event: asyncio.Future[None] | None = None
        self._sync_note: str | None = None
        self._note_base = ""
        #: the generation issued to this controller's bring-ups (None: not yet, or given up)
        self.issued: generations.Issued | None = None
        #: the retry token seen when the tenant was found stale (None: not stale); only a new
        #: value of the retry annotation makes this manager take the tenant over again
        self._stale_token: str | None = None
        self.stale = False
        self.writer = status.StatusWriter(self._patch, self._snapshot, s.status_interval, old)
        self.update(body)

    # ---- inputs from watch events ---------------------------------------------------------------

    def update(self, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        self.ref = {"metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")}}
        generation = meta.get("generation")
        token = (meta.get("annotations") or {}).get(v1alpha1.RETRY_ANNOTATION)
        changed = (self.generation is not None and generation != self.generation) or token != self.retry_token
        self.generation = generation
        self.retry_token = token
        self.spec = dict(body.get("spec") or {})
        if not self.owns_tenant:
            self.writer.generation = generation  # a duplicate observes every spec (and refuses it)
        if changed and self._task is not None and not meta.get("deletionTimestamp"):
            self._wake.set()

    # ---- lifecycle ------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self.writer.start()
            self._task = asyncio.get_running_loop().create_task(self._main(), name=f"tenant {self.key}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def set_role(self, owns: bool, tenant_: tenant.Tenant, refused_by: Key | None) -> None:
        """Become the owner (``tenant_`` is the engine's tenant) or a waiting duplicate; a
        running controller restarts in its new role."""
        if owns == self.owns_tenant and refused_by == self.refused_by and tenant_ is self.tenant:
            return
        running = self._task is not None
        await self.stop()
        self.owns_tenant, self.refused_by, self.tenant = owns, refused_by, tenant_
        if owns:
            self._warned = None
        if running:
            self.start()
        else:
            self.writer.mark(urgent=True)

    def follow_detach(self) -> None:
        if self.owns_tenant and self.issued is None and not self.tenant.attachment.needs_generation:
            self._want_generation()  # a detach that loads the tenant first writes under a new one
        self._follow_detach()

    def _follow_detach(self) -> None:
        """While the delete handler detaches (the loop is stopped), the tenant's state changes
        (Stopping, "detach blocked: ...") still reach ``status`` (also after a restart, when
        this controller never ran)."""
        if self.owns_tenant and self.on_tenant_change not in self.tenant.listeners:
            self.tenant.listeners.append(self.on_tenant_change)
        self.writer.start()

    async def close(self, write: bool = True) -> None:
        """Stop; ``write``: flush what is pending first (not for a resource that is gone)."""
        await self.stop()
        with contextlib.suppress(ValueError):
            self.tenant.listeners.remove(self.on_tenant_change)
        await self.writer.stop(flush=write)

    # ---- helpers --------------------------------------------------------------------------------

    async def _patch(self, patch: dict[str, Any]) -> None:
        try:
            await self.kube.patch_status(self.key[0], self.key[1], patch)
        except kube.StaleStatusWrite as e:
            # the API server refused it: a newer generation was issued to another manager
            self._became_stale(self.tenant.where, f"the API server refused this manager's status write ({e})")

    async def _is_current(self) -> bool:
        """The engine's validation of its generation (an uncached read of the Tenant)."""
        issued = self.issued
        if issued is None:
            return False
        try:
            current = await generations.is_current(
                self.kube, self.key[0], self.key[1], issued.generation, self.settings.pageserver
            )
        except RuntimeError as e:
            raise EngineError("ControlPlaneUnavailable", f"{self.tenant.where}: validating the generation: {e}", transient=True) from e
        if not current:
            self._became_stale(self.tenant.where, "the Tenant resource holds a newer generation or another pageserver")
        return current

    def _want_generation(self) -> None:
        """The next attach or load of the tenant starts by issuing a new generation (`_issue`)."""
        self.issued = None
        self.tenant.attachment.issuer = self._issue
        self.tenant.attachment.needs_generation = True

    async def _issue(self, floor: Generation | None) -> None:
        """A new generation for this manager, past ``floor`` (the newest in remote storage);
        called by the engine before anything of the tenant is written remotely."""
        try:
            issued = await generations.issue(self.kube, self.key[0], self.key[1], self.settings.pageserver, floor)
        except (generations.IssueFailed, RuntimeError) as e:
            raise EngineError(
                "GenerationNotIssued", f"{self.tenant.where}: bumping status.placement.generation: {e}", transient=True
            ) from e
        self.issued = issued
        self.stale = False
        # the bump wrote it: the status patches (which carry the generation) need not repeat it
        self.writer.written_elsewhere({"placement": {"generation": issued.generation.value}})
        self.tenant.generation = issued.generation
        self.tenant.attachment.previous_generation = issued.previous
        self.tenant.attachment.control_plane = self._is_current

    def _became_stale(self, where: str, why: str) -> None:
        """A newer generation exists: stop writing (the queues stop, nothing is deleted), say
        so (Broken ``Stale`` and a Warning Event), and wait for the retry annotation."""
        if self.stale:
            return
        self.stale = True
        self._stale_token = self.retry_token
        g = self.issued.generation if self.issued is not None else self.tenant.generation
        err = engine_errors.stale(where, g, None, why)
        log.warning("%s", err.message, extra={"tenant_id": str(self.tenant.id)})
        self.tenant.mark_broken(err)
        self._wake.set()  # the loop leaves its sleep and waits as a stale manager

    def _snapshot(self) -> engine_snapshot.TenantSnapshot:
        if self.owns_tenant:
            return self.tenant.snapshot()
        return engine_snapshot.TenantSnapshot(
            tenant_id=str(self.tenant.id),
            state=engine_snapshot.TenantState.BROKEN,
            reason="TenantIdInUse",
            message=self._refusal(),
            progress=_NO_PROGRESS,
            timelines=[],
        )

    def _refusal(self) -> str:
        by = f"the Tenant {self.refused_by[0]}/{self.refused_by[1]}" if self.refused_by else "another Tenant"
        return (
            f"tenant {self.tenant.id} is already managed by {by} on this volume (the oldest resource "
            "naming a tenant id owns it); this one takes over if that one is deleted"
        )

    def _config(self) -> dict[str, Any] | None:
        cfg = self.spec.get("config")
        if cfg is None:
            return None
        return v1alpha1.TenantConfigSpec.model_validate(cfg).overrides()

    def _observe(self, generation: int | None) -> None:
        """The engine was given the spec of ``generation``."""
        self.writer.generation = generation

    def _post_event(self, type_: str, reason: str, message: str) -> asyncio.Future[None]:
        """Post an Event after every Event posted before it (posts run on a thread pool and
        would otherwise race)."""
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
        """Status follows every change; an Event only for what needs attention (a Warning per
        distinct failure until the tenant is Active again): the rest is in ``status`` and
        ``status.history``."""
        self.writer.on_tenant_change(t)
        state = t.state
        if state is engine_snapshot.TenantState.ACTIVE:
            self._warned = None
        elif state is engine_snapshot.TenantState.BROKEN and self._warned != (t.reason, t.message):
            self._warned = (t.reason, t.message)
            self._post_event("Warning", t.reason or "Broken", t.message)
        # uploads that keep failing while Active (AccessDenied, NoSuchBucket, ...): one Warning
        # per distinct failure; the Synced condition carries the same reason and message
        upload_error = t.upload_error if state is engine_snapshot.TenantState.ACTIVE else None
        if upload_error is not None and upload_error != self._upload_warned:
            self._post_event("Warning", upload_error[0], upload_error[1])
        self._upload_warned = upload_error

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, or return early (True) when woken by a spec change or the retry annotation,
        also one that arrived before this call. The flag is cleared here, when consumed: the
        caller reads the newest spec right after, before any ``await``.

        Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives in the
        same tick as the wake-up (a deletion does both), and the controller would never stop."""
        if self._stopping:
            raise asyncio.CancelledError()
        if not self._wake.is_set():
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter}, timeout=seconds)
            finally:
                waiter.cancel()
        if self._stopping:
            raise asyncio.CancelledError()
        woken = self._wake.is_set()
        self._wake.clear()
        return woken

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
        self.writer.extra = {"attempts": None, "nextRetryTime": None}
        self.writer.mark(urgent=True)
        msg = self._refusal()
        if self._warned != ("TenantIdInUse", msg):
            self._warned = ("TenantIdInUse", msg)
            await self.event("Warning", "TenantIdInUse", msg)
        await asyncio.Event().wait()  # until promoted or deleted

    async def _bring_up(self) -> None:
        transient_failures = 0
        # a retry is starting now: no retry time in the future (also after a restart)
        self.writer.extra = {"attempts": self.attempts, "nextRetryTime": None}
        while True:
            generation, config = self.generation, self._config()
            try:
                if self.issued is None and not self.tenant.attachment.needs_generation:
                    self._want_generation()
                async with self._bring_up_slot():
                    await self.tenant.start(config)
            except EngineError as e:
                if e.reason == "Stale" or self.stale:
                    await self._wait_while_stale()
                    continue
                if e.transient:
                    self.writer.mark(urgent=True)
                    transient_failures += 1
                    await self._sleep(TRANSIENT_BACKOFF.delay(transient_failures))
                    continue
                self._observe(generation)
                await self._retry_later(e)
                self.writer.extra = {"attempts": self.attempts, "nextRetryTime": None}
                continue
            self._observe(generation)
            self.writer.extra = {"attempts": self.attempts, "nextRetryTime": None}
            self.writer.mark(urgent=True)
            await self._settle()
            return

    @contextlib.asynccontextmanager
    async def _bring_up_slot(self) -> AsyncIterator[None]:
        """One of the manager's ``max_concurrent_attaches`` slots for as long as a bring-up runs
        (a transient failure, a Broken tenant or a stale one gives it back before waiting)."""
        if self.bring_ups is None:
            yield
            return
        if self.bring_ups.locked():
            self.tenant.note(
                f"waiting for a free attach slot ({self.settings.max_concurrent_attaches} tenants are brought up at once)"
            )
        async with self.bring_ups:
            yield

    async def _settle(self) -> None:
        """Right after a bring-up: validate the generation of the index it wrote and execute
        the deletions it recorded (the first sync would, a sync period later)."""
        try:
            await self.tenant.settle()
        except EngineError as e:
            if e.reason == "Stale" or self.stale:
                self._became_stale(self.tenant.where, e.message)
            # anything else: the next sync meets it again

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

    async def _wait_while_stale(self) -> None:
        """Stale: nothing is written until a new value of the retry annotation asks this
        manager to take the tenant over (a new generation). Spec changes do not: two managers
        would otherwise take it from each other at every change."""
        if not self.stale:
            self._became_stale(self.tenant.where, "found at its last validation")
        self.writer.extra = {"attempts": self.attempts, "nextRetryTime": None}
        while self.retry_token == self._stale_token:
            await self._sleep(3600.0)
        log.info("taking tenant %s over (retry annotation)", self.tenant.id, extra={"tenant_id": str(self.tenant.id)})
        self._want_generation()

    async def _sync_while_active(self) -> None:
        while True:
            woken = await self._sleep(self.settings.sync_period)
            if self.stale:
                await self._wait_while_stale()
                return
            generation, config = self.generation, self._config()
            try:
                if woken or generation != self.writer.generation:
                    await self.tenant.apply_config(config)
                    self._observe(generation)
                await self.tenant.sync(timeout=max(self.settings.sync_period * 10, 600))
            except EngineError as e:
                if e.reason == "Stale" or self.stale:
                    await self._wait_while_stale()
                    return
                if e.transient:
                    if self._sync_note is None or self.tenant.message != self._sync_note:
                        self._note_base = self.tenant.message
                    self._sync_note = f"sync: retrying after error: {e.message}"
                    self.tenant.note(self._sync_note)
                    continue
                self._sync_note = None
                self.tenant.mark_broken(e)
                await self._retry_later(e)
                return
            if self._sync_note is not None and self.tenant.message == self._sync_note:
                self.tenant.note(self._note_base)  # the error cleared: so does its message
            self._sync_note = None
            if self.attempts:
                self.attempts = 0
                self.writer.extra = {"attempts": 0, "nextRetryTime": None}
            self.writer.mark()
