"""The HTTP API's request and response bodies: the contract between clients, runners and the server.

The runner and the CLI import this module (never ``kiln.api.app``), so it depends on nothing but
pydantic. Views are built from the scheduler's frozen dataclasses with ``from_attributes``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AttemptOut",
    "CompleteIn",
    "HeartbeatOut",
    "ImageReportIn",
    "JobOut",
    "LeaseIn",
    "LeaseOut",
    "LogChunkIn",
    "LogLineOut",
    "LogsIn",
    "LogsOut",
    "ProblemOut",
    "ReleaseIn",
    "RunContextIn",
    "RunOut",
    "RunSummaryOut",
    "StepFinishIn",
    "StepOut",
    "StepStartIn",
    "SubmitIn",
]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class RunContextIn(BaseModel):
    """Who and what a run is for; caches and trust decisions are made from it."""

    tenant: str = "local"
    repo: str
    ref: str = "main"
    default_branch: str = "main"
    event: Literal["push", "pull_request"] = "push"
    base_ref: str | None = None
    is_fork: bool = False
    # The pull request's number: required for a fork, whose caches live under it alone.
    pull_request: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _fork_names_its_pull_request(self) -> RunContextIn:
        if self.is_fork and self.pull_request is None:
            raise ValueError("a fork pull request needs its number (pull_request): its caches live under it")
        return self


class SubmitIn(BaseModel):
    context: RunContextIn
    workflow_text: str
    workflow_filename: str = "kiln.yml"
    source_digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    # Secrets are held in the server's memory for the run's lifetime and handed to the runner with
    # the lease; they are never written to the database or to a log.
    secrets: dict[str, str] = {}
    # kiln.lock beside the workflow (its JSON), when there is one: custom images build from it.
    lock: dict[str, Any] | None = None


class ProblemOut(BaseModel):
    file: str
    line: int
    column: int
    loc: list[str | int]
    message: str


class StepOut(_Out):
    index: int
    name: str
    status: str
    exit_code: int | None = None
    signal: int | None = None
    killed_by: str | None = None
    duration_s: float | None = None


class AttemptOut(_Out):
    number: int
    status: str
    runner_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_message: str | None = None
    steps: list[StepOut] = []
    report: dict[str, Any] = {}


class JobOut(_Out):
    name: str
    position: int
    status: str
    error_message: str | None = None
    duration_s: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    image_name: str | None = None
    image_digest: str | None = None
    attempts: list[AttemptOut] = []


class RunOut(_Out):
    run_id: str
    tenant: str
    repo: str
    ref: str
    status: str
    workflow_name: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    jobs: list[JobOut] = []


class RunSummaryOut(_Out):
    run_id: str
    tenant: str
    repo: str
    ref: str
    status: str
    workflow_name: str
    created_at: datetime


class LeaseIn(BaseModel):
    runner_id: str
    run_id: str | None = None  # the embedded runner of `kiln run` leases only its own run's jobs


class LeaseOut(BaseModel):
    run_id: str
    job_id: str
    job_name: str
    attempt_id: str
    attempt_number: int
    lease_token: str
    lease_expires_at: datetime
    lease_ttl_s: float
    spec: dict
    workflow_env: dict[str, str]
    workflow_name: str
    source_digest: str
    context: RunContextIn
    trust_tier: str
    secrets: dict[str, str] = {}
    # True when this server process never held the run's secrets (it restarted since the submit).
    secrets_lost: bool = False
    # The job's custom image, its base images and their lock entries (kiln.images.plan).
    image_plan: dict[str, Any] | None = None


class HeartbeatOut(BaseModel):
    expires_at: datetime
    cancel_requested: bool


class LogChunkIn(BaseModel):
    seq: int
    step_index: int | None = None
    data: str


class LogsIn(BaseModel):
    chunks: list[LogChunkIn]


class StepStartIn(BaseModel):
    name: str


class StepFinishIn(BaseModel):
    status: Literal["success", "failed", "skipped"]
    exit_code: int | None = None
    signal: int | None = None
    killed_by: str | None = None
    duration_s: float = 0.0


class CompleteIn(BaseModel):
    status: Literal["success", "failed", "error", "cancelled"]
    error_message: str | None = None


class ReleaseIn(BaseModel):
    """Why a runner gives its job back (``POST /v1/attempts/{id}/release``)."""

    reason: str = Field(default="the runner is stopping", max_length=2000)


class ImageReportIn(BaseModel):
    name: str
    digest: str


ReportSection = Literal["caches", "artifacts", "image"]
"""The parts of a job's summary that its runner's phases report."""


class ReportIn(BaseModel):
    """One section of an attempt's report: a list of per-item dicts, or a dict (``image``)."""

    value: list[dict[str, Any]] | dict[str, Any]


class LogLineOut(_Out):
    job: str
    attempt_number: int
    step_index: int | None = None
    seq: int
    data: str


class LogsOut(BaseModel):
    lines: list[LogLineOut]
    cursor: int  # pass back as ?after= to get only newer lines
    at_end: bool  # the run is final and this page holds the rest of its log: a tail can stop
