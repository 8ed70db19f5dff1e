from __future__ import annotations

import pytest

from kiln.errors import UsageError
from kiln.scheduler.attempt_states import AttemptState
from kiln.scheduler.retry import RetryPolicy


def test_lost_attempts_are_retried_until_the_limit() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(AttemptState.LOST, attempts_made=1)
    assert policy.should_retry(AttemptState.LOST, attempts_made=2)
    assert not policy.should_retry(AttemptState.LOST, attempts_made=3)


@pytest.mark.parametrize(
    "outcome", [AttemptState.SUCCESS, AttemptState.FAILED, AttemptState.ERROR, AttemptState.CANCELLED]
)
def test_completed_attempts_are_verdicts(outcome: AttemptState) -> None:
    assert not RetryPolicy(max_attempts=5).should_retry(outcome, attempts_made=1)


def test_the_jobs_own_limit_wins() -> None:
    policy = RetryPolicy(max_attempts=1)
    assert not policy.should_retry(AttemptState.LOST, attempts_made=1)
    assert policy.should_retry(AttemptState.LOST, attempts_made=1, max_attempts=2)


def test_retried_outcomes_are_configurable() -> None:
    policy = RetryPolicy(max_attempts=2, retry_on=frozenset({AttemptState.LOST, AttemptState.ERROR}))
    assert policy.should_retry(AttemptState.ERROR, attempts_made=1)


def test_invalid_policies() -> None:
    with pytest.raises(UsageError, match="at least 1"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(UsageError, match="running"):
        RetryPolicy(retry_on=frozenset({AttemptState.RUNNING}))
