"""Runs remember their pull request's number: a fork's caches live under it alone.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("pull_request", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "pull_request")
