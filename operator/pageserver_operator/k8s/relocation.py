"""This manager's part in migrations (DESIGN §8.4; the phases: `relocation.migration`).

Every watch event of a Tenant with a ``status.placement.migration`` goes through `observe`,
which derives this manager's step from the Tenant alone and runs it as one task per Tenant:

- target, ``Warming``: `Tenant.warm` (a secondary: nothing written remotely), its progress
  written to ``migration.progress`` every `PROGRESS_PERIOD`; then ``SourceStale``;
- source, ``SourceStale``: deletions held, a sync (everything local uploaded and indexed); then
  ``Cutover`` with ``staleAt``;
- target, ``Cutover``: ``attached`` := this manager. The controller then attaches as for any
  tenant placed here (generation+1; the attach resumes the warm copy and fetches only what
  changed); once Active: ``SourceDetach`` with the measured window;
- source, ``SourceDetach``: its copy was let go by `ownership.Registry.placed_elsewhere`; then
  the migration is cleared and kept as ``lastMigration``.

Every write is a merge patch carrying the ``resourceVersion`` of an uncached read that still
showed the expected migration (`advance`), so a step taken on an outdated picture changes
nothing. Crash behaviour: nothing is local but the warm copy (resumable); a restarted manager
finds the phase in the Tenant and takes its step again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import prometheus_client

from pageserver_operator import backoff
from pageserver_operator.api import v1alpha1
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.engine.snapshot import TenantState
from pageserver_operator.k8s import kube, leases, ownership
from pageserver_operator.relocation import migration
from pageserver_operator.relocation.migration import Migration, Step

log = logging.getLogger(__name__)

SECONDARY_LAG = prometheus_client.Gauge(
    "pageserver_operator_secondary_fetched_bytes",
    "Bytes the last refresh of a secondary location fetched (its lag behind the attached location)", ["tenant_id"],
)

Key = tuple[str, str]
PROGRESS_PERIOD = 2.0
#: how long a source waits for its own controller to bring the tenant up before flushing
FLUSH_WAIT = 600.0
_RETRY = backoff.Backoff(base=1.0, factor=2.0, cap=30.0)


def _now() -> str:
    return v1alpha1.rfc3339(datetime.now(UTC))


def _seconds_since(stamp: str | None) -> float | None:
    """Seconds since an RFC 3339 time (with or without microseconds)."""
    if not stamp:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            t = datetime.strptime(stamp, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
        return max((datetime.now(UTC) - t).total_seconds(), 0.0)
    return None


async def advance(k: kube.Kube, key: Key, expect: Migration, placement: dict[str, Any], attempts: int = 5) -> bool:
    """Patch ``status.placement`` if the Tenant still records ``expect`` (compare-and-swap on
    an uncached read). False: the migration changed meanwhile (somebody else moved it on)."""
    for _ in range(attempts):
        obj = await k.get_tenant(*key)
        if obj is None:
            return False
        now = migration.of((obj.get("status") or {}).get("placement"))
        if now is None or (now.source, now.target, now.phase) != (expect.source, expect.target, expect.phase):
            return False
        patch = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "status": {"placement": placement}}
        try:
            await k.patch_status(*key, patch)
            return True
        except kube.Conflict:
            continue
    return False


def _migration_dict(m: Migration) -> dict[str, Any]:
    return {"from": m.source, "to": m.target, "phase": m.phase, "startedAt": m.started_at, "reason": m.reason,
            "staleAt": m.stale_at}


class Relocator:
    def __init__(self, k: kube.Kube, reg: ownership.Registry, pageserver: str, secondary_period: float = 60.0) -> None:
        self.k = k
        self.reg = reg
        self.me = pageserver
        #: seconds between two refreshes of a secondary location
        self.secondary_period = secondary_period
        self._tasks: dict[Key, tuple[Step, asyncio.Task[None]]] = {}

    def observe(self, key: Key, body: Any) -> Step:
        """Take this manager's step for the Tenant ``body`` (a task; a running one for the same
        step is left alone, one for another step is cancelled)."""
        placement = ((body.get("status") or {}).get("placement")) or {}
        m = migration.of(placement)
        s = migration.step(m, self.me, placement.get("attached"))
        if s is Step.NONE and placement.get("attached") != self.me and self.me in migration.secondaries_of(placement):
            s = Step.SECONDARY
        running = self._tasks.get(key)
        if running is not None and (running[0] != s or running[1].done()):
            if not running[1].done():
                running[1].cancel()
            del self._tasks[key]
            running = None
        if s in (Step.NONE, Step.CLEAR) or (m is None and s is not Step.SECONDARY):
            return s
        if s is Step.HOLD:
            ctl = self.reg.controllers.get(key)
            if ctl is not None:
                ctl.tenant.attachment.deletions_held = True
            return s
        if running is None:
            work: dict[Step, Coroutine[Any, Any, None]] = {}
            tid = ownership.tenant_id_of(body)
            if s is Step.SECONDARY:
                work[s] = self._secondary(key, tid)
            elif s is Step.WARM and m is not None:
                work[s] = self._warm(key, m, tid)
            elif s is Step.FLUSH and m is not None:
                work[s] = self._flush(key, m)
            elif s is Step.CUT_OVER and m is not None:
                work[s] = self._cut_over(key, m)
            elif s is Step.FINISH_ATTACH and m is not None:
                work[s] = self._finish_attach(key, m)
            task = asyncio.get_running_loop().create_task(self._guard(key, s, work[s]), name=f"migration {key} {s.value}")
            self._tasks[key] = (s, task)
        return s

    async def clear(self, key: Key, body: Any) -> None:
        """Source, after its copy was let go: the migration is done."""
        placement = ((body.get("status") or {}).get("placement")) or {}
        m = migration.of(placement)
        if m is None or migration.step(m, self.me, placement.get("attached")) is not Step.CLEAR:
            return
        done = {**_migration_dict(m), "phase": "Done", "finishedAt": _now()}
        old = (placement.get("migration") or {}).get("windowSeconds")
        if old is not None:
            done["windowSeconds"] = old
        if await advance(self.k, key, m, {"migration": None, "lastMigration": done}):
            log.info("migration of %s/%s from %s to %s done", *key, m.source, m.target, extra={"pageserver": self.me})

    async def close(self) -> None:
        for _, task in self._tasks.values():
            task.cancel()
        for _, task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def _guard(self, key: Key, s: Step, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("migration of %s/%s, step %s: %s", *key, s.value, e, extra={"pageserver": self.me})

    # ---- the steps ------------------------------------------------------------------------------

    async def _secondary(self, key: Key, tid: Any) -> None:
        """A secondary location: warm now, then again every ``secondary_period`` (what the
        attached one uploaded since: its lag), until this manager is no longer one."""
        t = self.reg.manager.get(tid)
        attempt = 0
        while True:
            try:
                lag = await t.warm()
                attempt = 0
                SECONDARY_LAG.labels(str(tid)).set(lag)
                log.info("secondary of %s/%s warm (%d bytes fetched)", *key, lag, extra={"tenant_id": str(tid)})
                await asyncio.sleep(self.secondary_period)
            except EngineError as e:
                if not e.transient and e.reason != "AlreadyAttached":
                    raise
                attempt += 1
                await asyncio.sleep(_RETRY.delay(attempt))

    async def _warm(self, key: Key, m: Migration, tid: Any) -> None:
        t = self.reg.manager.get(tid)
        reporter = asyncio.get_running_loop().create_task(self._report_progress(key, m, t))
        try:
            attempt = 0
            while True:
                try:
                    planned = await t.warm()
                    break
                except EngineError as e:
                    # retried until it works or the migration is cancelled (the pin changed back)
                    # or aborted by the leader: this task is cancelled then
                    attempt += 1
                    log.warning("warming %s/%s: %s: %s; retrying", *key, e.reason, e.message, extra={"pageserver": self.me})
                    await asyncio.sleep(_RETRY.delay(attempt))
        finally:
            reporter.cancel()
        progress = self._progress(t)
        if await advance(self.k, key, m, {"migration": {"phase": migration.SOURCE_STALE, "progress": progress}}):
            log.info("warmed %s/%s on %s (%d bytes downloaded): source %s may stop", *key, self.me, planned, m.source,
                     extra={"pageserver": self.me})

    def _progress(self, t: Any) -> dict[str, Any]:
        p = t.progress.snapshot()
        percent = min(100, int(100 * p.bytes_done / p.bytes_total)) if p.bytes_total else 100
        return {"layersTotal": p.layers_total, "layersDone": p.layers_done, "bytesTotal": p.bytes_total,
                "bytesDone": p.bytes_done, "etaSeconds": p.eta_seconds, "percent": percent}

    async def _report_progress(self, key: Key, m: Migration, t: Any) -> None:
        last: dict[str, Any] | None = None
        while True:
            await asyncio.sleep(PROGRESS_PERIOD)
            progress = self._progress(t)
            if progress != last:
                with contextlib.suppress(RuntimeError):
                    await advance(self.k, key, m, {"migration": {"progress": progress}}, attempts=1)
                last = progress

    async def _flush(self, key: Key, m: Migration) -> None:
        deadline = time.monotonic() + FLUSH_WAIT
        while True:
            ctl = self.reg.controllers.get(key)
            if ctl is not None and ctl.owns_tenant:
                ctl.tenant.attachment.deletions_held = True
                if ctl.tenant.state is TenantState.ACTIVE:
                    break
            if time.monotonic() > deadline:
                # a source that cannot be Active (Broken) has nothing newer to flush than its last
                # upload: the migration goes on from the remote index rather than hang
                log.warning("%s/%s: the source is not Active after %.0f s: cutover without a final flush", *key,
                            FLUSH_WAIT, extra={"pageserver": self.me})
                break
            await asyncio.sleep(0.2)
        attempt = 0
        while ctl is not None and ctl.tenant.state is TenantState.ACTIVE:
            try:
                await ctl.tenant.sync(timeout=600)
                break
            except EngineError as e:
                attempt += 1
                if not e.transient or time.monotonic() > deadline:
                    log.warning("%s/%s: the final flush failed (%s: %s): cutover from the last upload", *key, e.reason,
                                e.message, extra={"pageserver": self.me})
                    break
                await asyncio.sleep(_RETRY.delay(attempt))
        if await advance(self.k, key, m, {"migration": {"phase": migration.CUTOVER, "staleAt": leases.micro_time()}}):
            log.info("%s/%s flushed on %s, deletions held: cutover to %s", *key, self.me, m.target,
                     extra={"pageserver": self.me})

    async def _cut_over(self, key: Key, m: Migration) -> None:
        if await advance(self.k, key, m, {"attached": self.me}):
            log.info("cutover of %s/%s to %s", *key, self.me, extra={"pageserver": self.me})

    async def _finish_attach(self, key: Key, m: Migration) -> None:
        while True:
            ctl = self.reg.controllers.get(key)
            if ctl is not None and ctl.owns_tenant and ctl.issued is not None and ctl.tenant.state is TenantState.ACTIVE:
                break
            await asyncio.sleep(0.2)
        window = _seconds_since(m.stale_at)
        patch: dict[str, Any] = {"migration": {"phase": migration.SOURCE_DETACH}}
        if window is not None:
            patch["migration"]["windowSeconds"] = round(window, 1)
        if await advance(self.k, key, m, patch):
            log.info("%s/%s Active on %s (window %s s): source %s detaches", *key, self.me,
                     f"{window:.1f}" if window is not None else "?", m.source, extra={"pageserver": self.me})
