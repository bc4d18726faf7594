"""The subscriber rules on a real database, called directly: what a signup or a request for new
links does in each state of an address (and what it must never reveal or change), topic and
address clean-up, confirmation with consent, pause and resume, unsubscribe and resubscribe, an
operator's status change, links that stop working once revoked, and one address created from
several sessions at the same moment."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models import Subscriber, SubscriberStatus
from app.subscribers.csv_io import import_subscribers
from app.subscribers.feedback import mute_topic, unmute_topic
from app.subscribers.rules import (
    MAX_TOPIC_CHARS,
    MAX_TOPICS,
    Preferences,
    SignupMail,
    SubscriberError,
    add_active_subscriber,
    confirm,
    normalise_email,
    request_links,
    request_signup,
    resubscribe,
    revoke_links,
    set_status,
    subscriber_for_token,
    unsubscribe,
    update_preferences,
    validate_preferences,
)
from app.subscribers.tokens import Purpose, TokenError, make_token

NOW = datetime(2026, 11, 26, 9, tzinfo=UTC)
INTERVAL = timedelta(minutes=10)
SECRET = "rules-test-secret-key-0123456789"
T = TypeVar("T")


async def signup(
    session: AsyncSession, email: str, preferences: Preferences, *, now: datetime = NOW
) -> tuple[SignupMail, bool, Subscriber | None]:
    outcome = await request_signup(
        email, preferences, session=session, now=now, mail_interval=INTERVAL
    )
    return outcome.mail, outcome.rate_limited, outcome.subscriber


def status_of(subscriber: Subscriber) -> SubscriberStatus:
    """The status now (read through a call, so that a type checker does not carry over what an
    earlier assertion said about it)."""
    return subscriber.status


async def count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Subscriber)) or 0)


def test_topics_are_cleaned_and_deduplicated_in_order() -> None:
    checked = validate_preferences(
        Preferences(["  mixture   of experts ", "", "LLM quantization", "mixture of experts", " "])
    )
    assert checked.topics == ["mixture of experts", "LLM quantization"]


@pytest.mark.parametrize(
    ("topics", "timezone", "problem"),
    [
        ([f"topic {n}" for n in range(MAX_TOPICS + 1)], "UTC", "at most"),
        (["x" * (MAX_TOPIC_CHARS + 1)], "UTC", "too long or unprintable"),
        (["bell\x07"], "UTC", "too long or unprintable"),
        (["moe"], "Mars/Olympus_Mons", "unknown timezone"),
    ],
)
def test_unacceptable_preferences_are_refused_with_the_reason(
    topics: list[str], timezone: str, problem: str
) -> None:
    with pytest.raises(SubscriberError, match=problem):
        validate_preferences(Preferences(topics, timezone=timezone))


def test_addresses_are_validated_and_their_domain_lower_cased() -> None:
    assert normalise_email("  Ada.Lovelace@Example.ORG ") == "Ada.Lovelace@example.org"
    for bad in ("not-an-address", "ada@", "ada@@example.org", "a b@example.org"):
        with pytest.raises(SubscriberError, match="invalid email address"):
            normalise_email(bad)


async def test_a_new_address_becomes_pending_with_what_it_asked_for(session: AsyncSession) -> None:
    asked = Preferences(["moe"], timezone="Asia/Tokyo", send_hour=6, digest_size=4)
    mail, limited, subscriber = await signup(session, "new@example.org", asked)
    assert (mail, limited) == (SignupMail.CONFIRM, False)
    assert subscriber is not None and subscriber.status is SubscriberStatus.PENDING
    assert (subscriber.topics, subscriber.timezone, subscriber.send_hour) == (
        ["moe"],
        "Asia/Tokyo",
        6,
    )
    assert subscriber.confirmed_at is None and subscriber.signup_mail_at == NOW


async def test_one_signup_mail_per_address_per_interval_whatever_its_case(
    session: AsyncSession,
) -> None:
    await signup(session, "ada@example.org", Preferences(["moe"]))
    mail, limited, _ = await signup(
        session, "ada@EXAMPLE.org", Preferences(["moe"]), now=NOW + INTERVAL / 2
    )
    assert (mail, limited) == (SignupMail.NONE, True)
    mail, limited, _ = await signup(
        session, "ada@example.org", Preferences(["moe"]), now=NOW + INTERVAL * 2
    )
    assert (mail, limited) == (SignupMail.CONFIRM, False)
    assert await count(session) == 1


async def test_signing_up_again_never_changes_a_subscription_in_place(
    session: AsyncSession,
) -> None:
    active = await add_active_subscriber("on@example.org", Preferences(["moe"]), session=session)
    paused = await add_active_subscriber("off@example.org", Preferences(["moe"]), session=session)
    update_preferences(paused, Preferences(["moe"]), paused=True)
    bounced = await add_active_subscriber("gone@example.org", Preferences(["x"]), session=session)
    bounced.status = SubscriberStatus.BOUNCED
    other = Preferences(["something else"], send_hour=3)
    for reader, expected in (
        (active, SignupMail.ALREADY_SUBSCRIBED),
        (paused, SignupMail.ALREADY_SUBSCRIBED),
        (bounced, SignupMail.NONE),  # the address refuses mail: no mail, no change
    ):
        before = (reader.status, list(reader.topics), reader.send_hour)
        mail, limited, found = await signup(session, reader.email, other)
        assert (mail, limited, found) == (expected, False, reader)
        assert (reader.status, reader.topics, reader.send_hour) == before


async def test_an_unsubscribed_address_signs_up_again_through_confirmation(
    session: AsyncSession,
) -> None:
    reader = await add_active_subscriber("back@example.org", Preferences(["moe"]), session=session)
    assert unsubscribe(reader, now=NOW - timedelta(days=3))
    mail, _, _ = await signup(session, "back@example.org", Preferences(["new topic"]))
    assert mail is SignupMail.CONFIRM
    assert reader.status is SubscriberStatus.PENDING and reader.topics == ["new topic"]


async def test_new_links_go_only_to_addresses_that_can_use_them(session: AsyncSession) -> None:
    pending, _, _ = await signup(session, "wait@example.org", Preferences(["moe"]))
    assert pending is SignupMail.CONFIRM
    await add_active_subscriber("on@example.org", Preferences(["moe"]), session=session)
    left = await add_active_subscriber("left@example.org", Preferences(["x"]), session=session)
    unsubscribe(left, now=NOW)
    later = NOW + INTERVAL * 2
    answers = {
        address: (
            await request_links(address, session=session, now=later, mail_interval=INTERVAL)
        ).mail
        for address in (
            "wait@example.org",
            "on@example.org",
            "left@example.org",
            "nobody@example.org",
        )
    }
    assert answers == {
        "wait@example.org": SignupMail.CONFIRM,
        "on@example.org": SignupMail.ALREADY_SUBSCRIBED,
        "left@example.org": SignupMail.NONE,
        "nobody@example.org": SignupMail.NONE,
    }
    assert await count(session) == 3  # asking about an unknown address records nothing
    again = await request_links(
        "on@example.org", session=session, now=later + INTERVAL / 2, mail_interval=INTERVAL
    )
    assert again.mail is SignupMail.NONE  # one mail per address per interval


async def test_confirmation_records_consent_once(session: AsyncSession) -> None:
    _, _, reader = await signup(session, "yes@example.org", Preferences(["moe"]))
    assert reader is not None
    assert confirm(reader, now=NOW, client_ip="198.51.100.7")
    assert reader.status is SubscriberStatus.ACTIVE
    assert (reader.confirmed_at, reader.consent_ip) == (NOW, "198.51.100.7")
    assert not confirm(reader, now=NOW + INTERVAL, client_ip="203.0.113.9")
    assert (reader.confirmed_at, reader.consent_ip) == (NOW, "198.51.100.7")


async def test_pause_and_resume_apply_to_live_subscriptions_only(session: AsyncSession) -> None:
    reader = await add_active_subscriber("p@example.org", Preferences(["moe"]), session=session)
    update_preferences(reader, Preferences(["moe", "fpga"]), paused=True)
    assert reader.status is SubscriberStatus.PAUSED and reader.topics == ["moe", "fpga"]
    update_preferences(reader, Preferences(["moe"]), paused=False)
    assert status_of(reader) is SubscriberStatus.ACTIVE
    unsubscribe(reader, now=NOW)
    update_preferences(reader, Preferences(["moe"]), paused=False)
    assert status_of(reader) is SubscriberStatus.UNSUBSCRIBED  # resuming is not resubscribing
    with pytest.raises(SubscriberError):
        update_preferences(reader, Preferences(["moe"], timezone="Nowhere/City"))


async def test_a_muted_topic_stays_listed_until_unmuted_or_removed(session: AsyncSession) -> None:
    reader = await add_active_subscriber(
        "m@example.org", Preferences(["moe", "fpga"]), session=session
    )
    assert mute_topic(reader, "moe") and mute_topic(reader, "moe")  # twice is harmless
    assert reader.muted_topics == ["moe"] and reader.topics == ["moe", "fpga"]
    assert not mute_topic(reader, "not one of theirs") and reader.muted_topics == ["moe"]
    unmute_topic(reader, "moe")
    assert reader.muted_topics == []
    mute_topic(reader, "fpga")
    update_preferences(reader, Preferences(["moe", "fpga", "nas"]))
    assert reader.muted_topics == ["fpga"]  # kept while the topic is
    update_preferences(reader, Preferences(["moe"]))
    assert reader.muted_topics == []  # written again later, it brings papers again


async def test_unsubscribe_and_resubscribe_say_whether_anything_changed(
    session: AsyncSession,
) -> None:
    reader = await add_active_subscriber("u@example.org", Preferences(["moe"]), session=session)
    confirmed = reader.confirmed_at
    assert unsubscribe(reader, now=NOW) and reader.unsubscribed_at == NOW
    assert not unsubscribe(reader, now=NOW + INTERVAL) and reader.unsubscribed_at == NOW
    assert resubscribe(reader, now=NOW + INTERVAL)
    assert reader.status is SubscriberStatus.ACTIVE and reader.unsubscribed_at is None
    assert reader.confirmed_at == confirmed  # consent is the original one
    assert not resubscribe(reader, now=NOW + INTERVAL)


async def test_an_operator_making_a_subscriber_active_lifts_the_suppression(
    session: AsyncSession,
) -> None:
    reader = await add_active_subscriber("b@example.org", Preferences(["moe"]), session=session)
    reader.status, reader.bounce_count = SubscriberStatus.BOUNCED, 3
    assert set_status(reader, SubscriberStatus.ACTIVE, now=NOW)
    assert reader.status is SubscriberStatus.ACTIVE and reader.bounce_count == 0
    assert not set_status(reader, SubscriberStatus.ACTIVE, now=NOW)
    assert set_status(reader, SubscriberStatus.UNSUBSCRIBED, now=NOW)
    assert reader.unsubscribed_at == NOW


async def test_a_link_opens_its_own_subscriber_until_the_links_are_revoked(
    session: AsyncSession,
) -> None:
    reader = await add_active_subscriber("t@example.org", Preferences(["moe"]), session=session)
    other = await add_active_subscriber("o@example.org", Preferences(["moe"]), session=session)
    token = make_token(SECRET, Purpose.PREFERENCES, reader.public_id, reader.token_version)
    found = await subscriber_for_token(SECRET, Purpose.PREFERENCES, token, session=session)
    assert found is reader and found is not other
    with pytest.raises(TokenError):  # a preferences link does not unsubscribe
        await subscriber_for_token(SECRET, Purpose.UNSUBSCRIBE, token, session=session)
    revoke_links(reader)
    await session.flush()
    with pytest.raises(TokenError, match="no longer valid"):
        await subscriber_for_token(SECRET, Purpose.PREFERENCES, token, session=session)
    fresh = make_token(SECRET, Purpose.PREFERENCES, reader.public_id, reader.token_version)
    assert await subscriber_for_token(SECRET, Purpose.PREFERENCES, fresh, session=session) is reader
    erased = make_token(SECRET, Purpose.PREFERENCES, other.public_id, other.token_version)
    await session.delete(other)
    await session.flush()
    with pytest.raises(TokenError, match="no longer valid"):
        await subscriber_for_token(SECRET, Purpose.PREFERENCES, erased, session=session)


async def at_once(
    session_factory: async_sessionmaker[AsyncSession],
    work: Callable[[AsyncSession, int], Awaitable[T]],
    times: int = 8,
) -> list[T]:
    """`work` in `times` sessions of their own at the same moment, each committing; what each
    returned. The connections have run the same statements before (warm), so that none is held
    up preparing them and the sessions truly overlap."""

    async def one(number: int) -> T:
        async with session_factory() as session:
            done = await work(session, number)
            await session.commit()
            return done

    await asyncio.gather(*(one(-1 - n) for n in range(times)))
    return await asyncio.gather(*(one(n) for n in range(times)))


async def test_an_operator_adding_one_address_from_several_places_at_once_makes_one_subscriber(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    # What `paperboy subscriber add` runs, from several shells at the same moment.
    async def add(session: AsyncSession, number: int) -> int:
        address = "ada@example.org" if number >= 0 else f"warm{number}@example.org"
        return (
            await add_active_subscriber(address, Preferences([f"topic {number}"]), session=session)
        ).id

    assert len(set(await at_once(session_factory, add))) == 1
    async with session_factory() as session:
        (ada,) = (
            await session.scalars(select(Subscriber).where(Subscriber.email == "ada@example.org"))
        ).all()
    assert ada.status is SubscriberStatus.ACTIVE and ada.confirmed_at is not None


async def test_csv_imports_naming_one_address_at_once_all_load(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async def load(session: AsyncSession, number: int) -> tuple[int, int, int]:
        address = "ada@example.org" if number >= 0 else f"warm{number}@example.org"
        report = await import_subscribers(f"email,status\n{address},active\n", session=session)
        return (report.created, report.updated, len(report.rejected))

    reports = await at_once(session_factory, load)
    assert sorted(reports) == [(0, 1, 0)] * 7 + [(1, 0, 0)]
