from __future__ import annotations

import pytest
from tests.unit.scheduler._walk import reachable, walk_table

from kiln.errors import IllegalTransition
from kiln.scheduler.step_states import FINISH_EVENTS, TRANSITIONS, StepEvent, StepState, next_state


def test_the_whole_table_including_every_disallowed_pair() -> None:
    assert walk_table(StepState, StepEvent, TRANSITIONS, next_state) == len(TRANSITIONS) == 5


def test_every_state_is_reachable() -> None:
    assert reachable(StepState.UNREPORTED, TRANSITIONS) == set(StepState)


def test_a_step_must_start_to_succeed_or_fail_but_may_be_skipped_unstarted() -> None:
    assert next_state(StepState.UNREPORTED, FINISH_EVENTS["skipped"]) is StepState.SKIPPED
    for status in ("success", "failed"):
        with pytest.raises(IllegalTransition):
            next_state(StepState.UNREPORTED, FINISH_EVENTS[status])
