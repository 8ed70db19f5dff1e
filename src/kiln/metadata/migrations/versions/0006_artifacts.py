"""Artifact-specific metadata (artifacts): none needed.

Artifacts are rows of the shared ``entries`` table (kind ``artifact``, identity run/job/name, the
manifest in ``meta``; see docs/design-artifacts.md), so this revision changes nothing. It stays in
the chain so that revision numbers keep their meaning.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to create."""


def downgrade() -> None:
    """Nothing to drop."""
