"""The initial schema: tenants, repositories, runs, jobs, attempts, steps, logs, events, runners.

Revision ID: 0001
Revises:
Create Date: 2024-11-28

Types are spelled out here rather than imported from ``kiln.metadata.tables``, so this revision
keeps creating the same schema whatever the mappings become later.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_QUEUED = sa.text("status = 'queued'")
_RUNNING = sa.text("status = 'running'")


def _at(name: str, *, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "runners",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("labels", _JSON, nullable=False),
        _at("last_seen", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runners")),
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("name", name=op.f("uq_tenants_name")),
    )
    op.create_table(
        "repositories",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(400), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_repositories_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repositories")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_repositories_tenant_id_name")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("workflow_name", sa.String(200), nullable=False),
        sa.Column("workflow_json", _JSON, nullable=False),
        sa.Column("workflow_text", sa.Text(), nullable=False),
        sa.Column("source_digest", sa.String(100), nullable=False),
        sa.Column("ref", sa.String(400), nullable=False),
        sa.Column("default_branch", sa.String(400), nullable=False),
        sa.Column("event", sa.String(20), nullable=False),
        sa.Column("base_ref", sa.String(400), nullable=True),
        sa.Column("is_fork", sa.Boolean(), nullable=False),
        sa.Column("protected_refs", _JSON, nullable=False),
        sa.Column("trust_tier", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("submitted_by", sa.String(200), nullable=True),
        _at("created_at", nullable=False),
        _at("started_at", nullable=True),
        _at("finished_at", nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name=op.f("fk_runs_repository_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_runs_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_created_at"), "runs", ["created_at"])
    op.create_index(op.f("ix_runs_tenant_id_created_at"), "runs", ["tenant_id", "created_at"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("run_id", sa.String(26), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec_json", _JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        _at("created_at", nullable=False),
        _at("started_at", nullable=True),
        _at("finished_at", nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_jobs_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("run_id", "name", name=op.f("uq_jobs_run_id_name")),
        sa.UniqueConstraint("run_id", "position", name=op.f("uq_jobs_run_id_position")),
    )
    op.create_index("ix_jobs_queued", "jobs", ["run_id"], postgresql_where=_QUEUED, sqlite_where=_QUEUED)
    op.create_table(
        "attempts",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("job_id", sa.String(26), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("runner_id", sa.String(200), nullable=False),
        sa.Column("lease_token", sa.String(64), nullable=False),
        _at("lease_expires_at", nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        _at("started_at", nullable=False),
        _at("finished_at", nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("image_name", sa.String(400), nullable=True),
        sa.Column("image_digest", sa.String(100), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_attempts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempts")),
        sa.UniqueConstraint("job_id", "number", name=op.f("uq_attempts_job_id_number")),
    )
    op.create_index(op.f("ix_attempts_status_lease_expires_at"), "attempts", ["status", "lease_expires_at"])
    op.create_index(
        "uq_attempts_running_job_id",
        "attempts",
        ["job_id"],
        unique=True,
        postgresql_where=_RUNNING,
        sqlite_where=_RUNNING,
    )
    op.create_table(
        "job_events",
        sa.Column("id", _BIGID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(26), nullable=False),
        sa.Column("job_id", sa.String(26), nullable=True),
        sa.Column("attempt_id", sa.String(26), nullable=True),
        sa.Column("subject", sa.String(10), nullable=False),
        sa.Column("from_state", sa.String(20), nullable=True),
        sa.Column("to_state", sa.String(20), nullable=False),
        sa.Column("event", sa.String(20), nullable=False),
        _at("at", nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["attempts.id"],
            name=op.f("fk_job_events_attempt_id_attempts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_events_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_job_events_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
    )
    op.create_index(op.f("ix_job_events_job_id"), "job_events", ["job_id"])
    op.create_index(op.f("ix_job_events_run_id_id"), "job_events", ["run_id", "id"])
    op.create_table(
        "log_chunks",
        sa.Column("id", _BIGID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(26), nullable=False),
        sa.Column("attempt_id", sa.String(26), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        _at("created_at", nullable=False),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["attempts.id"],
            name=op.f("fk_log_chunks_attempt_id_attempts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_log_chunks_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_chunks")),
        sa.UniqueConstraint("attempt_id", "seq", name=op.f("uq_log_chunks_attempt_id_seq")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_log_chunks_run_id_id"), "log_chunks", ["run_id", "id"])
    op.create_table(
        "steps",
        sa.Column("attempt_id", sa.String(26), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(400), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("signal", sa.Integer(), nullable=True),
        sa.Column("killed_by", sa.String(40), nullable=True),
        _at("started_at", nullable=True),
        _at("finished_at", nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["attempt_id"], ["attempts.id"], name=op.f("fk_steps_attempt_id_attempts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("attempt_id", "step_index", name=op.f("pk_steps")),
    )


def downgrade() -> None:
    for table in (
        "steps",
        "log_chunks",
        "job_events",
        "attempts",
        "jobs",
        "runs",
        "repositories",
        "tenants",
        "runners",
    ):
        op.drop_table(table)
