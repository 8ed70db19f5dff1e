"""Tenants' tokens, runner registration and job tokens (scale-out).

Revision ID: 0004
Revises: 0003

``api_tokens`` holds bearer tokens by the sha256 of their secret only. Job tokens are the attempts'
lease tokens: from this revision on ``attempts.lease_token`` holds the sha256 of the token, never
the token, and is indexed because the API looks an attempt up by it. Existing tokens are hashed in
place, so runners holding a lease across the upgrade keep it. ``tenant_sources`` records which
source snapshots a tenant uploaded, the only ones its runs may name.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_attempts = sa.table("attempts", sa.column("id", sa.String), sa.column("lease_token", sa.String))


def _at(name: str, *, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scopes", _JSON, nullable=False),
        sa.Column("runner_id", sa.String(200), nullable=True),
        sa.Column("created_by", sa.String(26), nullable=True),
        _at("created_at", nullable=False),
        _at("expires_at", nullable=True),
        _at("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_api_tokens_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_api_tokens_secret_hash")),
    )
    op.create_index(op.f("ix_api_tokens_tenant_id"), "api_tokens", ["tenant_id"])
    op.create_index(op.f("ix_api_tokens_runner_id"), "api_tokens", ["runner_id"])
    op.create_table(
        "tenant_sources",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(100), nullable=False),
        _at("created_at", nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tenant_sources_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "digest", name=op.f("pk_tenant_sources")),
    )
    # Hash the tokens of existing attempts (in Python: SQLite has no sha256). Only running attempts'
    # tokens still grant anything, but hashing all keeps the column's meaning uniform.
    connection = op.get_bind()
    rows = connection.execute(sa.select(_attempts.c.id, _attempts.c.lease_token)).all()
    for attempt_id, token in rows:
        digest = hashlib.sha256(token.encode()).hexdigest()
        connection.execute(
            sa.update(_attempts).where(_attempts.c.id == attempt_id).values(lease_token=digest)
        )
    op.create_index(op.f("ix_attempts_lease_token"), "attempts", ["lease_token"])


def downgrade() -> None:
    # The tokens' plain values are gone: runners holding a lease lose it, and the janitor requeues.
    op.drop_index(op.f("ix_attempts_lease_token"), table_name="attempts")
    op.drop_table("tenant_sources")
    op.drop_table("api_tokens")
