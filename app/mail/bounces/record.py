"""Applying bounce and complaint reports, once each: every `ReportedEvent` is matched to the
digest it is about and stored in `delivery_event` under its key (a replayed webhook or a
re-read mailbox message finds its key taken and changes nothing), then applied:

- a hard bounce marks the digest bounced and counts toward `PAPERBOY_BOUNCE_LIMIT` through the
  same bookkeeping as a 5xx at sending (`app.mail.queue.apply_changes`), once per digest;
- a complaint unsubscribes the reader at once (the event records why);
- a refusal about us (blocked), or a soft bounce that gave up, marks a sent digest failed and
  leaves the subscriber alone; a delay is only recorded.

A report is matched by the tagged return path or the Message-ID it carries
(`app.mail.return_path`, both unforgeable); a provider's signed report may also be matched by
the recipient's address alone. A report that names nothing of ours is stored unmatched, with
no effect. Functions take a session and never commit."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from app.config import Settings
from app.db import dialect_insert
from app.mail.bounces.reports import ReportedEvent
from app.mail.queue import DigestChanges, apply_changes
from app.mail.return_path import digest_id_from_return_path, read_digest_message_id
from app.metrics import DELIVERY_EVENTS
from app.models import (
    DeliveryEvent,
    DeliveryEventKind,
    Digest,
    DigestStatus,
    Subscriber,
    SubscriberStatus,
)
from app.subscribers.rules import find_by_email, unsubscribe

logger = logging.getLogger("paperboy.bounces")
CLOCK_SKEW = timedelta(minutes=10)
# Subscribers whose hard bounces count, and whom a complaint unsubscribes; the others already
# receive nothing.
RECEIVING = (SubscriberStatus.PENDING, SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED)


@dataclass(slots=True)
class RecordedEvents:
    hard_bounces: int = 0
    soft_bounces: int = 0
    blocked: int = 0
    complaints: int = 0
    unmatched: int = 0  # stored, but naming no digest or subscriber of ours
    duplicates: int = 0  # seen before: nothing changed
    suppressed: int = 0
    unsubscribed: int = 0

    @property
    def recorded(self) -> int:
        return self.hard_bounces + self.soft_bounces + self.blocked + self.complaints

    def add(self, other: RecordedEvents) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


COUNTERS = {
    DeliveryEventKind.HARD_BOUNCE: "hard_bounces",
    DeliveryEventKind.SOFT_BOUNCE: "soft_bounces",
    DeliveryEventKind.BLOCKED: "blocked",
    DeliveryEventKind.COMPLAINT: "complaints",
}


async def record_events(
    events: Sequence[ReportedEvent], *, session: AsyncSession, settings: Settings, now: datetime
) -> RecordedEvents:
    """Store and apply each event not seen before."""
    result = RecordedEvents()
    for event in events:
        subscriber, digest = await _match(event, session=session, settings=settings)
        event_id = await _store(event, subscriber, digest, session=session, now=now)
        if event_id is None:
            result.duplicates += 1
            continue
        DELIVERY_EVENTS.labels(event.kind.value, event.source).inc()
        if subscriber is None:
            result.unmatched += 1
            action = "unmatched"
        else:
            setattr(result, COUNTERS[event.kind], getattr(result, COUNTERS[event.kind]) + 1)
            action = await _apply(
                event, subscriber, digest, session=session, settings=settings, now=now
            )
            result.suppressed += action == "suppressed"
            result.unsubscribed += action == "unsubscribed"
            logger.info(
                "%s from %s for subscriber %d (digest %s): %s",
                event.kind.value.replace("_", " "),
                event.source,
                subscriber.id,
                digest.id if digest else "unknown",
                action,
            )
        await session.execute(
            update(DeliveryEvent).where(DeliveryEvent.id == event_id).values(action=action)
        )
    return result


async def _match(
    event: ReportedEvent, *, session: AsyncSession, settings: Settings
) -> tuple[Subscriber | None, Digest | None]:
    """The subscriber and digest the event is about (either may be unknown)."""
    if settings.return_path is not None:
        for address in event.envelope_addresses:
            digest_id = digest_id_from_return_path(
                address, return_path=settings.return_path, secret_key=settings.secret_key
            )
            if digest_id is not None and (digest := await _digest(digest_id, session)):
                return digest.subscriber, digest
    for message_id in event.message_ids:
        named = read_digest_message_id(message_id, domain=settings.sender_domain)
        if named is None:
            continue
        digest = await _digest(named.digest_id, session)
        if digest is not None and digest.subscriber.public_id.hex.startswith(
            named.public_id_prefix
        ):
            return digest.subscriber, digest
    if event.address_is_trusted and event.recipient:
        subscriber = await find_by_email(event.recipient, session=session)
        if subscriber is not None:
            return subscriber, await _latest_sent_digest(subscriber, event, session)
    return None, None


async def _digest(digest_id: int, session: AsyncSession) -> Digest | None:
    return await session.get(Digest, digest_id, options=[joinedload(Digest.subscriber)])


async def _latest_sent_digest(
    subscriber: Subscriber, event: ReportedEvent, session: AsyncSession
) -> Digest | None:
    """The digest a report that names only the address is most likely about: the last one
    sent to the subscriber before the report (give or take the two clocks' difference)."""
    query = (
        select(Digest)
        .where(Digest.subscriber_id == subscriber.id, Digest.sent_at.is_not(None))
        .order_by(Digest.sent_at.desc())
        .limit(1)
    )
    if event.occurred_at is not None:
        query = query.where(Digest.sent_at <= event.occurred_at + CLOCK_SKEW)
    return (await session.execute(query)).scalar_one_or_none()


async def _store(
    event: ReportedEvent,
    subscriber: Subscriber | None,
    digest: Digest | None,
    *,
    session: AsyncSession,
    now: datetime,
) -> int | None:
    """Insert the event under its key; None when the key is taken (seen before)."""
    insert = dialect_insert(session)
    statement = (
        insert(DeliveryEvent)
        .values(
            event_key=event.key,
            source=event.source,
            kind=event.kind,
            subscriber_id=subscriber.id if subscriber else None,
            digest_id=digest.id if digest else None,
            recipient=(event.recipient or "")[:320] or None,
            detail=event.detail,
            action="",
            occurred_at=event.occurred_at,
            recorded_at=now,
        )
        .on_conflict_do_nothing(index_elements=["event_key"])
        .returning(DeliveryEvent.id)
    )
    inserted: int | None = (await session.execute(statement)).scalar_one_or_none()
    return inserted


async def _apply(
    event: ReportedEvent,
    subscriber: Subscriber,
    digest: Digest | None,
    *,
    session: AsyncSession,
    settings: Settings,
    now: datetime,
) -> str:
    """What the event does; returns what it did, as the event records it."""
    if event.kind is DeliveryEventKind.COMPLAINT:
        if subscriber.status not in RECEIVING:
            return f"none: already {subscriber.status.value}"
        unsubscribe(subscriber, now=now)
        await session.flush()
        return "unsubscribed"
    if event.kind is DeliveryEventKind.HARD_BOUNCE:
        if digest is not None and not await _mark_digest(
            digest.id, DigestStatus.BOUNCED, event.detail, session=session
        ):
            return "none: digest already bounced"
        if subscriber.status not in RECEIVING:
            return f"none: already {subscriber.status.value}"
        # The subscriber's side of a synchronous 5xx: one more bounce, suppressed at the limit.
        changes = DigestChanges(bounced_subscribers=[subscriber.id])
        counts = await apply_changes(
            changes, session=session, now=now, bounce_limit=settings.bounce_limit
        )
        await session.refresh(subscriber, ["status", "bounce_count"])
        return "suppressed" if counts.suppressed else "bounce counted"
    if (
        event.undelivered
        and digest is not None
        and await _mark_digest(
            digest.id, DigestStatus.FAILED, event.detail, session=session, only_if_sent=True
        )
    ):
        return "digest failed"
    return "recorded"


async def _mark_digest(
    digest_id: int,
    status: DigestStatus,
    detail: str,
    *,
    session: AsyncSession,
    only_if_sent: bool = False,
) -> bool:
    """Set a digest's outcome after the fact (never twice); whether it changed."""
    condition = Digest.status == DigestStatus.SENT if only_if_sent else Digest.status != status
    changed = await session.execute(
        update(Digest)
        .where(Digest.id == digest_id, condition)
        .values(status=status, last_error=detail, lease_until=None, next_attempt_at=None)
        .returning(Digest.id)
        .execution_options(synchronize_session=False)
    )
    return changed.first() is not None


async def search_delivery_events(
    *,
    session: AsyncSession,
    after_id: int,
    limit: int,
    subscriber_id: int | None = None,
    kind: DeliveryEventKind | None = None,
) -> Sequence[DeliveryEvent]:
    """Recorded reports in the order they came, for operators (the admin API)."""
    query = select(DeliveryEvent).where(DeliveryEvent.id > after_id)
    if subscriber_id is not None:
        query = query.where(DeliveryEvent.subscriber_id == subscriber_id)
    if kind is not None:
        query = query.where(DeliveryEvent.kind == kind)
    return (await session.scalars(query.order_by(DeliveryEvent.id).limit(limit))).all()
