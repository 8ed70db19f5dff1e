"""How the outcomes of a run's jobs combine into the run's outcome: one function, one order.

From best to worst: success < skipped < failed < error < cancelled. A run takes the worst outcome
of its jobs, so

* every job succeeded → success;
* a job failed (the user's code) → failed, even though the jobs after it were skipped;
* a job errored (kiln or the machine broke, or its attempts were exhausted) → error, which tells
  the user that retrying may help and that their code is not known to be wrong;
* the run was cancelled → cancelled, whatever else happened.

``skipped`` never decides a run on its own: a job is only skipped after an earlier one did not
succeed. (Should a run consist of skipped jobs only, it would count as successful, as nothing
failed.)
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from kiln.scheduler.job_states import JobState
from kiln.scheduler.run_states import RunEvent

__all__ = ["JobOutcome", "combine", "run_event_for"]


class JobOutcome(StrEnum):
    """The final state of a job, ordered by severity (declaration order, best first)."""

    SUCCESS = "success"
    SKIPPED = "skipped"
    FAILED = "failed"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @classmethod
    def of(cls, state: JobState) -> JobOutcome:
        """The outcome of a job in a final state.

        Raises
        ------
        ValueError
            ``state`` is not final.
        """
        return cls(state.value)


_SEVERITY = {outcome: rank for rank, outcome in enumerate(JobOutcome)}


def combine(outcomes: Iterable[JobOutcome]) -> JobOutcome:
    """Return the worst of ``outcomes`` (``SUCCESS`` for none).

    Commutative, associative and idempotent, so the order in which jobs finished never matters.

    Parameters
    ----------
    outcomes
        The final outcomes of a run's jobs.

    Returns
    -------
    JobOutcome
        The run's outcome.
    """
    return max(outcomes, key=_SEVERITY.__getitem__, default=JobOutcome.SUCCESS)


_RUN_EVENTS = {
    JobOutcome.SUCCESS: RunEvent.SUCCEEDED,
    JobOutcome.SKIPPED: RunEvent.SUCCEEDED,
    JobOutcome.FAILED: RunEvent.FAILED,
    JobOutcome.ERROR: RunEvent.ERRORED,
    JobOutcome.CANCELLED: RunEvent.CANCELLED,
}


def run_event_for(outcome: JobOutcome) -> RunEvent:
    """The run event that finishes a run whose combined outcome is ``outcome``."""
    return _RUN_EVENTS[outcome]
