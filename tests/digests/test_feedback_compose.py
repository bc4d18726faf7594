"""Compose with feedback, over a real database: the day after a reader asked for more like a
paper, papers like it rise in their digest and are explained by it (stored with the item and
shown in the mail); a paper like one they asked for less of sinks; the last click counts."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.digests.views import load_digest_views
from app.jobs import compose_job, ingest_job
from app.mail.message import Mailer
from app.models import Digest, DigestItem, FeedbackSignal, Paper, Subscriber
from app.subscribers.feedback import record_feedback
from app.subscribers.rules import Preferences, add_active_subscriber

Sessions = async_sessionmaker[AsyncSession]
DAY_ONE, DAY_TWO = date(2026, 11, 26), date(2026, 11, 27)
TOPIC = "large language models"


async def items_of(sessions: Sessions, email: str, day: date) -> list[tuple[int, str | None]]:
    async with sessions() as session:
        rows = await session.execute(
            select(DigestItem.paper_id, DigestItem.liked_title)
            .join(Digest, Digest.id == DigestItem.digest_id)
            .join(Subscriber, Subscriber.id == Digest.subscriber_id)
            .where(Subscriber.email == email, Digest.digest_date == day)
            .order_by(DigestItem.rank)
        )
        return [(paper_id, liked) for paper_id, liked in rows]


async def test_the_next_digest_follows_the_readers_feedback(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    async with session_factory() as session:
        # Two readers alike in every way; only one gives feedback.
        clicker = await add_active_subscriber(
            "ada@example.org", Preferences([TOPIC], digest_size=5), session=session
        )
        await add_active_subscriber(
            "bob@example.org", Preferences([TOPIC], digest_size=5), session=session
        )
        await session.commit()
    await compose_job(session_factory=session_factory, settings=settings, on_date=DAY_ONE)
    day_one = await items_of(session_factory, "ada@example.org", DAY_ONE)
    assert day_one == await items_of(session_factory, "bob@example.org", DAY_ONE)
    liked_ids, disliked_id = [day_one[0][0], day_one[2][0], day_one[3][0]], day_one[1][0]
    async with session_factory() as session:
        reader = await session.get(Subscriber, clicker.id)
        assert reader is not None
        now = datetime.now(UTC)
        await record_feedback(reader, disliked_id, FeedbackSignal.MORE, session=session, now=now)
        for liked_id in liked_ids:
            await record_feedback(reader, liked_id, FeedbackSignal.MORE, session=session, now=now)
        # The last click wins: the second paper is one they want less of after all.
        await record_feedback(reader, disliked_id, FeedbackSignal.LESS, session=session, now=now)
        await session.commit()
        liked_titles = set(
            (await session.scalars(select(Paper.title).where(Paper.id.in_(liked_ids)))).all()
        )

    await compose_job(session_factory=session_factory, settings=settings, on_date=DAY_TWO)
    with_feedback = await items_of(session_factory, "ada@example.org", DAY_TWO)
    without = await items_of(session_factory, "bob@example.org", DAY_TWO)
    assert [paper for paper, _ in with_feedback] != [paper for paper, _ in without]
    explained = {liked for _, liked in with_feedback} - {None}
    assert explained and explained <= liked_titles
    assert all(liked is None for _, liked in without)

    async with session_factory() as session:
        digest_id = await session.scalar(
            select(Digest.id).where(
                Digest.subscriber_id == clicker.id, Digest.digest_date == DAY_TWO
            )
        )
        assert digest_id is not None
        view = (await load_digest_views([digest_id], session=session))[0]
    rendered = Mailer(settings).render(view)
    for liked_title in explained:
        assert f'Similar to "{liked_title}", which you liked' in rendered.text
        assert f"Similar to “{liked_title}”, which you liked" in rendered.html
