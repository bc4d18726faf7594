"""paper_vector and topic_vector: sentence embeddings of papers and topics, per model.

Revision ID: 2026_12_02_vectors
Revises: 2026_12_02_job_run
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2026_12_02_vectors"
down_revision: str | None = "2026_12_02_job_run"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "paper_vector",
        sa.Column("paper_id", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("paper_id", "model", name=op.f("pk_paper_vector")),
    )
    op.create_table(
        "topic_vector",
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("topic", "model", name=op.f("pk_topic_vector")),
    )


def downgrade() -> None:
    op.drop_table("topic_vector")
    op.drop_table("paper_vector")
