"""Send workers and their leases: a run beats while it sends and is marked stopped at its end; a
send that finds every digest leased says who holds them and until when; `--reclaim` (and the
admin API's send with reclaim) releases the leases of workers known dead (stopped, or silent
for three heartbeats), never a live worker's; and after a real `paperboy send` SIGKILLed
holding the whole queue, a restarted send says so and `paperboy send --reclaim` delivers the
rest with nothing lost."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import DEVNULL, PIPE

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.jobs import send_job
from app.mail.delivery import IN_FLIGHT_PER_CONNECTION
from app.mail.queue import claim_digests
from app.mail.workers import DEAD_AFTER_BEATS, aware, beat, register_worker
from app.models import Digest, DigestStatus, SendWorker, Subscriber
from tests.mail.test_delivery import PAPERBOY, compose_for, smtp_settings, statuses
from tests.support.smtp_sink import SinkHandler, smtp_sink

Sessions = async_sessionmaker[AsyncSession]
LEASE = timedelta(minutes=10)


async def claim_as(sessions: Sessions, worker: int, count: int, now: datetime) -> list[int]:
    async with sessions() as session:
        claimed = await claim_digests(
            session=session, now=now, limit=count, lease=LEASE, worker=worker
        )
        await session.commit()
    return sorted(claimed)


async def emails_of(sessions: Sessions, digest_ids: list[int]) -> set[str]:
    async with sessions() as session:
        return set(
            (
                await session.scalars(
                    select(Subscriber.email).join(Digest).where(Digest.id.in_(digest_ids))
                )
            ).all()
        )


async def test_reclaim_releases_dead_workers_leases_and_never_a_live_ones(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    await compose_for(session_factory, settings, sample_page, 9)
    now = datetime.now(UTC)
    silent = now - timedelta(seconds=DEAD_AFTER_BEATS * settings.send_heartbeat_seconds + 5)
    async with session_factory() as session:
        crashed = await register_worker(session=session, now=silent)  # SIGKILLed: no more beats
        stopped = await register_worker(session=session, now=now)
        await beat(stopped, session=session, now=now, sent=True, stopped=True)
        live = await register_worker(session=session, now=now)
        await session.commit()
    by_crashed = await claim_as(session_factory, crashed, 3, now)
    by_stopped = await claim_as(session_factory, stopped, 2, now)
    by_live = await claim_as(session_factory, live, 4, now)

    with smtp_sink() as (sink, port):
        config = smtp_settings(settings, port)
        waiting = await send_job(session_factory=session_factory, settings=config)
        # Everything is leased: nothing sent, and the report says who holds what until when.
        assert (waiting.claimed, waiting.sent) == (0, 0)
        held = waiting.held
        assert (held.by_stopped, held.by_others) == (5, 4)
        assert held.stopped_until is not None and held.others_until is not None
        assert abs(held.stopped_until - (now + LEASE)) < timedelta(seconds=1)

        reclaimed = await send_job(session_factory=session_factory, settings=config, reclaim=True)
    assert (reclaimed.reclaimed, reclaimed.sent) == (5, 5)
    assert sink.per_recipient() == {
        email: 1 for email in await emails_of(session_factory, by_crashed + by_stopped)
    }
    assert (reclaimed.held.by_stopped, reclaimed.held.by_others) == (0, 4)
    async with session_factory() as session:
        untouched = (
            await session.execute(
                select(Digest.status, Digest.claimed_by, Digest.lease_until).where(
                    Digest.id.in_(by_live)
                )
            )
        ).all()
    assert all(
        status is DigestStatus.SENDING
        and worker == live
        and until is not None
        and aware(until) > now + LEASE / 2
        for status, worker, until in untouched
    )


async def test_a_sending_worker_beats_and_is_marked_stopped_at_its_end(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    await compose_for(session_factory, settings, sample_page, 30)
    stop = asyncio.Event()
    with smtp_sink(SinkHandler(delay=0.05)) as (sink, port):
        config = smtp_settings(settings, port, smtp_concurrency=1, send_heartbeat_seconds=0.05)
        sending = asyncio.create_task(
            send_job(session_factory=session_factory, settings=config, once=False, stop=stop)
        )
        assert await sink.wait_for_received(5, seconds=30)
        async with session_factory() as session:
            first = await session.scalar(select(SendWorker.heartbeat_at))
            leased_to = set((await session.scalars(select(Digest.claimed_by))).all())
        assert await sink.wait_for_received(10, seconds=30)
        stop.set()
        await sending
    async with session_factory() as session:
        worker = await session.scalar(select(SendWorker))
    assert worker is not None and first is not None
    assert worker.heartbeat_at > first  # it beat while sending
    assert worker.stopped_at is not None and worker.last_sent_at is not None
    assert leased_to == {worker.id}  # every claim named it
    assert worker.refusal is None


@pytest.mark.slow
async def test_after_a_killed_sender_send_says_so_and_reclaim_sends_the_rest(
    session_factory: Sessions, settings: Settings, sample_page: Path, database_url: str
) -> None:
    addresses = await compose_for(session_factory, settings, sample_page, 120)
    concurrency, heartbeat = 4, 0.5
    with smtp_sink(SinkHandler(delay=0.01)) as (sink, port):
        env = os.environ | {
            "PAPERBOY_DATABASE_URL": database_url,
            "PAPERBOY_MAIL_URL": f"smtp://127.0.0.1:{port}",
            "PAPERBOY_SMTP_CONCURRENCY": str(concurrency),
            "PAPERBOY_SEND_BATCH_SIZE": "200",  # the killed worker holds the whole queue
            "PAPERBOY_SEND_HEARTBEAT_SECONDS": str(heartbeat),
            "TZ": "UTC",
        }
        killed = await asyncio.create_subprocess_exec(
            PAPERBOY, "send", env=env, stdout=DEVNULL, stderr=DEVNULL
        )
        await sink.wait_for_received(30, seconds=60)
        killed.send_signal(signal.SIGKILL)
        await asyncio.wait_for(killed.wait(), 10)
        assert len(sink.received) < 120, "the sender finished before it could be killed"
        async with session_factory() as session:
            held, until = (
                await session.execute(
                    select(func.count(), func.max(Digest.lease_until)).where(
                        Digest.status == DigestStatus.SENDING
                    )
                )
            ).one()
        assert held > 0 and until is not None
        # Past three heartbeats of silence the killed worker counts as stopped.
        await asyncio.sleep(DEAD_AFTER_BEATS * heartbeat + 0.5)

        restarted = await asyncio.create_subprocess_exec(
            PAPERBOY, "send", env=env, stdout=PIPE, stderr=PIPE
        )
        said, errors = await asyncio.wait_for(restarted.communicate(), 120)
        assert restarted.returncode == 0, errors.decode()
        lines = said.decode()
        assert lines.startswith("0 sent"), lines
        clock = aware(until).strftime("%H:%M UTC")
        assert (
            f"{held} digests are held by a stopped worker until {clock}: "
            "`paperboy send --reclaim` sends them now"
        ) in " ".join(lines.split()), lines

        reclaiming = await asyncio.create_subprocess_exec(
            PAPERBOY, "send", "--reclaim", env=env, stdout=PIPE, stderr=PIPE
        )
        said, errors = await asyncio.wait_for(reclaiming.communicate(), 120)
        assert reclaiming.returncode == 0, errors.decode()
        assert f"released {held} digests held by stopped workers" in said.decode()
    counts = sink.per_recipient()
    assert set(counts) == set(addresses)  # nothing lost
    assert sum(n - 1 for n in counts.values()) <= concurrency * IN_FLIGHT_PER_CONNECTION
    assert await statuses(session_factory) == {"sent": 120}
