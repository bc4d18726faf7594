"""A reader's feedback from their mail, as rules: "more / less like this" on a paper they were
sent (one row per reader and paper, the last click wins, undone from the preferences page), and
muting or unmuting one of their topics (a muted topic stays listed but brings no papers). The
links that lead here are signed for one reader and one paper or topic (`app.subscribers.tokens`);
recording happens only on the confirming POST, never on a GET. Functions take a session and
never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import dialect_insert
from app.models import Digest, DigestItem, Feedback, FeedbackSignal, Paper, Subscriber

RECENT_FEEDBACK_SHOWN = 50


@dataclass(frozen=True, slots=True)
class FeedbackEntry:
    paper_id: int
    title: str
    signal: FeedbackSignal
    clicked_at: datetime


async def record_feedback(
    subscriber: Subscriber,
    paper_id: int,
    signal: FeedbackSignal,
    *,
    session: AsyncSession,
    now: datetime,
) -> None:
    """Store the reader's click; a later click on the same paper replaces the earlier one."""
    insert = dialect_insert(session)(Feedback).values(
        subscriber_id=subscriber.id, paper_id=paper_id, signal=signal, clicked_at=now
    )
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[Feedback.subscriber_id, Feedback.paper_id],
            set_={"signal": insert.excluded.signal, "clicked_at": insert.excluded.clicked_at},
        )
    )


async def undo_feedback(subscriber: Subscriber, paper_id: int, *, session: AsyncSession) -> bool:
    """Forget the reader's click on a paper; whether there was one."""
    result = await session.execute(
        delete(Feedback).where(
            Feedback.subscriber_id == subscriber.id, Feedback.paper_id == paper_id
        )
    )
    return bool(getattr(result, "rowcount", 0))


async def recent_feedback(
    subscriber: Subscriber, *, session: AsyncSession, limit: int = RECENT_FEEDBACK_SHOWN
) -> list[FeedbackEntry]:
    """The reader's latest clicks, newest first."""
    rows = await session.execute(
        select(Feedback.paper_id, Paper.title, Feedback.signal, Feedback.clicked_at)
        .join(Paper, Paper.id == Feedback.paper_id)
        .where(Feedback.subscriber_id == subscriber.id)
        .order_by(Feedback.clicked_at.desc(), Feedback.paper_id.desc())
        .limit(limit)
    )
    return [FeedbackEntry(*row) for row in rows]


async def sent_paper_title(
    subscriber: Subscriber, paper_id: int, *, session: AsyncSession
) -> str | None:
    """The title of a paper that was in one of the reader's digests; None for any other paper
    (a feedback link names its paper in the clear, next to the reader's signed token)."""
    return await session.scalar(
        select(Paper.title)
        .join(DigestItem, DigestItem.paper_id == Paper.id)
        .join(Digest, Digest.id == DigestItem.digest_id)
        .where(Paper.id == paper_id, Digest.subscriber_id == subscriber.id)
        .limit(1)
    )


def mute_topic(subscriber: Subscriber, topic: str) -> bool:
    """Mute one of the reader's topics; whether it is muted now (a topic they no longer have
    is left alone)."""
    if topic not in (subscriber.topics or []):
        return False
    if topic not in (subscriber.muted_topics or []):
        subscriber.muted_topics = [*(subscriber.muted_topics or []), topic]
    return True


def unmute_topic(subscriber: Subscriber, topic: str) -> None:
    subscriber.muted_topics = [t for t in subscriber.muted_topics or [] if t != topic]
