"""Tests of `remote.retry`: backoff bounds, what is retried and what is not, the give-up error,
and the retry/operation metrics. Sleeping is recorded, never done."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from pageserver_operator.remote import errors, retry

from .conftest import RecordingSleep


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _flaky(failures: list[BaseException], result: str = "ok") -> tuple[Callable[[], str], list[int]]:
    """An attempt function that raises ``failures`` in order, then returns ``result``."""
    calls = [0]

    def attempt() -> str:
        calls[0] += 1
        if failures:
            raise failures.pop(0)
        return result

    return attempt, calls


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = retry.RetryPolicy()
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0]
    for failures, ceiling in enumerate(ceilings, start=1):
        assert policy.backoff(failures, rand=lambda: 0.0) == pytest.approx(ceiling / 2)
        assert policy.backoff(failures, rand=lambda: 1.0) == pytest.approx(ceiling)
        assert ceiling / 2 <= policy.backoff(failures) <= ceiling


def test_the_default_budget_is_bounded() -> None:
    policy = retry.RetryPolicy()
    worst = sum(policy.backoff(n, rand=lambda: 1.0) for n in range(1, policy.max_attempts))
    assert policy.max_attempts == 8
    assert worst == pytest.approx(9.1)


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"base_delay": -1.0}, {"max_delay": -1.0}, {"factor": 0.5}]
)
def test_nonsense_policies_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        retry.RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_transient_failures_are_retried_until_success(sleeps: RecordingSleep) -> None:
    retrier = retry.Retrier(sleep=sleeps)
    attempt, calls = _flaky([errors.TransientRemoteError("reset")] * 3)
    before = _sample("pageserver_operator_remote_retries_total", op="get")

    assert retrier.call("get", "some/key", attempt) == "ok"

    assert calls[0] == 4
    assert len(sleeps.delays) == 3
    assert (
        0.05 <= sleeps.delays[0] <= 0.1 and 0.1 <= sleeps.delays[1] <= 0.2 and 0.2 <= sleeps.delays[2] <= 0.4
    )
    assert _sample("pageserver_operator_remote_retries_total", op="get") - before == 3


def test_gives_up_after_max_attempts_with_a_transient_error(sleeps: RecordingSleep) -> None:
    retrier = retry.Retrier(retry.RetryPolicy(max_attempts=5), sleep=sleeps)
    last = errors.TransientRemoteError("503 SlowDown")
    attempt, calls = _flaky([errors.TransientRemoteError("x")] * 4 + [last] + [AssertionError("not reached")])

    with pytest.raises(errors.TransientRemoteError) as raised:
        retrier.call("download", "tenants/t/layer", attempt)

    assert calls[0] == 5
    assert len(sleeps.delays) == 4
    assert raised.value.__cause__ is last
    message = str(raised.value)
    assert "5 attempts" in message and "tenants/t/layer" in message and "SlowDown" in message


@pytest.mark.parametrize(
    "error",
    [
        errors.NotFound("gone"),
        errors.PermanentRemoteError("denied"),
        ValueError("bad key"),
        OSError(28, "ENOSPC"),
    ],
)
def test_non_transient_errors_are_raised_at_once(sleeps: RecordingSleep, error: Exception) -> None:
    retrier = retry.Retrier(sleep=sleeps)
    attempt, calls = _flaky([error])

    with pytest.raises(type(error)) as raised:
        retrier.call("put", "k", attempt)

    assert raised.value is error
    assert calls[0] == 1
    assert sleeps.delays == []


def test_max_attempts_one_disables_retrying(sleeps: RecordingSleep) -> None:
    retrier = retry.Retrier(retry.RetryPolicy(max_attempts=1), sleep=sleeps)
    attempt, calls = _flaky([errors.TransientRemoteError("x")])
    with pytest.raises(errors.TransientRemoteError, match="1 attempts"):
        retrier.call("delete", "k", attempt)
    assert calls[0] == 1 and sleeps.delays == []


def test_run_records_one_observation_per_call_with_its_outcome(sleeps: RecordingSleep) -> None:
    retrier = retry.Retrier(sleep=sleeps)
    name = "pageserver_operator_remote_operation_seconds_count"
    before = {o: _sample(name, op="delete", outcome=o) for o in ("success", "not_found", "failure")}

    retrier.run("delete", "k", _flaky([errors.TransientRemoteError("x")])[0])
    with pytest.raises(errors.NotFound):
        retrier.run("delete", "k", _flaky([errors.NotFound("x")])[0])
    with pytest.raises(errors.PermanentRemoteError):
        retrier.run("delete", "k", _flaky([errors.PermanentRemoteError("x")])[0])

    after = {o: _sample(name, op="delete", outcome=o) for o in ("success", "not_found", "failure")}
    assert {o: after[o] - before[o] for o in after} == {"success": 1, "not_found": 1, "failure": 1}
