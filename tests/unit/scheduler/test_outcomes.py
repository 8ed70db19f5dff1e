from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiln.scheduler.job_states import FINAL_STATES, JobState
from kiln.scheduler.outcomes import JobOutcome, combine, run_event_for
from kiln.scheduler.run_states import RunEvent

outcomes = st.lists(st.sampled_from(JobOutcome), max_size=8)
Out = JobOutcome


def test_the_order_from_best_to_worst() -> None:
    assert list(JobOutcome) == [Out.SUCCESS, Out.SKIPPED, Out.FAILED, Out.ERROR, Out.CANCELLED]
    assert [o.severity for o in JobOutcome] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("jobs", "run"),
    [
        ([], Out.SUCCESS),
        ([Out.SUCCESS, Out.SUCCESS], Out.SUCCESS),
        ([Out.SUCCESS, Out.FAILED, Out.SKIPPED], Out.FAILED),
        ([Out.ERROR, Out.SKIPPED], Out.ERROR),
        ([Out.SUCCESS, Out.CANCELLED, Out.CANCELLED], Out.CANCELLED),
        ([Out.FAILED, Out.CANCELLED], Out.CANCELLED),
    ],
)
def test_a_run_takes_the_worst_outcome(jobs: list[JobOutcome], run: JobOutcome) -> None:
    assert combine(jobs) is run


@given(outcomes, outcomes)
def test_combine_is_commutative_and_associative(a: list[JobOutcome], b: list[JobOutcome]) -> None:
    assert combine(a + b) is combine(b + a) is combine([combine(a), combine(b)])


@given(outcomes)
def test_combine_is_idempotent_and_picks_one_of_its_inputs(a: list[JobOutcome]) -> None:
    assert combine(a + a) is combine(a)
    assert combine(a) in ([*a] or [Out.SUCCESS])


def test_every_final_job_state_is_an_outcome() -> None:
    assert {JobOutcome.of(s) for s in FINAL_STATES} == set(JobOutcome)
    with pytest.raises(ValueError):
        JobOutcome.of(JobState.RUNNING)


def test_run_events() -> None:
    assert run_event_for(Out.SUCCESS) is RunEvent.SUCCEEDED
    assert run_event_for(Out.SKIPPED) is RunEvent.SUCCEEDED  # nothing failed
    assert run_event_for(Out.FAILED) is RunEvent.FAILED
    assert run_event_for(Out.ERROR) is RunEvent.ERRORED
    assert run_event_for(Out.CANCELLED) is RunEvent.CANCELLED
