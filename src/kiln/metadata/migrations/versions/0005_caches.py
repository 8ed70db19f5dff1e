"""Cache-specific metadata (build caching): the lookups ``kiln cache explain`` reads.

Revision ID: 0005
Revises: 0004

Cache entries themselves are rows of ``entries`` (kind ``cache``). ``cache_lookups`` keeps, per
attempt and cache, the key's canonical input document and what the restore found, so a miss can
be explained even though it left no entry.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "cache_lookups",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("repo", sa.String(400), nullable=False),
        sa.Column("run_id", sa.String(26), nullable=False),
        sa.Column("attempt_id", sa.String(26), nullable=False),
        sa.Column("job", sa.String(200), nullable=False),
        sa.Column("name", sa.String(400), nullable=False),
        sa.Column("cache_type", sa.String(20), nullable=False),
        sa.Column("scope", sa.String(600), nullable=False),
        sa.Column("trust_tier", sa.String(20), nullable=False),
        sa.Column("readable_scopes", _JSON, nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("document", _JSON, nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("matched_entry_id", sa.String(26), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_cache_lookups_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_cache_lookups_run_id_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["attempts.id"],
            name=op.f("fk_cache_lookups_attempt_id_attempts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cache_lookups")),
    )
    op.create_index(
        op.f("ix_cache_lookups_tenant_id_job_name_created_at"),
        "cache_lookups",
        ["tenant_id", "job", "name", "created_at"],
    )
    op.create_index(op.f("ix_cache_lookups_run_id"), "cache_lookups", ["run_id"])


def downgrade() -> None:
    op.drop_table("cache_lookups")
