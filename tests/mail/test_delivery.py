"""Delivery against a real SMTP server (aiosmtpd) and a real Maildir: each digest is sent once,
4xx and lost connections are retried until accepted, 5xx bounces and suppresses, leases expire
and are reclaimed, concurrent workers never double a mail, a worker killed mid-batch loses
nothing."""

from __future__ import annotations

import asyncio
import mailbox
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import DEVNULL, PIPE

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import create_engine, create_session_factory
from app.jobs import compose_job, ingest_job, send_job
from app.mail.delivery import IN_FLIGHT_PER_CONNECTION
from app.mail.outcomes import OUTCOME_WRITER, SendReport
from app.mail.queue import (
    Outcome,
    apply_changes,
    claim_digests,
    digest_changes,
    release_digests,
)
from app.mail.replies import Verdict
from app.mail.transports import SmtpTransport, parse_smtp_url
from app.models import Digest, DigestStatus, Subscriber, SubscriberStatus
from app.subscribers.rules import Preferences, add_active_subscriber
from tests.conftest import requires_postgres
from tests.support.queue import wait_until_retries_are_due
from tests.support.smtp_sink import SinkHandler, smtp_sink

Sessions = async_sessionmaker[AsyncSession]
# A day no time zone has finished yet, whenever the tests run: retries stay within it.
DAY = datetime.now(UTC).date() + timedelta(days=1)
DAY_LONG = timedelta(days=1)
PAPERBOY = str(Path(sys.executable).parent / "paperboy")


async def compose_for(
    sessions: Sessions, settings: Settings, sample_page: Path, count: int
) -> list[str]:
    await ingest_job(str(sample_page), session_factory=sessions, settings=settings)
    addresses = [f"reader{n:04d}@example.org" for n in range(count)]
    async with sessions() as session:
        for address in addresses:
            await add_active_subscriber(
                address, Preferences(["mixture of experts"], digest_size=3), session=session
            )
        await session.commit()
    report = await compose_job(session_factory=sessions, settings=settings, on_date=DAY)
    assert report.queued == count
    return addresses


def smtp_settings(settings: Settings, port: int, **changes: object) -> Settings:
    return settings.model_copy(
        update={
            "mail_url": f"smtp://127.0.0.1:{port}",
            "mail_from": "Paperboy <digest@papers.example.org>",
            "retry_base_seconds": 0.01,
            "retry_max_seconds": 0.02,
            **changes,
        }
    )


async def statuses(sessions: Sessions) -> dict[str, int]:
    async with sessions() as session:
        rows = await session.execute(select(Digest.status, func.count()).group_by(Digest.status))
        return {status.value: count for status, count in rows}


