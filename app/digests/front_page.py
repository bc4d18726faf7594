"""The front page's view of the corpus: today's trending papers (the papers first seen within the
compose window, ordered by the same trend score digests use; when the window is empty, the newest
papers there are). Read-only and cheap to cache."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.digests.candidates import load_engagement
from app.digests.views import PaperCard, paper_card
from app.models import Paper
from app.ranking.trend import trend_scores

TITLE_WORD = re.compile(r"[A-Za-z][A-Za-z0-9+-]{2,}")


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
) -> TrendingPage:
    candidates = await load_engagement(session=session, since=now - window, limit=max_candidates)
    if not candidates:
        newest = await session.scalar(select(func.max(Paper.first_seen_at)))
        if newest is not None:
            # A quiet week: show what the corpus has, newest first, rather than nothing.
            candidates = await load_engagement(
                session=session, since=newest - window, limit=max_candidates
            )
    trend = trend_scores(
        [c.upvotes for c in candidates],
        [c.comments for c in candidates],
        [c.seen_at for c in candidates],
        now=now,
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
