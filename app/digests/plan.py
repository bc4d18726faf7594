"""Planning each subscriber's digest: find who is due (their local date and send hour, in their own
IANA timezone; a weekly reader on their weekday only) and pick their papers with `app.ranking`
over the papers first seen since their previous digest (within the compose window, or the week
for a weekly reader, who also gets a larger digest), minus those they already received, leaving
out the topics they muted and weighing in their "more / less like this" feedback. Nothing is
written here: `Composition` turns the picks into the rows `app.digests.freeze` stores, or into
readable plans for dry runs."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
import orjson
from numpy.typing import NDArray
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import minus
from app.digests.candidates import Candidate, load_candidates
from app.digests.freeze import Explanations, FrozenDigests
from app.digests.reader_feedback import load_feedback
from app.models import Digest, DigestItem, Paper, Subscriber, SubscriberStatus
from app.pgcopy import jsonb_field, text_field
from app.ranking.relevance import PaperText, RelevanceIndex, TopicScores
from app.ranking.selection import Picks, Reader
from app.ranking.selection import select as select_papers
from app.ranking.semantic import embedding_model, semantic_relevance
from app.ranking.trend import trend_scores
from app.subscribers.localtime import as_utc, local_date, local_digest_date
from app.subscribers.rules import candidate_window, digest_size_for, is_digest_day

# Papers committed by an ingest that started before the previous compose but finished after it
# carry a first_seen_at slightly older than that compose: look back this far, and rely on the
# already-sent exclusion to keep them from repeating.
FIRST_SEEN_SLACK = timedelta(minutes=30)
SUBSCRIBER_BATCH = 5000  # subscriber rows fetched at a time


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
    liked_title: str | None = None


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


@dataclass(slots=True)
class DueSubscribers:
    """Who is due in one compose run, in subscriber id order, as parallel lists."""

    ids: list[int] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    dates: list[date] = field(default_factory=list)
    windows: list[timedelta] = field(default_factory=list)  # how far back each one's digest looks

    def __len__(self) -> int:
        return len(self.ids)


def _possible_dates(now: datetime) -> set[date]:
    """Every local date some time zone has at `now` (offsets run from -12 to +14 hours)."""
    return {(now + timedelta(hours=hours)).date() for hours in (-12, 0, 14)}


async def plan_digests(
    *,
    session: AsyncSession,
    now: datetime,
    settings: Settings,
    on_date: date | None = None,
    whatever_the_hour: bool = False,
    only_subscriber: int | None = None,
    any_weekday: bool = False,
) -> ComposeReport:
    """Decide every due subscriber's digest without writing anything, by the compose window,
    candidate limit and relevance threshold of `settings`. With `on_date`, every active
    subscriber without a digest for that date is due, whatever the hour; with
    `whatever_the_hour`, every one without a digest for their own local date today. A weekly
    reader is due only on their weekday, unless `any_weekday`: a preview of what their next
    digest would hold if it were composed now."""
    window = timedelta(days=settings.compose_window_days)
    max_candidates = settings.compose_max_candidates
    threshold = settings.relevance_threshold
    report = ComposeReport()
    dates = {on_date} if on_date else _possible_dates(now)
    composed = {
        (subscriber_id, digest_date)
        for subscriber_id, digest_date in await session.execute(
            select(Digest.subscriber_id, Digest.digest_date).where(Digest.digest_date.in_(dates))
        )
    }
    query = (
        select(
            Subscriber.id,
            Subscriber.email,
            Subscriber.topics,
            Subscriber.muted_topics,
            Subscriber.timezone,
            Subscriber.send_hour,
            Subscriber.digest_size,
            Subscriber.trending_weight,
            Subscriber.frequency,
            Subscriber.weekday,
        )
        .where(Subscriber.status == SubscriberStatus.ACTIVE)
        .order_by(Subscriber.id)
    )
    if only_subscriber is not None:
        query = query.where(Subscriber.id == only_subscriber)
    # Streamed, and kept only as readers: a hundred thousand full rows would double the memory
    # a compose needs.
    due, readers = DueSubscribers(), list[Reader]()
    topic_row: dict[str, int] = {}
    connection = await session.connection()
    result = await connection.stream(query.execution_options(yield_per=SUBSCRIBER_BATCH))
    async for batch in result.partitions():
        for row in batch:
            (subscriber_id, email, topics, muted, timezone, send_hour, size, weight) = row[:8]
            frequency, day = row[8:]
            digest_date = (
                on_date
                or (local_date(now, timezone) if whatever_the_hour else None)
                or local_digest_date(now, timezone, send_hour)
            )
            if digest_date is None or not (
                any_weekday or is_digest_day(frequency, day, digest_date)
            ):
                continue
            if (subscriber_id, digest_date) in composed:
                report.already_composed += 1
                continue
            due.ids.append(subscriber_id)
            due.emails.append(email)
            due.dates.append(digest_date)
            due.windows.append(candidate_window(frequency, window))
            listened = [t for t in dict.fromkeys(topics or ()) if t not in set(muted or ())]
            rows = [topic_row.setdefault(t, len(topic_row)) for t in listened]
            # A reader who muted every topic asked for none of them, not for trending papers.
            wanted = digest_size_for(frequency, size) if listened or not topics else 0
            readers.append(Reader(rows, wanted, weight))
    report.due = len(due)
    if not due:
        return report

    # One candidate set for everyone, as far back as the longest window reaches; each reader's
    # own window and previous digest then set their cutoff.
    window_start = now - max(due.windows)
    candidates = await load_candidates(session=session, since=window_start, limit=max_candidates)
    report.candidates = len(candidates)
    await _set_history(readers, due, candidates, session=session, now=now)
    topics = list(topic_row)
    index, relevance = await score_topics(topics, candidates, session=session, settings=settings)
    feedback = await load_feedback(
        due.ids, candidates, session=session, encoder=embedding_model(settings)
    )
    for reader, subscriber_id in zip(readers, due.ids, strict=True):
        reader.feedback = feedback.of_reader.get(subscriber_id, reader.feedback)
    picks = select_papers(
        readers,
        relevance,
        trend_scores(
            [c.upvotes for c in candidates],
            [c.comments for c in candidates],
            [c.seen_at for c in candidates],
            now=now,
        ),
        first_seen=np.asarray([c.first_seen_at.timestamp() for c in candidates], np.float64),
        threshold=threshold,
        dedupe_keys=[c.arxiv_id or c.title_key for c in candidates],
        similarity=feedback.similarity,
    )
    report.composition = Composition(
        due=due,
        picks=picks,
        candidates=candidates,
        topics=topics,
        index=index,
        liked_titles=feedback.titles,
    )
    return report


async def score_topics(
    topics: list[str],
    candidates: list[Candidate],
    *,
    session: AsyncSession,
    settings: Settings,
) -> tuple[RelevanceIndex, TopicScores]:
    """Each topic's relevance to each candidate, as compose ranks: by words, and by meaning too
    unless the semantic layer is off (the topics' vectors are cached on the way)."""
    index = RelevanceIndex([PaperText(c.title, c.abstract) for c in candidates])
    relevance = index.score(topics)
    encoder = embedding_model(settings)
    if encoder is not None:
        relevance.matrix = await semantic_relevance(
            topics,
            [c.paper_id for c in candidates],
            relevance.matrix,
            session=session,
            encoder=encoder,
            threshold=settings.relevance_threshold,
        )
    return index, relevance


async def _set_history(
    readers: list[Reader],
    due: DueSubscribers,
    candidates: list[Candidate],
    *,
    session: AsyncSession,
    now: datetime,
) -> None:
    """Each reader's cutoff (papers first seen since their previous digest, within their window)
    and the candidates they already received."""
    window_start = now - max(due.windows)
    # Only a previous digest newer than this moves a cutoff past the longest window's start.
    recent = window_start + FIRST_SEEN_SLACK
    previous = dict(
        (
            await session.execute(
                select(Digest.subscriber_id, func.max(Digest.created_at))
                .where(
                    Digest.digest_date >= (recent - timedelta(days=1)).date(),
                    Digest.created_at > recent,
                )
                .group_by(Digest.subscriber_id)
            )
        ).all()
    )
    column_of = {c.paper_id: i for i, c in enumerate(candidates)}
    already_sent = await _already_sent(
        session=session, paper_ids=list(column_of), since=window_start
    )
    for reader, subscriber_id, window in zip(readers, due.ids, due.windows, strict=True):
        last = previous.get(subscriber_id)
        window_seconds = (now - window).timestamp()
        reader.seen_after = (
            max(window_seconds, (as_utc(last) - FIRST_SEEN_SLACK).timestamp())
            if last
            else window_seconds
        )
        sent = already_sent.get(subscriber_id)
        if sent:
            reader.excluded = frozenset(column_of[p] for p in sent if p in column_of)


@dataclass(slots=True)
class Composition:
    """The picks of one compose run, turned into rows a slice of subscribers at a time, as
    columns: a run over a hundred thousand subscribers never makes an object per item."""

    due: DueSubscribers
    picks: Picks
    candidates: list[Candidate]
    topics: list[str]
    index: RelevanceIndex
    liked_titles: list[str] = field(default_factory=list)  # of the `Picks.liked` rows
    explanations: Explanations | None = None  # worked out on first use
    paper_ids: NDArray[np.int64] = field(init=False)  # of each candidate column

    def __post_init__(self) -> None:
        self.paper_ids = np.asarray([c.paper_id for c in self.candidates], np.int64)

    def frozen(self, start: int = 0, stop: int | None = None) -> FrozenDigests:
        """Rows to store for the due subscribers `start:stop`."""
        stop = len(self.due) if stop is None else min(stop, len(self.due))
        picks, offsets = self.picks, self.picks.offsets
        first, last = int(offsets[start]), int(offsets[stop])
        columns = picks.paper[first:last]
        explanations = self._explanations()
        counts = np.diff(offsets[start : stop + 1])
        return FrozenDigests(
            subscriber_ids=self.due.ids[start:stop],
            digest_dates=self.due.dates[start:stop],
            item_counts=counts,
            paper_id=self.paper_ids[columns],
            rank=np.arange(last - first) - np.repeat(offsets[start:stop] - first, counts) + 1,
            score=picks.score[first:last].astype(np.float64).round(6),
            relevance=picks.relevance[first:last].astype(np.float64).round(6),
            trend=picks.trend[first:last].astype(np.float64).round(6),
            explanation=explanations.of_pick[first:last],
            explanations=explanations,
        )

    def _explanations(self) -> Explanations:
        if self.explanations is None:
            papers, liked_rows = len(self.candidates), len(self.liked_titles) + 1
            # One key per (topic, paper, liked paper); topic row -1 (trend alone) sorts first.
            keys, of_pick = np.unique(
                (self.picks.topic.astype(np.int64) * papers + self.picks.paper) * liked_rows
                + self.picks.liked
                + 1,
                return_inverse=True,
            )
            explanations = Explanations(
                of_pick=of_pick.astype(np.int32),
                topic=np.empty(len(keys), object),
                terms=np.empty(len(keys), object),
                liked_title=np.empty(len(keys), object),
                copy_fields=np.empty(len(keys), object),
            )
            for i, key in enumerate(keys.tolist()):
                pair, liked = divmod(key, liked_rows)
                topic, terms = None, "[]"
                if pair >= 0:  # else chosen on trend alone (topic row -1)
                    topic_row, column = divmod(pair, papers)
                    topic = self.topics[topic_row]
                    terms = orjson.dumps(self.index.matched_terms(topic, column)).decode()
                liked_title = self.liked_titles[liked - 1] if liked else None
                explanations.topic[i], explanations.terms[i] = topic, terms
                explanations.liked_title[i] = liked_title
                explanations.copy_fields[i] = (
                    text_field(topic) + jsonb_field(terms) + text_field(liked_title)
                )
            self.explanations = explanations
        return self.explanations

    def plans(self, start: int = 0, stop: int | None = None) -> list[PlannedDigest]:
        """The same digests as `frozen`, readable (titles, addresses): for dry runs."""
        titles = {c.paper_id: c.title for c in self.candidates}
        frozen = self.frozen(start, stop)
        items = frozen.item_columns(np.ones(len(frozen.subscriber_ids), np.int64))  # ids unused
        rows = list(zip(*items.values(), strict=True))
        plans, first = [], 0
        for subscriber_id, email, digest_date, count in zip(
            frozen.subscriber_ids,
            self.due.emails[start:stop],
            frozen.digest_dates,
            frozen.item_counts.tolist(),
            strict=True,
        ):
            planned = [
                PlannedItem(
                    paper_id=paper_id,
                    rank=rank,
                    score=score,
                    relevance=relevance,
                    trend=trend,
                    matched_topic=topic,
                    matched_terms=orjson.loads(terms),
                    title=titles[paper_id],
                    liked_title=liked_title,
                )
                for _, paper_id, rank, score, relevance, trend, topic, terms, liked_title in rows[
                    first : first + count
                ]
            ]
            first += count
            plans.append(PlannedDigest(subscriber_id, email, digest_date, planned))
        return plans


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
