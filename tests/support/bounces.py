"""Digests really sent, and the bounces that come back for them: subscribers get a digest each
through the in-process SMTP sink (with a bounce return path configured), and a recorded report
from tests/data/bounces is rewritten to name one of those digests (its envelope sender, its
Message-ID, its recipient) as a remote mail system would have written it."""

from __future__ import annotations

import mailbox
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.jobs import compose_job, ingest_job, send_job
from app.models import Digest, Paper, Subscriber
from app.subscribers.rules import Preferences, add_active_subscriber
from tests.support.smtp_sink import smtp_sink

Sessions = async_sessionmaker[AsyncSession]
BOUNCES = Path(__file__).resolve().parents[1] / "data" / "bounces"
RETURN_PATH = "bounces@papers.example.org"
MAIL_FROM = "Paperboy <digest@papers.example.org>"
SECRET_KEY = "bounce-test-secret-key-0123456789"
# What the recorded reports name, to be replaced by what a digest of the test carried.
FIXTURE_SENDER = "bounces+12-abcdefghijklm@papers.example.org"
FIXTURE_MESSAGE_ID = "<digest.12.0123456789ab@papers.example.org>"
FIXTURE_RECIPIENTS = (
    "gone@example.net",
    "slow@example.com",
    "reader@gmail.example",
    "annoyed@example.com",
)
# A day no time zone has finished yet, whenever the tests run.
DAY = datetime.now(UTC).date() + timedelta(days=1)


def bounce_settings(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(
        update={
            "mail_from": MAIL_FROM,
            "return_path": RETURN_PATH,
            "secret_key": SECRET_KEY,
            **changes,
        }
    )


@dataclass(frozen=True, slots=True)
class SentDigest:
    digest_id: int
    subscriber_id: int
    email: str
    envelope_sender: str  # MAIL FROM as the SMTP server received it
    message_id: str


async def send_digests(
    sessions: Sessions,
    settings: Settings,
    sample_page: Path,
    addresses: list[str],
    *,
    on_date: date = DAY,
) -> dict[str, SentDigest]:
    """Compose a digest dated `on_date` for each address (subscribing it first) and send them
    through a real SMTP server; what each message carried, by address."""
    async with sessions() as session:
        if not await session.scalar(select(Paper.id).limit(1)):
            await ingest_job(str(sample_page), session_factory=sessions, settings=settings)
        for address in addresses:
            await add_active_subscriber(
                address, Preferences(["mixture of experts"], digest_size=3), session=session
            )
        await session.commit()
    report = await compose_job(session_factory=sessions, settings=settings, on_date=on_date)
    assert report.queued == len(addresses), report
    with smtp_sink() as (sink, port):
        sending = settings.model_copy(update={"mail_url": f"smtp://127.0.0.1:{port}"})
        sent = await send_job(session_factory=sessions, settings=sending)
    assert sent.sent == len(addresses), sent
    async with sessions() as session:
        rows = await session.execute(
            select(Digest.id, Subscriber.id, Subscriber.email, Digest.message_id)
            .join(Subscriber, Digest.subscriber_id == Subscriber.id)
            .where(Digest.digest_date == on_date, Digest.message_id.is_not(None))
        )
        return {
            email: SentDigest(
                digest_id, subscriber_id, email, sink.envelope_senders[email], str(message_id)
            )
            for digest_id, subscriber_id, email, message_id in rows
            if email in addresses
        }


def bounce_for(name: str, digest: SentDigest, *, report_id: str | None = None) -> bytes:
    """The recorded report `name`, about `digest`. `report_id` gives the report a Message-ID
    of its own (a second, different report about the same digest)."""
    text = (BOUNCES / name).read_text()
    text = text.replace(FIXTURE_SENDER, digest.envelope_sender)
    text = text.replace(FIXTURE_MESSAGE_ID, digest.message_id)
    for recipient in FIXTURE_RECIPIENTS:
        text = text.replace(recipient, digest.email)
    if report_id is not None:
        head, _, body = text.partition("\n\n")
        lines = [line for line in head.split("\n") if not line.lower().startswith("message-id:")]
        text = "\n".join([*lines, f"Message-ID: <{report_id}>"]) + "\n\n" + body
    return text.encode()


def maildir_at(path: Path) -> mailbox.Maildir:
    return mailbox.Maildir(path, create=True)


def drop_into(path: Path, *messages: bytes) -> list[str]:
    """Deliver messages into the Maildir at `path` as a mail server would (new/); their keys."""
    box = maildir_at(path)
    return [box.add(message) for message in messages]
