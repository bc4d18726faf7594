"""Weekly digests against a real database: a weekly reader is composed on their weekday only,
their digest covers the week (not only the compose window) with twice the papers, and composing
stays idempotent per reader and date."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.digests.views import load_digest_views, subscriber_preview
from app.jobs import compose_job, ingest_job
from app.mail.message import Mailer
from app.models import DIGEST_SIZE, Digest, DigestFrequency, DigestItem, Paper, Subscriber
from app.subscribers.rules import (
    WEEKLY_WINDOW,
    Preferences,
    SubscriberError,
    add_active_subscriber,
    candidate_window,
    digest_size_for,
    is_digest_day,
    parse_frequency,
    parse_weekday,
    validate_preferences,
)

Sessions = async_sessionmaker[AsyncSession]
WEEKLY, DAILY = DigestFrequency.WEEKLY, DigestFrequency.DAILY


def test_what_a_frequency_means() -> None:
    thursday = date(2026, 11, 26)
    assert is_digest_day(DAILY, 0, thursday)
    assert is_digest_day(WEEKLY, 3, thursday)
    assert not any(is_digest_day(WEEKLY, day, thursday) for day in (0, 1, 2, 4, 5, 6))
    assert digest_size_for(DAILY, 10) == 10
    assert digest_size_for(WEEKLY, 10) == 20
    assert digest_size_for(WEEKLY, 40) == DIGEST_SIZE.most
    assert candidate_window(DAILY, timedelta(days=2)) == timedelta(days=2)
    assert candidate_window(WEEKLY, timedelta(days=2)) == WEEKLY_WINDOW == timedelta(days=7)


def test_frequency_and_weekday_are_validated_in_one_place() -> None:
    assert parse_frequency(" Weekly ") is WEEKLY
    assert [parse_weekday(v) for v in ("0", 6, "tue", "Sunday")] == [0, 6, 1, 6]
    for bad in ("7", "-1", "mo", "someday", ""):
        with pytest.raises(SubscriberError, match="weekday"):
            parse_weekday(bad)
    with pytest.raises(SubscriberError, match="frequency must be daily or weekly"):
        parse_frequency("hourly")
    for weekday in (-1, 7, 2.5):
        with pytest.raises(SubscriberError, match="weekday"):
            validate_preferences(Preferences(["x"], frequency=WEEKLY, weekday=weekday))  # type: ignore[arg-type]
    checked = validate_preferences(Preferences(["x"], frequency="weekly", weekday=4))  # type: ignore[arg-type]
    assert (checked.frequency, checked.weekday) == (WEEKLY, 4)


async def subscribe(
    sessions: Sessions,
    email: str,
    *topics: str,
    frequency: DigestFrequency = DAILY,
    weekday: int = 0,
    digest_size: int = 5,
) -> int:
    async with sessions() as session:
        preferences = Preferences(
            list(topics),
            send_hour=0,
            digest_size=digest_size,
            frequency=frequency,
            weekday=weekday,
        )
        subscriber = await add_active_subscriber(email, preferences, session=session)
        await session.commit()
        return subscriber.id


async def digests_of(sessions: Sessions) -> dict[int, dict[date, list[int]]]:
    """subscriber -> digest date -> paper ids in rank order (empty for a skipped digest)."""
    async with sessions() as session:
        rows = await session.execute(
            select(Digest.subscriber_id, Digest.digest_date, DigestItem.paper_id)
            .outerjoin(DigestItem, DigestItem.digest_id == Digest.id)
            .order_by(Digest.subscriber_id, Digest.digest_date, DigestItem.rank)
        )
        found: dict[int, dict[date, list[int]]] = {}
        for subscriber_id, digest_date, paper_id in rows:
            papers = found.setdefault(subscriber_id, {}).setdefault(digest_date, [])
            if paper_id is not None:
                papers.append(paper_id)
        return found


@pytest.fixture
async def week_of_papers(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> tuple[datetime, set[int], set[int]]:
    """The sample papers, first seen three days ago (within the week) or nine (before it):
    (now, ids of this week's papers, ids of older ones)."""
    report = await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    assert report.inserted == 185
    now = datetime.now(UTC)
    async with session_factory() as session:
        await session.execute(update(Paper).values(first_seen_at=now - timedelta(days=3)))
        await session.execute(
            update(Paper).where(Paper.id % 2 == 1).values(first_seen_at=now - timedelta(days=9))
        )
        ids = list((await session.execute(select(Paper.id))).scalars())
        await session.commit()
    return now, {i for i in ids if i % 2 == 0}, {i for i in ids if i % 2 == 1}


async def test_a_weekly_reader_gets_the_week_on_their_weekday_only(
    session_factory: Sessions,
    settings: Settings,
    week_of_papers: tuple[datetime, set[int], set[int]],
) -> None:
    now, this_week, older = week_of_papers
    today = now.date()
    # Daily digests look back one day here: the week's papers are older than that.
    settings = settings.model_copy(update={"compose_window_days": 1})
    daily = await subscribe(session_factory, "daily@example.org")
    weekly = await subscribe(
        session_factory, "weekly@example.org", frequency=WEEKLY, weekday=today.weekday()
    )
    tomorrows = await subscribe(
        session_factory,
        "tomorrow@example.org",
        frequency=WEEKLY,
        weekday=(today.weekday() + 1) % 7,
    )
    topical = await subscribe(
        session_factory,
        "moe@example.org",
        "mixture of experts",
        frequency=WEEKLY,
        weekday=today.weekday(),
    )

    report = await compose_job(session_factory=session_factory, settings=settings, now=now)
    assert report.due == 3  # not tomorrow's weekly reader
    found = await digests_of(session_factory)
    assert tomorrows not in found
    assert found[daily] == {today: []}  # skipped: nothing new within its day
    assert len(found[weekly][today]) == 2 * 5  # twice the reader's size
    assert set(found[weekly][today]) <= this_week  # the week's papers, none from before it
    assert found[topical][today] and set(found[topical][today]) <= this_week
    async with session_factory() as session:
        topics = (
            await session.execute(
                select(DigestItem.matched_topic)
                .join(Digest, Digest.id == DigestItem.digest_id)
                .where(Digest.subscriber_id == topical)
            )
        ).scalars()
        assert set(topics) == {"mixture of experts"}
        digest_ids = (
            await session.execute(
                select(Digest.id)
                .where(Digest.subscriber_id.in_([daily, weekly]))
                .order_by(Digest.subscriber_id)
            )
        ).scalars()
        daily_view, weekly_view = await load_digest_views(list(digest_ids), session=session)
    mail = Mailer(settings).render(weekly_view)
    assert "10 papers for you this week" in mail.html and "this weekly digest" in mail.html
    assert "10 papers for you this week" in mail.text and "this weekly digest" in mail.text
    assert "this daily digest" in Mailer(settings).render(daily_view).text

    # A second run, a run with the date given, and the next day's runs: nothing twice, and the
    # weekly readers get nothing until their weekday comes round again.
    again = await compose_job(session_factory=session_factory, settings=settings, now=now)
    dated = await compose_job(session_factory=session_factory, settings=settings, on_date=today)
    assert (again.due, again.already_composed) == (0, 3)
    assert (dated.due, dated.already_composed) == (0, 3)
    tomorrow = today + timedelta(days=1)
    next_day = await compose_job(
        session_factory=session_factory, settings=settings, now=now + timedelta(days=1)
    )
    assert next_day.due == 2  # the daily reader, and the reader whose weekday it is
    later = await digests_of(session_factory)
    assert set(later[weekly]) == {today} and set(later[topical]) == {today}
    assert set(later[tomorrows]) == {tomorrow} and set(later[daily]) == {today, tomorrow}
    # The reader whose weekday came second gets the week too, nothing the others got excluded.
    assert len(later[tomorrows][tomorrow]) == 10 and set(later[tomorrows][tomorrow]) <= this_week
    async with session_factory() as session:
        per_reader = (
            await session.execute(
                select(Digest.subscriber_id, Digest.digest_date, func.count())
                .group_by(Digest.subscriber_id, Digest.digest_date)
                .having(func.count() > 1)
            )
        ).all()
    assert per_reader == []
    assert not older & {p for days in later.values() for ps in days.values() for p in ps}


async def test_a_weekly_digest_starts_after_the_previous_one(
    session_factory: Sessions,
    settings: Settings,
    week_of_papers: tuple[datetime, set[int], set[int]],
) -> None:
    """A reader who switches from daily to weekly (or changes their weekday) gets the papers
    since their previous digest, not the whole week again."""
    now, _, _ = week_of_papers
    today = now.date()
    reader = await subscribe(
        session_factory, "r@example.org", frequency=WEEKLY, weekday=today.weekday()
    )
    await compose_job(
        session_factory=session_factory,
        settings=settings,
        now=now - timedelta(days=1),
        on_date=today - timedelta(days=7),  # a date that is their weekday
    )
    first = await digests_of(session_factory)
    assert next(iter(first[reader].values()))  # the week's papers, a day ago
    await compose_job(session_factory=session_factory, settings=settings, now=now)
    second = (await digests_of(session_factory))[reader]
    assert second[today] == []  # nothing first seen since the previous digest


async def test_a_weekly_readers_preview_shows_their_next_digest_on_any_day(
    session_factory: Sessions,
    settings: Settings,
    week_of_papers: tuple[datetime, set[int], set[int]],
) -> None:
    now, _, _ = week_of_papers
    reader = await subscribe(
        session_factory,
        "r@example.org",
        frequency=WEEKLY,
        weekday=(now.date().weekday() + 3) % 7,  # not today
    )
    async with session_factory() as session:
        subscriber = await session.get_one(Subscriber, reader)
        view = await subscriber_preview(
            subscriber, session=session, settings=settings, now=now, on_date=None
        )
    assert len(view.papers) == 10  # the week's papers, at twice the size
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Digest)) == 0
