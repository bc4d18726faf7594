"""What a digest shows, loaded from the database: each paper's card (title, links, shortened
authors, a summary cut at a sentence), the digest's items with why each was chosen, grouped
under the reader's topics, and the subscriber the links are for; for stored digests, for planned
ones, and for previews (the frozen digest when it exists, else what compose would pick now).
Rendering lives in `app.mail.message`."""

from __future__ import annotations

import re
import textwrap
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Protocol
from urllib.parse import quote, quote_plus, urlsplit

import orjson
from sqlalchemy import Text, cast, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import among
from app.ingest.sources import HF_DAILY
from app.models import Digest, DigestFrequency, DigestItem, Paper, Subscriber, SubscriberStatus
from app.subscribers.localtime import zone
from app.subscribers.rules import find_by_email

ARXIV_TITLE_SEARCH = "https://arxiv.org/search/?searchtype=title&query="
ARXIV_ABSTRACT = "https://arxiv.org/abs/{}"
ARXIV_PDF = "https://arxiv.org/pdf/{}"
HF_PAPER_PAGE = "https://huggingface.co/papers/{}"
UNSAFE_IN_URL = re.compile(r"[\x00-\x20\x7f]")
SUMMARY_CHARS = 320
MAX_AUTHORS = 3
TEXT_WIDTH = 72
PAPER_VIEWS_KEPT = 50_000  # distinct paper views a loader shares; it starts afresh when full
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\\$(])")


@dataclass(frozen=True, slots=True)
class PaperView:
    """One paper in one digest: the paper's card, its rank and why it was chosen (and, once
    the mailer made them for the reader, its "more / less like this" links)."""

    rank: int
    card: PaperCard
    matched_topic: str | None
    matched_terms: list[str]
    liked_title: str | None = None  # the liked paper it is most like, when that raised it
    paper_id: int = 0
    more_url: str = ""
    less_url: str = ""


@dataclass(frozen=True, slots=True)
class TopicGroup:
    """A digest's papers chosen for one of the reader's topics (`topic` None: for trending
    alone), in rank order."""

    topic: str | None
    papers: list[PaperView]


def group_by_topic(papers: Sequence[PaperView]) -> list[TopicGroup]:
    """`papers` (in rank order) under their topics, the group holding the best paper first.
    Selection gives each paper once, under the topic it matched best, so a paper that matches
    two topics appears in one group only."""
    groups: dict[str | None, list[PaperView]] = {}
    for paper in papers:
        groups.setdefault(paper.matched_topic, []).append(paper)
    return [TopicGroup(topic, grouped) for topic, grouped in groups.items()]


@dataclass(slots=True)
class DigestView:
    digest_id: int | None
    digest_date: date
    subscriber_id: int
    email: str
    timezone: str
    public_id: uuid.UUID
    token_version: int
    topics: list[str]
    papers: list[PaperView] = field(default_factory=list)
    frequency: DigestFrequency = DigestFrequency.DAILY

    @property
    def groups(self) -> list[TopicGroup]:
        """The papers under a heading per topic, as the mail and the web view show them."""
        return group_by_topic(self.papers)


def shorten_authors(authors: Sequence[str] | None) -> str:
    names = [name for name in (authors or []) if name]
    if len(names) <= MAX_AUTHORS + 1:
        return ", ".join(names)
    return ", ".join(names[:MAX_AUTHORS]) + " et al."


@lru_cache(maxsize=8192)
def summary_of(ai_summary: str | None, abstract: str) -> tuple[str, str]:
    """A paper's summary, and the same wrapped for the text part (papers repeat across digests,
    so each is worked out once)."""
    summary = summarise(ai_summary, abstract)
    wrapped = textwrap.fill(summary, TEXT_WIDTH, initial_indent="   ", subsequent_indent="   ")
    return summary, wrapped


