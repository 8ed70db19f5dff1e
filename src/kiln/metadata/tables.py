"""The metadata schema: SQLAlchemy 2 typed mappings for runs, jobs, attempts, steps and logs.

These classes never leave ``kiln.metadata``: the query modules (``runs``, ``jobs``, ``attempts``,
``leases``, ``logs``, ``events``) turn rows into frozen records. Every change here needs an Alembic
revision in ``metadata/migrations/versions/``; ``tests/integration/metadata/test_db.py`` checks that
the migrated schema and these mappings agree.

Status columns hold the values of the state enums in ``kiln.scheduler.*_states``. They are plain
strings, without CHECK constraints, because the metadata layer does not depend on the scheduler;
the scheduler's ``next_state`` functions are the only way a status is chosen.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "ApiToken",
    "Attempt",
    "Base",
    "CacheLookup",
    "Entry",
    "Job",
    "JobEvent",
    "LogChunk",
    "Repository",
    "Run",
    "Runner",
    "Step",
    "Tenant",
    "TenantSource",
    "UTCDateTime",
    "UploadSession",
]


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL stores ``timestamptz``. SQLite has no timestamp type: SQLAlchemy stores an ISO string
    with a fixed width (microseconds always present), so storing everything in UTC keeps string
    comparison equal to time comparison, which the lease-expiry query relies on.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: kiln stores timezone-aware UTC only")
        value = value.astimezone(UTC)
        # SQLite would store the offset-less text of whatever zone it is given.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSONB on PostgreSQL (compact, comparable); JSON text on SQLite.
_JSON = JSON().with_variant(JSONB(), "postgresql")
# A 64-bit id on PostgreSQL, but SQLite only auto-increments a column declared exactly INTEGER
# PRIMARY KEY (an alias of its rowid).
_BIGID = BigInteger().with_variant(Integer(), "sqlite")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: _JSON, list[str]: _JSON}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)


class Repository(Base):
    __tablename__ = "repositories"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(400))


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index(None, "tenant_id", "created_at"), Index(None, "created_at"))

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    workflow_name: Mapped[str] = mapped_column(String(200))
    workflow_json: Mapped[dict[str, Any]]
    workflow_text: Mapped[str] = mapped_column(Text)
    source_digest: Mapped[str] = mapped_column(String(100))
    ref: Mapped[str] = mapped_column(String(400))
    default_branch: Mapped[str] = mapped_column(String(400))
    event: Mapped[str] = mapped_column(String(20))  # "push" | "pull_request"
    base_ref: Mapped[str | None] = mapped_column(String(400))
    is_fork: Mapped[bool] = mapped_column(Boolean)
    pull_request: Mapped[int | None] = mapped_column(Integer)  # migration 0008
    protected_refs: Mapped[list[str]]
    trust_tier: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    submitted_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("run_id", "position"),
        UniqueConstraint("run_id", "name"),
        # The lease query scans queued jobs only; keep that index small.
        Index(
            "ix_jobs_queued",
            "run_id",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)  # order in the workflow file, from 0
    name: Mapped[str] = mapped_column(String(200))
    spec_json: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20))
    attempts_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error_message: Mapped[str | None] = mapped_column(Text)


class Attempt(Base):
    """One lease of a job by a runner: the runner's incarnation is its ``lease_token``."""

    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("job_id", "number"),
        # At most one attempt of a job holds its lease; the database enforces it, not only the code.
        Index(
            "uq_attempts_running_job_id",
            "job_id",
            unique=True,
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
        # The janitor's query: running attempts by expiry.
        Index(None, "status", "lease_expires_at"),
        # The API finds the attempt of a job token by its digest (migration 0004).
        Index(None, "lease_token"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, ... within the job
    runner_id: Mapped[str] = mapped_column(String(200))
    lease_token: Mapped[str] = mapped_column(String(64))  # sha256 hex of the job token (0004)
    lease_expires_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    error_message: Mapped[str | None] = mapped_column(Text)
    image_name: Mapped[str | None] = mapped_column(String(400))
    image_digest: Mapped[str | None] = mapped_column(String(100))
    # What the runner's phases report for the summary: {"caches": [...], "artifacts": [...], "image": {...}}.
    report: Mapped[dict[str, Any] | None]


class Step(Base):
    __tablename__ = "steps"

    attempt_id: Mapped[str] = mapped_column(ForeignKey("attempts.id", ondelete="CASCADE"), primary_key=True)
    step_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(400))
    status: Mapped[str] = mapped_column(String(20))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    signal: Mapped[int | None] = mapped_column(Integer)
    killed_by: Mapped[str | None] = mapped_column(String(40))  # e.g. "timeout", "memory", "cancel"
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    duration_s: Mapped[float | None] = mapped_column(Float)


class LogChunk(Base):
    """A piece of an attempt's output, already masked by the runner (secrets never get here).

    ``id`` is global and increases in commit order within a run (see ``logs.append_log_chunks``),
    so it doubles as the cursor of a log tail. ``run_id`` is denormalised for that tail query.
    """

    __tablename__ = "log_chunks"
    __table_args__ = (
        UniqueConstraint("attempt_id", "seq"),  # a retried post of the same chunk is a no-op
        Index(None, "run_id", "id"),
        # Never reuse an id after deletes: a tail's cursor must not skip a new chunk.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    attempt_id: Mapped[str] = mapped_column(ForeignKey("attempts.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    step_index: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class JobEvent(Base):
    """One row per state change of a run, job, attempt or step: the history, written by the same
    transaction as the change."""

    __tablename__ = "job_events"
    __table_args__ = (Index(None, "run_id", "id"), Index(None, "job_id"))

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt_id: Mapped[str | None] = mapped_column(ForeignKey("attempts.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(10))  # "run" | "job" | "attempt" | "step"
    from_state: Mapped[str | None] = mapped_column(String(20))  # None when the subject is created
    to_state: Mapped[str] = mapped_column(String(20))
    event: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime]
    detail: Mapped[str | None] = mapped_column(Text)


class Runner(Base):
    __tablename__ = "runners"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    labels: Mapped[list[str]]
    last_seen: Mapped[datetime]


class Entry(Base):
    """A cache entry, artifact or image layer: the commit protocol's record (ARCHITECTURE.md §4).

    ``identity`` is what must be unique among committed entries of a tenant and kind (the domain
    module decides it: a build cache's scope + name + key; an artifact's run + job + name). Only
    ``committed`` rows are visible to readers; a committed row never changes its blob.
    """

    __tablename__ = "entries"
    __table_args__ = (
        Index(
            "uq_entries_committed_identity",
            "tenant_id",
            "kind",
            "identity",
            unique=True,
            postgresql_where=text("status = 'committed'"),
            sqlite_where=text("status = 'committed'"),
        ),
        Index(None, "tenant_id", "kind", "name", "key"),
        Index(None, "status", "expires_at"),
        Index(None, "digest"),
        Index(None, "producer_run_id"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    repo: Mapped[str] = mapped_column(String(400))
    scope: Mapped[str] = mapped_column(String(600))
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(400))
    key: Mapped[str] = mapped_column(String(100))
    identity: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str | None] = mapped_column(String(100))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    compression: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    trust_tier: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime]
    committed_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    producer_run_id: Mapped[str | None] = mapped_column(String(26))
    producer_job: Mapped[str | None] = mapped_column(String(200))
    producer_attempt_id: Mapped[str | None] = mapped_column(String(26))
    failure: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]]


