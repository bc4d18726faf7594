"""Subscriber records and their transitions: validating what a subscriber asks for (address, topics,
timezone, hour, size, weight, daily or weekly on a weekday) and what a frequency means for
composing (which local days get a digest, how far back it looks, how many papers); signup with
double opt-in (one signup mail per address per window, the same outcome whatever the address's
state, so nothing can be learnt from it); confirmation with recorded consent; preferences, pause
and resume; unsubscribe and resubscribe; resolving a link token to its subscriber (a bumped token
version revokes old links). Every path that may create a subscriber claims the address first
(`claim_address`), so that requests for one address at the same moment run one after another
instead of racing for the unique index. Functions take a session and never commit."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import dialect_insert, is_postgres
from app.models import (
    DEFAULT_TIMEZONE,
    DIGEST_SIZE,
    SEND_HOUR,
    TRENDING_WEIGHT,
    WEEKDAY,
    DigestFrequency,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from app.subscribers.localtime import as_utc
from app.subscribers.tokens import Purpose, TokenError, read_token

MAX_TOPICS = 20
MAX_TOPIC_CHARS = 100
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# A weekly digest covers the week since the previous one, so it carries more papers than a day's:
# twice the reader's size, but never more than the largest daily digest.
WEEKLY_SIZE_FACTOR = 2
WEEKLY_WINDOW = timedelta(days=7)


class SubscriberError(ValueError):
    """What the subscriber asked for is not acceptable; the message says why."""


@dataclass(slots=True)
class Preferences:
    topics: list[str]
    timezone: str = DEFAULT_TIMEZONE
    send_hour: int = SEND_HOUR.default
    digest_size: int = DIGEST_SIZE.default
    trending_weight: float = TRENDING_WEIGHT.default
    frequency: DigestFrequency = DigestFrequency.DAILY
    weekday: int = WEEKDAY.default


def is_digest_day(frequency: DigestFrequency, weekday: int, local_date: date) -> bool:
    """Whether a reader gets a digest on this local date: every day, or their weekday only."""
    return frequency is DigestFrequency.DAILY or local_date.weekday() == weekday


def digest_size_for(frequency: DigestFrequency, digest_size: int) -> int:
    """How many papers a reader's digest may carry."""
    if frequency is DigestFrequency.WEEKLY:
        return min(digest_size * WEEKLY_SIZE_FACTOR, DIGEST_SIZE.most)
    return digest_size


def candidate_window(frequency: DigestFrequency, compose_window: timedelta) -> timedelta:
    """How far back a reader's digest looks for papers first seen since their previous one: the
    configured compose window for a daily reader, the week for a weekly one."""
    return WEEKLY_WINDOW if frequency is DigestFrequency.WEEKLY else compose_window


def frequency_phrase(frequency: DigestFrequency, weekday: int) -> str:
    """How often a reader gets a digest, in words: "daily", "weekly, on Mondays"."""
    if frequency is DigestFrequency.WEEKLY:
        return f"weekly, on {WEEKDAY_NAMES[weekday]}s"
    return "daily"