async def expire_leases(sessions: Sessions) -> None:
    """Every digest being sent is due again, as if its worker's lease had run out."""
    async with sessions() as session:
        await session.execute(
            update(Digest)
            .where(Digest.status == DigestStatus.SENDING)
            .values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()


async def send_until_done(sessions: Sessions, settings: Settings, rounds: int = 50) -> SendReport:
    total = SendReport()
    for _ in range(rounds):
        report = await send_job(session_factory=sessions, settings=settings)
        for name in ("sent", "retry", "failed", "bounced", "suppressed"):
            setattr(total, name, getattr(total, name) + getattr(report, name))
        left = await statuses(sessions)
        if not left.get("retry") and not left.get("queued") and not left.get("sending"):
            return total
        await wait_until_retries_are_due(sessions)
    raise AssertionError(f"still not done: {await statuses(sessions)}")


async def test_each_digest_is_sent_once_over_smtp(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    addresses = await compose_for(session_factory, settings, sample_page, 5)
    with smtp_sink() as (sink, port):
        config = smtp_settings(settings, port)
        report = await send_job(session_factory=session_factory, settings=config)
        again = await send_job(session_factory=session_factory, settings=config)
    assert (report.sent, report.retry, report.bounced, report.errors) == (5, 0, 0, [])
    assert again.claimed == 0
    assert sink.per_recipient() == {address: 1 for address in addresses}
    async with session_factory() as session:
        digests = (await session.scalars(select(Digest))).all()
    assert all(d.status is DigestStatus.SENT and d.sent_at and d.attempts == 1 for d in digests)
    received = {m["Message-ID"] for m in sink.messages()}
    assert received == {d.message_id for d in digests}


async def test_a_stopped_worker_finishes_its_sends_and_gives_back_the_rest(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    addresses = await compose_for(session_factory, settings, sample_page, 40)
    stop = asyncio.Event()
    with smtp_sink(SinkHandler(delay=0.05)) as (sink, port):
        config = smtp_settings(settings, port, smtp_concurrency=2, send_batch_size=10)

        def stop_after_five(progress: SendReport) -> None:
            if progress.sent >= 5:
                stop.set()

        report = await send_job(
            session_factory=session_factory,
            settings=config,
            once=False,
            stop=stop,
            on_progress=stop_after_five,
        )
    left = await statuses(session_factory)
    # Whatever was started was sent and recorded; nothing is left leased to this worker.
    assert left.get("sending", 0) == 0 and report.errors == []
    assert left["sent"] == report.sent == len(sink.received) < 40
    assert left["sent"] + left["queued"] == 40
    async with session_factory() as session:
        queued = (
            await session.scalars(select(Digest).where(Digest.status == DigestStatus.QUEUED))
        ).all()
    assert all(d.attempts == 0 and d.lease_until is None for d in queued)  # not an attempt
    assert set(sink.per_recipient()) < set(addresses)


async def test_maildir_transport_files_each_message(
    session_factory: Sessions, settings: Settings, sample_page: Path, tmp_path: Path
) -> None:
    addresses = await compose_for(session_factory, settings, sample_page, 3)
    maildir = tmp_path / "mail"
    maildir.mkdir()  # an existing, empty directory (as an operator would create it)
    config = settings.model_copy(update={"mail_url": f"maildir://{maildir}"})
    report = await send_job(session_factory=session_factory, settings=config)
    assert report.sent == 3 and report.destination.startswith("Maildir")
    box = mailbox.Maildir(maildir, create=False)
    messages = list(box)
    assert sorted(str(m["To"]) for m in messages) == addresses
    assert all(m.is_multipart() and m["List-Unsubscribe-Post"] for m in messages)
    assert len(list((maildir / "new").iterdir())) == 3 and not list((maildir / "tmp").iterdir())
    # Local mail readers (mutt) expect the system's line ends: a CR would show as ^M.
    for path in (maildir / "new").iterdir():
        raw = path.read_bytes()
        assert b"\r" not in raw and raw.count(b"\n") > 20


async def test_4xx_and_lost_connections_are_retried_until_accepted(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    addresses = await compose_for(session_factory, settings, sample_page, 3)
    handler = SinkHandler(scripted={addresses[0]: [451, 421, 0]})
    with smtp_sink(handler) as (sink, port):
        config = smtp_settings(settings, port)
        first = await send_job(session_factory=session_factory, settings=config)
        assert (first.sent, first.retry) == (2, 1)
        async with session_factory() as session:
            waiting = await session.scalar(
                select(Digest).where(Digest.status == DigestStatus.RETRY)
            )
            assert waiting is not None and waiting.next_attempt_at is not None
            assert waiting.last_error is not None and waiting.last_error.startswith("451")
        await send_until_done(session_factory, config)
    assert sink.per_recipient() == {address: 1 for address in addresses}
    async with session_factory() as session:
        retried = await session.scalar(
            select(Digest).join(Subscriber).where(Subscriber.email == addresses[0])
        )
    assert retried is not None and retried.status is DigestStatus.SENT and retried.attempts == 4


async def test_550_bounces_once_and_suppresses_the_subscriber(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    addresses = await compose_for(session_factory, settings, sample_page, 2)
    handler = SinkHandler(scripted={addresses[1]: [550]})
    with smtp_sink(handler) as (sink, port):
        config = smtp_settings(settings, port)
        report = await send_job(session_factory=session_factory, settings=config)
        assert (report.sent, report.bounced, report.suppressed) == (1, 1, 1)
        assert (await send_job(session_factory=session_factory, settings=config)).claimed == 0
    assert sink.answers[550] == 1
    async with session_factory() as session:
        bounced = await session.scalar(select(Subscriber).where(Subscriber.email == addresses[1]))
        assert bounced is not None
        assert (bounced.status, bounced.bounce_count) == (SubscriberStatus.BOUNCED, 1)
    next_day = await compose_job(
        session_factory=session_factory, settings=settings, on_date=DAY + timedelta(days=1)
    )
    assert next_day.due == 1  # the bounced address is no longer composed


async def test_bounce_limit_counts_hard_bounces(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    addresses = await compose_for(session_factory, settings, sample_page, 1)
    with smtp_sink(SinkHandler(scripted={addresses[0]: [550]})) as (_sink, port):
        report = await send_job(
            session_factory=session_factory, settings=smtp_settings(settings, port, bounce_limit=2)
        )
    assert (report.bounced, report.suppressed) == (1, 0)
    async with session_factory() as session:
        subscriber = await session.scalar(select(Subscriber))
        assert subscriber is not None
        assert (subscriber.status, subscriber.bounce_count) == (SubscriberStatus.ACTIVE, 1)


async def test_leases_expire_and_are_reclaimed(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    await compose_for(session_factory, settings, sample_page, 3)
    now = datetime.now(UTC)
    lease = timedelta(seconds=60)
    async with session_factory() as session:
        first = await claim_digests(session=session, now=now, limit=2, lease=lease)
        await session.commit()
        second = await claim_digests(session=session, now=now, limit=10, lease=lease)
        await session.commit()
        assert len(first) == 2 and len(second) == 1 and not set(first) & set(second)
        assert await claim_digests(session=session, now=now, limit=10, lease=lease) == {}
        # The first worker died: once its lease is over, its digests are claimed again.
        later = now + lease + timedelta(seconds=1)
        reclaimed = await claim_digests(session=session, now=later, limit=10, lease=lease)
        await session.commit()
        assert reclaimed == {digest_id: 2 for digest_id in [*first, *second]}
        await release_digests(list(reclaimed), session=session)
        await session.commit()
        rows = (await session.execute(select(Digest.status, Digest.attempts))).all()
    assert set(rows) == {(DigestStatus.RETRY, 1)}


async def test_retries_end_with_the_digest_day(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    await compose_for(session_factory, settings, sample_page, 2)
    now = datetime.now(UTC)
    async with session_factory() as session:
        claimed = await claim_digests(session=session, now=now, limit=10, lease=timedelta(60))
        subscriber_ids = dict(
            (await session.execute(select(Digest.id, Digest.subscriber_id))).all()
        )
        first, second = sorted(claimed)
        changes = digest_changes(
            [
                Outcome(
                    first,
                    subscriber_ids[first],
                    DigestStatus.RETRY,
                    "451 later",
                    1,
                    now + timedelta(days=1),
                ),
                Outcome(second, subscriber_ids[second], DigestStatus.RETRY, "451 later", 1, now),
            ],
            now=now,
            retry_base=60,
            retry_ceiling=3600,
        )
        counts = await apply_changes(changes, session=session, now=now, bounce_limit=1)
        await session.commit()
        rows = dict((await session.execute(select(Digest.id, Digest.status))).all())
    assert (counts.retry, counts.failed) == (1, 1)
    assert rows == {first: DigestStatus.RETRY, second: DigestStatus.FAILED}


async def test_subscribers_who_left_after_compose_get_nothing(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    addresses = await compose_for(session_factory, settings, sample_page, 3)
    async with session_factory() as session:
        await session.execute(
            update(Subscriber)
            .where(Subscriber.email.in_(addresses[:2]))
            .values(status=SubscriberStatus.UNSUBSCRIBED)
        )
        await session.commit()
    with smtp_sink() as (sink, port):
        report = await send_job(
            session_factory=session_factory, settings=smtp_settings(settings, port)
        )
    assert report.sent == 1 and sink.per_recipient() == {addresses[2]: 1}
    assert await statuses(session_factory) == {"sent": 1, "skipped": 2}


async def test_flaky_server_still_gets_everything_exactly_once(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    addresses = await compose_for(session_factory, settings, sample_page, 60)
    handler = SinkHandler(transient_share=0.2, seed=11)
    with smtp_sink(handler) as (sink, port):
        await send_until_done(session_factory, smtp_settings(settings, port, smtp_concurrency=4))
    assert sink.per_recipient() == {address: 1 for address in addresses}
    assert sum(sink.answers[code] for code in (421, 451, 0)) > 0
    assert await statuses(session_factory) == {"sent": 60}


@requires_postgres
async def test_two_workers_on_postgres_send_each_digest_exactly_once(
    session_factory: Sessions, settings: Settings, sample_page: Path, database_url: str
) -> None:
    addresses = await compose_for(session_factory, settings, sample_page, 150)
    other_engine = create_engine(database_url)
    try:
        with smtp_sink() as (sink, port):
            config = smtp_settings(settings, port, send_batch_size=10, smtp_concurrency=4)
            first, second = await asyncio.gather(
                send_job(session_factory=session_factory, settings=config),
                send_job(session_factory=create_session_factory(other_engine), settings=config),
            )
    finally:
        await other_engine.dispose()
    assert first.sent > 0 and second.sent > 0  # both really worked
    assert first.sent + second.sent == 150
    assert sink.per_recipient() == {address: 1 for address in addresses}


@pytest.mark.slow
async def test_a_worker_killed_mid_batch_loses_nothing(
    session_factory: Sessions, settings: Settings, sample_page: Path, database_url: str
) -> None:
    addresses = await compose_for(session_factory, settings, sample_page, 120)
    concurrency = 4
    handler = SinkHandler(delay=0.01)
    with smtp_sink(handler) as (sink, port):
        env = os.environ | {
            "PAPERBOY_DATABASE_URL": database_url,
            "PAPERBOY_MAIL_URL": f"smtp://127.0.0.1:{port}",
            "PAPERBOY_SMTP_CONCURRENCY": str(concurrency),
            "PAPERBOY_SEND_BATCH_SIZE": "25",
        }
        worker = await asyncio.create_subprocess_exec(
            PAPERBOY, "send", env=env, stdout=DEVNULL, stderr=DEVNULL
        )
        await sink.wait_for_received(30, seconds=60)
        worker.send_signal(signal.SIGKILL)
        await asyncio.wait_for(worker.wait(), 10)
        assert len(sink.received) < 120, "the worker finished before it could be killed"
        assert (await statuses(session_factory)).get("sending", 0) > 0
        # The dead worker's leases run out; a new worker takes over.
        await expire_leases(session_factory)
        restarted = await asyncio.create_subprocess_exec(
            PAPERBOY, "send", env=env, stdout=DEVNULL, stderr=PIPE
        )
        _, errors = await asyncio.wait_for(restarted.communicate(), 120)
        assert restarted.returncode == 0, errors.decode()
    counts = sink.per_recipient()
    assert set(counts) == set(addresses)  # nothing lost
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= concurrency * IN_FLIGHT_PER_CONNECTION
    assert await statuses(session_factory) == {"sent": 120}


@pytest.mark.parametrize("smtputf8", [True, False])
async def test_smtp_transport_declares_size_and_needs_smtputf8_for_unicode_addresses(
    smtputf8: bool,
) -> None:
    data = b"Subject: hi\r\n\r\n" + b"x" * 100 + b"\r\n.leading dot\r\n"
    with smtp_sink(smtputf8=smtputf8) as (sink, port):
        transport = SmtpTransport(parse_smtp_url(f"smtp://127.0.0.1:{port}"), concurrency=1)
        plain = await transport.deliver("digest@example.org", "ann@example.org", data)
        unicode = await transport.deliver("digest@example.org", "jürgen@example.org", data)
        await transport.close()
    assert plain.verdict is Verdict.ACCEPTED
    assert sink.received[0] == ("ann@example.org", data)  # dot-stuffing undone by the server
    assert f"SIZE={len(data)}" in sink.mail_options[0]
    if smtputf8:
        assert unicode.verdict is Verdict.ACCEPTED
        assert sink.received[1][0] == "jürgen@example.org" and "SMTPUTF8" in sink.mail_options[1]
    else:
        assert unicode.verdict is Verdict.REFUSED and "SMTPUTF8" in unicode.detail
        assert len(sink.received) == 1


async def test_a_server_that_hangs_is_timed_out_and_the_connection_replaced() -> None:
    data = b"Subject: hi\r\n\r\nbody\r\n"
    with smtp_sink(SinkHandler(delay=2.0)) as (sink, port):
        transport = SmtpTransport(
            parse_smtp_url(f"smtp://127.0.0.1:{port}"), concurrency=1, timeout=0.5
        )
        started = time.perf_counter()
        slow = await transport.deliver("digest@example.org", "ann@example.org", data)
        assert time.perf_counter() - started < 1.5
        assert slow.verdict is Verdict.TRY_LATER and "timed out after 0.5 s" in slow.detail
        sink.delay = 0.0
        again = await transport.deliver("digest@example.org", "bob@example.org", data)
        await transport.close()
    assert again.verdict is Verdict.ACCEPTED
    assert [recipient for recipient, _ in sink.received][-1] == "bob@example.org"


@requires_postgres
async def test_outcomes_survive_the_writer_losing_its_connection(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    addresses = await compose_for(session_factory, settings, sample_page, 80)
    with smtp_sink(SinkHandler(delay=0.01)) as (sink, port):
        config = smtp_settings(settings, port, send_batch_size=20, smtp_concurrency=4)
        sending = asyncio.create_task(send_job(session_factory=session_factory, settings=config))
        assert await sink.wait_for_received(20, seconds=60)
        async with session_factory() as session:  # the server drops the writer's connection
            killed = await session.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = :name "
                    "AND pid <> pg_backend_pid()"
                ),
                {"name": OUTCOME_WRITER},
            )
        report = await sending
        assert killed == 1
        # Sends whose outcome died with the connection stay leased; once the lease is over,
        # the next run sends them again. Every other outcome went through a new connection.
        # Only the group in flight when the connection died is lost (at most one per slot).
        assert 1 <= len(report.errors) <= 4 * IN_FLIGHT_PER_CONNECTION
        assert report.sent == 80 - len(report.errors)
        await expire_leases(session_factory)
        await send_until_done(session_factory, config)
    assert await statuses(session_factory) == {"sent": 80}
    assert set(sink.per_recipient()) == set(addresses)
