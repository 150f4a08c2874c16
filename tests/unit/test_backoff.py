"""The one backoff (`pageserver_operator.backoff`) and every former formula it replaced.

The tables pin the delays each retry site computed before issue 15 item 4 moved them onto
`backoff.Backoff` (the values were printed from the old code, then written here): the same
inputs still give the same delays, through each site's own entry point and knobs.
"""

from __future__ import annotations

import math

import pytest

from pageserver_operator import backoff
from pageserver_operator.engine import upload_queue
from pageserver_operator.k8s import controller, handlers, status
from pageserver_operator.remote import retry


# remote/retry.py: min(max_delay, 0.1 * 2 ** (n-1)) with equal jitter, for rand() in 0, 0.25, 1
@pytest.mark.parametrize(
    ("failures", "rand", "expected"),
    [
        (1, 0.0, 0.05), (1, 0.25, 0.0625), (1, 1.0, 0.1),
        (2, 0.0, 0.1), (2, 0.25, 0.125), (2, 1.0, 0.2),
        (3, 0.0, 0.2), (3, 0.25, 0.25), (3, 1.0, 0.4),
        (5, 0.0, 0.8), (5, 0.25, 1.0), (5, 1.0, 1.6),
        (6, 0.0, 1.5), (6, 0.25, 1.875), (6, 1.0, 3.0),
        (7, 0.0, 1.5), (7, 0.25, 1.875), (7, 1.0, 3.0),
        (20, 0.0, 1.5), (20, 0.25, 1.875), (20, 1.0, 3.0),
    ],
)  # fmt: skip
def test_remote_retry_policy_keeps_its_jittered_delays(failures: int, rand: float, expected: float) -> None:
    assert retry.RetryPolicy().backoff(failures, rand=lambda: rand) == expected


# engine/upload_queue.py: 0 before a failure, min(0.1 * 2 ** (n-1), 10 or permanent 60)
@pytest.mark.parametrize(
    ("attempt", "transient", "permanent"),
    [(0, 0.0, 0.0), (1, 0.1, 0.1), (2, 0.2, 0.2), (7, 6.4, 6.4), (8, 10.0, 12.8), (9, 10.0, 25.6),
     (10, 10.0, 51.2), (30, 10.0, 60.0)],
)  # fmt: skip
def test_upload_queue_keeps_its_transient_and_permanent_caps(attempt: int, transient: float, permanent: float) -> None:
    b = upload_queue.Backoff()
    assert b.delay(attempt) == transient
    assert b.delay(attempt, permanent=True) == permanent


# k8s/controller.py retry_delay: min(initial * 2 ** max(n-1, 0), cap), settings RETRY_INITIAL/RETRY_MAX
@pytest.mark.parametrize(
    ("attempt", "initial", "cap", "expected"),
    [(0, 30.0, 3600.0, 30.0), (1, 30.0, 3600.0, 30.0), (2, 30.0, 3600.0, 60.0), (3, 30.0, 3600.0, 120.0),
     (7, 30.0, 3600.0, 1920.0), (8, 30.0, 3600.0, 3600.0), (20, 30.0, 3600.0, 3600.0),
     (1, 1.5, 100.0, 1.5), (2, 1.5, 100.0, 3.0), (3, 1.5, 100.0, 6.0), (7, 1.5, 100.0, 96.0), (8, 1.5, 100.0, 100.0)],
)  # fmt: skip
def test_broken_tenant_retry_keeps_its_delays(attempt: int, initial: float, cap: float, expected: float) -> None:
    assert controller.retry_delay(attempt, initial, cap) == expected


def test_transient_bring_up_retry_keeps_its_delays() -> None:
    """k8s/controller.py: 1 s, doubled after each failure, at most a minute."""
    got = [controller.TRANSIENT_BACKOFF.delay(n) for n in range(1, 10)]
    assert got == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_blocked_detach_keeps_its_delays() -> None:
    """k8s/handlers.py: min(5 * 2 ** retry, 120) for kopf's retry count (0 at the first retry)."""
    got = [handlers.DETACH_BACKOFF.delay(retry + 1) for retry in (0, 1, 2, 3, 4, 5, 10)]
    assert got == [5, 10, 20, 40, 80, 120, 120]


@pytest.mark.parametrize(
    ("failures", "interval", "expected"),
    [(1, 1.0, 2.0), (2, 1.0, 4.0), (3, 1.0, 8.0), (5, 1.0, 32.0), (6, 1.0, 60.0), (7, 1.0, 60.0), (20, 1.0, 60.0),
     (1, 0.25, 0.5), (2, 0.25, 1.0), (3, 0.25, 2.0), (5, 0.25, 8.0), (6, 0.25, 16.0), (7, 0.25, 32.0),
     (20, 0.25, 60.0)],
)  # fmt: skip
def test_failed_status_patch_keeps_its_delays(failures: int, interval: float, expected: float) -> None:
    """k8s/status.py: min(interval * 2 ** failures, 60) after ``failures`` failed patches in a row."""
    assert status.patch_retry_backoff(interval).delay(failures) == expected


def test_no_delay_before_a_failure_and_the_cap_bounds_every_delay() -> None:
    b = backoff.Backoff(base=0.5, factor=3.0, cap=7.0)
    assert [b.delay(n) for n in (-1, 0, 1, 2, 3, 4)] == [0.0, 0.0, 0.5, 1.5, 4.5, 7.0]


def test_an_exponent_too_large_for_a_float_gives_the_cap() -> None:
    """A tenant Broken for years (attempts in the thousands) still gets RETRY_MAX, not an
    OverflowError from ``2.0 ** attempt``."""
    assert controller.retry_delay(5000, 30.0, 3600.0) == 3600.0
    assert backoff.Backoff(base=1.0).delay(5000) == math.inf
    assert backoff.Backoff(base=0.0, cap=5.0).delay(5000) == 0.0


def test_equal_jitter_draws_from_the_injected_source_within_half_to_full_ceiling() -> None:
    b = backoff.Backoff(base=2.0, factor=2.0, cap=100.0, jitter=True)
    assert b.delay(3, rand=lambda: 0.0) == 4.0
    assert b.delay(3, rand=lambda: 0.5) == 6.0
    assert b.delay(3, rand=lambda: 1.0) == 8.0
    assert b.delay(0, rand=lambda: 1.0) == 0.0
    calls: list[int] = []
    assert backoff.Backoff(base=2.0).delay(3, rand=lambda: calls.append(1) or 0.0) == 8.0
    assert not calls, "without jitter the random source is not used"


@pytest.mark.parametrize("kwargs", [{"base": -1.0}, {"base": 1.0, "cap": -1.0}, {"base": 1.0, "factor": 0.5}])
def test_bad_parameters_are_refused_at_construction(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        backoff.Backoff(**kwargs)
