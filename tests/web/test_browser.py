"""The newcomer's journey in a real headless Chromium (Debian's, driven by Playwright): open the
front page, subscribe through the form (the page's script fills the time zone and a topic chip),
read the confirmation mail from the SMTP server, confirm, change preferences, and unsubscribe
through the page. A weekly reader's: search the front page and pick a topic chip, open their
archive and their weekly digest from it, and fetch their Atom feed from the link the page shows,
read by feedparser. And a reader's feedback: from a digest received over SMTP, "more like this",
"less like this" and "mute this topic", each confirmed on its page, and the next day's digest
follows them. With PAPERBOY_SCREENSHOTS=DIR it also saves the pages as PNGs there."""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime
from email.message import EmailMessage
from html import unescape
from pathlib import Path

import feedparser
import pytest
from playwright.async_api import Browser, Page
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.jobs import compose_job, ingest_job, send_job
from app.models import (
    Digest,
    DigestFrequency,
    DigestItem,
    Feedback,
    FeedbackSignal,
    Paper,
    Subscriber,
    SubscriberStatus,
)
from app.subscribers.rules import Preferences, add_active_subscriber
from app.subscribers.tokens import Purpose, make_token
from tests.support.chromium import CHROMIUM
from tests.support.web_app import link_in, serve_app

Sessions = async_sessionmaker[AsyncSession]
SCREENSHOTS = os.environ.get("PAPERBOY_SCREENSHOTS")
DAY_ONE, DAY_TWO = date(2026, 11, 26), date(2026, 11, 27)

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("PAPERBOY_REQUIRE_BROWSER"),
    reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)",
)


async def snapshot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        await page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)


async def status_of(sessions: Sessions, email: str) -> Subscriber:
    async with sessions() as session:
        found = await session.scalar(select(Subscriber).where(Subscriber.email == email))
        assert found is not None
        return found


async def test_subscribe_confirm_change_preferences_and_unsubscribe(
    browser: Browser,
    engine: AsyncEngine,
    session_factory: Sessions,
    settings: Settings,
    sample_page: Path,
) -> None:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    with serve_app(settings) as web:
        context = await browser.new_context(
            timezone_id="Europe/Berlin", viewport={"width": 900, "height": 1000}
        )
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        await page.goto(web.base_url + "/")
        await page.get_by_role("heading", name="Get trending papers in your email inbox").wait_for()
        assert await page.locator("li.paper").count() == 20
        await snapshot(page, "web-front.png")

        await page.get_by_role("link", name="the full signup page").click()
        await page.wait_for_url("**/subscribe")
        assert await page.locator("#timezone").input_value() == "Europe/Berlin"  # detected
        await page.fill("#email", "newcomer@example.org")
        await page.fill("#topics", "mixture of experts")
        chip = page.locator(".chip").first
        chip_topic = await chip.get_attribute("data-topic")
        await chip.click()
        await page.select_option("#send_hour", "6")
        await snapshot(page, "web-signup.png")
        await page.get_by_role("button", name="Subscribe").click()
        await page.get_by_role("heading", name="Check your inbox").wait_for()
        pending = await status_of(session_factory, "newcomer@example.org")
        assert pending.status is SubscriberStatus.PENDING
        assert pending.topics == ["mixture of experts", chip_topic]
        assert (pending.timezone, pending.send_hour) == ("Europe/Berlin", 6)

        confirmation = web.wait_for_mail("newcomer@example.org")
        await page.goto(link_in(confirmation, "confirm"))
        await page.get_by_role("heading", name="You're subscribed").wait_for()
        assert (await status_of(session_factory, "newcomer@example.org")).status is (
            SubscriberStatus.ACTIVE
        )

        await page.get_by_role("link", name="Change your preferences").click()
        await page.get_by_role("heading", name="Your preferences").wait_for()
        assert await page.locator("section.box ol.papers li").count() > 0  # today's preview
        await snapshot(page, "web-preferences.png")
        await page.fill("#topics", "LLM quantization\nFPGA accelerators")
        await page.select_option("#send_hour", "9")
        await page.get_by_role("button", name="Save").click()
        await page.get_by_text("Saved.").wait_for()
        changed = await status_of(session_factory, "newcomer@example.org")
        assert changed.topics == ["LLM quantization", "FPGA accelerators"]
        assert changed.send_hour == 9

        await page.get_by_role("link", name="Unsubscribe").click()
        await page.get_by_role("heading", name="Unsubscribe newcomer@example.org?").wait_for()
        await page.get_by_role("button", name="Unsubscribe").click()
        await page.get_by_role("heading", name="You're unsubscribed").wait_for()
        assert (await status_of(session_factory, "newcomer@example.org")).status is (
            SubscriberStatus.UNSUBSCRIBED
        )
        assert errors == []  # no script errors, no CSP violations
        await context.close()


