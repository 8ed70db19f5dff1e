"""The shared entry records (caches, artifacts, layers) and per-attempt reports.

Revision ID: 0002
Revises: 0001

``entries`` is ARCHITECTURE.md §4's commit protocol in one table: a row is reserved ``pending``,
becomes ``uploading`` once its blob digest is known, and ``committed`` create-only. The partial
unique index on ``(tenant_id, kind, identity)`` among committed rows is what makes the first
committer win: the database decides the race, not the code.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_COMMITTED = sa.text("status = 'committed'")


def _at(name: str, *, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "entries",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("repo", sa.String(400), nullable=False),
        sa.Column("scope", sa.String(600), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("name", sa.String(400), nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("identity", sa.String(200), nullable=False),
        sa.Column("digest", sa.String(100), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("compression", sa.String(20), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("trust_tier", sa.String(20), nullable=False),
        _at("created_at", nullable=False),
        _at("committed_at", nullable=True),
        _at("last_used_at", nullable=True),
        _at("expires_at", nullable=True),
        sa.Column("producer_run_id", sa.String(26), nullable=True),
        sa.Column("producer_job", sa.String(200), nullable=True),
        sa.Column("producer_attempt_id", sa.String(26), nullable=True),
        sa.Column("failure", sa.Text(), nullable=True),
        sa.Column("meta", _JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_entries_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entries")),
    )
    op.create_index(
        "uq_entries_committed_identity",
        "entries",
        ["tenant_id", "kind", "identity"],
        unique=True,
        postgresql_where=_COMMITTED,
        sqlite_where=_COMMITTED,
    )
    op.create_index(
        op.f("ix_entries_tenant_id_kind_name_key"), "entries", ["tenant_id", "kind", "name", "key"]
    )
    op.create_index(op.f("ix_entries_status_expires_at"), "entries", ["status", "expires_at"])
    op.create_index(op.f("ix_entries_digest"), "entries", ["digest"])
    op.create_index(op.f("ix_entries_producer_run_id"), "entries", ["producer_run_id"])
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("report", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("report")
    op.drop_table("entries")
