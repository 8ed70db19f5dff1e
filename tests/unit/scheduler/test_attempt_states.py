from __future__ import annotations

from tests.unit.scheduler._walk import reachable, walk_table

from kiln.scheduler.attempt_states import (
    COMPLETION_EVENTS,
    TRANSITIONS,
    AttemptEvent,
    AttemptState,
    next_state,
)


def test_the_whole_table_including_every_disallowed_pair() -> None:
    assert walk_table(AttemptState, AttemptEvent, TRANSITIONS, next_state) == len(TRANSITIONS) == 5


def test_an_attempt_ends_exactly_once() -> None:
    assert {source for source, _ in TRANSITIONS} == {AttemptState.RUNNING}
    assert reachable(AttemptState.RUNNING, TRANSITIONS) == set(AttemptState)


def test_a_runner_completes_with_its_own_status_and_never_as_lost() -> None:
    for status, event in COMPLETION_EVENTS.items():
        assert next_state(AttemptState.RUNNING, event).value == status
    assert AttemptEvent.LOST not in COMPLETION_EVENTS.values()  # only the janitor loses attempts
