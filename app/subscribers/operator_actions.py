"""What an operator does to subscribers through the admin API: search and count the list, create
one, change one (preferences, status, links) and erase one with every digest made for them. The
rules themselves (validation, status transitions) are `app.subscribers.rules`'; functions here
take a session and never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Digest, DigestFrequency, Subscriber, SubscriberStatus
from app.subscribers.rules import (
    Preferences,
    SubscriberError,
    claim_address,
    normalise_email,
    revoke_links,
    set_status,
    update_preferences,
    validate_preferences,
)


class SubscriberExists(SubscriberError):
    """Creating a subscriber whose address is already on the list."""


@dataclass(slots=True)
class SubscriberChanges:
    """An operator's change to a subscriber; None leaves a field as it is."""

    topics: list[str] | None = None
    timezone: str | None = None
    send_hour: int | None = None
    digest_size: int | None = None
    trending_weight: float | None = None
    frequency: DigestFrequency | None = None
    weekday: int | None = None
    status: SubscriberStatus | None = None
    revoke_links: bool = False


async def search_subscribers(
    *,
    session: AsyncSession,
    after_id: int,
    limit: int,
    status: SubscriberStatus | None = None,
    topic: str | None = None,
    address_like: str | None = None,
) -> list[Subscriber]:
    """Subscribers after `after_id` in id order, at most `limit`: with this status, with this
    topic (any case), whose lower-case address matches the LIKE pattern `address_like`."""
    query = select(Subscriber)
    if status is not None:
        query = query.where(Subscriber.status == status)
    if address_like:
        query = query.where(func.lower(Subscriber.email).like(address_like, escape="\\"))
    found: list[Subscriber] = []
    # Topics live in a JSON list (JSONB on Postgres, JSON on SQLite): filter them here, page by
    # page, so both databases answer the same.
    batch_after = after_id
    while len(found) < limit:
        batch = (
            await session.scalars(
                query.where(Subscriber.id > batch_after).order_by(Subscriber.id).limit(limit * 4)
            )
        ).all()
        if not batch:
            break
        for subscriber in batch:
            if topic is None or topic.lower() in (t.lower() for t in subscriber.topics):
                found.append(subscriber)
                if len(found) == limit:
                    break
        batch_after = batch[-1].id
    return found


async def create_subscriber(
    email: str,
    preferences: Preferences,
    status: SubscriberStatus,
    *,
    session: AsyncSession,
    now: datetime,
) -> Subscriber:
    """A new subscriber, active (confirmed now) or pending; `SubscriberExists` when the address
    is already on the list, whatever its case."""
    address = normalise_email(email)
    checked = validate_preferences(preferences)
    subscriber, created = await claim_address(address, session=session)
    if not created:
        raise SubscriberExists("a subscriber with this address exists")
    update_preferences(subscriber, checked)
    set_status(subscriber, status, now=now)
    await session.flush()
    return subscriber


def change_subscriber(subscriber: Subscriber, changes: SubscriberChanges, *, now: datetime) -> None:
    """Apply an operator's change: preferences are validated as a whole (`SubscriberError`
    says why one is refused), then the status, then the links."""
    update_preferences(
        subscriber,
        Preferences(
            changes.topics if changes.topics is not None else subscriber.topics,
            changes.timezone or subscriber.timezone,
            changes.send_hour if changes.send_hour is not None else subscriber.send_hour,
            changes.digest_size if changes.digest_size is not None else subscriber.digest_size,
            changes.trending_weight
            if changes.trending_weight is not None
            else subscriber.trending_weight,
            changes.frequency or subscriber.frequency,
            changes.weekday if changes.weekday is not None else subscriber.weekday,
        ),
    )
    if changes.status is not None:
        set_status(subscriber, changes.status, now=now)
    if changes.revoke_links:
        revoke_links(subscriber)


async def erase_subscriber(subscriber: Subscriber, *, session: AsyncSession) -> None:
    """Erase the subscriber and every digest made for them (a GDPR erasure), at once."""
    await session.execute(delete(Digest).where(Digest.subscriber_id == subscriber.id))
    await session.delete(subscriber)
    await session.flush()


async def count_by_status(*, session: AsyncSession) -> dict[SubscriberStatus, int]:
    """How many subscribers are in each status (every status named, zero included)."""
    counted = dict(
        (
            await session.execute(
                select(Subscriber.status, func.count()).group_by(Subscriber.status)
            )
        ).all()
    )
    return {status: int(counted.get(status, 0)) for status in SubscriberStatus}


async def find_subscriber(subscriber_id: int, *, session: AsyncSession) -> Subscriber | None:
    return await session.get(Subscriber, subscriber_id)