async def test_search_then_a_weekly_readers_archive_digest_and_feed(
    browser: Browser,
    engine: AsyncEngine,
    session_factory: Sessions,
    settings: Settings,
    sample_page: Path,
) -> None:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    now = datetime.now(UTC)
    async with session_factory() as session:
        reader = await add_active_subscriber(
            "weekly@example.org",
            Preferences(
                ["mixture of experts", "FPGA accelerators"],
                send_hour=0,
                digest_size=5,
                frequency=DigestFrequency.WEEKLY,
                weekday=now.date().weekday(),
            ),
            session=session,
        )
        await session.commit()
    report = await compose_job(session_factory=session_factory, settings=settings, now=now)
    assert report.queued == 1 and report.items == 10  # twice the reader's size
    with serve_app(settings) as web:
        context = await browser.new_context(viewport={"width": 900, "height": 1000})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("response", lambda r: errors.append(r.url) if r.status >= 400 else None)

        await page.goto(web.base_url + "/")
        await page.fill("#q", "language models")
        await page.get_by_role("button", name="Search").click()
        await page.wait_for_url("**/?q=language+models")
        await page.get_by_role("heading", name="matching “language models”").wait_for()
        assert 0 < await page.locator("li.paper").count() <= 20
        topic = page.locator("nav.topics a.chip").first
        topic_name = await topic.inner_text()
        await topic.click()
        await page.locator("nav.topics a.chip[aria-current=true]").wait_for()
        assert "q=language+models" in page.url and "topic=" in page.url
        assert await page.locator("input#q").input_value() == "language models"
        assert topic_name in await page.locator("h2").first.inner_text()
        await snapshot(page, "web-search.png")

        token = make_token(web.settings.secret_key, Purpose.DIGEST, reader.public_id, 1)
        await page.goto(f"{web.base_url}/digests/{token}")
        await page.get_by_role("heading", name="Your digests").wait_for()
        assert await page.locator("li.archive-entry").count() == 1
        assert "weekly, on" in await page.locator("p.hint").first.inner_text()
        await snapshot(page, "web-archive.png")
        feed_url = await page.locator("a.feed-url").get_attribute("href")
        assert feed_url is not None and "/feeds/" in feed_url
        alternate = page.locator('link[rel=alternate][type="application/atom+xml"]')
        assert await alternate.get_attribute("href") == feed_url

        await page.locator("li.archive-entry a").first.click()
        await page.get_by_text("10 papers for you this week").wait_for()
        assert await page.get_by_text("You receive this weekly digest").count() == 1

        fetched = await page.request.get(feed_url)
        assert fetched.status == 200
        assert fetched.headers["content-type"].startswith("application/atom+xml")
        feed = feedparser.parse(await fetched.body())
        assert feed.bozo == 0 and len(feed.entries) == 10
        assert errors == []
        await context.close()


def html_of(message: EmailMessage) -> str:
    body = message.get_body(("html",))
    assert body is not None
    return str(body.get_content())


async def open_mail_and_click(page: Page, mail: EmailMessage, link: str, nth: int = 0) -> None:
    """Show the mail's HTML as a mail client would and follow one of its links."""
    await page.set_content(html_of(mail))
    await page.get_by_role("link", name=link).nth(nth).click()


