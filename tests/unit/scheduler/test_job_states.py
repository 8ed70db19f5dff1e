from __future__ import annotations

import pytest
from tests.unit.scheduler._walk import reachable, walk_table

from kiln.errors import IllegalTransition
from kiln.scheduler.job_states import FINAL_STATES, TRANSITIONS, JobEvent, JobState, next_state

S, E = JobState, JobEvent


def test_the_whole_table_including_every_disallowed_pair() -> None:
    assert walk_table(JobState, JobEvent, TRANSITIONS, next_state) == len(TRANSITIONS) == 12


def test_the_edges_of_the_brief() -> None:
    assert next_state(S.PENDING, E.READY) is S.QUEUED
    assert next_state(S.QUEUED, E.LEASED) is S.RUNNING
    assert next_state(S.RUNNING, E.SUCCEEDED) is S.SUCCESS
    assert next_state(S.RUNNING, E.FAILED) is S.FAILED
    assert next_state(S.RUNNING, E.ERRORED) is S.ERROR
    assert next_state(S.RUNNING, E.REQUEUED) is S.QUEUED
    assert next_state(S.RUNNING, E.EXHAUSTED) is S.ERROR
    for state in (S.PENDING, S.QUEUED):
        assert next_state(state, E.SKIPPED) is S.SKIPPED
    for state in (S.PENDING, S.QUEUED, S.RUNNING):
        assert next_state(state, E.CANCELLED) is S.CANCELLED


@pytest.mark.parametrize("state", sorted(FINAL_STATES))
def test_final_states_have_no_way_out(state: JobState) -> None:
    assert not [key for key in TRANSITIONS if key[0] == state]
    with pytest.raises(IllegalTransition, match=f"a job that is {state}"):
        next_state(state, E.READY)


def test_every_state_is_reachable_from_pending() -> None:
    assert reachable(S.PENDING, TRANSITIONS) == set(JobState)


def test_a_running_job_cannot_be_skipped() -> None:
    # Only waiting jobs are skipped; a running one ends through its attempt.
    with pytest.raises(IllegalTransition):
        next_state(S.RUNNING, E.SKIPPED)
