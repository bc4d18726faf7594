"""Digests as an operator browses them (the admin API): by date and status in id order from a
cursor, one digest with its items and their papers, and counts per day and status; and as a
reader does: their digest of a given day (the "view in browser" page) and their archive, newest
first, a page at a time. Functions take a session and never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.models import Digest, DigestItem, DigestStatus, Paper

ARCHIVE_TITLES = 3  # the first titles an archive entry shows


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


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    digest_id: int
    digest_date: date
    papers: int
    first_titles: list[str]


@dataclass(frozen=True, slots=True)
class ArchivePage:
    entries: list[ArchiveEntry]
    page: int
    pages: int
    total: int


async def reader_archive(
    subscriber_id: int, *, session: AsyncSession, page: int, per_page: int
) -> ArchivePage:
    """A reader's digests, newest first, a page at a time (a page past the last reads as the
    last): each with its date, its number of papers and its first titles. Skipped days (nothing
    qualified) are left out, as the digest view leaves them out."""
    shown = (Digest.subscriber_id == subscriber_id, Digest.status != DigestStatus.SKIPPED)
    total = int(await session.scalar(select(func.count()).select_from(Digest).where(*shown)) or 0)
    pages = max(1, -(-total // per_page))
    page = min(max(page, 1), pages)
    digests = (
        await session.execute(
            select(Digest.id, Digest.digest_date)
            .where(*shown)
            .order_by(Digest.digest_date.desc())
            .offset((page - 1) * per_page)
            .limit(per_page)
        )
    ).all()
    ids = [digest_id for digest_id, _ in digests]
    counts = dict(
        (
            await session.execute(
                select(DigestItem.digest_id, func.count())
                .where(DigestItem.digest_id.in_(ids))
                .group_by(DigestItem.digest_id)
            )
        ).all()
    )
    titles: dict[int, list[str]] = {}
    for digest_id, title in await session.execute(
        select(DigestItem.digest_id, Paper.title)
        .join(Paper, Paper.id == DigestItem.paper_id)
        .where(DigestItem.digest_id.in_(ids), DigestItem.rank <= ARCHIVE_TITLES)
        .order_by(DigestItem.digest_id, DigestItem.rank)
    ):
        titles.setdefault(digest_id, []).append(title)
    entries = [
        ArchiveEntry(digest_id, day, int(counts.get(digest_id, 0)), titles.get(digest_id, []))
        for digest_id, day in digests
    ]
    return ArchivePage(entries, page, pages, total)
