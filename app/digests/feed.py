"""A reader's private Atom feed (RFC 4287) as data: one entry per paper of their latest digests,
the newest digest first and each digest's papers in rank order. A feed reader lists entries,
marks each one read and opens each one's link, so the unit a reader acts on, a paper, is the
entry (as in arXiv's and Hugging Face's own feeds); the topic it was chosen for is its category.
Ids never change (`urn:uuid:`, derived from the reader, the digest's date and the paper's rank
in it, a frozen digest's items never change; no address or token is in them), so a reader that
polls again shows nothing twice; an entry's `updated` is the moment its digest was composed.
Escaping and the XML itself are the template's (`templates/web/feed.xml`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.digests.views import PaperView, load_digest_views
from app.models import Digest, DigestStatus, Subscriber
from app.subscribers.localtime import as_utc

FEED_DIGESTS = 14  # the latest digests a feed carries: two weeks of daily ones
# Fixed for good: every entry id is derived from it, and changing it would repeat every entry.
FEED_IDS = uuid.UUID("6f0b6d8e-3c1f-5a7e-9a53-2f1d7c4b8e10")


@dataclass(frozen=True, slots=True)
class FeedEntry:
    id: str
    updated: datetime
    digest_date: date
    paper: PaperView


@dataclass(frozen=True, slots=True)
class ReaderFeed:
    id: str
    updated: datetime
    entries: list[FeedEntry]


def _urn(*parts: object) -> str:
    return f"urn:uuid:{uuid.uuid5(FEED_IDS, '/'.join(map(str, parts)))}"


async def reader_feed(subscriber: Subscriber, *, session: AsyncSession) -> ReaderFeed:
    """The reader's feed: the papers of their latest `FEED_DIGESTS` digests (skipped days have
    none)."""
    digests = (
        await session.execute(
            select(Digest.id, Digest.created_at)
            .where(Digest.subscriber_id == subscriber.id, Digest.status != DigestStatus.SKIPPED)
            .order_by(Digest.digest_date.desc())
            .limit(FEED_DIGESTS)
        )
    ).all()
    composed = {digest_id: as_utc(created_at) for digest_id, created_at in digests}
    views = await load_digest_views(list(composed), session=session)
    entries = [
        FeedEntry(
            id=_urn(subscriber.public_id, view.digest_date, paper.rank),
            updated=composed[view.digest_id or 0],
            digest_date=view.digest_date,
            paper=paper,
        )
        for view in views
        for paper in view.papers
    ]
    updated = max(composed.values(), default=as_utc(subscriber.created_at))
    return ReaderFeed(id=_urn(subscriber.public_id, "feed"), updated=updated, entries=entries)
