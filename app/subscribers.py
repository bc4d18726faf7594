"""Subscriber records and their transitions. For now: validating what a subscriber asks for
(address, topics, timezone, hour, size, weight) and adding operator-created subscribers who are
active at once; signup, confirmation, preferences and unsubscribe build on the same checks."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Subscriber, SubscriberStatus, utcnow

MAX_TOPICS = 20
MAX_TOPIC_CHARS = 100


class SubscriberError(ValueError):
    """What the subscriber asked for is not acceptable; the message says why."""


@dataclass(slots=True)
class Preferences:
    topics: list[str]
    timezone: str = "UTC"
    send_hour: int = 7
    digest_size: int = 10
    trending_weight: float = 0.3


def normalise_email(address: str) -> str:
    try:
        return validate_email(address.strip(), check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise SubscriberError(f"invalid email address: {error}") from error


def validate_preferences(preferences: Preferences) -> Preferences:
    topics = list(dict.fromkeys(" ".join(t.split()) for t in preferences.topics if t.strip()))
    if len(topics) > MAX_TOPICS:
        raise SubscriberError(f"at most {MAX_TOPICS} topics")
    for topic in topics:
        if len(topic) > MAX_TOPIC_CHARS or not topic.isprintable():
            raise SubscriberError(f"topic too long or unprintable: {topic[:40]!r}")
    if preferences.timezone not in available_timezones():
        try:
            ZoneInfo(preferences.timezone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise SubscriberError(f"unknown timezone {preferences.timezone!r}") from error
    if not 0 <= preferences.send_hour <= 23:
        raise SubscriberError("send hour must be between 0 and 23")
    if not 1 <= preferences.digest_size <= 50:
        raise SubscriberError("digest size must be between 1 and 50")
    if not 0.0 <= preferences.trending_weight <= 1.0:
        raise SubscriberError("trending weight must be between 0 and 1")
    return Preferences(
        topics=topics,
        timezone=preferences.timezone,
        send_hour=preferences.send_hour,
        digest_size=preferences.digest_size,
        trending_weight=preferences.trending_weight,
    )


async def add_active_subscriber(
    email: str, preferences: Preferences, *, session: AsyncSession
) -> Subscriber:
    """Create (or reactivate and update) a subscriber who needs no confirmation: for operators
    and tests. The address is unique whatever its case."""
    address = normalise_email(email)
    checked = validate_preferences(preferences)
    subscriber = (
        await session.execute(
            select(Subscriber).where(func.lower(Subscriber.email) == address.lower())
        )
    ).scalar_one_or_none()
    if subscriber is None:
        subscriber = Subscriber(email=address)
        session.add(subscriber)
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.topics = checked.topics
    subscriber.timezone = checked.timezone
    subscriber.send_hour = checked.send_hour
    subscriber.digest_size = checked.digest_size
    subscriber.trending_weight = checked.trending_weight
    subscriber.confirmed_at = subscriber.confirmed_at or utcnow()
    await session.flush()
    return subscriber


async def list_subscribers(
    *, session: AsyncSession, status: SubscriberStatus | None = None, limit: int = 1000
) -> list[Subscriber]:
    query = select(Subscriber).order_by(Subscriber.id).limit(limit)
    if status is not None:
        query = query.where(Subscriber.status == status)
    return list((await session.execute(query)).scalars())
