"""subscriber: frequency (daily, or weekly on `weekday`); every existing subscriber stays daily.

Revision ID: 2026_12_07_frequency
Revises: 2026_12_07_ingest_run_owner
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2026_12_07_frequency"
down_revision: str | None = "2026_12_07_ingest_run_owner"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ADD COLUMN with the checks inline, on both databases: SQLite cannot add a constraint to a
# table, and a batch "move and copy" would silently lose the expression index on lower(email).


def upgrade() -> None:
    op.add_column(
        "subscriber",
        sa.Column(
            "frequency",
            sa.String(length=16),
            sa.CheckConstraint(
                "frequency IN ('daily', 'weekly')", name=op.f("ck_subscriber_digest_frequency")
            ),
            nullable=False,
            server_default="daily",
        ),
    )
    op.add_column(
        "subscriber",
        sa.Column(
            "weekday",
            sa.SmallInteger(),
            sa.CheckConstraint("weekday BETWEEN 0 AND 6", name=op.f("ck_subscriber_weekday_range")),
            nullable=False,
            server_default="0",
        ),
    )


def downgrade() -> None:
    op.drop_column("subscriber", "weekday")
    op.drop_column("subscriber", "frequency")
