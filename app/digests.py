"""Composing each subscriber's day: find who is due (their local date and send hour, in their own
IANA timezone), pick their papers with `app.ranking` over the papers first seen since their
previous digest, and freeze the result as one `digest` row (queued, or skipped when nothing
qualified) with its `digest_item` rows. UNIQUE(subscriber_id, digest_date) makes composing
idempotent: a second run, or a concurrent one, creates nothing twice."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import orjson
from sqlalchemy import Select, func, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import is_postgres, minus
from app.localtime import local_digest_date
from app.models import Digest, DigestItem, DigestStatus, Paper, Subscriber, SubscriberStatus
from app.ranking import PaperText, RelevanceIndex
from app.selection import DEFAULT_THRESHOLD, Reader, trend_scores
from app.selection import select as select_papers

# Papers committed by an ingest that started before the previous compose but finished after it
# carry a first_seen_at slightly older than that compose: look back this far, and rely on the
# already-sent exclusion to keep them from repeating.
FIRST_SEEN_SLACK = timedelta(minutes=30)
Query = TypeVar("Query", bound="Select[*tuple[Any, ...]]")


@dataclass(slots=True)
class Candidate:
    paper_id: int
    title: str
    abstract: str
    title_key: str
    arxiv_id: str | None
    upvotes: int | None
    comments: int | None
    seen_at: datetime
    first_seen_at: datetime


@dataclass(slots=True)
class PlannedItem:
    paper_id: int
    rank: int
    score: float
    relevance: float
    trend: float
    matched_topic: str | None
    matched_terms: list[str]
    title: str


@dataclass(slots=True)
class PlannedDigest:
    subscriber_id: int
    email: str
    digest_date: date
    items: list[PlannedItem] = field(default_factory=list)


@dataclass(slots=True)
class ComposeReport:
    due: int = 0
    queued: int = 0
    skipped: int = 0
    items: int = 0
    already_composed: int = 0
    candidates: int = 0
    composition: Composition | None = None

    @property
    def plans(self) -> list[PlannedDigest]:
        return self.composition.plans() if self.composition is not None else []


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything Paperboy stores is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _most_engaged_since(query: Query, since: datetime, limit: int) -> Query:
    engagement = func.coalesce(Paper.upvotes, 0) + 3 * func.coalesce(Paper.comments, 0)
    return (
        query.where(Paper.first_seen_at > since)
        .order_by(engagement.desc(), Paper.first_seen_at.desc(), Paper.id)
        .limit(limit)
    )


@dataclass(frozen=True, slots=True)
class Engagement:
    paper_id: int
    upvotes: int | None
    comments: int | None
    seen_at: datetime


async def load_engagement(
    *, session: AsyncSession, since: datetime, limit: int
) -> list[Engagement]:
    """What trend needs of the same papers `load_candidates` picks, without their text."""
    rows = await session.execute(
        _most_engaged_since(
            select(
                Paper.id, Paper.upvotes, Paper.comments, Paper.published_at, Paper.first_seen_at
            ),
            since,
            limit,
        )
    )
    return [
        Engagement(row.id, row.upvotes, row.comments, _aware(row.published_at or row.first_seen_at))
        for row in rows
    ]


async def load_candidates(*, session: AsyncSession, since: datetime, limit: int) -> list[Candidate]:
    """Papers first seen since `since`, the most engaged and newest first, at most `limit`."""
    rows = await session.execute(
        _most_engaged_since(
            select(
                Paper.id,
                Paper.title,
                Paper.abstract,
                Paper.title_key,
                Paper.arxiv_id,
                Paper.upvotes,
                Paper.comments,
                Paper.published_at,
                Paper.first_seen_at,
            ),
            since,
            limit,
        )
    )
    return [
        Candidate(
            paper_id=row.id,
            title=row.title,
            abstract=row.abstract,
            title_key=row.title_key,
            arxiv_id=row.arxiv_id,
            upvotes=row.upvotes,
            comments=row.comments,
            seen_at=_aware(row.published_at or row.first_seen_at),
            first_seen_at=_aware(row.first_seen_at),
        )
        for row in rows
    ]


async def plan_digests(
    *,
    session: AsyncSession,
    now: datetime,
    on_date: date | None = None,
    window: timedelta = timedelta(days=7),
    max_candidates: int = 5000,
    threshold: float = DEFAULT_THRESHOLD,
    only_subscriber: int | None = None,
) -> ComposeReport:
    """Decide every due subscriber's digest without writing anything. With `on_date`, every
    active subscriber without a digest for that date is due, whatever the hour."""
    report = ComposeReport()
    query = select(
        Subscriber.id,
        Subscriber.email,
        Subscriber.topics,
        Subscriber.timezone,
        Subscriber.send_hour,
        Subscriber.digest_size,
        Subscriber.trending_weight,
    ).where(Subscriber.status == SubscriberStatus.ACTIVE)
    if only_subscriber is not None:
        query = query.where(Subscriber.id == only_subscriber)
    subscribers = (await session.execute(query)).all()

    dates: dict[int, date] = {}
    for row in subscribers:
        digest_date = on_date or local_digest_date(now, row.timezone, row.send_hour)
        if digest_date is not None:
            dates[row.id] = digest_date
    if not dates:
        return report
    existing = await session.execute(
        select(Digest.subscriber_id, Digest.digest_date).where(
            Digest.digest_date.in_(set(dates.values()))
        )
    )
    for subscriber_id, digest_date in existing:
        if dates.get(subscriber_id) == digest_date:
            del dates[subscriber_id]
            report.already_composed += 1
    due = [row for row in subscribers if row.id in dates]
    report.due = len(due)
    if not due:
        return report

    window_start = now - window
    candidates = await load_candidates(session=session, since=window_start, limit=max_candidates)
    report.candidates = len(candidates)
    previous = dict(
        (
            await session.execute(
                select(Digest.subscriber_id, func.max(Digest.created_at)).group_by(
                    Digest.subscriber_id
                )
            )
        ).all()
    )
    column_of = {c.paper_id: i for i, c in enumerate(candidates)}
    already_sent = await _already_sent(
        session=session, paper_ids=list(column_of), since=window_start
    )

    index = RelevanceIndex([PaperText(c.title, c.abstract) for c in candidates])
    topics = list(dict.fromkeys(t for row in due for t in (row.topics or [])))
    topic_row = {t: i for i, t in enumerate(topics)}
    scores = index.score(topics)
    trend = trend_scores(
        [c.upvotes for c in candidates],
        [c.comments for c in candidates],
        [c.seen_at for c in candidates],
        now=now,
    )
    first_seen = np.asarray([c.first_seen_at.timestamp() for c in candidates], np.float64)
    readers = []
    for row in due:
        last = previous.get(row.id)
        seen_after = max(
            window_start.timestamp(),
            (_aware(last) - FIRST_SEEN_SLACK).timestamp() if last else -math.inf,
        )
        readers.append(
            Reader(
                topics=[topic_row[t] for t in dict.fromkeys(row.topics or [])],
                size=row.digest_size,
                trending_weight=row.trending_weight,
                seen_after=seen_after,
                excluded=frozenset(
                    column_of[p] for p in already_sent.get(row.id, ()) if p in column_of
                ),
            )
        )
    select_papers(
        readers,
        scores,
        trend,
        first_seen=first_seen,
        threshold=threshold,
        dedupe_keys=[c.arxiv_id or c.title_key for c in candidates],
    )
    report.composition = Composition(
        due=due, readers=readers, dates=dates, candidates=candidates, topics=topics, index=index
    )
    return report


@dataclass(slots=True)
class Composition:
    """The picks of one compose run, turned into plans a slice at a time so that a run over
    many subscribers never holds every digest's items in memory at once."""

    due: list[Any]
    readers: list[Reader]
    dates: dict[int, date]
    candidates: list[Candidate]
    topics: list[str]
    index: RelevanceIndex
    terms_json: dict[tuple[int | None, int], str] = field(default_factory=dict)

    def frozen(self, start: int = 0, stop: int | None = None) -> list[FrozenDigest]:
        """Rows to store for a slice of the due subscribers (no per-item objects)."""
        digests = []
        topics, candidates, cache = self.topics, self.candidates, self.terms_json
        for row, reader in zip(self.due[start:stop], self.readers[start:stop], strict=True):
            items = []
            for rank, pick in enumerate(reader.picks, start=1):
                topic = None if pick.topic is None else topics[pick.topic]
                key = (pick.topic, pick.paper)
                terms = cache.get(key)
                if terms is None:
                    words = self.index.matched_terms(topic, pick.paper) if topic else []
                    terms = cache[key] = orjson.dumps(words).decode()
                items.append(
                    (
                        candidates[pick.paper].paper_id,
                        rank,
                        round(pick.score, 6),
                        round(pick.relevance, 6),
                        round(pick.trend, 6),
                        topic,
                        terms,
                    )
                )
            digests.append(FrozenDigest(row.id, self.dates[row.id], items))
        return digests

    def plans(self, start: int = 0, stop: int | None = None) -> list[PlannedDigest]:
        """The same digests as `frozen`, readable (titles, addresses): for dry runs."""
        titles = {c.paper_id: c.title for c in self.candidates}
        emails = {row.id: row.email for row in self.due[start:stop]}
        return [
            PlannedDigest(
                subscriber_id=digest.subscriber_id,
                email=emails[digest.subscriber_id],
                digest_date=digest.digest_date,
                items=[
                    PlannedItem(
                        paper_id=paper_id,
                        rank=rank,
                        score=score,
                        relevance=relevance,
                        trend=trend,
                        matched_topic=topic,
                        matched_terms=orjson.loads(terms),
                        title=titles[paper_id],
                    )
                    for paper_id, rank, score, relevance, trend, topic, terms in digest.items
                ],
            )
            for digest in self.frozen(start, stop)
        ]


