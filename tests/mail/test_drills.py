"""Reliability drills on Postgres, at the scale of a small deployment: a simulated day of 2,000
subscribers spread over the world's time zones under two schedulers and three workers; a worker
SIGKILLed at random points while sending 2,000 digests; a mail server that answers 421/451 or
drops the connection for a fifth of the messages; and a relay that denies us every recipient
for a while, then is fixed. Each prints its figures (`pytest -s`)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from subprocess import DEVNULL
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.jobs import compose_job, ingest_job, send_job
from app.mail.delivery import HALT_AFTER_REFUSALS, IN_FLIGHT_PER_CONNECTION
from app.models import Digest, DigestStatus, Paper, Subscriber, SubscriberStatus
from tests.conftest import DRILL_FIGURES, requires_postgres
from tests.support.queue import wait_until_retries_are_due
from tests.support.smtp_sink import SinkHandler, smtp_sink

pytestmark = [requires_postgres, pytest.mark.slow]

Sessions = async_sessionmaker[AsyncSession]
PAPERBOY = str(Path(sys.executable).parent / "paperboy")
DAY = date(2026, 11, 26)
# Digests that are retried must be dated a day no time zone has finished yet, whenever the
# drills run: once a digest's day is over, a retry gives up (`failed`).
SEND_DAY = datetime.now(UTC).date() + timedelta(days=1)
ZONES = [
    "Pacific/Kiritimati", "Pacific/Auckland", "Australia/Sydney", "Australia/Adelaide",
    "Asia/Tokyo", "Asia/Shanghai", "Asia/Kathmandu", "Asia/Kolkata", "Asia/Dubai",
    "Europe/Moscow", "Europe/Berlin", "Europe/London", "UTC", "Atlantic/Azores",
    "America/Sao_Paulo", "America/St_Johns", "America/New_York", "America/Chicago",
    "America/Denver", "America/Los_Angeles", "America/Anchorage", "Pacific/Honolulu",
    "Pacific/Pago_Pago",
]  # fmt: skip
TOPICS = ["mixture of experts", "LLM quantization", "FPGA accelerators", "speculative decoding"]


DrillFigures = Callable[[str], None]


@pytest.fixture
def drill_figures(request: pytest.FixtureRequest) -> DrillFigures:
    """Records a drill's figures; the run prints them at its end (`tests/conftest.py`)."""

    def record(line: str) -> None:
        request.node.user_properties.append((DRILL_FIGURES, line))

    return record


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def populate(
    sessions: Sessions, settings: Settings, sample_page: Path, count: int, *, day: date
) -> None:
    """The sample papers, first seen the day before `day`, and `count` active subscribers."""
    await ingest_job(str(sample_page), session_factory=sessions, settings=settings)
    rng = random.Random(2026)
    async with sessions() as session:
        await session.execute(update(Paper).values(first_seen_at=midnight(day - timedelta(days=1))))
        session.add_all(
            Subscriber(
                email=f"drill{n:05d}@example.org",
                status=SubscriberStatus.ACTIVE,
                topics=rng.sample(TOPICS, rng.randint(0, 2)),
                timezone=ZONES[n % len(ZONES)],
                send_hour=rng.randint(5, 9),
                digest_size=5,
                confirmed_at=midnight(day - timedelta(days=25)),
            )
            for n in range(count)
        )
        await session.commit()


def smtp_settings(settings: Settings, port: int, **changes: object) -> Settings:
    return settings.model_copy(
        update={
            "mail_url": f"smtp://127.0.0.1:{port}",
            "retry_base_seconds": 0.01,
            "retry_max_seconds": 0.05,
            "smtp_concurrency": 8,
            **changes,
        }
    )


