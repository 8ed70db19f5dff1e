"""Upload sessions with leases, for resumable blob uploads (storage).

Revision ID: 0003
Revises: 0002

A runner uploads blobs through grants; ``upload_sessions`` is the control plane's record of each
upload: the blob, its multipart upload id and part size, who holds it and until when. A replacement
uploader resumes a session by its upload id; the janitor aborts open sessions whose lease expired.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _at(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "upload_sessions",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(100), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("upload_id", sa.String(400), nullable=True),
        sa.Column("part_size", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=True),
        _at("lease_expires_at"),
        sa.Column("created_by", sa.String(26), nullable=False),
        sa.Column("held_by", sa.String(26), nullable=False),
        _at("created_at"),
        _at("updated_at"),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_upload_sessions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upload_sessions")),
        sa.UniqueConstraint("upload_id", name=op.f("uq_upload_sessions_upload_id")),
    )
    op.create_index(
        op.f("ix_upload_sessions_state_lease_expires_at"), "upload_sessions", ["state", "lease_expires_at"]
    )
    op.create_index(op.f("ix_upload_sessions_digest"), "upload_sessions", ["digest"])
    op.create_index(op.f("ix_upload_sessions_tenant_id_digest"), "upload_sessions", ["tenant_id", "digest"])


def downgrade() -> None:
    op.drop_table("upload_sessions")