# -- caches (migration 0005) -----------------------------------------------------------------------


class CacheLookup(Base):
    """One restore decision of a job's cache: the key's inputs and what was found.

    ``kiln cache explain`` needs the inputs a job computed even when nothing matched (a miss leaves
    no entry), and the scopes and trust tier it could read from; ``entries`` holds only what was
    saved. One row per cache per attempt.
    """

    __tablename__ = "cache_lookups"
    __table_args__ = (Index(None, "tenant_id", "job", "name", "created_at"), Index(None, "run_id"))

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    repo: Mapped[str] = mapped_column(String(400))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    attempt_id: Mapped[str] = mapped_column(ForeignKey("attempts.id", ondelete="CASCADE"))
    job: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(400))
    cache_type: Mapped[str] = mapped_column(String(20))
    scope: Mapped[str] = mapped_column(String(600))
    trust_tier: Mapped[str] = mapped_column(String(20))
    readable_scopes: Mapped[list[str]]
    key: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(100))
    document: Mapped[dict[str, Any]]
    outcome: Mapped[str] = mapped_column(String(20))
    matched_entry_id: Mapped[str | None] = mapped_column(String(26))
    created_at: Mapped[datetime]


# -- blob upload sessions (migration 0003) ---------------------------------------------------------


class UploadSession(Base):
    """One blob upload a runner does through grants: the control plane's journal of it.

    ``upload_id`` is the store's multipart upload (None for a single put, and for an upload that
    found the blob already stored). While ``open`` the session holds a lease that the holder's calls
    extend; the janitor aborts an open session whose lease expired and whose attempt is no longer
    running, together with its multipart upload. Queries live in ``kiln.metadata.uploads``.
    """

    __tablename__ = "upload_sessions"
    __table_args__ = (
        UniqueConstraint("upload_id"),
        Index(None, "state", "lease_expires_at"),
        Index(None, "digest"),
        Index(None, "tenant_id", "digest"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    digest: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    upload_id: Mapped[str | None] = mapped_column(String(400))
    part_size: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(20))  # "open" | "completed" | "aborted"
    outcome: Mapped[str | None] = mapped_column(String(20))  # "created" | "existed" once completed
    lease_expires_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(26))  # the attempt that opened it
    held_by: Mapped[str] = mapped_column(String(26))  # the attempt that holds it now (a resume moves it)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


# -- tokens and source ownership (migration 0004) --------------------------------------------------


class ApiToken(Base):
    """A bearer token: only the sha256 of its secret is stored, so a database dump grants nothing.

    ``kind`` is ``admin`` (every tenant), ``user`` (one tenant's runs, logs, caches, artifacts),
    ``registration`` (registers runners) or ``runner`` (issued to one registered runner: leases
    jobs). Job tokens are not rows here: they are the attempts' lease tokens.
    """

    __tablename__ = "api_tokens"
    __table_args__ = (Index(None, "tenant_id"), Index(None, "runner_id"))

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list[str]]
    runner_id: Mapped[str | None] = mapped_column(String(200))
    created_by: Mapped[str | None] = mapped_column(String(26))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class TenantSource(Base):
    """A source snapshot a tenant proved it has (it uploaded the bytes): what its runs may name.

    Blobs are content-addressed and shared; without this record a tenant that learnt another
    tenant's source digest could submit a run on it and read that source in its job.
    """

    __tablename__ = "tenant_sources"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    digest: Mapped[str] = mapped_column(String(100), primary_key=True)
    created_at: Mapped[datetime]
