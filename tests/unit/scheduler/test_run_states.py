from __future__ import annotations

from tests.unit.scheduler._walk import reachable, walk_table

from kiln.scheduler.run_states import FINAL_STATES, TRANSITIONS, RunEvent, RunState, next_state


def test_the_whole_table_including_every_disallowed_pair() -> None:
    assert walk_table(RunState, RunEvent, TRANSITIONS, next_state) == len(TRANSITIONS) == 6


def test_runs_start_queued_and_end_final() -> None:
    assert reachable(RunState.QUEUED, TRANSITIONS) == set(RunState)
    assert not [key for key in TRANSITIONS if key[0] in FINAL_STATES]


def test_only_cancellation_ends_a_run_that_never_started() -> None:
    assert [event for (state, event) in TRANSITIONS if state is RunState.QUEUED] == [
        RunEvent.STARTED,
        RunEvent.CANCELLED,
    ]
