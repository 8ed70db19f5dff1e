"""When a job gets another attempt: a pure policy, no I/O.

kiln retries only what is not the job's fault and did not reach a verdict: an attempt whose runner
vanished (its lease expired and the janitor reclaimed it, ``lost``). A completed attempt is a
verdict: ``failed`` is the user's code and rerunning it would hide flakiness; ``error`` is reported
by a runner that is alive and saw what broke, so it is shown rather than retried blindly. The set
of retried outcomes is a parameter, so that choice can change in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kiln.errors import UsageError
from kiln.scheduler.attempt_states import AttemptState

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a job gets, and which attempt outcomes earn another one.

    Parameters
    ----------
    max_attempts
        Attempts per job, the first included (1 means never retry).
    retry_on
        Attempt outcomes after which the job is queued again while attempts are left.
    """

    max_attempts: int = 3
    retry_on: frozenset[AttemptState] = field(default_factory=lambda: frozenset({AttemptState.LOST}))

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise UsageError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if AttemptState.RUNNING in self.retry_on:
            raise UsageError("retry_on names attempt outcomes; running is not one")

    def should_retry(
        self, outcome: AttemptState, *, attempts_made: int, max_attempts: int | None = None
    ) -> bool:
        """Whether a job whose latest attempt ended with ``outcome`` gets another attempt.

        Parameters
        ----------
        outcome
            How the latest attempt ended.
        attempts_made
            Attempts the job has had, the latest included.
        max_attempts
            The job's own limit, stored when it was submitted; this policy's when ``None``.

        Returns
        -------
        bool
            ``True`` to queue the job again.
        """
        limit = self.max_attempts if max_attempts is None else max_attempts
        return outcome in self.retry_on and attempts_made < limit
