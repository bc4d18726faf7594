"""Subscriber consent and signup-mail rate limiting: consent_ip, signup_mail_at.

Revision ID: 2026_11_26_consent
Revises: 2026_11_26_claim_index
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2026_11_26_consent"
down_revision: str | None = "2026_11_26_claim_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE on both databases (SQLite has ADD and DROP COLUMN since 3.35): a batch
# "move and copy" on SQLite would silently lose the expression index on lower(email).


def upgrade() -> None:
    op.add_column("subscriber", sa.Column("consent_ip", sa.String(length=45), nullable=True))
    op.add_column(
        "subscriber", sa.Column("signup_mail_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("subscriber", "signup_mail_at")
    op.drop_column("subscriber", "consent_ip")
