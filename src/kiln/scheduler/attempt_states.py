"""The attempt state machine: one lease of a job by a runner.

An attempt is born ``running`` (holding the lease) and ends exactly once.

========  ==========  =========  =====================================================
from      event       to         when
========  ==========  =========  =====================================================
running   succeeded   success    the runner completed it: every step passed
running   failed      failed     the runner completed it: the user's code failed
running   errored     error      the runner completed it: kiln or the machine broke
running   cancelled   cancelled  the runner stopped it because the run was cancelled
running   lost        lost       the janitor reclaimed its expired lease (logs are kept)
========  ==========  =========  =====================================================
"""

from __future__ import annotations

from enum import StrEnum

from kiln.errors import IllegalTransition

__all__ = ["COMPLETION_EVENTS", "TRANSITIONS", "AttemptEvent", "AttemptState", "next_state"]


class AttemptState(StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    ERROR = "error"
    CANCELLED = "cancelled"
    LOST = "lost"


class AttemptEvent(StrEnum):
    SUCCEEDED = "succeeded"  # running -> success
    FAILED = "failed"  # running -> failed
    ERRORED = "errored"  # running -> error
    CANCELLED = "cancelled"  # running -> cancelled
    LOST = "lost"  # running -> lost


S, E = AttemptState, AttemptEvent

TRANSITIONS: dict[tuple[AttemptState, AttemptEvent], AttemptState] = {
    (S.RUNNING, E.SUCCEEDED): S.SUCCESS,
    (S.RUNNING, E.FAILED): S.FAILED,
    (S.RUNNING, E.ERRORED): S.ERROR,
    (S.RUNNING, E.CANCELLED): S.CANCELLED,
    (S.RUNNING, E.LOST): S.LOST,
}

# The statuses a runner may complete an attempt with, and the event each one is.
COMPLETION_EVENTS: dict[str, AttemptEvent] = {
    "success": E.SUCCEEDED,
    "failed": E.FAILED,
    "error": E.ERRORED,
    "cancelled": E.CANCELLED,
}

del S, E


def next_state(state: AttemptState, event: AttemptEvent) -> AttemptState:
    """Return the state an attempt in ``state`` moves to on ``event``.

    Parameters
    ----------
    state
        The attempt's current state.
    event
        What happened.

    Returns
    -------
    AttemptState
        The next state.

    Raises
    ------
    IllegalTransition
        The table has no such edge.
    """
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"an attempt that is {state} cannot be {event}") from None
