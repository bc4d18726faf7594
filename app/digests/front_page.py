"""The front page's view of the corpus: today's trending papers (the papers first seen within the
compose window, ordered by the same trend score digests use; when the window is empty, the newest
papers there are), narrowed by a search (every word in the title or abstract) and a topic (its
words, the same way). Read-only; what the reader typed is checked here (`search_words`) before
it reaches a query."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.digests.candidates import load_engagement
from app.digests.views import PaperCard, paper_card
from app.models import Paper
from app.ranking.trend import trend_scores
from app.subscribers.localtime import as_utc

MAX_SEARCH_CHARS = 200
MAX_SEARCH_WORDS = 8


class SearchError(ValueError):
    """Search text the front page will not run; the message says why, for the reader."""


def search_words(text: str | None, *, what: str = "search") -> list[str]:
    """The words of a search or topic, lower-case and each once: every one must occur in a
    paper's title or abstract. Refused (`SearchError`) when longer than MAX_SEARCH_CHARS, of
    more than MAX_SEARCH_WORDS words, or holding control characters (no stored text has them,
    and Postgres refuses a NUL outright)."""
    if not text or not text.strip():
        return []
    if len(text) > MAX_SEARCH_CHARS:
        raise SearchError(f"The {what} is too long: at most {MAX_SEARCH_CHARS} characters.")
    if not text.isprintable():
        raise SearchError(f"The {what} holds characters that cannot be searched for.")
    words = list(dict.fromkeys(text.lower().split()))
    if len(words) > MAX_SEARCH_WORDS:
        raise SearchError(f"The {what} has too many words: at most {MAX_SEARCH_WORDS}.")
    return words


@dataclass(frozen=True, slots=True)
class TrendingPage:
    papers: list[PaperCard]
    page: int
    pages: int
    total: int
    by_trend: bool  # some paper has engagement to rank by; else the newest come first


async def trending_papers(
    *,
    session: AsyncSession,
    now: datetime,
    window: timedelta,
    page: int,
    per_page: int,
    max_candidates: int = 5000,
    containing: list[str] | None = None,
) -> TrendingPage:
    """The page's papers, most trending first; with `containing` (`search_words`), only those
    whose title or abstract holds every word."""
    since = now - window
    newest = await session.scalar(select(func.max(Paper.first_seen_at)))
    if newest is not None and as_utc(newest) <= since:
        # A quiet week: show what the corpus has, newest first, rather than nothing.
        since = as_utc(newest) - window
    candidates = await load_engagement(
        session=session, since=since, limit=max_candidates, containing=containing or []
    )
    # Decay is the same factor for every paper at a given moment, so the order does not depend
    # on when it is worked out; measured from the newest paper rather than from now, it is the
    # same on every request too (from now, float rounding of near ties reordered the papers
    # between one page and the next).
    newest_seen = max((c.seen_at for c in candidates), default=now)
    trend = trend_scores(
        [c.upvotes for c in candidates],
        [c.comments for c in candidates],
        [c.seen_at for c in candidates],
        now=newest_seen,
    )
    by_trend = any(c.upvotes or c.comments for c in candidates)
    if by_trend:
        order = sorted(
            range(len(candidates)), key=lambda i: (-float(trend[i]), candidates[i].paper_id)
        )
    else:
        order = sorted(
            range(len(candidates)),
            key=lambda i: (-candidates[i].seen_at.timestamp(), candidates[i].paper_id),
        )
    total = len(order)
    pages = max(1, -(-total // per_page))
    page = min(max(page, 1), pages)
    chosen = [candidates[i].paper_id for i in order[(page - 1) * per_page : page * per_page]]
    papers = {p.id: p for p in await session.scalars(select(Paper).where(Paper.id.in_(chosen)))}
    return TrendingPage([paper_card(papers[i]) for i in chosen], page, pages, total, by_trend)
