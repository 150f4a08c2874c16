"""Status of a Tenant resource as small functions merged into one patch (CloudNativePG style).

`StatusWriter` turns the engine's snapshot into ``status`` and writes it through the ``/status``
subresource. Writes are coalesced: progress at most once per ``interval`` seconds, never per
file; phase changes at once; a patch identical to the last one is skipped. While the tenant is
Loading or Attaching the writer samples the progress every ``interval`` on its own (download
threads only bump counters; they never ask for a write), so ``percent`` and ``etaSeconds`` move
about once a second. Conditions keep their ``lastTransitionTime`` while their status does not
change.

Phases are `TenantState` values here, never text: the phase of a status read back (written by
an earlier process) is parsed by `v1alpha1.parse_phase`, and ``api/`` writes the phase names
and LSNs of what is sent (`v1alpha1.status_from_snapshot`, `v1alpha1.history_entry`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pageserver_operator import backoff
from pageserver_operator.api import v1alpha1
from pageserver_operator.engine import snapshot as engine_snapshot
from pageserver_operator.engine import tenant as engine_tenant
from pageserver_operator.engine.snapshot import TenantState, Transition

log = logging.getLogger(__name__)

Patcher = Callable[[dict[str, Any]], Awaitable[None]]

#: Phases whose progress moves without anyone telling the writer: sampled every interval.
TRANSFERRING = frozenset({TenantState.LOADING, TenantState.ATTACHING})


def patch_retry_backoff(interval: float) -> backoff.Backoff:
    """After ``n`` failed status patches in a row the next waits ``interval * 2**n``, at most a minute."""
    return backoff.Backoff(base=2 * interval, factor=2.0, cap=60.0)


def now_rfc3339() -> str:
    return v1alpha1.rfc3339(datetime.now(UTC))


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """Return ``conditions`` with ``type_`` set; the transition time moves only on a change."""
    value = "True" if status else "False"
    old = next((c for c in conditions if c.get("type") == type_), None)
    ltt = old["lastTransitionTime"] if old and old.get("status") == value else now_rfc3339()
    new = {
        "type": type_,
        "status": value,
        "reason": reason or ("Ready" if status else "NotReady"),
        "message": message,
        "lastTransitionTime": ltt,
    }
    if generation is not None:
        new["observedGeneration"] = generation
    return [c for c in conditions if c.get("type") != type_] + [new]


def ready_condition(
    conditions: list[dict[str, Any]], snap: engine_snapshot.TenantSnapshot, generation: int | None
) -> list[dict[str, Any]]:
    active = snap.state is TenantState.ACTIVE
    return set_condition(conditions, "Ready", active, snap.reason or "", snap.message, generation)


def synced_condition(
    conditions: list[dict[str, Any]], snap: engine_snapshot.TenantSnapshot, generation: int | None
) -> list[dict[str, Any]]:
    if snap.state is not TenantState.ACTIVE:
        phase = v1alpha1.phase_name(snap.state)
        return set_condition(conditions, "Synced", False, "NotActive", f"tenant is {phase}", generation)
    failing = [t for t in snap.timelines if t.upload_error_reason]
    if failing:  # uploads keep failing: say why (e.g. RemoteStorageRejected: AccessDenied)
        msg = "; ".join(t.upload_error_message or "" for t in failing)
        return set_condition(conditions, "Synced", False, failing[0].upload_error_reason or "", msg, generation)
    lagging = [t for t in snap.timelines if t.upload_lag_bytes or t.upload_queue_unfinished]
    if lagging:
        msg = "; ".join(_lag_message(t) for t in lagging)
        return set_condition(conditions, "Synced", False, "UploadsPending", msg, generation)
    return set_condition(
        conditions, "Synced", True, "UpToDate", "every timeline's remote index is up to date", generation
    )


LAGGING_NAMES_SHOWN = 3


def _lag_message(t: engine_snapshot.TimelineSnapshot) -> str:
    """``timeline T: 1 layer (3145728 bytes) not in the remote index: NAME; 2 uploads pending``."""
    parts = []
    names = t.lagging_layers
    if names or t.upload_lag_bytes:
        shown = ", ".join(names[:LAGGING_NAMES_SHOWN]) + (", ..." if len(names) > LAGGING_NAMES_SHOWN else "")
        count = f"{len(names)} layer{'s' if len(names) != 1 else ''}"
        parts.append(f"{count} ({t.upload_lag_bytes} bytes) not in the remote index: {shown}")
    if t.upload_queue_unfinished:
        parts.append(f"{t.upload_queue_unfinished} upload operations pending")
    return f"timeline {t.timeline_id}: " + "; ".join(parts)


_NULLABLE_PROGRESS = ("startedAt", "etaSeconds", "percent")
#: entries of ``status.history`` kept (oldest dropped first)
HISTORY_LIMIT = 10


def build_status(
    snap: engine_snapshot.TenantSnapshot,
    conditions: list[dict[str, Any]],
    generation: int | None,
    extra: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The full status document for ``snap`` and the updated conditions.

    The status is written as a merge patch: a key left out keeps its old value, so what is
    unknown or empty is sent as null (removed): the optional progress fields (else a tenant that
    went from Active to Loading would show "100 %, ETA 0" until its new totals are known), the
    whole ``progress`` of a Broken tenant that transferred nothing, and an empty ``timelines``."""
    status = v1alpha1.status_from_snapshot(snap).model_dump(by_alias=True, exclude_none=True)
    p = snap.progress
    if snap.state is TenantState.BROKEN and not (p.layers_done or p.bytes_done):
        status["progress"] = None
    else:
        for key in _NULLABLE_PROGRESS:
            status["progress"].setdefault(key, None)
    if not status.get("timelines"):
        status["timelines"] = None
    conditions = ready_condition(conditions, snap, generation)
    conditions = synced_condition(conditions, snap, generation)
    status["conditions"] = conditions
    status["observedGeneration"] = generation
    status["timelineCount"] = len(snap.timelines)
    if history is not None:
        status["history"] = history
    if extra:
        status.update(extra)
    return status, conditions