async def test_two_schedulers_three_workers_one_simulated_day(
    session_factory: Sessions, settings: Settings, sample_page: Path, drill_figures: DrillFigures
) -> None:
    await populate(session_factory, settings, sample_page, 2000, day=DAY)
    with smtp_sink() as (sink, port):
        config = smtp_settings(settings, port)
        moment = datetime(2026, 11, 25, 14, tzinfo=UTC)  # 05:00 on the 26th at UTC+14 is 15:00
        while moment <= datetime(2026, 11, 26, 21, tzinfo=UTC):  # 10:00 on the 26th at UTC-11
            await asyncio.gather(
                compose_job(session_factory=session_factory, settings=config, now=moment),
                compose_job(session_factory=session_factory, settings=config, now=moment),
            )
            await asyncio.gather(
                *(send_job(session_factory=session_factory, settings=config) for _ in range(3))
            )
            moment += timedelta(hours=1)
    async with session_factory() as session:
        rows = (
            await session.execute(
                select(
                    Subscriber.email,
                    Subscriber.timezone,
                    Subscriber.send_hour,
                    Digest.digest_date,
                    Digest.status,
                    Digest.created_at,
                ).join(Digest, Digest.subscriber_id == Subscriber.id)
            )
        ).all()
    on_the_day = [row for row in rows if row.digest_date == DAY]
    assert Counter(row.email for row in on_the_day) == {
        f"drill{n:05d}@example.org": 1 for n in range(2000)
    }
    for row in on_the_day:
        local = row.created_at.astimezone(ZoneInfo(row.timezone))
        # Composed on their local morning: the first hourly run after their delivery hour.
        assert local.date() == DAY and row.send_hour <= local.hour <= row.send_hour + 1, row
    sent = [row for row in rows if row.status is DigestStatus.SENT]
    received = sink.per_recipient()
    drill_figures(
        f"simulated day: 2,000 subscribers in {len(ZONES)} time zones, 2 composers and 3 workers"
        f" hourly for 32 h: {len(on_the_day)} digests dated {DAY}, {len(sent)} sent, "
        f"{sum(received.values())} messages received, "
        f"{sum(n - 1 for n in received.values())} duplicates"
    )
    assert {row.status for row in rows} <= {DigestStatus.SENT, DigestStatus.SKIPPED}
    assert sink.per_recipient() == Counter(row.email for row in sent)
    assert all(count == 1 for count in Counter((r.email, r.digest_date) for r in sent).values())
    assert {row.email for row in sent if row.digest_date == DAY} == {
        row.email for row in on_the_day if row.status is DigestStatus.SENT
    }


async def composed_day(sessions: Sessions, settings: Settings, sample_page: Path) -> list[str]:
    await populate(sessions, settings, sample_page, 2000, day=SEND_DAY)
    report = await compose_job(session_factory=sessions, settings=settings, on_date=SEND_DAY)
    async with sessions() as session:
        return (
            sorted(
                (
                    await session.scalars(
                        select(Subscriber.email)
                        .join(Digest, Digest.subscriber_id == Subscriber.id)
                        .where(Digest.status == DigestStatus.QUEUED)
                    )
                ).all()
            )
            if report.queued
            else []
        )


async def test_sigkilled_workers_lose_nothing(
    session_factory: Sessions,
    settings: Settings,
    sample_page: Path,
    database_url: str,
    drill_figures: DrillFigures,
) -> None:
    addresses = await composed_day(session_factory, settings, sample_page)
    assert len(addresses) > 1500
    concurrency, kills = 8, 3
    rng = random.Random(7)
    with smtp_sink(SinkHandler(delay=0.002)) as (sink, port):
        env = os.environ | {
            "PAPERBOY_DATABASE_URL": database_url,
            "PAPERBOY_MAIL_URL": f"smtp://127.0.0.1:{port}",
            "PAPERBOY_SMTP_CONCURRENCY": str(concurrency),
        }
        for _ in range(kills):
            target = len(sink.received) + rng.randint(50, 400)
            worker = await asyncio.create_subprocess_exec(
                PAPERBOY, "worker", env=env, stdout=DEVNULL, stderr=DEVNULL
            )
            await sink.wait_for_received(target, seconds=120)
            worker.send_signal(signal.SIGKILL)
            await asyncio.wait_for(worker.wait(), 10)
            async with session_factory() as session:  # the dead worker's leases run out
                await session.execute(
                    update(Digest)
                    .where(Digest.status == DigestStatus.SENDING)
                    .values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
                )
                await session.commit()
        finisher = await asyncio.create_subprocess_exec(
            PAPERBOY, "send", env=env, stdout=DEVNULL, stderr=DEVNULL
        )
        assert await asyncio.wait_for(finisher.wait(), 300) == 0
    counts = sink.per_recipient()
    bound = kills * concurrency * IN_FLIGHT_PER_CONNECTION
    drill_figures(
        f"SIGKILLed workers: {len(addresses)} digests, {kills} kills: "
        f"{len(set(addresses) - set(counts))} lost, "
        f"{sum(n - 1 for n in counts.values())} duplicates (bound {bound})"
    )
    assert set(counts) == set(addresses)  # nothing lost
    assert sum(n - 1 for n in counts.values()) <= kills * concurrency * IN_FLIGHT_PER_CONNECTION
    async with session_factory() as session:
        statuses = dict(
            (
                await session.execute(select(Digest.status, func.count()).group_by(Digest.status))
            ).all()
        )
    assert statuses.get(DigestStatus.SENT) == len(addresses)
    assert not statuses.get(DigestStatus.SENDING) and not statuses.get(DigestStatus.QUEUED)