async def _already_sent(
    *, session: AsyncSession, paper_ids: list[int], since: datetime
) -> dict[int, set[int]]:
    """(subscriber -> paper ids) of candidates already in one of their digests. Only papers first
    seen near that digest's own composition can be candidates again, so the search is narrow."""
    if not paper_ids:
        return {}
    rows = await session.execute(
        select(Digest.subscriber_id, DigestItem.paper_id)
        .join(DigestItem, DigestItem.digest_id == Digest.id)
        .join(Paper, Paper.id == DigestItem.paper_id)
        .where(
            Digest.created_at > since - FIRST_SEEN_SLACK,
            Paper.first_seen_at > since,
            Paper.first_seen_at > minus(session, Digest.created_at, FIRST_SEEN_SLACK),
        )
    )
    sent: dict[int, set[int]] = defaultdict(set)
    for subscriber_id, paper_id in rows:
        sent[subscriber_id].add(paper_id)
    return sent


@dataclass(slots=True)
class FrozenDigest:
    """A digest ready to store: item rows are (paper_id, rank, score, relevance, trend,
    matched_topic, matched_terms as JSON text)."""

    subscriber_id: int
    digest_date: date
    items: list[tuple[Any, ...]]


async def freeze_digests(
    digests: list[FrozenDigest], *, session: AsyncSession, now: datetime
) -> tuple[int, int, int]:
    """Store digests: (queued, skipped, items) actually created. A digest that another compose
    created first is left as it is, with its items."""
    if not digests:
        return 0, 0, 0
    created = await _insert_digests(digests, session=session, now=now)
    items = [
        (created[digest.subscriber_id], *item)
        for digest in digests
        if digest.subscriber_id in created
        for item in digest.items
    ]
    await _insert_items(items, session=session)
    queued = sum(1 for d in digests if d.subscriber_id in created and d.items)
    return queued, len(created) - queued, len(items)


