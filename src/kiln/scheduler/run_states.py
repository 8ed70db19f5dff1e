"""The run state machine.

A run is ``queued`` until its first job is leased, ``running`` until every job is final, and then
takes the combined outcome of its jobs (``outcomes.combine``).

=======  ==========  =========  ==============================================================
from     event       to         when
=======  ==========  =========  ==============================================================
queued   started     running    a runner leased its first job
queued   cancelled   cancelled  cancelled before any job ran
running  succeeded   success    every job succeeded
running  failed      failed     the worst job outcome is failed (the user's code)
running  errored     error      the worst job outcome is error (infrastructure, attempts exhausted)
running  cancelled   cancelled  the run was cancelled and its running job has stopped
=======  ==========  =========  ==============================================================
"""

from __future__ import annotations

from enum import StrEnum

from kiln.errors import IllegalTransition

__all__ = ["FINAL_STATES", "TRANSITIONS", "RunEvent", "RunState", "next_state"]


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    ERROR = "error"
    CANCELLED = "cancelled"


class RunEvent(StrEnum):
    STARTED = "started"  # queued -> running
    SUCCEEDED = "succeeded"  # running -> success
    FAILED = "failed"  # running -> failed
    ERRORED = "errored"  # running -> error
    CANCELLED = "cancelled"  # queued|running -> cancelled


S, E = RunState, RunEvent

TRANSITIONS: dict[tuple[RunState, RunEvent], RunState] = {
    (S.QUEUED, E.STARTED): S.RUNNING,
    (S.QUEUED, E.CANCELLED): S.CANCELLED,
    (S.RUNNING, E.SUCCEEDED): S.SUCCESS,
    (S.RUNNING, E.FAILED): S.FAILED,
    (S.RUNNING, E.ERRORED): S.ERROR,
    (S.RUNNING, E.CANCELLED): S.CANCELLED,
}

FINAL_STATES = frozenset({S.SUCCESS, S.FAILED, S.ERROR, S.CANCELLED})

del S, E


def next_state(state: RunState, event: RunEvent) -> RunState:
    """Return the state a run in ``state`` moves to on ``event``.

    Parameters
    ----------
    state
        The run's current state.
    event
        What happened.

    Returns
    -------
    RunState
        The next state.

    Raises
    ------
    IllegalTransition
        The table has no such edge.
    """
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"a run that is {state} cannot be {event}") from None
