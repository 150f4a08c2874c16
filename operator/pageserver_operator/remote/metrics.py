"""Prometheus metrics of the remote storage layer, shared by every backend.

Backends never time or count by hand: every public operation runs through `observe` (usually via
`retry.Retrier.run`), which records one observation per *call as the caller sees it* (retries and
backoff included), and the retry loop counts each retry with `count_retry`. Byte counters count
bytes that actually crossed the wire, including those of attempts that later failed.

Invariants:

- Label values come from closed sets (`Op`, `Outcome`, `Direction`): no keys, buckets or other
  unbounded values ever become labels.
- The counters of closed label sets are created at 0 at import (every op, both directions).
- Metrics live in the default registry, so the operator's ``/metrics`` endpoint exposes them
  without wiring; this module is imported once per process, so registration happens once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, get_args

from prometheus_client import Counter, Histogram

from pageserver_operator.remote import errors

#: The operations of `base.RemoteStorage`, as metric label values.
Op = Literal["list", "get", "download", "upload", "put", "delete"]
#: How an operation ended: ``not_found`` is a normal answer (e.g. a timeline with no index yet).
Outcome = Literal["success", "not_found", "failure"]
Direction = Literal["download", "upload"]

OPERATION_SECONDS = Histogram(
    "pageserver_operator_remote_operation_seconds",
    "Duration of remote storage operations as seen by the caller, retries included.",
    ["op", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
BYTES_TOTAL = Counter(
    "pageserver_operator_remote_bytes",
    "Bytes transferred to or from remote storage (failed attempts included).",
    ["direction"],
)
RETRIES_TOTAL = Counter(
    "pageserver_operator_remote_retries",
    "Remote storage attempts that failed transiently and were retried.",
    ["op"],
)

# The counters of the closed label sets exist from 0 on: rate() and increase() see the first
# retry (a series born at its first increment hides that increment from them).
for _op in get_args(Op):
    RETRIES_TOTAL.labels(op=_op)
for _direction in get_args(Direction):
    BYTES_TOTAL.labels(direction=_direction)


@contextmanager
def observe(op: Op) -> Iterator[None]:
    """Time the enclosed operation and record it under ``op`` with its outcome."""
    started = time.perf_counter()
    outcome: Outcome = "failure"
    try:
        yield
        outcome = "success"
    except errors.NotFound:
        outcome = "not_found"
        raise
    finally:
        OPERATION_SECONDS.labels(op=op, outcome=outcome).observe(time.perf_counter() - started)


def count_bytes(direction: Direction, n: int) -> None:
    """Add ``n`` transferred bytes (ignores non-positive counts)."""
    if n > 0:
        BYTES_TOTAL.labels(direction=direction).inc(n)


def count_retry(op: Op) -> None:
    """Record that one attempt of ``op`` failed transiently and will be retried."""
    RETRIES_TOTAL.labels(op=op).inc()
