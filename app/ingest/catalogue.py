"""The stored papers and ingest runs as an operator browses them (the admin API): papers whose
title or arXiv id contains some text, in id order from a cursor; one paper; the latest runs.
Functions take a session and never commit."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import IngestRun, Paper


async def search_papers(
    *, session: AsyncSession, after_id: int, limit: int, text_like: str | None = None
) -> Sequence[Paper]:
    """Papers after `after_id` in id order, at most `limit`, whose lower-case title or arXiv id
    matches the LIKE pattern `text_like` (backslash escapes)."""
    query = select(Paper).where(Paper.id > after_id)
    if text_like:
        query = query.where(
            or_(
                func.lower(Paper.title).like(text_like, escape="\\"),
                func.lower(Paper.arxiv_id).like(text_like, escape="\\"),
            )
        )
    return (await session.scalars(query.order_by(Paper.id).limit(limit))).all()


async def find_paper(paper_id: int, *, session: AsyncSession) -> Paper | None:
    return await session.get(Paper, paper_id)


async def latest_ingest_runs(*, session: AsyncSession, limit: int) -> Sequence[IngestRun]:
    """The latest ingest runs, newest first."""
    return (
        await session.scalars(select(IngestRun).order_by(IngestRun.id.desc()).limit(limit))
    ).all()
