"""What the scheduler hands out: frozen views, built from the metadata layer's records.

Views never carry ORM objects, lease tokens (except to the runner that holds the lease, in
:class:`LeasedJob`) or secrets. Timestamps are timezone-aware UTC; durations are ``*_s`` floats.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NewType

from kiln.metadata.records import AttemptRecord, JobRecord, RunRecord, RunSummaryRecord, StepRecord
from kiln.scheduler.context import RunContext

__all__ = [
    "AttemptView",
    "Heartbeat",
    "JobView",
    "LeasedJob",
    "LogCursor",
    "LogLine",
    "LogPage",
    "ReclaimedAttempt",
    "RunSummary",
    "RunView",
    "StepView",
    "build_run_view",
    "run_context_of",
    "run_summary_of",
]

LogCursor = NewType("LogCursor", int)
"""Position in a run's log: the id of the last chunk seen (0 before the first). Pass it back as
``after`` to read only newer lines; it is a plain ``int`` on the wire."""


@dataclass(frozen=True)
class StepView:
    index: int
    name: str
    status: str
    exit_code: int | None
    signal: int | None
    killed_by: str | None
    duration_s: float | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class AttemptView:
    attempt_id: str
    number: int
    status: str
    runner_id: str
    started_at: datetime
    finished_at: datetime | None
    lease_expires_at: datetime
    error_message: str | None
    image_name: str | None
    image_digest: str | None
    steps: tuple[StepView, ...]
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobView:
    job_id: str
    name: str
    position: int
    status: str
    max_attempts: int
    error_message: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    image_name: str | None  # as reported by the latest attempt that reported one
    image_digest: str | None
    attempts: tuple[AttemptView, ...]


@dataclass(frozen=True)
class RunView:
    run_id: str
    tenant: str
    repo: str
    ref: str
    default_branch: str
    event: str
    base_ref: str | None
    is_fork: bool
    trust_tier: str
    status: str
    cancel_requested: bool
    workflow_name: str
    source_digest: str
    submitted_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    jobs: tuple[JobView, ...]


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    tenant: str
    repo: str
    ref: str
    workflow_name: str
    status: str
    trust_tier: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class LogLine:
    job: str
    attempt_number: int
    step_index: int | None
    seq: int
    data: str
    cursor: LogCursor  # this line's position; a tail resumes after it


@dataclass(frozen=True)
class LogPage:
    """A page of a run's log.

    ``cursor`` is where the next read continues (unchanged when there was nothing new).
    ``at_end`` is true when the run had finished before this read and the page holds everything
    after the given cursor: a tail can stop.
    """

    lines: tuple[LogLine, ...]
    cursor: LogCursor
    at_end: bool


@dataclass(frozen=True)
class Heartbeat:
    expires_at: datetime
    cancel_requested: bool  # the run was cancelled: stop the job, complete it as "cancelled"


@dataclass(frozen=True)
class LeasedJob:
    """A job leased to a runner: everything it needs to run it, and the lease to fence it."""

    run_id: str
    job_id: str
    job_name: str
    attempt_id: str
    attempt_number: int
    lease_token: str
    lease_expires_at: datetime
    spec: dict[str, Any]
    workflow_env: dict[str, Any]
    workflow_name: str
    source_digest: str
    context: RunContext
    trust_tier: str


@dataclass(frozen=True)
class ReclaimedAttempt:
    """What the janitor did (or, in a dry run, would do) with one expired lease."""

    run_id: str
    job_id: str
    job_name: str
    attempt_id: str
    attempt_number: int
    runner_id: str
    lease_expired_at: datetime
    job_status: str  # the job's state afterwards: queued (retried), error (exhausted) or cancelled
    dry_run: bool = False


def run_context_of(run: RunRecord) -> RunContext:
    """The context a run was submitted with."""
    return RunContext(
        tenant=run.tenant,
        repo=run.repo,
        ref=run.ref,
        default_branch=run.default_branch,
        event=run.event,
        base_ref=run.base_ref,
        is_fork=run.is_fork,
        pull_request=run.pull_request,
        protected_refs=run.protected_refs,
    )


def run_summary_of(run: RunSummaryRecord) -> RunSummary:
    """The summary of a listed run."""
    return RunSummary(
        run_id=run.run_id,
        tenant=run.tenant,
        repo=run.repo,
        ref=run.ref,
        workflow_name=run.workflow_name,
        status=run.status,
        trust_tier=run.trust_tier,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def build_run_view(
    run: RunRecord, jobs: list[JobRecord], attempts: list[AttemptRecord], steps: list[StepRecord]
) -> RunView:
    """Assemble a run's view from its rows.

    Parameters
    ----------
    run, jobs, attempts, steps
        The run, its jobs in file order, their attempts and the attempts' steps.

    Returns
    -------
    RunView
        Jobs in file order, attempts by number, steps by index.
    """
    steps_of: dict[str, list[StepView]] = defaultdict(list)
    for step in sorted(steps, key=lambda s: (s.attempt_id, s.index)):
        steps_of[step.attempt_id].append(
            StepView(
                index=step.index,
                name=step.name,
                status=step.status,
                exit_code=step.exit_code,
                signal=step.signal,
                killed_by=step.killed_by,
                duration_s=step.duration_s,
                started_at=step.started_at,
                finished_at=step.finished_at,
            )
        )
    attempts_of: dict[str, list[AttemptRecord]] = defaultdict(list)
    for attempt in sorted(attempts, key=lambda a: a.number):
        attempts_of[attempt.job_id].append(attempt)

    job_views = []
    for job in jobs:
        own = attempts_of[job.job_id]
        imaged = [a for a in own if a.image_digest is not None]
        duration = (
            (job.finished_at - job.started_at).total_seconds()
            if job.started_at is not None and job.finished_at is not None
            else None
        )
        job_views.append(
            JobView(
                job_id=job.job_id,
                name=job.name,
                position=job.position,
                status=job.status,
                max_attempts=job.max_attempts,
                error_message=job.error_message,
                started_at=job.started_at,
                finished_at=job.finished_at,
                duration_s=duration,
                image_name=imaged[-1].image_name if imaged else None,
                image_digest=imaged[-1].image_digest if imaged else None,
                attempts=tuple(
                    AttemptView(
                        attempt_id=a.attempt_id,
                        number=a.number,
                        status=a.status,
                        runner_id=a.runner_id,
                        started_at=a.started_at,
                        finished_at=a.finished_at,
                        lease_expires_at=a.lease_expires_at,
                        error_message=a.error_message,
                        image_name=a.image_name,
                        image_digest=a.image_digest,
                        steps=tuple(steps_of[a.attempt_id]),
                        report=dict(a.report or {}),
                    )
                    for a in own
                ),
            )
        )
    return RunView(
        run_id=run.run_id,
        tenant=run.tenant,
        repo=run.repo,
        ref=run.ref,
        default_branch=run.default_branch,
        event=run.event,
        base_ref=run.base_ref,
        is_fork=run.is_fork,
        trust_tier=run.trust_tier,
        status=run.status,
        cancel_requested=run.cancel_requested,
        workflow_name=run.workflow_name,
        source_digest=run.source_digest,
        submitted_by=run.submitted_by,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        jobs=tuple(job_views),
    )