async def test_feedback_from_the_mail_shapes_the_next_digest(
    browser: Browser,
    engine: AsyncEngine,
    session_factory: Sessions,
    settings: Settings,
    sample_page: Path,
) -> None:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    email = "reader@example.org"
    topics = ["large language models", "mixture of experts"]
    async with session_factory() as session:
        reader = await add_active_subscriber(
            email, Preferences(topics, digest_size=6), session=session
        )
        await session.commit()
    with serve_app(settings) as web:
        page = await (await browser.new_context()).new_page()
        await compose_job(session_factory=session_factory, settings=web.settings, on_date=DAY_ONE)
        await send_job(session_factory=session_factory, settings=web.settings)
        mail = web.wait_for_mail(email)
        # The papers in the order the mail shows them (grouped by topic, then by rank).
        shown = [
            unescape(title) for title in re.findall(r'class="title"[^>]*>([^<]+)<', html_of(mail))
        ]
        async with session_factory() as session:
            ids = dict(
                (
                    await session.execute(
                        select(Paper.title, DigestItem.paper_id)
                        .join(Paper, Paper.id == DigestItem.paper_id)
                        .join(Digest, Digest.id == DigestItem.digest_id)
                        .where(Digest.subscriber_id == reader.id)
                    )
                ).all()
            )
        assert len(shown) == len(ids) == 6
        sent = [ids[title] for title in shown]

        # "More like this" on three papers, "less like this" on one: each link shows a page,
        # and only its button records.
        for nth in (0, 2, 3):
            await open_mail_and_click(page, mail, "More like this", nth)
            await page.get_by_role("heading", name="More like this?").wait_for()
            await page.get_by_role("button", name="More like this").click()
            await page.get_by_role("heading", name="Noted: more like this").wait_for()
        await open_mail_and_click(page, mail, "Less like this", 1)
        await page.get_by_role("heading", name="Fewer papers like this?").wait_for()
        await snapshot(page, "web-feedback.png")
        await page.get_by_role("button", name="Less like this").click()
        await page.get_by_role("heading", name="Noted: less like this").wait_for()
        await open_mail_and_click(page, mail, "“mixture of experts”")
        await page.get_by_role("heading", name="Mute “mixture of experts”?").wait_for()
        await page.get_by_role("button", name="Mute this topic").click()
        await page.get_by_role("heading", name="“mixture of experts” is muted").wait_for()
        async with session_factory() as session:
            clicks = dict(
                (
                    await session.execute(
                        select(Feedback.paper_id, Feedback.signal).where(
                            Feedback.subscriber_id == reader.id
                        )
                    )
                ).all()
            )
            stored = await session.get(Subscriber, reader.id)
            assert stored is not None and stored.muted_topics == ["mixture of experts"]
        assert clicks == {
            sent[0]: FeedbackSignal.MORE,
            sent[1]: FeedbackSignal.LESS,
            sent[2]: FeedbackSignal.MORE,
            sent[3]: FeedbackSignal.MORE,
        }

        # The next day's digest, seen in the browser: explained by a liked paper, nothing from
        # the muted topic.
        await compose_job(session_factory=session_factory, settings=web.settings, on_date=DAY_TWO)
        await send_job(session_factory=session_factory, settings=web.settings)
        next_mail = web.wait_for_mail(email, 2)
        await open_mail_and_click(page, next_mail, "View in browser")
        await page.get_by_text("which you liked").first.wait_for()
        assert await page.get_by_text("mixture of experts”:").count() == 0
        await snapshot(page, "web-digest-feedback.png")

        # The preferences page lists it all and undoes it.
        await page.get_by_role("link", name="Change topics or time").click()
        await page.get_by_role("heading", name="Your feedback").wait_for()
        await page.get_by_role("button", name="Unmute").click()
        await page.get_by_text("Saved.").wait_for()
        assert await page.get_by_role("button", name="Unmute").count() == 0
        assert await page.get_by_role("button", name="Undo").count() == 4
        await page.get_by_role("button", name="Undo").first.click()
        await page.get_by_text("Saved.").wait_for()
        assert await page.get_by_role("button", name="Undo").count() == 3
