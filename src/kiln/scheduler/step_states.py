"""The step state machine, as the runner reports steps of an attempt.

``unreported`` is the state of a step the runner has not mentioned yet; it is never stored (there
is no row). A step that never started because an earlier one failed is reported straight away as
skipped.

==========  =========  =======  ============================================
from        event      to       when
==========  =========  =======  ============================================
unreported  started    running  the runner started the step
unreported  skipped    skipped  the runner will not run it (an earlier failed)
running     succeeded  success  it exited 0
running     failed     failed   it exited non-zero, was killed, or timed out
running     skipped    skipped  it started but decided not to run
==========  =========  =======  ============================================
"""

from __future__ import annotations

from enum import StrEnum

from kiln.errors import IllegalTransition

__all__ = ["FINISH_EVENTS", "TRANSITIONS", "StepEvent", "StepState", "next_state"]


class StepState(StrEnum):
    UNREPORTED = "unreported"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"


class StepEvent(StrEnum):
    STARTED = "started"  # unreported -> running
    SUCCEEDED = "succeeded"  # running -> success
    FAILED = "failed"  # running -> failed
    SKIPPED = "skipped"  # unreported|running -> skipped


S, E = StepState, StepEvent

TRANSITIONS: dict[tuple[StepState, StepEvent], StepState] = {
    (S.UNREPORTED, E.STARTED): S.RUNNING,
    (S.UNREPORTED, E.SKIPPED): S.SKIPPED,
    (S.RUNNING, E.SUCCEEDED): S.SUCCESS,
    (S.RUNNING, E.FAILED): S.FAILED,
    (S.RUNNING, E.SKIPPED): S.SKIPPED,
}

# The statuses a runner may finish a step with, and the event each one is.
FINISH_EVENTS: dict[str, StepEvent] = {"success": E.SUCCEEDED, "failed": E.FAILED, "skipped": E.SKIPPED}

del S, E


def next_state(state: StepState, event: StepEvent) -> StepState:
    """Return the state a step in ``state`` moves to on ``event``.

    Parameters
    ----------
    state
        The step's current state (``UNREPORTED`` when it has no row).
    event
        What the runner reported.

    Returns
    -------
    StepState
        The next state.

    Raises
    ------
    IllegalTransition
        The table has no such edge.
    """
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"a step that is {state} cannot be {event}") from None
