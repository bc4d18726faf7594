"""job_run: jobs an operator starts through the admin API, run apart from the request.

Revision ID: 2026_12_02_job_run
Revises: 2026_11_26_item_paper_ref
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "2026_12_02_job_run"
down_revision: str | None = "2026_11_26_item_paper_ref"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON_VALUE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "job_run",
        sa.Column("id", BIGINT_ID, nullable=False),
        sa.Column("job", sa.String(length=16), nullable=False),
        sa.Column("parameters", JSON_VALUE, nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "running",
                "succeeded",
                "failed",
                name="job_run_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("report", JSON_VALUE, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_run")),
    )
    op.create_index(op.f("ix_job_run_started_at"), "job_run", ["started_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_job_run_started_at"), table_name="job_run")
    op.drop_table("job_run")
