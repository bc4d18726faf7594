"""A reader's private Atom feed over real HTTP, read back by a real feed parser (feedparser, as
feed readers use it) and checked against RFC 4287's required elements: one entry per paper of
their latest digests with ids that never change, hostile paper text escaped (and characters XML
forbids dropped), a token of the feed's own purpose, never cached."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import feedparser
import httpx
from lxml import etree
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.jobs import compose_job, ingest_job
from app.models import Digest, DigestItem, Paper, Subscriber
from app.subscribers.rules import Preferences, add_active_subscriber
from app.subscribers.tokens import Purpose, make_token, read_token
from tests.support.web_app import RunningApp

Sessions = async_sessionmaker[AsyncSession]
ATOM = "{http://www.w3.org/2005/Atom}"
HOSTILE = '</title><script>alert("x")</script> & <b>bold</b>'


def feed_token(web: RunningApp, reader: Subscriber) -> str:
    return make_token(web.settings.secret_key, Purpose.FEED, reader.public_id, 1)


def rfc4287_problems(xml: bytes) -> list[str]:
    """What RFC 4287 requires that the document lacks: the feed's id, title, updated, author
    (or every entry's) and self link; each entry's id, title, updated and content or link."""
    root = etree.fromstring(xml)
    problems = []
    if root.tag != f"{ATOM}feed":
        return ["not an Atom feed"]
    for name in ("id", "title", "updated", "author"):
        if len(root.findall(f"{ATOM}{name}")) != 1:
            problems.append(f"feed has not exactly one {name}")
    if not root.findall(f"{ATOM}link[@rel='self']"):
        problems.append("no self link")
    for entry in root.findall(f"{ATOM}entry"):
        for name in ("id", "title", "updated"):
            if len(entry.findall(f"{ATOM}{name}")) != 1:
                problems.append(f"an entry has not exactly one {name}")
        content = entry.find(f"{ATOM}content")
        if content is None or content.get("type") != "html":
            problems.append("an entry has no html content")
        if not entry.findtext(f"{ATOM}id", "").startswith(("urn:uuid:", "tag:")):
            problems.append("an entry id is neither a urn:uuid nor a tag URI")
    return problems


async def test_the_feed_carries_each_paper_of_the_latest_digests(
    client: httpx.AsyncClient,
    web: RunningApp,
    session_factory: Sessions,
    settings: Settings,
    sample_page: Path,
) -> None:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    async with session_factory() as session:
        reader = await add_active_subscriber(
            "ann@example.org",
            Preferences(["mixture of experts", "FPGA accelerators"], digest_size=3),
            session=session,
        )
        other = await add_active_subscriber(
            "bob@example.org", Preferences(["mixture of experts"], digest_size=3), session=session
        )
        await session.commit()
    now = datetime.now(UTC)
    for n, day in enumerate((date(2026, 11, 25), date(2026, 11, 26))):
        await compose_job(
            session_factory=session_factory,
            settings=settings,
            on_date=day,
            now=now + timedelta(hours=n),
        )
    async with session_factory() as session:
        first_paper = await session.scalar(
            select(DigestItem.paper_id)
            .join(Digest, Digest.id == DigestItem.digest_id)
            .where(Digest.subscriber_id == reader.id, Digest.digest_date == date(2026, 11, 26))
            .where(DigestItem.rank == 1)
        )
        # Text from outside, as hostile as it gets, with a character XML does not allow.
        await session.execute(
            update(Paper)
            .where(Paper.id == first_paper)
            .values(title=HOSTILE + "\x0b", ai_summary=HOSTILE, url="javascript:alert(1)")
        )
        await session.commit()

    token = feed_token(web, reader)
    answer = await client.get(f"/feeds/{token}")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert answer.headers["cache-control"] == "no-store"
    assert rfc4287_problems(answer.content) == []
    parsed = feedparser.parse(answer.content)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert parsed.feed.title == "Your Paperboy papers"
    assert parsed.feed.id.startswith("urn:uuid:")
    self_link = next(link for link in parsed.feed.links if link.rel == "self")
    assert self_link.href == f"{web.settings.base_url}/feeds/{token}"
    archive = next(link for link in parsed.feed.links if link.rel == "alternate")
    archive_token = archive.href.rsplit("/", 1)[1]
    assert read_token(web.settings.secret_key, Purpose.DIGEST, archive_token).public_id == (
        reader.public_id
    )

    # One entry per paper, the newest digest first, its papers in rank order.
    assert len(parsed.entries) == 6
    assert len({entry.id for entry in parsed.entries}) == 6
    hostile = parsed.entries[0]
    assert hostile.title == HOSTILE  # the forbidden character dropped, the rest kept as text
    assert hostile.updated_parsed[:3] == (now + timedelta(hours=1)).timetuple()[:3]
    assert "javascript" not in hostile.get("link", "")
    assert all(entry.link.startswith("https://") for entry in parsed.entries)
    assert {tag.term for entry in parsed.entries for tag in entry.get("tags", [])} <= {
        "mixture of experts",
        "FPGA accelerators",
    }
    assert "From your digest of" in hostile.content[0].value
    raw = answer.text
    assert "<script" not in raw and "javascript:" not in raw
    assert "&lt;/title&gt;&lt;script&gt;" in raw  # the title, escaped once
    assert "&amp;lt;/title&amp;gt;&amp;lt;script&amp;gt;" in raw  # the HTML content, twice

    # Polled again, the same ids; with the ETag sent back, nothing to read; another reader's
    # feed shares no id.
    again = feedparser.parse((await client.get(f"/feeds/{token}")).content)
    assert [e.id for e in again.entries] == [e.id for e in parsed.entries]
    etag = answer.headers["etag"]
    unchanged = await client.get(f"/feeds/{token}", headers={"if-none-match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["etag"] == etag
    await asyncio.sleep(1.1)  # a link token made now would carry another second
    stale = await client.get(f"/feeds/{token}", headers={"if-none-match": '"other"'})
    assert stale.status_code == 200 and stale.content == answer.content
    theirs = feedparser.parse((await client.get(f"/feeds/{feed_token(web, other)}")).content)
    assert theirs.bozo == 0 and len(theirs.entries) == 6
    assert not {e.id for e in theirs.entries} & {e.id for e in parsed.entries}
    assert theirs.feed.id != parsed.feed.id


async def test_a_feed_before_the_first_digest_and_links_that_open_nothing(
    client: httpx.AsyncClient, web: RunningApp, session_factory: Sessions
) -> None:
    async with session_factory() as session:
        reader = await add_active_subscriber(
            "new@example.org", Preferences(["anything"]), session=session
        )
        await session.commit()
    empty = await client.get(f"/feeds/{feed_token(web, reader)}")
    assert empty.status_code == 200 and rfc4287_problems(empty.content) == []
    parsed = feedparser.parse(empty.content)
    assert parsed.bozo == 0 and parsed.entries == []

    secret = web.settings.secret_key
    for purpose in (Purpose.DIGEST, Purpose.PREFERENCES, Purpose.UNSUBSCRIBE):
        wrong = make_token(secret, purpose, reader.public_id, 1)
        refused = await client.get(f"/feeds/{wrong}")
        assert refused.status_code == 400 and refused.headers["cache-control"] == "no-store"
    assert (await client.get("/feeds/garbage")).status_code == 400
    token = feed_token(web, reader)
    async with session_factory() as session:
        await session.execute(
            update(Subscriber).where(Subscriber.id == reader.id).values(token_version=2)
        )
        await session.commit()
    assert (await client.get(f"/feeds/{token}")).status_code == 400
