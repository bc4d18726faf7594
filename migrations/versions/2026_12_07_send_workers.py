"""send_worker and digest.claimed_by: each delivery run beats while it runs, and each claimed
digest names its worker, so that a dead worker's leases can be released at once.

Revision ID: 2026_12_07_send_workers
Revises: 2026_12_07_delivery_events
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2026_12_07_send_workers"
down_revision: str | None = "2026_12_07_delivery_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "send_worker",
        sa.Column("id", BIGINT_ID, nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refusal", sa.Text(), nullable=True),
        sa.Column("refused_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_send_worker")),
    )
    op.create_index(
        op.f("ix_send_worker_heartbeat_at"), "send_worker", ["heartbeat_at"], unique=False
    )
    # Plain ALTER TABLE on both databases (see 2026_11_26_subscriber_consent).
    op.add_column("digest", sa.Column("claimed_by", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("digest", "claimed_by")
    op.drop_index(op.f("ix_send_worker_heartbeat_at"), table_name="send_worker")
    op.drop_table("send_worker")
