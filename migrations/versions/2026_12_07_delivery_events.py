"""delivery_event and mailbox_message: bounce and complaint reports received after sending
(bounce mailbox, provider webhooks), once each, and the bounce mailbox's messages already read.

Revision ID: 2026_12_07_delivery_events
Revises: 2026_12_02_vectors
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2026_12_07_delivery_events"
down_revision: str | None = "2026_12_02_vectors"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "delivery_event",
        sa.Column("id", BIGINT_ID, nullable=False),
        sa.Column("event_key", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "hard_bounce",
                "soft_bounce",
                "blocked",
                "complaint",
                name="delivery_event_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("subscriber_id", sa.BigInteger(), nullable=True),
        sa.Column("digest_id", sa.BigInteger(), nullable=True),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
            name=op.f("fk_delivery_event_subscriber_id_subscriber"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["digest_id"],
            ["digest.id"],
            name=op.f("fk_delivery_event_digest_id_digest"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_event")),
        sa.UniqueConstraint("event_key", name=op.f("uq_delivery_event_event_key")),
    )
    with op.batch_alter_table("delivery_event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_delivery_event_subscriber_id"), ["subscriber_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_delivery_event_digest_id"), ["digest_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_delivery_event_recorded_at"), ["recorded_at"], unique=False
        )
    op.create_table(
        "mailbox_message",
        sa.Column("id", BIGINT_ID, nullable=False),
        sa.Column("mailbox", sa.String(length=255), nullable=False),
        sa.Column("message_key", sa.String(length=255), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailbox_message")),
        sa.UniqueConstraint(
            "mailbox", "message_key", name=op.f("uq_mailbox_message_mailbox_message_key")
        ),
    )


def downgrade() -> None:
    op.drop_table("mailbox_message")
    with op.batch_alter_table("delivery_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_event_recorded_at"))
        batch_op.drop_index(batch_op.f("ix_delivery_event_digest_id"))
        batch_op.drop_index(batch_op.f("ix_delivery_event_subscriber_id"))
    op.drop_table("delivery_event")
