"""Image layer records and build locks (image layers): nothing to add to the schema.

Layer records are rows of the shared ``entries`` table (kind ``layer``, migration 0002), and
locks live in ``kiln.lock`` beside the workflow, so this revision only keeps the chain's slot.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
