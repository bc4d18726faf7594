"""A reader's archive over real HTTP: `/digests/{token}` lists their past digests newest first,
a page at a time, each linking to its page; the token is the signed digest link (another
purpose's, a forged or a revoked one opens nothing); the answer is never cached; the mail, the
preferences page and the archive link to each other."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.digests.views import load_digest_views
from app.jobs import compose_job, ingest_job
from app.mail.message import Mailer
from app.models import Digest, DigestStatus, Subscriber
from app.subscribers.rules import Preferences, add_active_subscriber
from app.subscribers.tokens import Purpose, make_token, read_token
from tests.support.web_app import RunningApp

Sessions = async_sessionmaker[AsyncSession]
FIRST_DAY = date(2026, 10, 1)


async def reader_with_digests(sessions: Sessions, settings: Settings, sample_page: Path) -> int:
    """A reader with 23 digests: three composed (one skipped: nothing matched), and twenty
    empty ones of earlier days, as a long-time reader has."""
    await ingest_job(str(sample_page), session_factory=sessions, settings=settings)
    async with sessions() as session:
        reader = await add_active_subscriber(
            "ann@example.org", Preferences(["mixture of experts"], digest_size=4), session=session
        )
        other = await add_active_subscriber(
            "bob@example.org", Preferences(["FPGA accelerators"]), session=session
        )
        session.add_all(
            Digest(
                subscriber_id=reader.id,
                digest_date=FIRST_DAY + timedelta(days=n),
                status=DigestStatus.SENT,
                created_at=datetime.now(UTC) - timedelta(days=40),
            )
            for n in range(20)
        )
        await session.commit()
    now = datetime.now(UTC)
    for n, day in enumerate((date(2026, 11, 24), date(2026, 11, 25))):
        await compose_job(
            session_factory=sessions, settings=settings, on_date=day, now=now + timedelta(hours=n)
        )
    async with sessions() as session:
        await session.execute(
            update(Subscriber).where(Subscriber.id == reader.id).values(topics=["knitting"])
        )
        await session.commit()
    await compose_job(
        session_factory=sessions,
        settings=settings,
        on_date=date(2026, 11, 26),
        now=now + timedelta(hours=3),
    )
    del other
    return reader.id


async def test_the_archive_lists_past_digests_newest_first_in_pages(
    client: httpx.AsyncClient,
    web: RunningApp,
    session_factory: Sessions,
    settings: Settings,
    sample_page: Path,
) -> None:
    reader_id = await reader_with_digests(session_factory, settings, sample_page)
    async with session_factory() as session:
        reader = await session.get_one(Subscriber, reader_id)
        skipped = await session.scalar(
            select(Digest.status).where(
                Digest.subscriber_id == reader_id, Digest.digest_date == date(2026, 11, 26)
            )
        )
    assert skipped is DigestStatus.SKIPPED
    secret = web.settings.secret_key
    token = make_token(secret, Purpose.DIGEST, reader.public_id, reader.token_version)
    first = await client.get(f"/digests/{token}")
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    dates = re.findall(rf'href="/digests/{re.escape(token)}/(\d{{4}}-\d\d-\d\d)"', first.text)
    # 22 shown (the skipped day is not), 20 a page, newest first.
    assert dates == [(date(2026, 11, 25) - timedelta(days=n)).isoformat() for n in range(2)] + [
        (FIRST_DAY + timedelta(days=19 - n)).isoformat() for n in range(18)
    ]
    assert "22 digests" in first.text and "Page 1 of 2" in first.text
    assert "4 papers" in first.text and "Mixture" in first.text  # counts and first titles
    second = await client.get(f"/digests/{token}", params={"page": 2})
    assert re.findall(r'/digests/[^/"]+/(\d{4}-\d\d-\d\d)"', second.text) == [
        "2026-10-02",
        "2026-10-01",
    ]
    assert "Page 2 of 2" in second.text and 'rel="prev"' in second.text
    assert (await client.get(f"/digests/{token}", params={"page": 99})).status_code == 200
    assert (await client.get(f"/digests/{token}", params={"page": 0})).status_code == 422
    # Each entry opens the digest it names.
    opened = await client.get(f"/digests/{token}/{dates[0]}")
    assert opened.status_code == 200 and "Mixture" in opened.text

    # Only this reader's digest link opens it: not another purpose's, a forged or revoked one.
    for purpose in (Purpose.PREFERENCES, Purpose.UNSUBSCRIBE, Purpose.FEED):
        wrong = make_token(secret, purpose, reader.public_id, reader.token_version)
        refused = await client.get(f"/digests/{wrong}")
        assert refused.status_code == 400 and refused.headers["cache-control"] == "no-store"
    assert (await client.get(f"/digests/{token[:-3]}abc")).status_code == 400
    assert (await client.get("/digests/not-a-token")).status_code == 400
    async with session_factory() as session:
        await session.execute(
            update(Subscriber).where(Subscriber.id == reader_id).values(token_version=2)
        )
        await session.commit()
    revoked = await client.get(f"/digests/{token}")
    assert revoked.status_code == 400 and "no longer valid" in revoked.text


async def test_the_mail_and_the_preferences_page_link_to_the_archive(
    client: httpx.AsyncClient,
    web: RunningApp,
    session_factory: Sessions,
    settings: Settings,
    sample_page: Path,
) -> None:
    reader_id = await reader_with_digests(session_factory, settings, sample_page)
    async with session_factory() as session:
        reader = await session.get_one(Subscriber, reader_id)
        digest_id = await session.scalar(
            select(Digest.id).where(
                Digest.subscriber_id == reader_id, Digest.digest_date == date(2026, 11, 25)
            )
        )
        assert digest_id is not None
        (view,) = await load_digest_views([digest_id], session=session)
    secret = web.settings.secret_key

    def reader_token(url: str, purpose: Purpose) -> str:
        """The token of a link to this reader for this purpose (tokens carry the second they
        were made, so two made apart differ)."""
        token = url.rsplit("/", 1)[1]
        assert read_token(secret, purpose, token).public_id == reader.public_id
        return token

    rendered = Mailer(web.settings).render(view)
    archive_url = rendered.links.archive
    assert archive_url.startswith(f"{web.settings.base_url}/digests/")
    digest_token = reader_token(archive_url, Purpose.DIGEST)
    past_digests = re.compile(rf'href="{re.escape(archive_url)}"[^>]*>Past digests</a>')
    assert past_digests.search(rendered.html)
    assert f"Past digests:          {archive_url}" in rendered.text
    in_browser = await client.get(f"/digests/{digest_token}/2026-11-25")
    shown = re.search(r'href="([^"]+)"[^>]*>Past digests</a>', in_browser.text)
    assert shown is not None and reader_token(shown.group(1), Purpose.DIGEST)

    preferences = make_token(secret, Purpose.PREFERENCES, reader.public_id, 1)
    page = (await client.get(f"/preferences/{preferences}")).text
    archive_link = re.search(r'href="(http[^"]+/digests/[^"/]+)"', page)
    assert archive_link is not None and reader_token(archive_link.group(1), Purpose.DIGEST)
    alternate = re.search(
        r'<link rel="alternate" type="application/atom\+xml" title="Your Paperboy digests" '
        r'href="(http[^"]+/feeds/[^"]+)">',
        page,
    )
    assert alternate is not None
    feed_url = alternate.group(1)
    assert reader_token(feed_url, Purpose.FEED)
    archive = (await client.get(f"/digests/{digest_token}")).text
    feed_link = re.search(r'href="(http[^"]+/feeds/[^"]+)"', archive)
    assert feed_link is not None and reader_token(feed_link.group(1), Purpose.FEED)
    assert "weekly" not in archive and "daily" in archive
