"""The public web pages over real HTTP (uvicorn) with a real SMTP server: the trending front page,
signup with double opt-in and no address enumeration, rate limits and the honeypot, confirmation
with recorded consent, preferences, unsubscribe (button and RFC 8058 one-click), resubscribe, the
digest in the browser, bad tokens of every kind, escaping and security headers."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.jobs import compose_job, ingest_job
from app.models import DigestFrequency, Paper, Subscriber, SubscriberStatus
from app.subscribers.rules import Preferences, add_active_subscriber
from app.subscribers.tokens import Purpose, make_token
from app.web.security import SlidingWindowLimiter
from tests.support.web_app import ADMIN_TOKEN, RunningApp, link_in, serve_app

Sessions = async_sessionmaker[AsyncSession]
SIGNUP = {
    "email": "ada@example.org",
    "topics": "mixture of experts\nFPGA accelerators",
    "timezone": "Europe/Berlin",
    "send_hour": "8",
    "digest_size": "5",
}


@pytest.fixture
async def loaded(session_factory: Sessions, settings: Settings, sample_page: Path) -> None:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)


@pytest.fixture
def web(engine: AsyncEngine, settings: Settings) -> Iterator[RunningApp]:
    with serve_app(settings) as running:
        yield running


@pytest.fixture
async def client(web: RunningApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web.base_url, timeout=20, follow_redirects=True) as http:
        yield http


async def subscriber(sessions: Sessions, email: str) -> Subscriber:
    async with sessions() as session:
        found = await session.scalar(select(Subscriber).where(Subscriber.email == email))
        assert found is not None
        return found


@pytest.mark.usefixtures("loaded")
async def test_front_page_lists_trending_papers_with_the_subscribe_box(
    client: httpx.AsyncClient,
) -> None:
    first = await client.get("/")
    assert first.status_code == 200
    assert "Get trending papers in your email inbox once a day!" in first.text
    assert 'action="/subscribe"' in first.text
    assert first.text.count('<li class="paper">') == 20
    assert "Page 1 of 10" in first.text  # 185 papers, 20 a page
    last = await client.get("/?page=10")
    assert last.text.count('<li class="paper">') == 5
    assert (await client.get("/?page=99")).status_code == 200  # clamps to the last page
    # Hand-edited addresses clamp to the nearest page there is, silently.
    for odd, shown in [("0", 1), ("-3", 1), ("abc", 1), ("9" * 40, 10), ("", 1), ("2", 2)]:
        answer = await client.get("/", params={"page": odd})
        assert answer.status_code == 200 and f"Page {shown} of 10" in answer.text, odd
        assert answer.text.count('<li class="paper">') == (5 if shown == 10 else 20)


async def test_the_front_page_says_trending_only_when_there_is_a_trend_to_rank_by(
    client: httpx.AsyncClient, session_factory: Sessions, settings: Settings, data: Path
) -> None:
    page_without_votes = data.parent.parent / "app" / "sample" / "trending-papers-page.txt"
    await ingest_job(str(page_without_votes), session_factory=session_factory, settings=settings)
    newest = await client.get("/")
    assert "<h2>Newest papers</h2>" in newest.text and "Trending today" not in newest.text
    # The tagline says what the heading does not.
    assert "No account needed" in newest.text
    await ingest_job(
        str(data / "hf-daily.json"), session_factory=session_factory, settings=settings
    )
    trending = await client.get("/")
    assert "<h2>Trending today</h2>" in trending.text


async def test_signup_confirm_preferences_and_unsubscribe(
    client: httpx.AsyncClient, web: RunningApp, session_factory: Sessions
) -> None:
    answer = await client.post("/subscribe", data=SIGNUP)
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    pending = await subscriber(session_factory, "ada@example.org")
    assert pending.status is SubscriberStatus.PENDING
    assert pending.topics == ["mixture of experts", "FPGA accelerators"]
    assert (pending.timezone, pending.send_hour, pending.digest_size) == ("Europe/Berlin", 8, 5)
    assert pending.frequency is DigestFrequency.DAILY  # the form's choice is optional

    mail = web.wait_for_mail("ada@example.org")
    assert mail["Subject"] == "Confirm your Paperboy subscription"
    assert "(daily)" in mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert mail.get_body(("html",)) is not None
    confirm_url = link_in(mail, "confirm")
    confirmed = await client.get(confirm_url)
    assert confirmed.status_code == 200 and "subscribed" in confirmed.text
    assert "Your first digest arrives at 08:00 (Europe/Berlin)" in confirmed.text
    active = await subscriber(session_factory, "ada@example.org")
    assert active.status is SubscriberStatus.ACTIVE
    assert active.confirmed_at is not None and active.consent_ip == "127.0.0.1"
    assert (await client.get(confirm_url)).status_code == 200  # twice is harmless

    found = re.search(r'href="(http[^"]+/preferences/[^"]+)"', confirmed.text)
    assert found is not None
    preferences_url = found.group(1)
    shown = await client.get(preferences_url)
    assert shown.status_code == 200 and "mixture of experts" in shown.text
    saved = await client.post(
        preferences_url,
        data={
            "topics": "LLM quantization",
            "timezone": "America/New_York",
            "send_hour": "6",
            "digest_size": "12",
            "trending_weight": "0.5",
            "frequency": "weekly",
            "weekday": "4",
            "paused": "true",
        },
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    assert '<option value="weekly" selected>' in saved.text
    assert '<option value="4" selected>Friday</option>' in saved.text
    changed = await subscriber(session_factory, "ada@example.org")
    assert changed.topics == ["LLM quantization"] and changed.status is SubscriberStatus.PAUSED
    assert (changed.timezone, changed.send_hour, changed.digest_size) == ("America/New_York", 6, 12)
    assert (changed.frequency, changed.weekday) == (DigestFrequency.WEEKLY, 4)
    for bad in ({"frequency": "hourly"}, {"frequency": "weekly", "weekday": "7"}):
        refused = await client.post(preferences_url, data={"topics": "x"} | bad)
        assert refused.status_code in (400, 422)
    assert (await subscriber(session_factory, "ada@example.org")).weekday == 4
    refused = await client.post(preferences_url, data={"topics": "x", "timezone": "Mars/Olympus"})
    assert refused.status_code == 400 and "unknown timezone" in refused.text

    token = make_token(
        web.settings.secret_key, Purpose.UNSUBSCRIBE, changed.public_id, changed.token_version
    )
    unsubscribe_url = f"/unsubscribe/{token}"
    page = await client.get(unsubscribe_url)
    assert page.status_code == 200 and "<button" in page.text
    assert (await subscriber(session_factory, "ada@example.org")).status is SubscriberStatus.PAUSED
    done = await client.post(unsubscribe_url, data={})
    assert done.status_code == 200 and "unsubscribed" in done.text
    assert (
        await subscriber(session_factory, "ada@example.org")
    ).status is SubscriberStatus.UNSUBSCRIBED
    # The preferences page says so, offers to resubscribe, and a save says it changed no status.
    standing = await client.get(preferences_url)
    assert "You're unsubscribed" in standing.text and "/resubscribe/" in standing.text
    assert "/unsubscribe/" not in standing.text and 'name="paused"' not in standing.text
    kept = await client.post(
        preferences_url, data={"topics": "LLM serving", "timezone": "UTC"}, follow_redirects=True
    )
    assert "You are still unsubscribed" in kept.text
    back = await client.post(f"/resubscribe/{token}")
    assert back.status_code == 200 and "Welcome back" in back.text
    assert (await subscriber(session_factory, "ada@example.org")).status is SubscriberStatus.ACTIVE


async def test_one_click_unsubscribe_per_rfc_8058(
    web: RunningApp, session_factory: Sessions
) -> None:
    async with session_factory() as session:
        reader = await add_active_subscriber("bo@example.org", Preferences(["x"]), session=session)
        await session.commit()
    token = make_token(web.settings.secret_key, Purpose.UNSUBSCRIBE, reader.public_id, 1)
    # What a mailbox provider sends: a bare POST, form-encoded body, no cookies, no Referer.
    async with httpx.AsyncClient(base_url=web.base_url) as provider:
        answer = await provider.post(
            f"/unsubscribe/{token}",
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert answer.status_code == 200
    assert "set-cookie" not in answer.headers
    gone = await subscriber(session_factory, "bo@example.org")
    assert gone.status is SubscriberStatus.UNSUBSCRIBED and gone.unsubscribed_at is not None


async def test_signup_answers_the_same_whatever_the_address_state(
    client: httpx.AsyncClient, web: RunningApp, session_factory: Sessions
) -> None:
    async with session_factory() as session:
        await add_active_subscriber("active@example.org", Preferences(["x"]), session=session)
        left = await add_active_subscriber("left@example.org", Preferences(["x"]), session=session)
        left.status = SubscriberStatus.UNSUBSCRIBED
        gone = await add_active_subscriber("gone@example.org", Preferences(["x"]), session=session)
        gone.status = SubscriberStatus.BOUNCED
        await session.commit()
    answers = []
    for address in (
        "new@example.org",
        "active@example.org",
        "left@example.org",
        "gone@example.org",
    ):
        answer = await client.post("/subscribe", data={**SIGNUP, "email": address})
        assert f"<strong>{address}</strong>" in answer.text  # the address typed, shown back
        answers.append((answer.status_code, answer.text.replace(address, "ADDRESS")))
    assert len(set(answers)) == 1 and answers[0][0] == 200
    assert web.wait_for_mail("active@example.org")["Subject"] == (
        "You are already subscribed to Paperboy"
    )
    assert "/preferences/" in link_in(web.wait_for_mail("active@example.org"), "preferences")
    assert web.wait_for_mail("left@example.org")["Subject"] == "Confirm your Paperboy subscription"
    web.wait_for_queued_mail()
    assert web.sink.messages("gone@example.org") == []  # a bounced address gets no mail
    still = await subscriber(session_factory, "active@example.org")
    assert still.status is SubscriberStatus.ACTIVE and still.topics == ["x"]
    # Asking for a new link: the same answer for known and unknown addresses.
    known = await client.post("/links", data={"email": "active@example.org"})
    unknown = await client.post("/links", data={"email": "nobody@example.org"})
    assert (known.status_code, known.text.replace("active@", "X@")) == (
        unknown.status_code,
        unknown.text.replace("nobody@", "X@"),
    )


async def test_rate_limits_per_address_and_per_client(
    settings: Settings, session_factory: Sessions
) -> None:
    with serve_app(settings, signup_ip_limit=4) as web:
        async with httpx.AsyncClient(base_url=web.base_url) as client:
            first = await client.post("/subscribe", data=SIGNUP)
            assert first.status_code == 200
            # Again within ten minutes, to fix a topic: the same page, no second mail, and the
            # link already sent confirms the new choice.
            again = await client.post("/subscribe", data={**SIGNUP, "topics": "LLM serving"})
            assert (again.status_code, again.text) == (first.status_code, first.text)
            web.wait_for_mail("ada@example.org")
            web.wait_for_queued_mail()
            assert len(web.sink.messages("ada@example.org")) == 1  # no second mail
            fixed = await subscriber(session_factory, "ada@example.org")
            assert fixed.topics == ["LLM serving"] and fixed.status is SubscriberStatus.PENDING
            resend = await client.post("/links", data={"email": "ada@example.org"})
            assert (resend.status_code, resend.text) == (first.status_code, first.text)
            web.wait_for_queued_mail()
            assert len(web.sink.messages("ada@example.org")) == 1  # quietly limited
            third = await client.post("/subscribe", data={**SIGNUP, "email": "cy@example.org"})
            assert third.status_code == 200
            over = await client.post("/subscribe", data={**SIGNUP, "email": "di@example.org"})
            assert over.status_code == 429 and "Too many requests" in over.text
    async with session_factory() as session:
        emails = set((await session.scalars(select(Subscriber.email))).all())
    assert emails == {"ada@example.org", "cy@example.org"}


async def test_honeypot_and_bad_input_store_nothing(
    client: httpx.AsyncClient, web: RunningApp, session_factory: Sessions
) -> None:
    robot = await client.post("/subscribe", data={**SIGNUP, "website": "http://spam.example"})
    assert robot.status_code == 200 and "Check your inbox" in robot.text
    bad = await client.post("/subscribe", data={**SIGNUP, "email": "not-an-address"})
    assert bad.status_code == 400 and "invalid email address" in bad.text
    assert 'value="not-an-address"' in bad.text  # the form keeps what was typed
    unknown_zone = await client.post("/subscribe", data={**SIGNUP, "timezone": "Nowhere/City"})
    assert unknown_zone.status_code == 400
    out_of_range = await client.post("/subscribe", data={**SIGNUP, "send_hour": "25"})
    assert out_of_range.status_code == 422 and "send_hour" in out_of_range.text
    async with session_factory() as session:
        assert (await session.scalars(select(Subscriber))).all() == []
    web.wait_for_queued_mail()
    assert web.sink.received == []


async def test_forged_expired_and_revoked_links_get_a_clear_page(
    client: httpx.AsyncClient, web: RunningApp, session_factory: Sessions
) -> None:
    async with session_factory() as session:
        reader = await add_active_subscriber("ed@example.org", Preferences(["x"]), session=session)
        reader.status = SubscriberStatus.PENDING
        await session.commit()
    secret = web.settings.secret_key
    forged = make_token("some-other-secret-key-000", Purpose.CONFIRM, reader.public_id, 1)
    answer = await client.get(f"/confirm/{forged}")
    assert answer.status_code == 400 and "does not work" in answer.text
    assert 'action="/links"' in answer.text  # a way to ask for a new link

    class FourDaysAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 4 * 24 * 3600

    old = URLSafeTimedSerializer(secret, salt="paperboy.confirm", signer=FourDaysAgo)
    expired = old.dumps([reader.public_id.hex, 1])
    answer = await client.get(f"/confirm/{expired}")
    assert answer.status_code == 400 and "expired" in answer.text
    assert (await subscriber(session_factory, "ed@example.org")).status is SubscriberStatus.PENDING

    wrong_purpose = make_token(secret, Purpose.UNSUBSCRIBE, reader.public_id, 1)
    assert (await client.get(f"/preferences/{wrong_purpose}")).status_code == 400
    preferences = make_token(secret, Purpose.PREFERENCES, reader.public_id, 1)
    assert (await client.get(f"/preferences/{preferences}")).status_code == 200
    async with session_factory() as session:
        await session.execute(
            update(Subscriber).where(Subscriber.id == reader.id).values(token_version=2)
        )
        await session.commit()
    revoked = await client.get(f"/preferences/{preferences}")
    assert revoked.status_code == 400 and "no longer valid" in revoked.text
    assert (await client.post(f"/unsubscribe/{wrong_purpose}")).status_code == 400
    assert (await client.get("/unsubscribe/garbage")).status_code == 400


@pytest.mark.usefixtures("loaded")
async def test_digest_in_the_browser(
    client: httpx.AsyncClient, web: RunningApp, session_factory: Sessions, settings: Settings
) -> None:
    async with session_factory() as session:
        reader = await add_active_subscriber(
            "fay@example.org", Preferences(["mixture of experts"]), session=session
        )
        await session.commit()
    await compose_job(
        session_factory=session_factory, settings=settings, on_date=date(2026, 11, 26)
    )
    token = make_token(web.settings.secret_key, Purpose.DIGEST, reader.public_id, 1)
    shown = await client.get(f"/digests/{token}/2026-11-26")
    assert shown.status_code == 200
    assert "Scattered Mixture-of-Experts Implementation" in shown.text
    assert "View in browser" not in shown.text
    assert "script-src 'self'" in shown.headers["content-security-policy"]
    assert (await client.get(f"/digests/{token}/2026-11-27")).status_code == 404
    assert (await client.get(f"/digests/{token}/not-a-date")).status_code == 422


@pytest.mark.usefixtures("loaded")
async def test_preferences_tell_what_each_topic_matches_and_why_a_digest_was_not_sent(
    client: httpx.AsyncClient, web: RunningApp, session_factory: Sessions, settings: Settings
) -> None:
    async with session_factory() as session:
        reader = await add_active_subscriber(
            "gil@example.org",
            Preferences(["teaching robots to use their hands", "knitting patterns"]),
            session=session,
        )
        await session.commit()
    token = make_token(web.settings.secret_key, Purpose.PREFERENCES, reader.public_id, 1)
    before = (await client.get(f"/preferences/{token}")).text
    assert "was not sent" not in before
    assert before.count("matched no paper") == 2 and "close topics that did:" in before
    # Nothing matched: the day's digest is skipped, and the page says why, once asked.
    report = await compose_job(
        session_factory=session_factory, settings=settings, on_date=date(2026, 11, 26)
    )
    assert report.skipped == 1
    after = (await client.get(f"/preferences/{token}")).text
    assert "Your digest of 2026-11-26 was not sent" in after
    async with session_factory() as session:
        reader = await add_active_subscriber(
            "gil@example.org", Preferences(["mixture of experts"]), session=session
        )
        await session.commit()
    changed = (await client.get(f"/preferences/{token}")).text
    assert "<strong>mixture of experts</strong>: 1" in changed and "matched no paper" not in changed


async def test_hostile_text_is_escaped_and_headers_are_strict(
    client: httpx.AsyncClient, session_factory: Sessions, web: RunningApp
) -> None:
    payload = '<script>alert("pwned")</script>'
    async with session_factory() as session:
        session.add(
            Paper(
                title=f"{payload} Attention",
                title_key="script attention",
                abstract=f"An abstract {payload} with an <img src=x onerror=alert(1)>.",
                source="page",
            )
        )
        reader = await add_active_subscriber(
            "gil@example.org", Preferences([f"{payload} topic"]), session=session
        )
        await session.commit()
    front = await client.get("/")
    assert payload not in front.text and "&lt;script&gt;" in front.text
    assert "<img src=x" not in front.text
    token = make_token(web.settings.secret_key, Purpose.PREFERENCES, reader.public_id, 1)
    preferences = await client.get(f"/preferences/{token}")
    assert payload not in preferences.text and "&lt;script&gt;" in preferences.text
    headers = front.headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


async def test_probes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).text == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.text == "ready"
    missing = await client.get("/no/such/page")
    assert missing.status_code == 404 and "Nothing here" in missing.text


async def test_api_description_is_served_without_third_party_assets(
    client: httpx.AsyncClient,
) -> None:
    operator = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    schema = (await client.get("/openapi.json", headers=operator)).json()
    assert "/admin/api/subscribers" in schema["paths"]
    assert not any(path.startswith(("/subscribe", "/confirm")) for path in schema["paths"])
    page = await client.get("/docs", headers=operator)
    assert page.status_code == 200
    assert "/admin/api/subscribers/import" in page.text and "PATCH" in page.text
    assert "cdn" not in page.text.lower() and '<script src="/static/paperboy.js"' in page.text


async def test_waiting_signup_mails_are_bounded_and_drained(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.web import deps

    monkeypatch.setattr(deps, "MAX_PENDING_MAILS", 2)
    state = deps.WebState(
        settings=settings,
        sessions=None,  # type: ignore[arg-type]
        mailer=None,  # type: ignore[arg-type]
        transport=None,  # type: ignore[arg-type]
        signup_limiter=SlidingWindowLimiter(1, 1),
        address_limiter=SlidingWindowLimiter(1, 1),
    )
    server_back = asyncio.Event()
    delivered: list[int] = []

    async def mail(number: int) -> None:
        await server_back.wait()
        delivered.append(number)

    assert state.send_later(mail(1)) and state.send_later(mail(2))
    assert not state.send_later(mail(3))  # the mail server is stuck: no unbounded pile-up
    server_back.set()
    await state.drain(5)
    assert sorted(delivered) == [1, 2] and not state.mail_tasks