@lru_cache(maxsize=1)
def known_timezones() -> frozenset[str]:
    # Reading the zone database takes ~17 ms: once per process is enough.
    return frozenset(available_timezones())


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
    if preferences.timezone not in known_timezones():
        try:
            ZoneInfo(preferences.timezone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise SubscriberError(f"unknown timezone {preferences.timezone!r}") from error
    for name, value, bounds in (
        ("send hour", preferences.send_hour, SEND_HOUR),
        ("digest size", preferences.digest_size, DIGEST_SIZE),
        ("trending weight", preferences.trending_weight, TRENDING_WEIGHT),
    ):
        if value not in bounds:
            raise SubscriberError(f"{name} must be between {bounds.least:g} and {bounds.most:g}")
    if not isinstance(preferences.weekday, int) or preferences.weekday not in WEEKDAY:
        raise SubscriberError(f"weekday must be between {WEEKDAY.least} and {WEEKDAY.most}")
    return Preferences(
        topics=topics,
        timezone=preferences.timezone,
        send_hour=preferences.send_hour,
        digest_size=preferences.digest_size,
        trending_weight=preferences.trending_weight,
        frequency=parse_frequency(preferences.frequency),
        weekday=preferences.weekday,
    )


def parse_frequency(value: str) -> DigestFrequency:
    """A frequency as a form, a CSV cell or the CLI gives it ("daily", "Weekly ")."""
    try:
        return DigestFrequency(str(value).strip().lower())
    except ValueError as error:
        choices = " or ".join(f.value for f in DigestFrequency)
        raise SubscriberError(f"frequency must be {choices}") from error


def parse_weekday(value: str | int) -> int:
    """A weekday as 0–6 (Monday 0) or its English name or abbreviation ("Tue", "sunday")."""
    text = str(value).strip().lower()
    for number, name in enumerate(WEEKDAY_NAMES):
        if text == str(number) or (len(text) >= 3 and name.lower().startswith(text)):
            return number
    raise SubscriberError(
        f"weekday must be between {WEEKDAY.least} and {WEEKDAY.most} (Monday 0) or a day's name"
    )


async def add_active_subscriber(
    email: str, preferences: Preferences, *, session: AsyncSession
) -> Subscriber:
    """Create (or reactivate and update) a subscriber who needs no confirmation: for operators
    and tests. The address is unique whatever its case."""
    address = normalise_email(email)
    checked = validate_preferences(preferences)
    subscriber, _created = await claim_address(address, session=session)
    _apply(subscriber, checked)
    set_status(subscriber, SubscriberStatus.ACTIVE, now=utcnow())
    await session.flush()
    return subscriber


async def list_subscribers(
    *, session: AsyncSession, status: SubscriberStatus | None = None, limit: int = 1000
) -> list[Subscriber]:
    query = select(Subscriber).order_by(Subscriber.id).limit(limit)
    if status is not None:
        query = query.where(Subscriber.status == status)
    return list((await session.execute(query)).scalars())


async def find_by_email(address: str, *, session: AsyncSession) -> Subscriber | None:
    return (
        await session.execute(
            select(Subscriber).where(func.lower(Subscriber.email) == address.lower())
        )
    ).scalar_one_or_none()


async def claim_address(address: str, *, session: AsyncSession) -> tuple[Subscriber, bool]:
    """The subscriber of `address` (already normalised), made now as a pending subscriber with
    the defaults when there is none, and held by this transaction until it ends; with whether
    this call made it. Requests for one address at the same moment wait here for each other
    and each then sees what the one before did, as if they had come one after another: on
    Postgres by the row lock, on SQLite because the insert attempt takes the database's write
    lock. An insert that meets the address already there does nothing, so the unique index
    never refuses a request."""
    claim = (
        dialect_insert(session)(Subscriber)
        .values(email=address, status=SubscriberStatus.PENDING)
        .on_conflict_do_nothing(index_elements=[func.lower(Subscriber.email)])
        .returning(Subscriber.id)
    )
    created = (await session.execute(claim)).scalar_one_or_none() is not None
    query = (
        select(Subscriber)
        .where(func.lower(Subscriber.email) == address.lower())
        .execution_options(populate_existing=True)
    )
    if is_postgres(session):
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one(), created


class SignupMail(enum.StrEnum):
    """Which mail a signup request sends: a confirmation link, a note that the address is
    already subscribed (with its preferences link), or none (rate-limited, bounced, honeypot)."""

    CONFIRM = "confirm"
    ALREADY_SUBSCRIBED = "already_subscribed"
    NONE = "none"


@dataclass(slots=True)
class SignupOutcome:
    subscriber: Subscriber | None
    mail: SignupMail
    rate_limited: bool = False


async def request_signup(
    email: str,
    preferences: Preferences,
    *,
    session: AsyncSession,
    now: datetime,
    mail_interval: timedelta,
) -> SignupOutcome:
    """Record a signup request. A new or unconfirmed address becomes (or stays) pending with the
    requested preferences and gets a confirmation link; an active or paused one gets a reminder
    of its preferences link and keeps its settings; an unsubscribed one becomes pending again.
    Whatever the state, an address gets at most one signup mail per `mail_interval`
    (`rate_limited` then says so): a pending address asking again within it (to fix a topic)
    takes the new preferences, and the link already sent confirms them. Raises SubscriberError
    for a malformed address or preferences."""
    address = normalise_email(email)
    checked = validate_preferences(preferences)
    subscriber, _created = await claim_address(address, session=session)
    last_mail = subscriber.signup_mail_at
    if last_mail is not None and as_utc(last_mail) > now - mail_interval:
        if subscriber.status is SubscriberStatus.PENDING:
            _apply(subscriber, checked)
            await session.flush()
        return SignupOutcome(subscriber, SignupMail.NONE, rate_limited=True)
    subscriber.signup_mail_at = now
    if subscriber.status in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED):
        mail = SignupMail.ALREADY_SUBSCRIBED
    elif subscriber.status is SubscriberStatus.BOUNCED:
        mail = SignupMail.NONE  # the address refuses mail; an operator must lift the bounce
    else:
        subscriber.status = SubscriberStatus.PENDING
        _apply(subscriber, checked)
        mail = SignupMail.CONFIRM
    await session.flush()
    return SignupOutcome(subscriber, mail)