def summarise(ai_summary: str | None, abstract: str, limit: int = SUMMARY_CHARS) -> str:
    """The source's own summary when it has one, else the abstract's first sentences, cut at a
    sentence boundary (or, for one over-long sentence, at a word, with an ellipsis)."""
    if ai_summary:
        return ai_summary
    summary = ""
    for sentence in SENTENCE_END.split(abstract.strip()):
        candidate = f"{summary} {sentence}".strip()
        if len(candidate) > limit:
            break
        summary = candidate
    if summary:
        return summary
    return abstract[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"


@dataclass(frozen=True, slots=True)
class PaperCard:
    """What a digest shows of a paper whoever reads it; worked out once per paper and send run.
    Every URL is http(s) or None: a paper's fields come from outside, and a `javascript:` link
    must never reach a page or a mail."""

    title: str
    url: str | None
    abstract_url: str | None
    pdf_url: str | None
    code_url: str | None
    authors: str
    summary: str
    wrapped_summary: str
    upvotes: int | None
    comments: int | None
    hf_url: str | None = None  # the Hugging Face paper page, for papers that came from there
    published: str | None = None  # "3 Dec 2026"


def web_link(url: str | None) -> str | None:
    """`url` when it is an absolute http(s) URL without spaces or control characters, else None."""
    if not url or UNSAFE_IN_URL.search(url):
        return None
    parts = urlsplit(url)
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc else None


class PaperFacts(Protocol):
    """What a card needs of a paper: a `Paper`, or a row of `CARD_COLUMNS`."""

    @property
    def title(self) -> str: ...
    @property
    def url(self) -> str | None: ...
    @property
    def arxiv_id(self) -> str | None: ...
    @property
    def pdf_url(self) -> str | None: ...
    @property
    def github_repo(self) -> str | None: ...
    @property
    def authors(self) -> list[str] | None: ...
    @property
    def ai_summary(self) -> str | None: ...
    @property
    def abstract(self) -> str: ...
    @property
    def upvotes(self) -> int | None: ...
    @property
    def comments(self) -> int | None: ...
    @property
    def source(self) -> str: ...
    @property
    def published_at(self) -> datetime | None: ...


class SubscriberFacts(Protocol):
    """What a digest view needs of its subscriber: a `Subscriber`, or a row of
    `SUBSCRIBER_COLUMNS`."""

    @property
    def id(self) -> int: ...
    @property
    def email(self) -> str: ...
    @property
    def timezone(self) -> str: ...
    @property
    def public_id(self) -> uuid.UUID: ...
    @property
    def token_version(self) -> int: ...
    @property
    def topics(self) -> list[str]: ...
    @property
    def frequency(self) -> DigestFrequency: ...


# Columns rather than ORM objects: a send run loads hundreds of thousands of these.
CARD_COLUMNS = (
    Paper.id,
    Paper.title,
    Paper.url,
    Paper.arxiv_id,
    Paper.pdf_url,
    Paper.github_repo,
    Paper.authors,
    Paper.ai_summary,
    Paper.abstract,
    Paper.upvotes,
    Paper.comments,
    Paper.source,
    Paper.published_at,
)
SUBSCRIBER_COLUMNS = (
    Subscriber.id,
    Subscriber.email,
    Subscriber.timezone,
    Subscriber.public_id,
    Subscriber.token_version,
    Subscriber.topics,
    Subscriber.frequency,
)


def paper_card(paper: PaperFacts) -> PaperCard:
    arxiv_id = quote(paper.arxiv_id, safe="/.") if paper.arxiv_id else None
    abstract_url = ARXIV_ABSTRACT.format(arxiv_id) if arxiv_id else None
    summary, wrapped = summary_of(paper.ai_summary, paper.abstract)
    published = paper.published_at
    hf_page = HF_PAPER_PAGE.format(arxiv_id) if arxiv_id else None
    # From Hugging Face: its source, or, for a paper another source saw first, its page as link.
    from_hf = paper.source == HF_DAILY or (hf_page is not None and paper.url == hf_page)
    return PaperCard(
        title=paper.title,
        # Papers from the papers page carry no link: an arXiv title search still finds them.
        url=web_link(paper.url) or abstract_url or f"{ARXIV_TITLE_SEARCH}{quote_plus(paper.title)}",
        abstract_url=abstract_url,
        pdf_url=web_link(paper.pdf_url) or (ARXIV_PDF.format(arxiv_id) if arxiv_id else None),
        code_url=web_link(paper.github_repo),
        authors=shorten_authors(paper.authors),
        summary=summary,
        wrapped_summary=wrapped,
        upvotes=paper.upvotes,
        comments=paper.comments,
        hf_url=hf_page if from_hf else None,
        published=f"{published.day} {published:%b %Y}" if published else None,
    )


def _digest_view(
    digest_id: int | None,
    digest_date: date,
    subscriber: SubscriberFacts,
    papers: list[PaperView],
) -> DigestView:
    return DigestView(
        digest_id=digest_id,
        digest_date=digest_date,
        subscriber_id=subscriber.id,
        email=subscriber.email,
        timezone=subscriber.timezone,
        public_id=subscriber.public_id,
        token_version=subscriber.token_version,
        topics=contributing_topics(subscriber.topics or [], papers),
        papers=papers,
        frequency=subscriber.frequency,
    )


def contributing_topics(topics: Sequence[str], papers: Sequence[PaperView]) -> list[str]:
    """The reader's topics that brought papers into this digest, in the reader's order: the
    intro names these only, not a topic that matched nothing today."""
    matched = {paper.matched_topic for paper in papers}
    return [topic for topic in topics if topic in matched]


class DigestViewLoader:
    """Views of stored digests, for one send run (or one page): what recurs between digests is
    built once and shared. A paper's card is loaded once per run rather than once per batch,
    and a paper view (that paper, at that rank, for that reason) is the same object in every
    digest that has it; their matched terms are decoded once, from the stored JSON text."""

    def __init__(self) -> None:
        self.cards: dict[int, PaperCard] = {}
        self.paper_views: dict[tuple[int, int, str | None, str, str | None], PaperView | None] = {}

    async def load(self, digest_ids: Sequence[int], *, session: AsyncSession) -> list[DigestView]:
        """The views in the order asked, with at most three queries whatever their number."""
        if not digest_ids:
            return []
        rows = (
            await session.execute(
                select(Digest.id.label("digest_id"), Digest.digest_date, *SUBSCRIBER_COLUMNS)
                .join(Subscriber, Subscriber.id == Digest.subscriber_id)
                .where(among(session, Digest.id, digest_ids))
            )
        ).all()
        items = (
            await session.execute(
                select(
                    DigestItem.digest_id,
                    DigestItem.paper_id,
                    DigestItem.rank,
                    DigestItem.matched_topic,
                    cast(DigestItem.matched_terms, Text),
                    DigestItem.liked_title,
                )
                .where(among(session, DigestItem.digest_id, digest_ids))
                .order_by(DigestItem.digest_id, DigestItem.rank)
            )
        ).all()
        unknown = {paper_id for _, paper_id, *_ in items} - self.cards.keys()
        if unknown:
            self.cards.update(await _paper_cards(unknown, session=session))
        papers: dict[int, list[PaperView]] = {}
        for digest_id, paper_id, rank, topic, terms, liked_title in items:
            key = (paper_id, rank, topic, terms, liked_title)
            if key in self.paper_views:
                view = self.paper_views[key]
            else:
                if len(self.paper_views) >= PAPER_VIEWS_KEPT:
                    self.paper_views.clear()
                view = self.paper_views[key] = self._paper_view(*key)
            if view is not None:
                papers.setdefault(digest_id, []).append(view)
        views = {
            row.digest_id: _digest_view(
                row.digest_id, row.digest_date, row, papers.get(row.digest_id, [])
            )
            for row in rows
        }
        return [views[digest_id] for digest_id in digest_ids if digest_id in views]

    def _paper_view(
        self, paper_id: int, rank: int, topic: str | None, terms: str, liked_title: str | None
    ) -> PaperView | None:
        card = self.cards.get(paper_id)
        if card is None:  # the paper is gone
            return None
        return PaperView(rank, card, topic, list(orjson.loads(terms) or []), liked_title, paper_id)


async def load_digest_views(
    digest_ids: Sequence[int], *, session: AsyncSession
) -> list[DigestView]:
    """Views of stored digests, in the order asked."""
    return await DigestViewLoader().load(digest_ids, session=session)


async def planned_digest_view(
    subscriber: Subscriber,
    digest_date: date,
    items: Iterable[tuple[int, int, str | None, list[str], str | None]],
    *,
    session: AsyncSession,
) -> DigestView:
    """A view of a digest that was planned but not stored (previews)."""
    chosen = sorted(items, key=lambda item: item[1])
    cards = await _paper_cards({paper_id for paper_id, *_ in chosen}, session=session)
    papers = [
        PaperView(rank, cards[paper_id], topic, list(terms or []), liked_title, paper_id)
        for paper_id, rank, topic, terms, liked_title in chosen
        if paper_id in cards
    ]
    return _digest_view(None, digest_date, subscriber, papers)


async def _paper_cards(paper_ids: set[int], *, session: AsyncSession) -> dict[int, PaperCard]:
    papers = await session.execute(select(*CARD_COLUMNS).where(among(session, Paper.id, paper_ids)))
    return {paper.id: paper_card(paper) for paper in papers}


class PreviewError(LookupError):
    pass


async def preview_digest_view(
    email: str, *, session: AsyncSession, settings: Settings, now: datetime, on_date: date | None
) -> DigestView:
    """`subscriber_preview` for the subscriber with this address (any case)."""
    subscriber = await find_by_email(email.strip(), session=session)
    if subscriber is None:
        raise PreviewError(f"no subscriber with the address {email!r}")
    return await subscriber_preview(
        subscriber, session=session, settings=settings, now=now, on_date=on_date
    )


async def subscriber_preview(
    subscriber: Subscriber,
    *,
    session: AsyncSession,
    settings: Settings,
    now: datetime,
    on_date: date | None,
) -> DigestView:
    """The digest a subscriber got (or would get) on a date, writing nothing: the frozen one
    when it exists, else what compose would choose for them now."""
    email = subscriber.email
    digest_date = on_date or now.astimezone(zone(subscriber.timezone)).date()
    digest_id = await session.scalar(
        select(Digest.id).where(
            Digest.subscriber_id == subscriber.id, Digest.digest_date == digest_date
        )
    )
    if digest_id is not None:
        return (await load_digest_views([digest_id], session=session))[0]
    # Imported here: ranking's numerical stack takes a second to load, and only previews and
    # compose need it, not every worker that sends mail.
    from app.digests.plan import plan_digests

    if subscriber.status is not SubscriberStatus.ACTIVE:
        raise PreviewError(f"{email} is {subscriber.status.value}: no digest is composed for them")
    report = await plan_digests(
        session=session,
        now=now,
        settings=settings,
        on_date=digest_date,
        only_subscriber=subscriber.id,
        any_weekday=True,  # a weekly reader's preview: their next digest, as of now
    )
    plans = report.plans
    if not plans or not plans[0].items:
        raise PreviewError(f"no new paper qualifies for {email} on {digest_date}")
    items = [
        (i.paper_id, i.rank, i.matched_topic, i.matched_terms, i.liked_title)
        for i in plans[0].items
    ]
    return await planned_digest_view(subscriber, digest_date, items, session=session)
