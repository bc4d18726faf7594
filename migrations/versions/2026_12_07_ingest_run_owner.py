"""ingest_run: the process that owns a running ingest and its heartbeat, so that a run whose
process died (SIGKILL, a crash, a lost host) can be closed as interrupted.

Revision ID: 2026_12_07_ingest_run_owner
Revises: 2026_12_07_send_workers
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2026_12_07_ingest_run_owner"
down_revision: str | None = "2026_12_07_send_workers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ingest_run") as table:
        table.add_column(sa.Column("owner", sa.String(length=300), nullable=True))
        table.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ingest_run") as table:
        table.drop_column("heartbeat_at")
        table.drop_column("owner")