async def request_links(
    email: str, *, session: AsyncSession, now: datetime, mail_interval: timedelta
) -> SignupOutcome:
    """Mail a fresh link to an address that lost its own: a confirmation link while pending, the
    preferences link once subscribed; nothing for unknown, unsubscribed or bounced addresses.
    At most one mail per `mail_interval` (a request within it sends nothing). Only known
    addresses have a record, so the caller must rate-limit requests per address itself, the same
    for every address, and answer the same in every case."""
    address = normalise_email(email)
    subscriber = await find_by_email(address, session=session)
    if subscriber is None:
        return SignupOutcome(None, SignupMail.NONE)
    last_mail = subscriber.signup_mail_at
    if last_mail is not None and as_utc(last_mail) > now - mail_interval:
        return SignupOutcome(subscriber, SignupMail.NONE)
    mail = {
        SubscriberStatus.PENDING: SignupMail.CONFIRM,
        SubscriberStatus.ACTIVE: SignupMail.ALREADY_SUBSCRIBED,
        SubscriberStatus.PAUSED: SignupMail.ALREADY_SUBSCRIBED,
    }.get(subscriber.status, SignupMail.NONE)
    subscriber.signup_mail_at = now
    await session.flush()
    return SignupOutcome(subscriber, mail)


def _apply(subscriber: Subscriber, preferences: Preferences) -> None:
    subscriber.topics = preferences.topics
    subscriber.timezone = preferences.timezone
    subscriber.send_hour = preferences.send_hour
    subscriber.digest_size = preferences.digest_size
    subscriber.trending_weight = preferences.trending_weight
    subscriber.frequency = preferences.frequency
    subscriber.weekday = preferences.weekday


async def subscriber_for_token(
    secret_key: str, purpose: Purpose, token: str, *, session: AsyncSession
) -> Subscriber:
    """The subscriber a link token names; TokenError when the token is forged, expired, for
    another purpose, or revoked (its token version is no longer the subscriber's)."""
    claims = read_token(secret_key, purpose, token)
    subscriber = (
        await session.execute(select(Subscriber).where(Subscriber.public_id == claims.public_id))
    ).scalar_one_or_none()
    if subscriber is None or subscriber.token_version != claims.token_version:
        raise TokenError("This link is no longer valid.")
    return subscriber


def confirm(subscriber: Subscriber, *, now: datetime, client_ip: str | None) -> bool:
    """Activate a pending subscriber, recording consent (time and address). Returns whether
    anything changed: confirming twice is harmless."""
    if subscriber.status is not SubscriberStatus.PENDING:
        return False
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.confirmed_at = now
    subscriber.consent_ip = client_ip
    subscriber.unsubscribed_at = None
    return True


def update_preferences(
    subscriber: Subscriber, preferences: Preferences, *, paused: bool | None = None
) -> None:
    """Change what and when a subscriber receives; `paused` pauses or resumes an active or
    paused subscription (other states are left as they are)."""
    _apply(subscriber, validate_preferences(preferences))
    # A topic the reader removed is no longer muted: written again, it brings papers again.
    if subscriber.muted_topics:
        subscriber.muted_topics = [t for t in subscriber.muted_topics if t in subscriber.topics]
    if paused is not None and subscriber.status in (
        SubscriberStatus.ACTIVE,
        SubscriberStatus.PAUSED,
    ):
        subscriber.status = SubscriberStatus.PAUSED if paused else SubscriberStatus.ACTIVE


def unsubscribe(subscriber: Subscriber, *, now: datetime) -> bool:
    if subscriber.status is SubscriberStatus.UNSUBSCRIBED:
        return False
    subscriber.status = SubscriberStatus.UNSUBSCRIBED
    subscriber.unsubscribed_at = now
    return True


def resubscribe(subscriber: Subscriber, *, now: datetime) -> bool:
    """Undo an unsubscribe from the subscriber's own link (the link proves the address)."""
    if subscriber.status is not SubscriberStatus.UNSUBSCRIBED:
        return False
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.unsubscribed_at = None
    subscriber.confirmed_at = subscriber.confirmed_at or now
    return True


def set_status(subscriber: Subscriber, status: SubscriberStatus, *, now: datetime) -> bool:
    """An operator's change of status (the admin API, CSV import). Making a subscriber active
    lifts a suppression (the bounce count starts afresh); an operator's "active" counts as
    confirmed; unsubscribing records when. Returns whether the status changed."""
    changed = status is not subscriber.status
    if changed:
        subscriber.status = status
        if status is SubscriberStatus.ACTIVE:
            subscriber.bounce_count = 0
        if status is SubscriberStatus.UNSUBSCRIBED:
            subscriber.unsubscribed_at = now
    if status is SubscriberStatus.ACTIVE:
        subscriber.confirmed_at = subscriber.confirmed_at or now
    return changed


def revoke_links(subscriber: Subscriber) -> None:
    """Invalidate every link already mailed to the subscriber (their token version moves on)."""
    subscriber.token_version += 1
