"""Refusals about us through the whole delivery engine, against a real SMTP server (aiosmtpd): a
relay that denies every recipient (554 5.7.1) leaves every subscriber active and every digest
waiting, stops the run after a few recipients with one clear error, and once the relay is fixed
each digest arrives exactly once; authentication required (530 5.7.0) and a policy refusal
(550 5.7.1) never bounce anyone; a mailbox that does not exist (550 5.1.1, or a bare 550) still
bounces its subscriber; a worker that keeps running pauses and resumes by itself."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.jobs import send_job
from app.mail.delivery import HALT_AFTER_REFUSALS, IN_FLIGHT_PER_CONNECTION
from app.mail.workers import delivery_state
from app.models import Digest, DigestStatus, Subscriber, SubscriberStatus
from tests.mail.test_delivery import compose_for, smtp_settings, statuses
from tests.support.queue import wait_until_retries_are_due
from tests.support.smtp_sink import SinkHandler, smtp_sink

Sessions = async_sessionmaker[AsyncSession]
RELAY_DENIED = "554 5.7.1 Relaying denied"


async def subscriber_states(sessions: Sessions) -> dict[str, tuple[SubscriberStatus, int]]:
    async with sessions() as session:
        rows = await session.execute(
            select(Subscriber.email, Subscriber.status, Subscriber.bounce_count)
        )
        return {email: (status, count) for email, status, count in rows}


async def refusal_in_force(sessions: Sessions, settings: Settings) -> str | None:
    async with sessions() as session:
        state = await delivery_state(
            session=session,
            now=datetime.now(UTC),
            heartbeat_seconds=settings.send_heartbeat_seconds,
        )
    return state.refusal


async def test_a_relay_that_denies_every_recipient_suppresses_no_one(
    session_factory: Sessions,
    settings: Settings,
    sample_page: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    addresses = await compose_for(session_factory, settings, sample_page, 12)
    with smtp_sink(SinkHandler(every_rcpt=RELAY_DENIED)) as (sink, port):
        config = smtp_settings(settings, port, smtp_concurrency=1)
        with caplog.at_level(logging.ERROR, logger="paperboy.delivery"):
            denied = await send_job(session_factory=session_factory, settings=config)
        tried = len(sink.rcpt_refused)
        # The run stopped after a few recipients (those in flight finish), not the whole list.
        assert HALT_AFTER_REFUSALS <= tried < HALT_AFTER_REFUSALS + IN_FLIGHT_PER_CONNECTION
        assert denied.halted == RELAY_DENIED
        assert (denied.sent, denied.bounced, denied.suppressed) == (0, 0, 0)
        assert denied.refused_us == denied.retry == tried
        # Paperboy's own errors: a driver or the event loop may log under load, not about this.
        errors = [r.getMessage() for r in caplog.records if r.name.startswith("paperboy")]
        assert len(errors) == 1
        assert RELAY_DENIED in errors[0] and "none was marked bounced" in errors[0]
        # Nobody is suppressed; what was tried waits for a retry, the rest was given back.
        states = await subscriber_states(session_factory)
        assert states == {address: (SubscriberStatus.ACTIVE, 0) for address in addresses}
        assert await statuses(session_factory) == {"retry": tried, "queued": 12 - tried}
        assert await refusal_in_force(session_factory, config) == RELAY_DENIED

        sink.every_rcpt = None  # the operator fixes the relay
        await wait_until_retries_are_due(session_factory)
        fixed = await send_job(session_factory=session_factory, settings=config)
    assert (fixed.sent, fixed.halted) == (12, None)
    assert sink.per_recipient() == {address: 1 for address in addresses}
    assert await statuses(session_factory) == {"sent": 12}
    assert await refusal_in_force(session_factory, config) is None


@pytest.mark.parametrize(
    ("reply", "bounces"),
    [
        (RELAY_DENIED, False),
        ("530 5.7.0 Authentication required", False),
        ("550 5.7.1 Message refused by policy", False),
        ("550 5.1.1 <reader0000@example.org>: Recipient address rejected: User unknown", True),
        ("550 Requested action not taken: mailbox unavailable", True),
    ],
)
async def test_only_a_refusal_about_the_mailbox_bounces_its_subscriber(
    reply: str, bounces: bool, session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    addresses = await compose_for(session_factory, settings, sample_page, 3)
    refused = addresses[0]
    with smtp_sink(SinkHandler(rcpt_scripted={refused: [reply]})) as (sink, port):
        config = smtp_settings(settings, port)
        report = await send_job(session_factory=session_factory, settings=config)
        # One recipient refusing us while the others go through is not a reason to stop.
        assert (report.sent, report.halted) == (2, None)
        async with session_factory() as session:
            digest = await session.scalar(
                select(Digest).join(Subscriber).where(Subscriber.email == refused)
            )
        assert digest is not None and digest.last_error == reply
        states = await subscriber_states(session_factory)
        if bounces:
            assert (report.bounced, report.suppressed) == (1, 1)
            assert digest.status is DigestStatus.BOUNCED
            assert states[refused] == (SubscriberStatus.BOUNCED, 1)
            return
        assert (report.bounced, report.suppressed, report.refused_us) == (0, 0, 1)
        assert digest.status is DigestStatus.RETRY
        assert states[refused] == (SubscriberStatus.ACTIVE, 0)
        await wait_until_retries_are_due(session_factory)
        again = await send_job(session_factory=session_factory, settings=config)
    assert again.sent == 1
    assert sink.per_recipient() == {address: 1 for address in addresses}


async def test_a_refusal_of_every_recipient_of_a_small_run_stops_it_too(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    await compose_for(session_factory, settings, sample_page, 2)
    with smtp_sink(SinkHandler(every_rcpt="530 5.7.0 Authentication required")) as (_, port):
        config = smtp_settings(settings, port)
        report = await send_job(session_factory=session_factory, settings=config)
    assert report.halted == "530 5.7.0 Authentication required" and report.bounced == 0
    assert await refusal_in_force(session_factory, config) == report.halted


@pytest.mark.slow
async def test_a_running_worker_pauses_on_a_denying_relay_and_resumes_when_it_is_fixed(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    addresses = await compose_for(session_factory, settings, sample_page, 8)
    stop = asyncio.Event()
    with smtp_sink(SinkHandler(every_rcpt=RELAY_DENIED)) as (sink, port):
        config = smtp_settings(
            settings, port, smtp_concurrency=1, retry_base_seconds=0.2, retry_max_seconds=0.4
        )
        worker = asyncio.create_task(
            send_job(session_factory=session_factory, settings=config, once=False, stop=stop)
        )
        for _ in range(500):  # until the worker has stopped sending and recorded why
            if await refusal_in_force(session_factory, config):
                break
            await asyncio.sleep(0.02)
        assert await refusal_in_force(session_factory, config) == RELAY_DENIED
        sink.every_rcpt = None
        assert await sink.wait_for_received(8, seconds=60)
        stop.set()
        report = await worker
    assert report.halted is None and report.sent == 8 and report.bounced == 0
    assert sink.per_recipient() == {address: 1 for address in addresses}
    assert await refusal_in_force(session_factory, config) is None
    states = await subscriber_states(session_factory)
    assert states == {address: (SubscriberStatus.ACTIVE, 0) for address in addresses}
