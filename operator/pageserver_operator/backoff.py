"""The one capped exponential backoff of the operator: every retry delay is computed here.

`Backoff(base, factor, cap, jitter)` is a frozen value; ``delay(attempt)`` is the number of
seconds to wait after the ``attempt``-th consecutive failure:

- ``attempt <= 0`` (nothing has failed yet): ``0.0``.
- otherwise the ceiling ``min(base * factor ** (attempt - 1), cap)``; an exponent too large for
  a float gives the cap (a long-broken tenant's retry count never overflows the delay).
- with ``jitter`` ("equal jitter"): a uniform pick in ``[ceiling/2, ceiling]`` drawn from
  ``rand`` (injectable per call, `random.random` by default); without: the ceiling itself.

Users (each keeps its own public knobs and builds its value from them): the remote storage
retry loop (`remote.retry.RetryPolicy`, with jitter), the upload queue (`engine.upload_queue.Backoff`,
transient and permanent caps), and in k8s/ the Broken tenant's automatic retry
(`controller.retry_delay`, settings ``RETRY_INITIAL``/``RETRY_MAX``), the retry of a transient
bring-up failure (`controller.TRANSIENT_BACKOFF`), the blocked detach (`handlers`) and the
failed status patch (`status.StatusWriter`).

Invariants:

- Pure: no I/O, no clock, no state; the same value and inputs (and ``rand`` result) give the
  same delay. ``0 <= delay <= cap``.
- Imports nothing of the operator: it is the lowest layer of .importlinter, so every layer may
  use it.
- Parameters are checked at construction (``base >= 0``, ``cap >= 0``, ``factor >= 1``): a bad
  value raises ``ValueError`` there, never a negative or shrinking delay later. Nothing here can
  crash a caller otherwise.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff, optionally with equal jitter."""

    base: float
    """Delay (the ceiling, with jitter) after the first failure, in seconds."""
    factor: float = 2.0
    """Growth per further failure."""
    cap: float = math.inf
    """Largest delay, in seconds."""
    jitter: bool = False
    """Equal jitter: a uniform pick in ``[ceiling/2, ceiling]`` instead of the ceiling."""

    def __post_init__(self) -> None:
        if not (self.base >= 0 and self.cap >= 0 and self.factor >= 1):
            raise ValueError(f"backoff needs base >= 0, cap >= 0 and factor >= 1, got {self}")

    def ceiling(self, attempt: int) -> float:
        """The delay after ``attempt`` consecutive failures, before jitter."""
        if attempt <= 0:
            return 0.0
        try:
            grown = self.base * self.factor ** (attempt - 1)
        except OverflowError:  # the true value is above every float, so above the cap
            return float(self.cap) if self.base > 0 else 0.0
        return float(min(grown, self.cap))

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after ``attempt`` consecutive failures (``rand`` only with jitter)."""
        ceiling = self.ceiling(attempt)
        if not self.jitter:
            return ceiling
        return ceiling / 2 + rand() * ceiling / 2
