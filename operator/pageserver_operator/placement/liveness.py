"""Is a pageserver alive? Heartbeats judged by the observer's own clock.

A heartbeat is a Lease renewed by the pageserver manager. Clocks of different machines are not
compared: like client-go's leader election, the observer records *when it saw* a heartbeat
change (its ``renewTime`` or ``resourceVersion``) on its own monotonic clock, and a pageserver
is offline once no change was seen for ``failover_seconds``. A new observer (a new placement
leader) therefore waits a full ``failover_seconds`` before it declares anybody offline: it
never acts on time that passed before it looked.

Invariant: `offline` is True only after the observer itself watched ``failover_seconds`` pass
without a change (a frozen observer's jump in time is not "watching": `forget_before` resets
every observation when the observer learns it was not leading).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Liveness:
    failover_seconds: float
    #: pageserver -> (the heartbeat's version as last seen, when that version was first seen)
    _seen: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: when this observer started watching (no pageserver is offline before this + failover)
    _since: float | None = None

    def observe(self, now: float, heartbeats: dict[str, str]) -> None:
        """A fresh listing of every heartbeat: pageserver name -> a version that changes at
        every renewal. A pageserver missing from the listing keeps its last observation."""
        if self._since is None:
            self._since = now
        for name, version in heartbeats.items():
            seen = self._seen.get(name)
            if seen is None or seen[0] != version:
                self._seen[name] = (version, now)

    def forget(self) -> None:
        """Start over (the observer stopped leading, or was frozen): nobody is offline until a
        full ``failover_seconds`` has been watched again."""
        self._seen.clear()
        self._since = None

    def silent_for(self, name: str, now: float) -> float:
        """Seconds since this observer last saw ``name``'s heartbeat change (or since it
        started watching, for a pageserver it never saw)."""
        seen = self._seen.get(name)
        start = seen[1] if seen is not None else self._since
        return 0.0 if start is None else max(now - start, 0.0)

    def offline(self, name: str, now: float) -> bool:
        return self._since is not None and self.silent_for(name, now) >= self.failover_seconds
