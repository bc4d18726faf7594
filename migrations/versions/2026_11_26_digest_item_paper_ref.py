"""digest_item.paper_id becomes a plain reference: no foreign key to paper, no index on it.

A digest item is a frozen record of what was sent. Paperboy never deletes papers, and the
per-row foreign-key check on paper (with the index it needs for cascades) was the largest cost
of freezing a day's digests: about half of writing a million items. Items keep their foreign
key to digest, which carries the cascade of a subscriber's erasure.

Revision ID: 2026_11_26_item_paper_ref
Revises: 2026_11_26_consent
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "2026_11_26_item_paper_ref"
down_revision: str | None = "2026_11_26_consent"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# SQLite rebuilds digest_item as a copy of its reflection. Reflected on its own, without the
# tables its foreign keys point to: reflecting digest would pull in subscriber, whose expression
# index on lower(email) SQLAlchemy cannot reflect on SQLite (it warns, and the copy needs none
# of those tables).
REFLECT_ALONE = {"resolve_fks": False}


def upgrade() -> None:
    with op.batch_alter_table("digest_item", schema=None, reflect_kwargs=REFLECT_ALONE) as batch_op:
        batch_op.drop_index("ix_digest_item_paper_id")
        batch_op.drop_constraint("fk_digest_item_paper_id_paper", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("digest_item", schema=None, reflect_kwargs=REFLECT_ALONE) as batch_op:
        batch_op.create_foreign_key(
            "fk_digest_item_paper_id_paper", "paper", ["paper_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_index("ix_digest_item_paper_id", ["paper_id"], unique=False)
