"""Frozen records: what the query modules return instead of ORM objects.

A record is a snapshot of rows at the time of the query. Records carry the stored status strings;
the scheduler turns them into its state enums and into the views of its public API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "AttemptRecord",
    "EventRecord",
    "JobRecord",
    "LeaseRecord",
    "LogChunk",
    "LogRecord",
    "NewJob",
    "NewRun",
    "RunRecord",
    "RunSummaryRecord",
    "StepRecord",
]


@dataclass(frozen=True)
class NewRun:
    """The columns of a run to insert (tenant and repository already resolved to ids)."""

    run_id: str
    tenant_id: int
    repository_id: int
    workflow_name: str
    workflow_json: dict[str, Any]
    workflow_text: str
    source_digest: str
    ref: str
    default_branch: str
    event: str
    base_ref: str | None
    is_fork: bool
    pull_request: int | None
    protected_refs: tuple[str, ...]
    trust_tier: str
    status: str
    submitted_by: str | None
    created_at: datetime


@dataclass(frozen=True)
class NewJob:
    job_id: str
    position: int
    name: str
    spec: dict[str, Any]
    status: str
    max_attempts: int


@dataclass(frozen=True)
class RunSummaryRecord:
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
class RunRecord:
    run_id: str
    tenant: str
    repo: str
    workflow_name: str
    workflow_json: dict[str, Any]
    source_digest: str
    ref: str
    default_branch: str
    event: str
    base_ref: str | None
    is_fork: bool
    pull_request: int | None
    protected_refs: tuple[str, ...]
    trust_tier: str
    status: str
    submitted_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    run_id: str
    position: int
    name: str
    spec: dict[str, Any]
    status: str
    attempts_count: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error_message: str | None


@dataclass(frozen=True)
class AttemptRecord:
    attempt_id: str
    job_id: str
    run_id: str
    number: int
    runner_id: str
    lease_token: str
    lease_expires_at: datetime
    status: str
    started_at: datetime
    finished_at: datetime | None
    error_message: str | None
    image_name: str | None
    image_digest: str | None
    report: dict[str, Any] | None = None


@dataclass(frozen=True)
class LeaseRecord:
    """What ``leases.lease_next_job`` hands back: the job as leased and its new attempt."""

    job: JobRecord
    attempt: AttemptRecord


@dataclass(frozen=True)
class StepRecord:
    attempt_id: str
    index: int
    name: str
    status: str
    exit_code: int | None
    signal: int | None
    killed_by: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None


@dataclass(frozen=True)
class LogChunk:
    """One piece of output as the runner sends it; ``seq`` is unique within the attempt.

    Parameters
    ----------
    seq
        The runner's sequence number, from 0. Posting the same ``seq`` again is a no-op.
    step_index
        The step that printed it, or ``None`` for the runner's own messages.
    data
        Text, already masked of secrets by the runner.
    """

    seq: int
    step_index: int | None
    data: str


@dataclass(frozen=True)
class LogRecord:
    log_id: int
    job_name: str
    attempt_number: int
    step_index: int | None
    seq: int
    data: str
    created_at: datetime


@dataclass(frozen=True)
class EventRecord:
    event_id: int
    run_id: str
    job_id: str | None
    attempt_id: str | None
    subject: str
    from_state: str | None
    to_state: str
    event: str
    at: datetime
    detail: str | None