def _shown_key(phase: TenantState | None, reason: Any) -> tuple[TenantState | None, str]:
    """What makes a history entry: a new phase, or a new reason of a Broken tenant (a transient
    retry that keeps the phase adds nothing)."""
    return (phase, str(reason or "") if phase is TenantState.BROKEN else "")


class StatusWriter:
    """Coalescing, throttled writer of one resource's status.

    - ``old`` is the status the resource has now: a status equal to it is not written again
      (an operator restart of an Active tenant writes nothing when nothing changed);
    - a phase change is written at once, except Loading/Attaching: they are written only if
      still current ``interval`` seconds after they began (an attach or load that ends sooner
      costs one write, not two), and the reload of a tenant shown Active only once it has
      something to download (`_quiet_reload`: an operator restart shows no Ready flap); but a
      status that says Active while the engine attaches, or reloads with layers to fetch, is
      corrected at once (`_stale_ready`);
    - ``status.history`` records the phases the tenant entered (see `_shown_key`: a transient
      retry adds nothing), the last `HISTORY_LIMIT`, kept across restarts; a Loading/Attaching
      too short to be written is recorded only if it led somewhere new (an attach that ends
      Active: yes; a restart's reload of an Active tenant, or a retry that fails as the last
      one did: no);
    - writes are serialized: a write cancelled by `stop` finishes before the next starts, so two
      patches never land out of order.
    """

    def __init__(
        self,
        patch: Patcher,
        snapshot: Callable[[], engine_snapshot.TenantSnapshot],
        interval: float,
        old: dict[str, Any] | None = None,
    ) -> None:
        old = old or {}
        self._patch = patch
        self._snapshot = snapshot
        self.interval = interval
        self.conditions: list[dict[str, Any]] = list(old.get("conditions") or [])
        gen = old.get("observedGeneration")
        self.generation: int | None = gen if isinstance(gen, int) else None
        self.extra: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = [
            dict(h) for h in old.get("history") or [] if isinstance(h, dict) and h.get("time") and h.get("phase")
        ]
        # the key of the last history entry; an attach or load the previous process did not
        # finish is not "the same phase" when it starts again (a resumed attach is an entry)
        old_phase = v1alpha1.parse_phase(old.get("phase"))
        self._recorded = _shown_key(None if old_phase in TRANSFERRING else old_phase, old.get("reason"))
        #: a Loading/Attaching entry, committed once written or once it leads somewhere new
        self._pending: Transition | None = None
        self._last: dict[str, Any] | None = _comparable(old) if old else None
        self._last_time = 0.0
        self._last_state: TenantState | None = old_phase
        self._seen_state: TenantState | None = old_phase
        self._hold_until = 0.0
        self._dirty = asyncio.Event()
        self._urgent = False
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._inflight: asyncio.Future[None] | None = None
        self.patches = 0
        self.failures = 0
        self._retry_at = 0.0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, flush: bool = True) -> None:
        """Write what is pending (unless not ``flush``), then stop."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if flush:
            await self.flush()
        elif self._inflight is not None:
            await asyncio.gather(self._inflight, return_exceptions=True)

    def written_elsewhere(self, part: dict[str, Any]) -> None:
        """``part`` of the status was written by someone else (the generation bump): the next
        patch need not repeat it."""
        if self._last is not None:
            self._last = {**self._last, **_comparable(part)}

    def mark(self, urgent: bool = False) -> None:
        self._urgent = self._urgent or urgent
        self._dirty.set()

    def on_tenant_change(self, t: engine_tenant.Tenant) -> None:
        state = t.state
        self._record(state, t.reason, t.message)
        if state == self._seen_state:
            self.mark()
            return
        self._seen_state = state
        if state in TRANSFERRING:
            self._hold_until = time.monotonic() + self.interval
            self.mark()
        else:
            self._hold_until = 0.0
            self.mark(urgent=True)

    def _record(self, phase: TenantState | None, reason: str, message: str) -> None:
        if phase is None:
            return
        key = _shown_key(phase, reason)
        if self._pending is not None:
            if key == _shown_key(self._pending.phase, self._pending.reason):
                return
            pending, self._pending = self._pending, None
            if key == self._recorded:
                return  # back where it was within the interval (a reload, a retry failing alike)
            self._append(pending)
        if key == self._recorded:
            return
        entry = Transition(datetime.now(UTC), phase, reason, message)
        if phase in TRANSFERRING:
            self._pending = entry
        else:
            self._append(entry)

    def _append(self, entry: Transition) -> None:
        self._recorded = _shown_key(entry.phase, entry.reason)
        self.history.append(v1alpha1.history_entry(entry).model_dump(by_alias=True))
        del self.history[:-HISTORY_LIMIT]

    async def flush(self) -> None:
        async with self._lock:
            if self._inflight is not None and not self._inflight.done():
                await asyncio.wait({self._inflight})  # a write whose caller was cancelled
            snap = self._snapshot()
            if snap.state is None:
                return  # nothing started yet: nothing to say (and no Ready=False flap)
            self._record(snap.state, snap.reason, snap.message)
            if self._quiet_reload(snap):
                return
            if self._pending is not None and snap.state in TRANSFERRING:
                self._append(self._pending)  # it is being written: it was shown
                self._pending = None
            status, self.conditions = build_status(snap, self.conditions, self.generation, self.extra, self.history)
            self._last_state = snap.state
            comparable = _comparable(status)
            if self._last is not None and comparable == self._last:
                return
            self._inflight = asyncio.ensure_future(self._patch({"status": status}))
            try:
                await asyncio.shield(self._inflight)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a failed status write must never stop the tenant
                self.failures += 1
                delay = patch_retry_backoff(self.interval).delay(self.failures)
                log.warning("status patch failed (%d in a row; next try in %.0f s): %s", self.failures, delay, e)
                self._retry_at = time.monotonic() + delay
                self._dirty.set()  # what was not written is still to be written
                return
            self.failures = 0
            self._last = comparable
            self._last_time = time.monotonic()
            self.patches += 1

    def _quiet_reload(self, snap: engine_snapshot.TenantSnapshot) -> bool:
        """A reload of a tenant whose status says Active (an operator restart) is not shown
        while it only checks the volume against remote storage (nothing to download, no error):
        the pageserver keeps serving, Ready stays True. Once it has layers to fetch, Loading is
        shown with its progress."""
        p = snap.progress
        return (
            snap.state is TenantState.LOADING
            and snap.reason == "LoadStarted"
            and self._last_state is TenantState.ACTIVE
            and p.bytes_done >= p.bytes_total
            and p.layers_done >= p.layers_total
        )

    async def _wait_dirty(self) -> None:
        """Until marked dirty; while transferring, at most ``interval`` seconds (then re-sample).

        Not `asyncio.wait_for`: on Python 3.11 it can swallow the cancellation of `stop`."""
        if self._last_state not in TRANSFERRING and self._seen_state not in TRANSFERRING:
            await self._dirty.wait()
            return
        await self._wait(self.interval)

    async def _wait(self, seconds: float) -> None:
        waiter = asyncio.ensure_future(self._dirty.wait())
        try:
            await asyncio.wait({waiter}, timeout=seconds)
        finally:
            waiter.cancel()

    def _delay(self) -> float:
        now = time.monotonic()
        delay = self._retry_at - now  # after failures, back off even when urgent
        if not self._urgent and not self._stale_ready():
            delay = max(delay, self._last_time + self.interval - now, self._hold_until - now)
        return delay

    def _stale_ready(self) -> bool:
        """The stored status says Active (Ready=True: written by a previous process, or before
        this attach began) while the engine attaches, or reloads with layers to fetch: the
        volume is not complete, so that is written at once, never held for the interval (a
        `kubectl wait --for=condition=Ready` must not pass on the stale claim)."""
        if self._last_state is not TenantState.ACTIVE or self._seen_state not in TRANSFERRING:
            return False
        return self._seen_state is TenantState.ATTACHING or not self._quiet_reload(self._snapshot())

    async def _run(self) -> None:
        while True:
            await self._wait_dirty()
            while (delay := self._delay()) > 0:
                self._dirty.clear()  # an urgent mark meanwhile ends the wait
                await self._wait(delay)
            self._dirty.clear()
            self._urgent = False
            await self.flush()


def _comparable(status: dict[str, Any]) -> dict[str, Any]:
    """Status minus what changes without meaning (ETA recomputed on every read; the startedAt of
    an Active tenant) and minus the nulls (a merge patch removes them: the stored status has
    none)."""

    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    out: dict[str, Any] = strip(status)
    if isinstance(out.get("progress"), dict):
        # (an Active tenant's startedAt only dates the last transfer: a reload that found every
        # layer in place is no reason to write)
        active = v1alpha1.parse_phase(out.get("phase")) is TenantState.ACTIVE
        volatile = ("etaSeconds", "startedAt") if active else ("etaSeconds",)
        out["progress"] = {k: v for k, v in out["progress"].items() if k not in volatile}
    return out
