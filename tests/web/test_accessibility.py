"""Every public page (the archive, the feedback and mute pages and the front page's search
included) and both mails, in a real headless Chromium, light and dark: axe-core finds no
violation of any impact, and html-validate no error (the site's pages by the recommended rules;
mails, and the digest's web view, which is the mail itself, by those rules less inline styles
and table attributes, which mail clients need). Needs Debian's Chromium and the checkers of
tests/support/browser (`npm ci --prefix tests/support/browser`); CI requires both."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.jobs import compose_job, ingest_job, send_job
from app.subscribers.rules import Preferences, add_active_subscriber
from app.subscribers.tokens import Purpose, make_token
from app.web.rendering import templates
from tests.support.chromium import CHROMIUM
from tests.support.page_checks import INSTALLED, MAIL_RULES, axe_violations, html_errors
from tests.support.web_app import link_in, serve_app

Sessions = async_sessionmaker[AsyncSession]

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and INSTALLED) and not os.environ.get("PAPERBOY_REQUIRE_BROWSER"),
    reason="needs Debian's Chromium and `npm ci --prefix tests/support/browser`",
)


def html_part(message: EmailMessage) -> str:
    body = message.get_body(("html",))
    assert body is not None
    return str(body.get_content())


def text_link(message: EmailMessage, label: str) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    found = re.search(rf"{label}:\s+(\S+)", body.get_content())
    assert found is not None, label
    return found.group(1)


async def test_every_page_and_mail_passes_axe_and_html_validate(
    browser: Browser,
    engine: AsyncEngine,
    session_factory: Sessions,
    settings: Settings,
    sample_page: Path,
) -> None:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    with serve_app(settings) as web:
        base = web.base_url
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            signup = {"email": "reader@example.org", "topics": "speculative decoding\nLLM"}
            answers = {"check-inbox": (await client.post("/subscribe", data=signup)).text}
            confirmation = web.wait_for_mail("reader@example.org")
            answers["confirmed"] = (await client.get(link_in(confirmation, "confirm"))).text
            await compose_job(
                session_factory=session_factory,
                settings=web.settings,
                now=datetime.now(UTC),
                whatever_the_hour=True,
            )
            sent = await send_job(session_factory=session_factory, settings=web.settings)
            assert sent.sent == 1
            digest = web.wait_for_mail("reader@example.org", count=2)
            unsubscribe_url = text_link(digest, "Unsubscribe")
            preferences_url = text_link(digest, "Change topics or time")
            shown = {
                "front": f"{base}/",
                "front-page-2": f"{base}/?page=2",
                "front-search": f"{base}/?q=speculative+decoding",
                "front-search-refused": f"{base}/?q={'x' * 201}",
                "signup": f"{base}/subscribe",
                "preferences": preferences_url,
                "unsubscribe": unsubscribe_url,
                "link-problem": f"{base}/confirm/not-a-token",
                "not-found": f"{base}/no-such-page",
            }
            digest_view = text_link(digest, "View in browser")
            more = text_link(digest, "More like this")
            mute = text_link(digest, r'Mute "[^"]+"')
            shown["feedback-confirm"] = more
            shown["mute-confirm"] = mute
            answers["feedback-noted"] = (await client.post(more)).text
            answers["mute-noted"] = (await client.post(mute)).text
            shown["archive"] = digest_view.rsplit("/", 1)[0]
            answers["unsubscribed"] = (await client.post(unsubscribe_url)).text
            answers["preferences-unsubscribed"] = (await client.get(preferences_url)).text
        answers["busy"] = templates.get_template("busy.html").render()
        answers["limited"] = templates.get_template("limited.html").render()
        mails = {"mail-confirmation": html_part(confirmation), "mail-digest": html_part(digest)}

        site_html: dict[str, str] = dict(answers)
        mail_html: dict[str, str] = dict(mails)
        violations: list[str] = []
        for scheme in ("light", "dark"):
            context = await browser.new_context(color_scheme=scheme)
            page: Page = await context.new_page()
            for name, url in shown.items():
                response = await page.goto(url)
                assert response is not None
                site_html[name] = await response.text()
                violations += await axe_violations(page, f"{scheme} {name}")
            response = await page.goto(digest_view)
            assert response is not None and response.status == 200
            mail_html["digest-view"] = await response.text()
            violations += await axe_violations(page, f"{scheme} digest-view")
            # Answers to POSTs, shown from the site's own address (its stylesheet applies).
            for name, html in answers.items():
                await page.goto(f"{base}/")
                await page.set_content(html)
                violations += await axe_violations(page, f"{scheme} {name}")
            # Mails as a mail client shows them: on a blank page of their own.
            for name, html in mails.items():
                blank = await context.new_page()
                await blank.set_content(html)
                violations += await axe_violations(blank, f"{scheme} {name}")
                await blank.close()
            await context.close()
    assert violations == []
    assert html_errors(site_html) == []
    assert html_errors(mail_html, rules=MAIL_RULES) == []


async def test_controls_show_their_value_line_up_and_links_look_like_links(
    browser: Browser,
    engine: AsyncEngine,
    session_factory: Sessions,
    settings: Settings,
    sample_page: Path,
) -> None:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    async with session_factory() as session:
        reader = await add_active_subscriber(
            "reader@example.org",
            Preferences(["a topic long enough to need more than one line in a narrow pill box"]),
            session=session,
        )
        await session.commit()
    with serve_app(settings) as web:
        token = make_token(
            web.settings.secret_key, Purpose.PREFERENCES, reader.public_id, reader.token_version
        )
        context = await browser.new_context(viewport={"width": 900, "height": 1000})
        page = await context.new_page()
        await page.goto(f"{web.base_url}/preferences/{token}")
        shown = page.locator("output[for=trending_weight]")
        assert await shown.inner_text() == "0.30"
        await page.locator("#trending_weight").fill("0.8")
        assert await shown.inner_text() == "0.80"  # the slider says where it stands
        heights = {}
        for field in ("#timezone", "#send_hour", "#digest_size", "#frequency", "#weekday"):
            box = await page.locator(field).bounding_box()
            assert box is not None, field
            heights[field] = box["height"]
        assert len(set(heights.values())) == 1, heights  # one row, one height
        accent = await page.evaluate(
            "getComputedStyle(document.querySelector('#trending_weight')).accentColor"
        )
        assert accent == "rgb(79, 70, 229)"  # the site's accent, not the browser's blue
        pills = await page.evaluate(
            "[...document.querySelectorAll('.why, .chip')].map(e => e.getClientRects().length"
            " === 1 && e.getBoundingClientRect().height < 2 * parseFloat("
            "getComputedStyle(e).fontSize) + 12)"
        )
        assert len(pills) > 5 and all(pills), pills  # no pill wraps onto a second line
        # On the front page a paper's title looks like the link it is.
        await page.goto(f"{web.base_url}/")
        title = await page.evaluate(
            "(() => { const s = getComputedStyle(document.querySelector('li.paper h3 a'));"
            " return [s.color, s.textDecorationLine]; })()"
        )
        assert title == ["rgb(79, 70, 229)", "underline"], title
        await context.close()
