"""The migration state machine (DESIGN §8.4): ``Warming`` -> ``SourceStale`` -> ``Cutover`` ->
``SourceDetach`` -> done (the ``migration`` field cleared).

Every transition is one compare-and-swap write of the Tenant's ``status.placement`` by the
participant that completed the phase, and a participant acts only on what the Tenant says
(never on what it remembers), so a kill of any process at any phase resumes it: the phase is
persisted before anybody acts on it, and every action is idempotent.

| phase        | target (``to``)                                   | source (``from``)                             |
|--------------|---------------------------------------------------|-----------------------------------------------|
| Warming      | downloads the newest index's layers as a secondary; then -> SourceStale | serves as before             |
| SourceStale  | waits                                             | holds deletions, flushes (sync); -> Cutover   |
| Cutover      | sets ``attached`` to itself; attaches (generation+1, resuming the warm copy); once Active -> SourceDetach | holds deletions |
| SourceDetach | serves                                            | lets its copy go (nothing remote deleted); clears ``migration`` |

The placement leader starts migrations (a pin changed to another live pageserver, a drain) and
repairs the ones a participant cannot finish (`repair`): a dead target before the cutover
aborts the migration; a dead source before the cutover fails over to the warm target at once;
a dead source after it just clears the migration.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

WARMING = "Warming"
SOURCE_STALE = "SourceStale"
CUTOVER = "Cutover"
SOURCE_DETACH = "SourceDetach"
PHASES = (WARMING, SOURCE_STALE, CUTOVER, SOURCE_DETACH)


@dataclass(frozen=True)
class Migration:
    source: str
    target: str
    phase: str
    started_at: str | None = None
    reason: str | None = None
    stale_at: str | None = None


def of(placement: dict[str, Any] | None) -> Migration | None:
    """The migration a Tenant's ``status.placement`` records (None: none, or one this version
    cannot read)."""
    m = (placement or {}).get("migration") or {}
    if m.get("phase") not in PHASES or not m.get("from") or not m.get("to"):
        return None
    return Migration(str(m["from"]), str(m["to"]), str(m["phase"]), m.get("startedAt"), m.get("reason"), m.get("staleAt"))


class Step(enum.Enum):
    NONE = "none"
    SECONDARY = "secondary"  # a warm secondary location (``spec.placement.secondaries``): kept warm
    WARM = "warm"  # target: download as a secondary, then -> SourceStale
    FLUSH = "flush"  # source: hold deletions, sync, then -> Cutover
    HOLD = "hold"  # source after its flush: deletions stay held
    CUT_OVER = "cut-over"  # target: attached := itself
    FINISH_ATTACH = "finish-attach"  # target, attached: once Active -> SourceDetach
    CLEAR = "clear"  # source, no longer attached: its copy let go -> migration cleared


def step(m: Migration | None, me: str, attached: str | None) -> Step:
    """What ``me`` does now for a Tenant with migration ``m`` attached to ``attached``."""
    if m is None:
        return Step.NONE
    if m.target == me:
        if m.phase == WARMING:
            return Step.WARM
        if m.phase == CUTOVER:
            return Step.FINISH_ATTACH if attached == me else Step.CUT_OVER
        return Step.NONE
    if m.source == me:
        if m.phase == SOURCE_STALE and attached == me:
            return Step.FLUSH
        if m.phase == CUTOVER and attached == me:
            return Step.HOLD
        if m.phase == SOURCE_DETACH and attached != me:
            return Step.CLEAR
    return Step.NONE


def keeps_local_copy(m: Migration | None, me: str, secondaries: tuple[str, ...] = ()) -> bool:
    """A migration's target keeps (and warms) its copy while the tenant is still attached
    elsewhere; so does a secondary location."""
    return (m is not None and m.target == me and m.phase in (WARMING, SOURCE_STALE, CUTOVER)) or me in secondaries


def secondaries_of(placement: dict[str, Any] | None) -> tuple[str, ...]:
    return tuple(str(x) for x in ((placement or {}).get("secondaries") or []))


@dataclass(frozen=True)
class Repair:
    """The leader's fix of a migration a participant cannot finish: ``clear`` it, and/or set
    ``attached`` (None: unchanged)."""

    clear: bool = False
    attached: str | None = None
    why: str = ""


def repair(
    m: Migration, attached: str | None, alive: dict[str, bool], pin: str | None = None, source_draining: bool = True
) -> Repair | None:
    """None: the participants can finish it. ``alive``: liveness of the pageservers involved;
    ``pin``: the Tenant's ``spec.placement.pageserver`` now; ``source_draining``: whether the
    source is still being drained. A migration not yet at its cutover is cancelled when what
    started it is gone (the pin changed, the drain stopped while it warms)."""
    source_alive = alive.get(m.source, False)
    target_alive = alive.get(m.target, False)
    if m.phase in (WARMING, SOURCE_STALE) and m.reason == "pin" and pin != m.target:
        return Repair(clear=True, why=f"the pin changed from {m.target} to {pin}: cancelled")
    if m.phase == WARMING and m.reason == "drain" and not source_draining:
        return Repair(clear=True, why=f"the drain of {m.source} stopped: cancelled")
    if m.phase in (WARMING, SOURCE_STALE):
        if not target_alive:
            return Repair(clear=True, why=f"target {m.target} is offline: migration aborted")
        if not source_alive:
            return Repair(clear=True, attached=m.target, why=f"source {m.source} is offline: failing over to the warm target")
        return None
    if m.phase == CUTOVER:
        if attached != m.target and not target_alive:
            return Repair(clear=True, why=f"target {m.target} is offline before the cutover: migration aborted")
        if attached == m.target and not target_alive:
            return Repair(clear=True, why=f"target {m.target} is offline after the cutover: failover takes over")
        return None
    if m.phase == SOURCE_DETACH and not source_alive:
        return Repair(clear=True, why=f"source {m.source} is offline: its copy stays on its volume; migration done")
    return None
