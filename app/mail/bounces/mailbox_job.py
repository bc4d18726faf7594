"""Reading the bounce mailbox once (`paperboy bounces`, and the scheduler every
`PAPERBOY_BOUNCE_POLL_SECONDS`): each message not read before is parsed (`reports`), its events
recorded and applied (`record`), and the message remembered in `mailbox_message` in the same
commit; only then is it marked done in the mailbox. A crash between the two leaves a message
that the next run recognises and only marks. Each message is its own transaction, so one bad
message never holds up the others; owns its sessions and commits, like the other jobs.

A message that is no report (an auto-reply) is marked read and left; one that cannot be parsed
or is too large to be a report is left unread for a person to look at, and reported."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import dialect_insert
from app.mail.bounces.mailboxes import (
    MAILBOX_FAILURES,
    MAX_MESSAGE_BYTES,
    BounceMailbox,
    MailboxError,
    StoredMessage,
    open_mailbox,
)
from app.mail.bounces.record import RecordedEvents, record_events
from app.mail.bounces.reports import ReportedEvent, UnreadableReport, read_report
from app.models import MailboxMessage

logger = logging.getLogger("paperboy.bounces")
KEYS_AT_ONCE = 500
# What became of a message, as `mailbox_message.outcome` records it, and whether the mailbox
# marks it done (read; POP3 deletes only reports).
REPORT, NOT_A_REPORT, UNREADABLE, TOO_LARGE = "report", "not_a_report", "unreadable", "too_large"
MARKED = (REPORT, NOT_A_REPORT)


@dataclass(slots=True)
class BounceReport:
    mailbox: str = ""
    read: int = 0  # messages read this run
    not_reports: int = 0
    unreadable: int = 0  # left unread in the mailbox, with the reason in mailbox_message
    already_read: int = 0  # read by an earlier run that could not mark them
    events: RecordedEvents = field(default_factory=RecordedEvents)
    problems: list[str] = field(default_factory=list)  # messages left unread, and why
    seconds: float = 0.0


async def read_bounce_mailbox(
    *, session_factory: async_sessionmaker[AsyncSession], settings: Settings
) -> BounceReport:
    """Process every message of `PAPERBOY_BOUNCE_MAILBOX` not read before. Raises MailboxError
    when the mailbox is not set, cannot be opened, or breaks off (what was done stays done)."""
    if settings.bounce_mailbox is None:
        raise MailboxError("PAPERBOY_BOUNCE_MAILBOX is not set: there is no bounce mailbox to read")
    started = time.perf_counter()
    mailbox = await asyncio.to_thread(
        open_mailbox,
        settings.bounce_mailbox,
        ca_file=settings.bounce_mailbox_ca_file,
        timeout=settings.smtp_timeout,
    )
    report = BounceReport(mailbox=mailbox.name)
    try:
        stored = await asyncio.to_thread(mailbox.unread)
        async with session_factory() as session:
            outcomes = await _earlier_outcomes(
                mailbox.name, [message.key for message in stored], session=session
            )
        for message in stored:
            earlier = outcomes.get(message.key)
            if earlier is not None:
                report.already_read += 1
                if earlier in MARKED:
                    await _mark(mailbox, message.key, earlier)
                continue
            await _process(mailbox, message, report, session_factory, settings)
    except MAILBOX_FAILURES as error:
        raise MailboxError(f"{mailbox.name}: {error}") from error
    finally:
        await asyncio.to_thread(mailbox.close)
        report.seconds = time.perf_counter() - started
    return report


async def _process(
    mailbox: BounceMailbox,
    message: StoredMessage,
    report: BounceReport,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    events: Sequence[ReportedEvent] = ()
    detail = None
    if message.size is not None and message.size > MAX_MESSAGE_BYTES:
        outcome, detail = TOO_LARGE, f"{message.size} bytes: too large to be a report"
    else:
        try:
            raw = await asyncio.to_thread(mailbox.read, message.key)
        except FileNotFoundError:  # another process took it meanwhile
            return
        report.read += 1
        try:
            parsed = read_report(raw)
        except UnreadableReport as error:
            outcome, detail = UNREADABLE, str(error)
        else:
            events = parsed.events
            outcome = REPORT if parsed.kind != "other" else NOT_A_REPORT
            detail = parsed.reason or None
    async with session_factory() as session:
        recorded = await record_events(
            events, session=session, settings=settings, now=datetime.now(UTC)
        )
        await _remember(mailbox.name, message.key, outcome, detail, session=session)
        await session.commit()
    report.events.add(recorded)
    if outcome == NOT_A_REPORT:
        report.not_reports += 1
    elif outcome in (UNREADABLE, TOO_LARGE):
        report.unreadable += 1
        report.problems.append(f"message {message.key}: {detail}")
        logger.warning("bounce mailbox message %s left unread: %s", message.key, detail)
    await _mark(mailbox, message.key, outcome)


async def _mark(mailbox: BounceMailbox, key: str, outcome: str) -> None:
    if outcome in MARKED:
        await asyncio.to_thread(mailbox.done, key, remove=outcome == REPORT)


async def _earlier_outcomes(
    mailbox: str, keys: Sequence[str], *, session: AsyncSession
) -> dict[str, str]:
    outcomes: dict[str, str] = {}
    for first in range(0, len(keys), KEYS_AT_ONCE):
        rows = await session.execute(
            select(MailboxMessage.message_key, MailboxMessage.outcome).where(
                MailboxMessage.mailbox == mailbox,
                MailboxMessage.message_key.in_(keys[first : first + KEYS_AT_ONCE]),
            )
        )
        outcomes.update({key: outcome for key, outcome in rows})
    return outcomes


async def _remember(
    mailbox: str, key: str, outcome: str, detail: str | None, *, session: AsyncSession
) -> None:
    insert = dialect_insert(session)
    await session.execute(
        insert(MailboxMessage)
        .values(
            mailbox=mailbox[:255],
            message_key=key[:255],
            outcome=outcome,
            detail=detail,
            processed_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing(index_elements=["mailbox", "message_key"])
    )
