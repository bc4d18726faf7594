"""Digests as an operator browses them (the admin API): by date and status in id order from a
cursor, one digest with its items and their papers, and counts per day and status; and a
reader's digest of a given day (the "view in browser" page). Functions take a session and never
commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.models import Digest, DigestItem, DigestStatus


async def search_digests(
    *,
    session: AsyncSession,
    after_id: int,
    limit: int,
    on_date: date | None = None,
    status: DigestStatus | None = None,
) -> Sequence[Digest]:
    query = select(Digest).where(Digest.id > after_id)
    if on_date is not None:
        query = query.where(Digest.digest_date == on_date)
    if status is not None:
        query = query.where(Digest.status == status)
    return (await session.scalars(query.order_by(Digest.id).limit(limit))).all()


async def digest_with_items(digest_id: int, *, session: AsyncSession) -> Digest | None:
    """The digest with its items and each item's paper loaded."""
    return await session.scalar(
        select(Digest)
        .where(Digest.id == digest_id)
        .options(selectinload(Digest.items).selectinload(DigestItem.paper))
    )


async def digests_per_day(*, session: AsyncSession, since: date) -> dict[str, dict[str, int]]:
    """Digest counts by ISO date (from `since` on, in date order) and status."""
    per_day: dict[str, dict[str, int]] = {}
    rows = await session.execute(
        select(Digest.digest_date, Digest.status, func.count())
        .where(Digest.digest_date >= since)
        .group_by(Digest.digest_date, Digest.status)
    )
    for digest_date, status, count in rows:
        per_day.setdefault(digest_date.isoformat(), {})[status.value] = count
    return dict(sorted(per_day.items()))


async def count_digests(status: DigestStatus, *, session: AsyncSession) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(Digest).where(Digest.status == status)
        )
        or 0
    )


async def sent_digest_id(
    subscriber_id: int, digest_date: date, *, session: AsyncSession
) -> int | None:
    """The subscriber's digest of that date, unless it was skipped (nothing qualified)."""
    return await session.scalar(
        select(Digest.id).where(
            Digest.subscriber_id == subscriber_id,
            Digest.digest_date == digest_date,
            Digest.status != DigestStatus.SKIPPED,
        )
    )


async def latest_digest(subscriber_id: int, *, session: AsyncSession) -> Digest | None:
    """The subscriber's most recent digest (a skipped one included)."""
    return await session.scalar(
        select(Digest)
        .where(Digest.subscriber_id == subscriber_id)
        .order_by(Digest.digest_date.desc())
        .limit(1)
    )
