"""The day's candidate papers, read once for composing and for the front page: papers first
seen since a moment, the most engaged and newest first, with their text (`load_candidates`, for
ranking) or only what the trend signal needs (`load_engagement`, optionally only the papers whose
title or abstract contains every one of some words: the front page's search). Both select the
same papers in the same order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Paper
from app.subscribers.localtime import as_utc

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


def _most_engaged_since(query: Query, since: datetime, limit: int) -> Query:
    engagement = func.coalesce(Paper.upvotes, 0) + 3 * func.coalesce(Paper.comments, 0)
    return (
        query.where(Paper.first_seen_at > since)
        .order_by(engagement.desc(), Paper.first_seen_at.desc(), Paper.id)
        .limit(limit)
    )


def like_escaped(text: str) -> str:
    """`text` for a LIKE pattern with backslash escapes: its own `%` and `_` match themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _containing(words: Sequence[str]) -> list[ColumnElement[bool]]:
    """Conditions: the title or the abstract contains each of `words` (lower-case), anywhere."""
    title, abstract = func.lower(Paper.title), func.lower(Paper.abstract)
    conditions = []
    for word in words:
        pattern = f"%{like_escaped(word)}%"
        conditions.append(
            or_(title.like(pattern, escape="\\"), abstract.like(pattern, escape="\\"))
        )
    return conditions


@dataclass(frozen=True, slots=True)
class Engagement:
    paper_id: int
    upvotes: int | None
    comments: int | None
    seen_at: datetime


async def load_engagement(
    *, session: AsyncSession, since: datetime, limit: int, containing: Sequence[str] = ()
) -> list[Engagement]:
    """What trend needs of the same papers `load_candidates` picks, without their text; with
    `containing` (lower-case words), only papers whose title or abstract holds every one."""
    rows = await session.execute(
        _most_engaged_since(
            select(
                Paper.id, Paper.upvotes, Paper.comments, Paper.published_at, Paper.first_seen_at
            ).where(*_containing(containing)),
            since,
            limit,
        )
    )
    return [
        Engagement(row.id, row.upvotes, row.comments, as_utc(row.published_at or row.first_seen_at))
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
            seen_at=as_utc(row.published_at or row.first_seen_at),
            first_seen_at=as_utc(row.first_seen_at),
        )
        for row in rows
    ]
