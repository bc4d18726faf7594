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


def upgrade() -> None:
    with op.batch_alter_table("subscriber") as batch:
        batch.add_column(sa.Column("consent_ip", sa.String(length=45), nullable=True))
        batch.add_column(sa.Column("signup_mail_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriber") as batch:
        batch.drop_column("signup_mail_at")
        batch.drop_column("consent_ip")