async def test_flaky_mail_server_gets_everything(
    session_factory: Sessions, settings: Settings, sample_page: Path, drill_figures: DrillFigures
) -> None:
    addresses = await composed_day(session_factory, settings, sample_page)
    with smtp_sink(SinkHandler(transient_share=0.2, seed=3)) as (sink, port):
        config = smtp_settings(settings, port)
        for _ in range(60):
            await send_job(session_factory=session_factory, settings=config)
            async with session_factory() as session:
                waiting = await session.scalar(
                    select(func.count())
                    .select_from(Digest)
                    .where(Digest.status.in_([DigestStatus.QUEUED, DigestStatus.RETRY]))
                )
            if not waiting:
                break
            await wait_until_retries_are_due(session_factory)
    received = sink.per_recipient()
    drill_figures(
        f"flaky mail server: {len(addresses)} digests; answered 421 {sink.answers[421]} times, "
        f"451 {sink.answers[451]}, dropped {sink.answers[0]}: "
        f"{len(set(addresses) - set(received))} lost, "
        f"{sum(n - 1 for n in received.values())} duplicates"
    )
    assert received == {address: 1 for address in addresses}
    assert sink.answers[421] + sink.answers[451] + sink.answers[0] > 300
    async with session_factory() as session:
        failed = await session.scalar(
            select(func.count()).select_from(Digest).where(Digest.status != DigestStatus.SENT)
        )
    assert failed == 0


async def test_a_relay_that_denies_us_suppresses_no_one_and_loses_nothing(
    session_factory: Sessions, settings: Settings, sample_page: Path, drill_figures: DrillFigures
) -> None:
    addresses = await composed_day(session_factory, settings, sample_page)
    denied_runs = 5  # the scheduler keeps trying while the relay is misconfigured
    handler = SinkHandler(every_rcpt="554 5.7.1 <digest@papers.example.org>: Relay access denied")
    with smtp_sink(handler) as (sink, port):
        config = smtp_settings(settings, port)
        for _ in range(denied_runs):
            denied = await send_job(session_factory=session_factory, settings=config)
            assert denied.halted is not None and denied.bounced == 0 and denied.sent == 0
            await wait_until_retries_are_due(session_factory)
        refusals = len(handler.rcpt_refused)
        async with session_factory() as session:
            suppressed = await session.scalar(
                select(func.count())
                .select_from(Subscriber)
                .where(
                    (Subscriber.status != SubscriberStatus.ACTIVE) | (Subscriber.bounce_count > 0)
                )
            )
            waiting = await session.scalar(
                select(func.count())
                .select_from(Digest)
                .where(Digest.status.in_([DigestStatus.QUEUED, DigestStatus.RETRY]))
            )
        # Nobody suppressed; every digest waits (none left leased to a run that stopped).
        assert suppressed == 0 and waiting == len(addresses)

        handler.every_rcpt = None  # the relay is fixed
        rounds = 0
        while rounds < 30:
            rounds += 1
            await send_job(session_factory=session_factory, settings=config)
            async with session_factory() as session:
                left = await session.scalar(
                    select(func.count())
                    .select_from(Digest)
                    .where(Digest.status != DigestStatus.SENT)
                )
            if not left:
                break
            await wait_until_retries_are_due(session_factory)
    counts = sink.per_recipient()
    lost = len(set(addresses) - set(counts))
    duplicates = sum(n - 1 for n in counts.values())
    drill_figures(
        f"relay denial: {len(addresses)} digests; {denied_runs} runs against a relay "
        f"denying us stopped after {refusals} refusals in all ({refusals / denied_runs:.1f} a "
        f"run); {suppressed} subscribers suppressed; relay fixed: delivered in {rounds} "
        f"run(s), {lost} lost, {duplicates} duplicates"
    )
    assert counts == {address: 1 for address in addresses}  # 0 lost, exactly one copy each
    assert refusals <= denied_runs * (HALT_AFTER_REFUSALS + 8 * IN_FLIGHT_PER_CONNECTION)
