"""The one retry loop of the remote storage layer (used by every backend).

A backend expresses one *attempt* of an operation as a function that either returns, or raises
one of the classified errors of `errors`:

- `errors.TransientRemoteError`: the attempt may succeed if repeated (connection reset, timeout,
  5xx, SlowDown). The loop sleeps with capped exponential backoff and "equal jitter" (a uniform
  pick in ``[ceiling/2, ceiling]``, computed by `pageserver_operator.backoff`) and tries again, up to `RetryPolicy.max_attempts` attempts in total; then
  it raises a `TransientRemoteError` that names the operation, the target and the attempt count.
- `errors.NotFound` and `errors.PermanentRemoteError`: raised at once, never retried.
- Anything else (a local ``OSError`` writing the caller's file, a ``ValueError`` for a bad key)
  is not a remote failure and propagates unchanged at once.

Invariants:

- Retrying is bounded in count and in time: with the default policy the sleeps add up to at most
  ``0.1+0.2+0.4+0.8+1.6+3+3 = 9.1`` seconds over 8 attempts.
- The backends' own client libraries do not retry (boto3 runs with one attempt per request), so
  the total number of requests for one call is at most ``max_attempts``: no retry storms from
  retries stacked on retries.
- The backoff sleep never holds a concurrency slot: backends take their semaphore inside the
  attempt function, so a sleeping retry leaves the slot to other requests.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pageserver_operator import backoff as backoff_mod
from pageserver_operator.remote import errors, metrics

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried."""

    max_attempts: int = 8
    """Total attempts per call, the first included; 1 disables retrying."""
    base_delay: float = 0.1
    """Backoff ceiling after the first failure, in seconds."""
    factor: float = 2.0
    """Growth of the backoff ceiling per further failure."""
    max_delay: float = 3.0
    """Cap of the backoff ceiling, in seconds."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.factor < 1:
            raise ValueError("base_delay and max_delay must be >= 0 and factor >= 1")

    def backoff(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to sleep after ``failures`` consecutive failed attempts (``failures >= 1``)."""
        return self.schedule.delay(failures, rand)

    @property
    def schedule(self) -> backoff_mod.Backoff:
        """This policy's delays as the operator's one `backoff.Backoff` (with equal jitter)."""
        return backoff_mod.Backoff(self.base_delay, self.factor, self.max_delay, jitter=True)


@dataclass
class Retrier:
    """Runs attempts under a `RetryPolicy`; ``sleep`` is injectable so tests need not wait."""

    policy: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep

    def call(self, op: metrics.Op, target: str, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` until it succeeds, fails non-transiently, or the attempts run out.

        ``target`` names what is operated on (a key or prefix) for messages and logs.
        """
        failures = 0
        while True:
            try:
                return attempt()
            except (errors.NotFound, errors.PermanentRemoteError):
                raise
            except errors.TransientRemoteError as exc:
                failures += 1
                if failures >= self.policy.max_attempts:
                    log.warning(
                        "remote %s of %s failed %d times, giving up: %s",
                        op,
                        target,
                        failures,
                        exc,
                        extra={"remote_op": op, "remote_key": target, "attempts": failures},
                    )
                    raise errors.TransientRemoteError(
                        f"{op} of {target!r} still failing after {failures} attempts: {exc}"
                    ) from exc
                delay = self.policy.backoff(failures)
                log.info(
                    "remote %s of %s failed (attempt %d of %d), retrying in %.2fs: %s",
                    op,
                    target,
                    failures,
                    self.policy.max_attempts,
                    delay,
                    exc,
                    extra={
                        "remote_op": op,
                        "remote_key": target,
                        "attempt": failures,
                        "max_attempts": self.policy.max_attempts,
                        "delay_seconds": round(delay, 3),
                    },
                )
                metrics.count_retry(op)
                self.sleep(delay)

    def run(self, op: metrics.Op, target: str, attempt: Callable[[], T]) -> T:
        """`call`, timed and recorded in the operation metrics as one call of ``op``."""
        with metrics.observe(op):
            return self.call(op, target, attempt)
