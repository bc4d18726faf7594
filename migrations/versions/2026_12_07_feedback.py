"""feedback, subscriber.muted_topics and digest_item.liked_title: a reader's "more / less like
this" per paper (the last click wins; erased with the reader), the topics they muted, and the
liked paper a digest item is explained by.

Revision ID: 2026_12_07_feedback
Revises: 2026_12_07_frequency
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "2026_12_07_feedback"
down_revision: str | None = "2026_12_07_frequency"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_VALUE = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("subscriber_id", sa.BigInteger(), nullable=False),
        sa.Column("paper_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "signal",
            sa.Enum(
                "more",
                "less",
                name="feedback_signal",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("clicked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
            name=op.f("fk_feedback_subscriber_id_subscriber"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["paper_id"], ["paper.id"], name=op.f("fk_feedback_paper_id_paper")
        ),
        sa.PrimaryKeyConstraint("subscriber_id", "paper_id", name=op.f("pk_feedback")),
    )
    op.create_index(op.f("ix_feedback_paper_id"), "feedback", ["paper_id"], unique=False)
    # Plain ALTER TABLE on both databases: a batch "move and copy" on SQLite would silently lose
    # the expression index on lower(email). Existing readers start with no muted topic.
    op.add_column(
        "subscriber",
        sa.Column("muted_topics", JSON_VALUE, nullable=False, server_default=sa.text("'[]'")),
    )
    op.add_column("digest_item", sa.Column("liked_title", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("digest_item", "liked_title")
    op.drop_column("subscriber", "muted_topics")
    op.drop_index(op.f("ix_feedback_paper_id"), table_name="feedback")
    op.drop_table("feedback")
