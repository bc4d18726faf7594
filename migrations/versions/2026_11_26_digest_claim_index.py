"""Partial index for delivery claims: digests still to send, in id order.

Revision ID: 2026_11_26_claim_index
Revises: 2026_11_26_initial
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2026_11_26_claim_index"
down_revision: str | None = "2026_11_26_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIMABLE = "status IN ('queued', 'retry', 'sending')"


def upgrade() -> None:
    op.create_index(
        "ix_digest_claimable",
        "digest",
        ["id"],
        postgresql_where=sa.text(CLAIMABLE),
        sqlite_where=sa.text(CLAIMABLE),
    )


def downgrade() -> None:
    op.drop_index("ix_digest_claimable", table_name="digest")