async def _insert_digests(
    digests: list[FrozenDigest], *, session: AsyncSession, now: datetime
) -> dict[int, int]:
    """Insert the digest rows that do not exist yet; subscriber id -> new digest id."""
    statuses = [(DigestStatus.QUEUED if d.items else DigestStatus.SKIPPED).value for d in digests]
    if is_postgres(session):
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        rows = await raw.driver_connection.fetch(  # type: ignore[union-attr]
            "INSERT INTO digest (subscriber_id, digest_date, status, attempts, created_at) "
            "SELECT s, d, t, 0, $4 FROM unnest($1::bigint[], $2::date[], $3::text[]) AS u(s, d, t) "
            "ON CONFLICT (subscriber_id, digest_date) DO NOTHING RETURNING id, subscriber_id",
            [d.subscriber_id for d in digests],
            [d.digest_date for d in digests],
            statuses,
            now,
        )
        return {row["subscriber_id"]: row["id"] for row in rows}
    result = await session.execute(
        sqlite.insert(Digest)
        .on_conflict_do_nothing(index_elements=["subscriber_id", "digest_date"])
        .returning(Digest.id, Digest.subscriber_id),
        [
            {
                "subscriber_id": d.subscriber_id,
                "digest_date": d.digest_date,
                "status": status,
                "attempts": 0,
                "created_at": now,
            }
            for d, status in zip(digests, statuses, strict=True)
        ],
    )
    return {subscriber_id: digest_id for digest_id, subscriber_id in result}


ITEM_COLUMNS = [
    "digest_id",
    "paper_id",
    "rank",
    "score",
    "relevance",
    "trend",
    "matched_topic",
    "matched_terms",
]


async def _insert_items(items: list[tuple[Any, ...]], *, session: AsyncSession) -> None:
    if not items:
        return
    if is_postgres(session):
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
            DigestItem.__tablename__, records=items, columns=ITEM_COLUMNS
        )
    else:
        rows = [dict(zip(ITEM_COLUMNS, item, strict=True)) for item in items]
        for row in rows:
            row["matched_terms"] = orjson.loads(row["matched_terms"])
        await session.execute(insert(DigestItem), rows)
