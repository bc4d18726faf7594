"""The bounce mailbox end to end, with real parts: digests sent through the SMTP sink with a
tagged return path, recorded bounce and complaint reports rewritten to name them and dropped
into a real Maildir, `paperboy bounces` (a subprocess, as an operator runs it) or the job
reading them. A hard bounce suppresses like a 5xx at sending (and counts once per digest), a
complaint unsubscribes with its reason, a delay changes nothing, a refusal about us leaves the
reader alone, a forged report changes nothing, and every message is processed once."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select

from app.config import Settings
from app.mail.bounces.mailbox_job import read_bounce_mailbox
from app.mail.bounces.mailboxes import MAX_MESSAGE_BYTES, MailboxError
from app.mail.return_path import digest_message_id, tagged_return_path
from app.models import (
    DeliveryEvent,
    DeliveryEventKind,
    Digest,
    DigestStatus,
    MailboxMessage,
    Subscriber,
    SubscriberStatus,
)
from app.scheduler import build_scheduler
from tests.support.bounces import (
    DAY,
    MAIL_FROM,
    RETURN_PATH,
    SECRET_KEY,
    SentDigest,
    Sessions,
    bounce_for,
    bounce_settings,
    drop_into,
    send_digests,
)

PAPERBOY = str(Path(sys.executable).parent / "paperboy")
DOMAIN = "papers.example.org"


async def earlier_digest(sessions: Sessions, digest: SentDigest) -> SentDigest:
    """A digest sent to the same reader the day before, as it went out."""
    async with sessions() as session:
        subscriber = await session.get_one(Subscriber, digest.subscriber_id)
        earlier = Digest(
            subscriber_id=subscriber.id,
            digest_date=DAY - timedelta(days=1),
            status=DigestStatus.SENT,
            sent_at=datetime.now(UTC) - timedelta(days=1),
            attempts=1,
        )
        session.add(earlier)
        await session.flush()
        earlier.message_id = digest_message_id(earlier.id, subscriber.public_id.hex, DOMAIN)
        await session.commit()
    sender = tagged_return_path(RETURN_PATH, SECRET_KEY, earlier.id)
    return replace(
        digest, digest_id=earlier.id, envelope_sender=sender, message_id=earlier.message_id
    )


async def state_of(sessions: Sessions, email: str) -> tuple[SubscriberStatus, int, list[str]]:
    """The subscriber's status and bounce count, and their digests' statuses by date."""
    async with sessions() as session:
        subscriber = (
            await session.scalars(select(Subscriber).where(Subscriber.email == email))
        ).one()
        digests = await session.scalars(
            select(Digest.status)
            .where(Digest.subscriber_id == subscriber.id)
            .order_by(Digest.digest_date)
        )
        return subscriber.status, subscriber.bounce_count, [s.value for s in digests]


async def events_of(sessions: Sessions) -> list[DeliveryEvent]:
    async with sessions() as session:
        return list((await session.scalars(select(DeliveryEvent).order_by(DeliveryEvent.id))).all())


def maildir_files(path: Path) -> tuple[list[str], list[str]]:
    return sorted(os.listdir(path / "new")), sorted(os.listdir(path / "cur"))


@pytest.mark.slow
async def test_paperboy_bounces_applies_each_report_in_the_maildir_once(
    session_factory: Sessions,
    settings: Settings,
    sample_page: Path,
    database_url: str,
    tmp_path: Path,
) -> None:
    config = bounce_settings(settings)
    sent = await send_digests(
        session_factory,
        config,
        sample_page,
        ["gone@example.org", "annoyed@example.org", "slow@example.org", "dmarc@example.org"],
    )
    # The return path each digest went out with names it, and only it.
    assert len({digest.envelope_sender for digest in sent.values()}) == 4
    assert all(d.envelope_sender.startswith("bounces+") for d in sent.values())
    bounces = tmp_path / "bounces"
    drop_into(
        bounces,
        bounce_for("dsn-postfix-user-unknown.eml", sent["gone@example.org"]),
        bounce_for("arf-abuse.eml", sent["annoyed@example.org"]),
        bounce_for("dsn-delayed.eml", sent["slow@example.org"]),
        bounce_for("dsn-gmail-blocked.eml", sent["dmarc@example.org"]),
        bounce_for("auto-reply.eml", sent["slow@example.org"]),
    )
    env = os.environ | {
        "PAPERBOY_DATABASE_URL": database_url,
        "PAPERBOY_BOUNCE_MAILBOX": f"maildir://{bounces}",
        "PAPERBOY_RETURN_PATH": RETURN_PATH,
        "PAPERBOY_SECRET_KEY": SECRET_KEY,
        "PAPERBOY_MAIL_FROM": MAIL_FROM,
        "COLUMNS": "300",
    }

    async def paperboy_bounces(
        environment: dict[str, str] = env,
    ) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [PAPERBOY, "bounces"],
            capture_output=True,
            text=True,
            env=environment,
            timeout=120,
            check=False,
        )

    first = await paperboy_bounces()
    assert first.returncode == 0, first.stderr
    assert (
        "5 messages read; 1 hard bounce (1 suppressed), 1 soft bounce, 1 blocked, "
        "1 complaint (1 unsubscribed), 0 unmatched" in first.stdout
    )
    assert "1 message not a report, 0 left unread" in first.stdout

    # Hard bounce: suppressed at the default limit of 1, like a 5xx at sending.
    assert await state_of(session_factory, "gone@example.org") == (
        SubscriberStatus.BOUNCED,
        1,
        ["bounced"],
    )
    # Complaint: unsubscribed at once; the digest itself was delivered.
    assert await state_of(session_factory, "annoyed@example.org") == (
        SubscriberStatus.UNSUBSCRIBED,
        0,
        ["sent"],
    )
    # A delay: recorded only.
    assert await state_of(session_factory, "slow@example.org") == (
        SubscriberStatus.ACTIVE,
        0,
        ["sent"],
    )
    # Refused for DMARC, about us: the digest failed, the reader is untouched.
    assert await state_of(session_factory, "dmarc@example.org") == (
        SubscriberStatus.ACTIVE,
        0,
        ["failed"],
    )
    events = {event.recipient: event for event in await events_of(session_factory)}
    assert events["annoyed@example.org"].kind is DeliveryEventKind.COMPLAINT
    assert events["annoyed@example.org"].action == "unsubscribed"
    assert "abuse report by SomeGenerator/1.0" in events["annoyed@example.org"].detail
    assert events["gone@example.org"].action == "suppressed"
    assert events["gone@example.org"].digest_id == sent["gone@example.org"].digest_id
    assert "5.1.1" in events["gone@example.org"].detail
    assert events["slow@example.org"].kind is DeliveryEventKind.SOFT_BOUNCE
    assert events["dmarc@example.org"].kind is DeliveryEventKind.BLOCKED
    # Every message moved from new/ to cur/, flagged seen; none deleted.
    new, cur = maildir_files(bounces)
    assert new == [] and len(cur) == 5 and all(name.endswith(":2,S") for name in cur)

    # Run again, and with the messages delivered a second time: nothing is counted twice.
    again = await paperboy_bounces()
    assert again.returncode == 0 and "0 messages read" in again.stdout
    for name in cur:
        shutil.copy(bounces / "cur" / name, bounces / "new" / f"copy-{name.partition(':')[0]}")
    redelivered = await paperboy_bounces()
    assert redelivered.returncode == 0, redelivered.stderr
    assert "5 messages read; 0 hard bounces" in redelivered.stdout
    assert "4 seen before" in redelivered.stdout
    assert len(await events_of(session_factory)) == 4
    assert await state_of(session_factory, "gone@example.org") == (
        SubscriberStatus.BOUNCED,
        1,
        ["bounced"],
    )

    # No mailbox configured: one clear line, exit 1.
    unset = await paperboy_bounces({k: v for k, v in env.items() if k != "PAPERBOY_BOUNCE_MAILBOX"})
    assert unset.returncode == 1
    assert "PAPERBOY_BOUNCE_MAILBOX is not set" in unset.stderr
    assert "Traceback" not in unset.stderr


async def test_hard_bounces_count_toward_the_limit_once_per_digest(
    session_factory: Sessions, settings: Settings, sample_page: Path, tmp_path: Path
) -> None:
    bounces = tmp_path / "bounces"
    config = bounce_settings(settings, bounce_limit=2, bounce_mailbox=f"maildir://{bounces}")
    sent = await send_digests(session_factory, config, sample_page, ["reader@example.org"])
    digest_one = sent["reader@example.org"]
    digest_two = await earlier_digest(session_factory, digest_one)
    # Two different reports of the same failure (a relay and the final server, say).
    drop_into(
        bounces,
        bounce_for("dsn-postfix-user-unknown.eml", digest_one, report_id="one@relay.example"),
        bounce_for("dsn-postfix-user-unknown.eml", digest_one, report_id="two@mx.example"),
    )
    report = await read_bounce_mailbox(session_factory=session_factory, settings=config)
    assert (report.read, report.events.hard_bounces, report.events.suppressed) == (2, 2, 0)
    status, count, _ = await state_of(session_factory, "reader@example.org")
    assert (status, count) == (SubscriberStatus.ACTIVE, 1)
    actions = [event.action for event in await events_of(session_factory)]
    assert actions == ["bounce counted", "none: digest already bounced"]

    drop_into(bounces, bounce_for("dsn-postfix-user-unknown.eml", digest_two))
    report = await read_bounce_mailbox(session_factory=session_factory, settings=config)
    assert report.events.suppressed == 1
    assert await state_of(session_factory, "reader@example.org") == (
        SubscriberStatus.BOUNCED,
        2,
        ["bounced", "bounced"],
    )


async def test_a_forged_report_changes_nothing(
    session_factory: Sessions, settings: Settings, sample_page: Path, tmp_path: Path
) -> None:
    """Anyone can mail the bounce address: a report counts only when it carries what only our
    digest carried (a verified return path tag, or the Message-ID with the reader's id)."""
    bounces = tmp_path / "bounces"
    config = bounce_settings(settings, bounce_mailbox=f"maildir://{bounces}")
    sent = await send_digests(session_factory, config, sample_page, ["victim@example.org"])
    real = sent["victim@example.org"]
    wrong_key = tagged_return_path(RETURN_PATH, "somebody-elses-secret-0123456789", real.digest_id)
    guessed_id = f"<digest.{real.digest_id}.000000000000@{DOMAIN}>"
    forged = bounce_for(
        "dsn-postfix-user-unknown.eml",
        replace(real, envelope_sender=wrong_key, message_id=guessed_id),
    )
    # Naming the reader's address is not enough either.
    complaint = bounce_for(
        "arf-abuse.eml", replace(real, envelope_sender=RETURN_PATH, message_id="<x@example.net>")
    )
    drop_into(bounces, forged, complaint)
    report = await read_bounce_mailbox(session_factory=session_factory, settings=config)
    assert (report.read, report.events.unmatched, report.events.recorded) == (2, 2, 0)
    assert await state_of(session_factory, "victim@example.org") == (
        SubscriberStatus.ACTIVE,
        0,
        ["sent"],
    )
    events = await events_of(session_factory)
    assert [(e.subscriber_id, e.digest_id, e.action) for e in events] == [
        (None, None, "unmatched"),
        (None, None, "unmatched"),
    ]


async def test_a_message_read_but_not_marked_is_only_marked_next_time(
    session_factory: Sessions, settings: Settings, sample_page: Path, tmp_path: Path
) -> None:
    """A crash between the commit and the move to cur/ leaves the message in new/: the next
    run knows it and only moves it."""
    bounces = tmp_path / "bounces"
    config = bounce_settings(settings, bounce_limit=5, bounce_mailbox=f"maildir://{bounces}")
    sent = await send_digests(session_factory, config, sample_page, ["reader@example.org"])
    [key] = drop_into(
        bounces, bounce_for("dsn-postfix-user-unknown.eml", sent["reader@example.org"])
    )
    await read_bounce_mailbox(session_factory=session_factory, settings=config)
    [name] = os.listdir(bounces / "cur")
    os.replace(bounces / "cur" / name, bounces / "new" / key)  # as if the move never happened
    report = await read_bounce_mailbox(session_factory=session_factory, settings=config)
    assert (report.read, report.already_read, report.events.recorded) == (0, 1, 0)
    assert maildir_files(bounces)[0] == []
    assert (await state_of(session_factory, "reader@example.org"))[1] == 1


async def test_a_broken_or_huge_message_is_left_unread_with_the_reason(
    session_factory: Sessions, settings: Settings, tmp_path: Path
) -> None:
    bounces = tmp_path / "bounces"
    config = bounce_settings(settings, bounce_mailbox=f"maildir://{bounces}")
    broken = (Path(__file__).parents[1] / "data" / "bounces" / "dsn-broken.eml").read_bytes()
    huge = b"Subject: x\n\n" + b"x" * (MAX_MESSAGE_BYTES + 1)
    drop_into(bounces, broken, huge)
    report = await read_bounce_mailbox(session_factory=session_factory, settings=config)
    assert report.unreadable == 2
    assert any("delivery-status part without fields" in p for p in report.problems)
    assert any("too large to be a report" in p for p in report.problems)
    assert len(maildir_files(bounces)[0]) == 2  # still unread, for a person to look at
    async with session_factory() as session:
        outcomes = sorted((await session.scalars(select(MailboxMessage.outcome))).all())
    assert outcomes == ["too_large", "unreadable"]
    # Reported once: the next run knows them.
    again = await read_bounce_mailbox(session_factory=session_factory, settings=config)
    assert (again.unreadable, again.already_read) == (0, 2)


async def test_a_mailbox_that_cannot_be_read_is_one_clear_error(
    session_factory: Sessions, settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(MailboxError, match="PAPERBOY_BOUNCE_MAILBOX is not set"):
        await read_bounce_mailbox(session_factory=session_factory, settings=settings)
    missing = bounce_settings(settings, bounce_mailbox=f"maildir://{tmp_path / 'nowhere'}")
    with pytest.raises(MailboxError, match="is not a Maildir"):
        await read_bounce_mailbox(session_factory=session_factory, settings=missing)
    refused = bounce_settings(
        settings, bounce_mailbox="imaps://paperboy:s3cret-password@127.0.0.1:1/INBOX"
    )
    with pytest.raises(MailboxError, match="cannot connect") as failure:
        await read_bounce_mailbox(session_factory=session_factory, settings=refused)
    assert "s3cret-password" not in str(failure.value)


async def test_the_scheduler_reads_the_bounce_mailbox_only_when_there_is_one(
    session_factory: Sessions, settings: Settings, tmp_path: Path
) -> None:
    assert "bounces" not in {
        job.id
        for job in build_scheduler(session_factory=session_factory, settings=settings).get_jobs()
    }
    configured = settings.model_copy(
        update={"bounce_mailbox": f"maildir://{tmp_path}", "bounce_poll_seconds": 120}
    )
    scheduler = build_scheduler(session_factory=session_factory, settings=configured)
    scheduler.start(paused=True)
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
    finally:
        scheduler.shutdown(wait=False)
    trigger = jobs["bounces"].trigger
    assert isinstance(trigger, IntervalTrigger)
    assert trigger.interval.total_seconds() == 120
    assert jobs["bounces"].max_instances == 1


def test_bounce_settings_are_checked_at_start() -> None:
    from tests.conftest import isolated_settings

    with pytest.raises(ValueError, match="PAPERBOY_BOUNCE_MAILBOX must start with"):
        isolated_settings(bounce_mailbox="imap://user:pass@host/INBOX")
    with pytest.raises(ValueError, match="PAPERBOY_RETURN_PATH must be a bare address"):
        isolated_settings(return_path="Bounces <bounces@example.org>")
    assert isolated_settings(return_path="bounces@example.org").return_path == "bounces@example.org"


async def test_scheduler_run_bounces_reports_an_unreadable_mailbox_without_a_traceback(
    session_factory: Sessions, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from app.scheduler import run_job_now

    missing = settings.model_copy(update={"bounce_mailbox": f"maildir://{tmp_path / 'gone'}"})
    with caplog.at_level("ERROR", logger="paperboy.scheduler"):
        outcome = await run_job_now("bounces", session_factory=session_factory, settings=missing)
    assert not outcome.ok and outcome.report is None
    [record] = caplog.records
    assert "is not a Maildir" in record.getMessage() and record.exc_info is None
    drop_into(tmp_path / "bounces", b"Subject: hello\n\nnot a report\n")
    working = settings.model_copy(update={"bounce_mailbox": f"maildir://{tmp_path / 'bounces'}"})
    assert (await run_job_now("bounces", session_factory=session_factory, settings=working)).ok
