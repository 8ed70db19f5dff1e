"""The job state machine.

Jobs of a run execute one after another, in file order. A job waits in ``pending`` until the job
before it succeeded (the first job is runnable at once), is ``queued`` until a runner leases it,
and is ``running`` while an attempt holds the lease.

================  ==============  ============  ===============================================
from              event           to            when
================  ==============  ============  ===============================================
pending           ready           queued        the previous job succeeded, or it is the first
queued            leased          running       a runner leased it (a new attempt)
running           succeeded       success       the attempt completed with success
running           failed          failed        the attempt completed: the user's code failed
running           errored         error         the attempt completed with an infrastructure error
running           requeued        queued        the attempt's lease was lost, attempts are left
running           exhausted       error         the attempt's lease was lost, none are left
pending, queued   skipped         skipped       an earlier job did not succeed
pending, queued,  cancelled       cancelled     the run was cancelled (a running job: once its
running                                         attempt completes as cancelled or is lost)
================  ==============  ============  ===============================================
"""

from __future__ import annotations

from enum import StrEnum

from kiln.errors import IllegalTransition

__all__ = ["FINAL_STATES", "TRANSITIONS", "JobEvent", "JobState", "next_state"]


class JobState(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class JobEvent(StrEnum):
    READY = "ready"  # pending -> queued
    LEASED = "leased"  # queued -> running
    SUCCEEDED = "succeeded"  # running -> success
    FAILED = "failed"  # running -> failed
    ERRORED = "errored"  # running -> error
    REQUEUED = "requeued"  # running -> queued
    EXHAUSTED = "exhausted"  # running -> error
    SKIPPED = "skipped"  # pending|queued -> skipped
    CANCELLED = "cancelled"  # pending|queued|running -> cancelled


S, E = JobState, JobEvent

TRANSITIONS: dict[tuple[JobState, JobEvent], JobState] = {
    (S.PENDING, E.READY): S.QUEUED,
    (S.QUEUED, E.LEASED): S.RUNNING,
    (S.RUNNING, E.SUCCEEDED): S.SUCCESS,
    (S.RUNNING, E.FAILED): S.FAILED,
    (S.RUNNING, E.ERRORED): S.ERROR,
    (S.RUNNING, E.REQUEUED): S.QUEUED,
    (S.RUNNING, E.EXHAUSTED): S.ERROR,
    (S.PENDING, E.SKIPPED): S.SKIPPED,
    (S.QUEUED, E.SKIPPED): S.SKIPPED,
    (S.PENDING, E.CANCELLED): S.CANCELLED,
    (S.QUEUED, E.CANCELLED): S.CANCELLED,
    (S.RUNNING, E.CANCELLED): S.CANCELLED,
}

FINAL_STATES = frozenset({S.SUCCESS, S.FAILED, S.ERROR, S.SKIPPED, S.CANCELLED})

del S, E


def next_state(state: JobState, event: JobEvent) -> JobState:
    """Return the state a job in ``state`` moves to on ``event``.

    Parameters
    ----------
    state
        The job's current state.
    event
        What happened.

    Returns
    -------
    JobState
        The next state.

    Raises
    ------
    IllegalTransition
        The table has no such edge.
    """
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"a job that is {state} cannot be {event}") from None
