"""RetryPolicy arithmetic (deterministic via an injected random source) and validation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from jobrunner import InvalidArgumentError, NonRetryable, Retry, RetryPolicy
from jobrunner._outcome import decide_failure
from jobrunner._policy import JobPolicy


class CustomError(Exception):
    pass


def test_exponential_backoff_without_jitter() -> None:
    policy = RetryPolicy(
        max_attempts=10,
        initial_interval=1.0,
        backoff_coefficient=2.0,
        max_interval=60.0,
        jitter=0.0,
    )
    assert [policy.delay_after(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_jitter_uses_injected_rand() -> None:
    policy = RetryPolicy(initial_interval=10.0, max_interval=100.0, jitter=0.1)
    assert policy.delay_after(1, rand=lambda: 0.5) == pytest.approx(10.0)
    assert policy.delay_after(1, rand=lambda: 0.0) == pytest.approx(9.0)
    assert policy.delay_after(1, rand=lambda: 0.999999) == pytest.approx(11.0, abs=1e-4)
    assert policy.delay_after(2, rand=lambda: 0.5) == pytest.approx(20.0)
    # jitter never pushes a delay above max_interval
    capped = RetryPolicy(initial_interval=10.0, max_interval=10.0, jitter=0.5)
    assert capped.delay_after(3, rand=lambda: 0.99) == 10.0


def test_huge_exponent_caps_at_max() -> None:
    policy = RetryPolicy(max_attempts=5000, backoff_coefficient=10.0, max_interval=30.0)
    assert policy.delay_after(4000, rand=lambda: 0.5) == 30.0


def test_timedelta_intervals() -> None:
    policy = RetryPolicy(initial_interval=timedelta(seconds=2), max_interval=timedelta(minutes=1))
    assert policy.initial_interval == 2.0 and policy.max_interval == 60.0


def test_non_retryable_by_type_and_name() -> None:
    by_type = RetryPolicy(non_retryable_errors=[KeyError])
    assert by_type.is_non_retryable(KeyError("k"))
    assert not by_type.is_non_retryable(ValueError("v"))
    by_name = RetryPolicy(non_retryable_errors=["CustomError", "builtins.ZeroDivisionError"])
    assert by_name.is_non_retryable(CustomError())
    assert by_name.is_non_retryable(ZeroDivisionError())
    assert not by_name.is_non_retryable(ValueError())
    qualified = RetryPolicy(non_retryable_errors=[f"{__name__}.CustomError"])
    assert qualified.is_non_retryable(CustomError())


def test_decide_failure() -> None:
    policy = RetryPolicy(
        max_attempts=3, initial_interval=1.0, jitter=0.1, non_retryable_errors=[KeyError]
    )
    half = lambda: 0.5  # noqa: E731
    assert decide_failure(ValueError("x"), attempt=1, policy=policy, rand=half).retry_in == 1.0
    assert decide_failure(ValueError("x"), attempt=2, policy=policy, rand=half).retry_in == 2.0
    final = decide_failure(ValueError("boom"), attempt=3, policy=policy, rand=half)
    assert final.retry_in is None
    assert final.error.type == "ValueError" and final.error.message == "boom"
    assert decide_failure(KeyError("k"), attempt=1, policy=policy).retry_in is None
    assert decide_failure(NonRetryable("n"), attempt=1, policy=policy).retry_in is None
    assert decide_failure(Retry(delay=7.5), attempt=1, policy=policy).retry_in == 7.5
    assert (
        decide_failure(Retry(delay=timedelta(seconds=3)), attempt=2, policy=policy).retry_in == 3.0
    )
    assert decide_failure(Retry(), attempt=1, policy=policy, rand=half).retry_in == 1.0
    assert decide_failure(Retry(delay=1), attempt=3, policy=policy).retry_in is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": 1.5},
        {"max_attempts": True},
        {"initial_interval": 0},
        {"initial_interval": -1},
        {"initial_interval": float("nan")},
        {"initial_interval": "1"},
        {"max_interval": float("inf")},
        {"backoff_coefficient": 0.5},
        {"backoff_coefficient": "2"},
        {"initial_interval": 10, "max_interval": 5},
        {"jitter": -0.1},
        {"jitter": 1.5},
        {"non_retryable_errors": [42]},
        {"non_retryable_errors": [int]},
        {"non_retryable_errors": "KeyError"},
        {"non_retryable_errors": KeyError},
        {"non_retryable_errors": None},
        {"backoff_coefficient": True},
        {"backoff_coefficient": float("nan")},
        {"backoff_coefficient": float("inf")},
        {"jitter": "0.1"},
        {"jitter": float("nan")},
    ],
)
def test_invalid_policies(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        RetryPolicy(**kwargs)


def _retry_with_delay(delay: float) -> Retry:
    """A Retry carrying a delay its constructor refuses (a subclass could set one)."""
    retry = Retry()
    retry.delay = delay
    return retry


def test_unusable_retry_delays() -> None:
    """Retry(delay=...) refuses these (tests/test_boundaries.py); decide_failure still copes
    with one that carries them anyway."""
    from jobrunner._outcome import MAX_RETRY_DELAY

    policy = RetryPolicy(initial_interval=2.0, jitter=0.0)
    for odd in (float("nan"), float("inf")):
        decision = decide_failure(_retry_with_delay(odd), attempt=1, policy=policy)
        assert decision.retry_in == 2.0
    huge = decide_failure(_retry_with_delay(1e300), attempt=1, policy=policy).retry_in
    assert huge == MAX_RETRY_DELAY


def test_retry_rejects_negative_delay() -> None:
    with pytest.raises(InvalidArgumentError):
        Retry(delay=-1)


def test_stored_policies_parse_alike_through_the_memo() -> None:
    """from_json memoises by the stored values: equal rows give the same policy, any differing
    field (the error names, the fallback's timeout for a row without one) a different one, and
    values that cannot be hashed are still parsed."""
    stored = JobPolicy(RetryPolicy(max_attempts=4, non_retryable_errors=[KeyError])).to_json()
    first = JobPolicy.from_json(dict(stored))
    assert JobPolicy.from_json(dict(stored)) is first
    other = JobPolicy.from_json({**stored, "non_retryable_errors": ["ValueError"]})
    assert other.retry.non_retryable_errors == ("ValueError",)
    assert first.retry.non_retryable_errors == ("KeyError",)
    without_timeout = {k: v for k, v in stored.items() if k != "timeout"}
    short = JobPolicy.from_json(without_timeout, fallback=JobPolicy(timeout=5.0))
    long = JobPolicy.from_json(without_timeout, fallback=JobPolicy(timeout=50.0))
    assert (short.timeout, long.timeout) == (5.0, 50.0)
    odd = JobPolicy.from_json({**stored, "non_retryable_errors": [{"not": "hashable"}]})
    assert odd.retry.max_attempts == 4
