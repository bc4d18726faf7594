"""Composing digests against a real database: who is due (timezones, DST), what they get (their
topics, nothing twice, nothing when nothing qualifies), and that composing is idempotent, also
when two composers run at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import create_engine, create_session_factory
from app.digests.plan import PlannedItem
from app.jobs import compose_job, ingest_job
from app.models import Digest, DigestItem, DigestStatus, Paper, SubscriberStatus
from app.subscribers.localtime import local_digest_date
from app.subscribers.rules import Preferences, add_active_subscriber
from tests.conftest import requires_postgres

Sessions = async_sessionmaker[AsyncSession]
DAY = date(2026, 11, 26)


@pytest.mark.parametrize(
    ("now", "timezone", "hour", "expected"),
    [
        (datetime(2026, 11, 26, 6, 59, tzinfo=UTC), "UTC", 7, None),
        (datetime(2026, 11, 26, 7, 0, tzinfo=UTC), "UTC", 7, date(2026, 11, 26)),
        (datetime(2026, 11, 26, 6, 0, tzinfo=UTC), "Europe/Berlin", 7, date(2026, 11, 26)),
        (datetime(2026, 11, 26, 5, 59, tzinfo=UTC), "Europe/Berlin", 7, None),
        # US DST starts 2026-03-08: 11:30 UTC is 07:30 EDT that day but 06:30 EST the day before.
        (datetime(2026, 3, 8, 11, 30, tzinfo=UTC), "America/New_York", 7, date(2026, 3, 8)),
        (datetime(2026, 3, 7, 11, 30, tzinfo=UTC), "America/New_York", 7, None),
        # EU DST ends 2026-10-25: 06:30 UTC is 07:30 CET (it would be 08:30 CEST the day before).
        (datetime(2026, 10, 25, 6, 30, tzinfo=UTC), "Europe/Berlin", 7, date(2026, 10, 25)),
        (datetime(2026, 10, 25, 5, 30, tzinfo=UTC), "Europe/Berlin", 7, None),
        # Kiritimati (UTC+14) is already on the next day.
        (datetime(2026, 11, 26, 18, 0, tzinfo=UTC), "Pacific/Kiritimati", 7, date(2026, 11, 27)),
        (datetime(2026, 11, 26, 23, 0, tzinfo=UTC), "Pacific/Honolulu", 7, date(2026, 11, 26)),
    ],
)
def test_local_send_time_decides_the_digest_date(
    now: datetime, timezone: str, hour: int, expected: date | None
) -> None:
    assert local_digest_date(now, timezone, hour) == expected


async def subscribe(
    sessions: Sessions, email: str, *topics: str, timezone: str = "UTC", digest_size: int = 10
) -> int:
    async with sessions() as session:
        preferences = Preferences(list(topics), timezone=timezone, digest_size=digest_size)
        subscriber = await add_active_subscriber(email, preferences, session=session)
        await session.commit()
        return subscriber.id


async def digest_papers(sessions: Sessions, subscriber_id: int) -> dict[date, list[str]]:
    async with sessions() as session:
        rows = await session.execute(
            select(Digest.digest_date, Paper.title)
            .join(DigestItem, DigestItem.digest_id == Digest.id)
            .join(Paper, Paper.id == DigestItem.paper_id)
            .where(Digest.subscriber_id == subscriber_id)
            .order_by(Digest.digest_date, DigestItem.rank)
        )
        found: dict[date, list[str]] = {}
        for digest_date, title in rows:
            found.setdefault(digest_date, []).append(title)
        return found


@pytest.fixture
async def sample_loaded(session_factory: Sessions, settings: Settings, sample_page: Path) -> None:
    report = await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    assert report.inserted == 185


@pytest.mark.usefixtures("sample_loaded")
async def test_each_subscriber_gets_their_topics_with_reasons(
    session_factory: Sessions, settings: Settings
) -> None:
    moe = await subscribe(session_factory, "moe@example.org", "mixture of experts", digest_size=5)
    fpga = await subscribe(session_factory, "fpga@example.org", "FPGA accelerators")
    report = await compose_job(session_factory=session_factory, settings=settings, on_date=DAY)
    assert (report.due, report.queued, report.skipped) == (2, 2, 0)
    assert report.items == 5 + 10
    moe_titles = (await digest_papers(session_factory, moe))[DAY]
    assert len(moe_titles) == 5
    assert all("mixture" in t.lower() or "moe" in t.lower() for t in moe_titles)
    async with session_factory() as session:
        items = (
            (
                await session.execute(
                    select(DigestItem)
                    .join(Digest)
                    .where(Digest.subscriber_id == fpga)
                    .order_by(DigestItem.rank)
                )
            )
            .scalars()
            .all()
        )
        digest = (
            await session.execute(select(Digest).where(Digest.subscriber_id == fpga))
        ).scalar_one()
    assert digest.status == DigestStatus.QUEUED and digest.digest_date == DAY
    assert [i.rank for i in items] == list(range(1, 11))
    assert all(i.matched_topic == "FPGA accelerators" and "fpga" in i.matched_terms for i in items)
    assert all(i.relevance >= settings.relevance_threshold for i in items)
    assert [i.score for i in items] == sorted((i.score for i in items), reverse=True)


@pytest.mark.usefixtures("sample_loaded")
async def test_nothing_qualifies_is_recorded_as_skipped_and_inactive_are_left_out(
    session_factory: Sessions, settings: Settings
) -> None:
    nothing = await subscribe(session_factory, "void@example.org", "quantum gravity")
    gone = await subscribe(session_factory, "gone@example.org", "mixture of experts")
    async with session_factory() as session:
        from app.models import Subscriber

        (await session.get_one(Subscriber, gone)).status = SubscriberStatus.UNSUBSCRIBED
        await session.commit()
    report = await compose_job(session_factory=session_factory, settings=settings, on_date=DAY)
    assert (report.due, report.queued, report.skipped, report.items) == (1, 0, 1, 0)
    async with session_factory() as session:
        digests = (await session.execute(select(Digest))).scalars().all()
    assert [(d.subscriber_id, d.status) for d in digests] == [(nothing, DigestStatus.SKIPPED)]


@pytest.mark.usefixtures("sample_loaded")
async def test_compose_is_idempotent_and_dry_run_writes_nothing(
    session_factory: Sessions, settings: Settings
) -> None:
    await subscribe(session_factory, "a@example.org", "KV cache")
    await subscribe(session_factory, "b@example.org")
    dry = await compose_job(
        session_factory=session_factory, settings=settings, on_date=DAY, dry_run=True
    )
    assert dry.due == 2 and all(plan.items for plan in dry.plans)
    async with session_factory() as session:
        assert (await session.execute(select(func.count()).select_from(Digest))).scalar_one() == 0
    first = await compose_job(session_factory=session_factory, settings=settings, on_date=DAY)
    second = await compose_job(session_factory=session_factory, settings=settings, on_date=DAY)
    assert first.queued == 2 and (second.due, second.queued, second.already_composed) == (0, 0, 2)
    async with session_factory() as session:
        assert (await session.execute(select(func.count()).select_from(Digest))).scalar_one() == 2


@pytest.mark.usefixtures("sample_loaded")
async def test_no_paper_is_sent_twice_across_days(
    session_factory: Sessions, settings: Settings, data: Path
) -> None:
    reader = await subscribe(session_factory, "r@example.org", "LLM quantization", digest_size=5)
    start = datetime.now(UTC)
    # Each digest is dated the day it is composed, as in production: a digest dated days before
    # its composition would fall outside the window the previous-digest lookup searches.
    day = start.date()
    for offset in range(3):
        await compose_job(
            session_factory=session_factory,
            settings=settings,
            now=start + timedelta(days=offset, minutes=1),
            on_date=day + timedelta(days=offset),
        )
    days = await digest_papers(session_factory, reader)
    sent = [title for titles in days.values() for title in titles]
    assert len(sent) == len(set(sent))

    # New papers arrive; the next digest holds only papers the reader has not had.
    await ingest_job(
        str(data / "arxiv-snapshot.jsonl"), session_factory=session_factory, settings=settings
    )
    await compose_job(
        session_factory=session_factory,
        settings=settings,
        now=start + timedelta(days=3, hours=1),
        on_date=day + timedelta(days=3),
    )
    days = await digest_papers(session_factory, reader)
    later = days.get(day + timedelta(days=3), [])
    assert not set(later) & set(sent)


@pytest.mark.usefixtures("sample_loaded")
async def test_only_subscribers_whose_local_morning_has_come_are_due(
    session_factory: Sessions, settings: Settings
) -> None:
    tokyo = await subscribe(session_factory, "t@example.org", "GPU kernels", timezone="Asia/Tokyo")
    la = await subscribe(
        session_factory, "la@example.org", "GPU kernels", timezone="America/Los_Angeles"
    )
    now = datetime.now(UTC).replace(hour=12, minute=0)  # 21:00 in Tokyo, 04:00 in Los Angeles
    report = await compose_job(session_factory=session_factory, settings=settings, now=now)
    assert [plan.subscriber_id for plan in report.plans] == [tokyo]
    assert report.plans[0].digest_date == now.date()
    later = await compose_job(
        session_factory=session_factory, settings=settings, now=now + timedelta(hours=3)
    )  # 07:00 in Los Angeles: now it is their turn, and Tokyo already has today's digest
    assert [plan.subscriber_id for plan in later.plans] == [la]


@pytest.mark.usefixtures("sample_loaded")
async def test_sending_now_dates_each_digest_by_the_readers_own_date(
    session_factory: Sessions, settings: Settings
) -> None:
    # What `paperboy up --send-now` composes: everyone's digest for today, whatever the hour,
    # dated by their own calendar.
    tokyo = await subscribe(session_factory, "t@example.org", "GPU kernels", timezone="Asia/Tokyo")
    honolulu = await subscribe(
        session_factory, "h@example.org", "GPU kernels", timezone="Pacific/Honolulu"
    )
    now = datetime.now(UTC).replace(hour=20, minute=0)  # 05:00 tomorrow in Tokyo, 10:00 today
    report = await compose_job(
        session_factory=session_factory, settings=settings, now=now, whatever_the_hour=True
    )
    dates = {plan.subscriber_id: plan.digest_date for plan in report.plans}
    assert dates == {tokyo: now.date() + timedelta(days=1), honolulu: now.date()}
    again = await compose_job(
        session_factory=session_factory, settings=settings, now=now, whatever_the_hour=True
    )
    assert not again.plans and again.already_composed == 2


@requires_postgres
@pytest.mark.usefixtures("sample_loaded")
async def test_two_concurrent_composers_create_each_digest_once(
    session_factory: Sessions, settings: Settings, database_url: str
) -> None:
    for n in range(40):
        await subscribe(
            session_factory,
            f"s{n}@example.org",
            ["KV cache", "mixture of experts", "FPGA accelerators"][n % 3],
        )
    other = create_engine(database_url)
    try:
        reports = await asyncio.gather(
            compose_job(session_factory=session_factory, settings=settings, on_date=DAY),
            compose_job(
                session_factory=create_session_factory(other), settings=settings, on_date=DAY
            ),
        )
    finally:
        await other.dispose()
    assert sum(r.queued for r in reports) == 40
    async with session_factory() as session:
        per_subscriber = (
            await session.execute(
                select(Digest.subscriber_id, func.count()).group_by(Digest.subscriber_id)
            )
        ).all()
        items = (await session.execute(select(func.count()).select_from(DigestItem))).scalar_one()
    assert len(per_subscriber) == 40 and all(count == 1 for _, count in per_subscriber)
    assert items == sum(r.items for r in reports)


def facts(
    item: PlannedItem | DigestItem,
) -> tuple[int, float, float, float, str | None, list[str]]:
    """What an item says, planned or stored."""
    return (
        item.paper_id,
        item.score,
        item.relevance,
        item.trend,
        item.matched_topic,
        item.matched_terms,
    )


@pytest.mark.usefixtures("sample_loaded")
async def test_stored_items_are_exactly_what_was_planned(
    session_factory: Sessions, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slices of two subscribers, written by several writers at once on Postgres.
    monkeypatch.setattr("app.jobs.COMPOSE_SLICE", 2)
    await subscribe(session_factory, "a@example.org", "mixture of experts", "KV cache")
    await subscribe(session_factory, "b@example.org")  # trending only: no topic, no terms
    await subscribe(session_factory, "c@example.org", "Müller’s “FPGA” accelerators")
    await subscribe(session_factory, "d@example.org", "LLM quantization", digest_size=3)
    await subscribe(session_factory, "e@example.org", "diffusion", "agents", "robotics")
    # One moment for both runs: trend decays with time, and a score a second later can round
    # the other way at the sixth decimal.
    now = datetime.now(UTC)
    dry = await compose_job(
        session_factory=session_factory, settings=settings, now=now, on_date=DAY, dry_run=True
    )
    planned = {
        (plan.subscriber_id, item.rank): facts(item) for plan in dry.plans for item in plan.items
    }
    report = await compose_job(
        session_factory=session_factory, settings=settings, now=now, on_date=DAY
    )
    assert report.queued == 5 and report.items == len(planned)
    async with session_factory() as session:
        rows = await session.execute(
            select(Digest.subscriber_id, DigestItem).join(DigestItem.digest)
        )
        stored = {(subscriber_id, item.rank): facts(item) for subscriber_id, item in rows}
    assert stored == planned
    trending_only = [v for (s, _), v in stored.items() if v[4] is None]
    assert trending_only and all(v[5] == [] for v in trending_only)
    assert any(v[4] == "Müller’s “FPGA” accelerators" and "fpga" in v[5] for v in stored.values())
