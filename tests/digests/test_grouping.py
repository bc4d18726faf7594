"""A digest of several topics, grouped: a heading per topic with its papers in rank order, the
group with the best paper first, each paper once (under the topic it matched best), in the
view model that the mail's HTML and text parts and the web view all render."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.digests.views import (
    PaperCard,
    PaperView,
    TopicGroup,
    group_by_topic,
    load_digest_views,
)
from app.jobs import compose_job, ingest_job
from app.mail.message import Mailer
from app.models import Digest
from app.subscribers.rules import Preferences, add_active_subscriber

Sessions = async_sessionmaker[AsyncSession]
DAY = date(2026, 11, 26)


def view(rank: int, topic: str | None) -> PaperView:
    card = PaperCard(
        title=f"Paper {rank}",
        url=None,
        abstract_url=None,
        pdf_url=None,
        code_url=None,
        authors="",
        summary="",
        wrapped_summary="",
        upvotes=None,
        comments=None,
    )
    return PaperView(rank, card, topic, [])


def test_papers_are_grouped_under_their_topic_in_rank_order() -> None:
    papers = [view(1, "b"), view(2, "a"), view(3, "b"), view(4, None), view(5, "a")]
    groups = group_by_topic(papers)
    assert [(g.topic, [p.rank for p in g.papers]) for g in groups] == [
        ("b", [1, 3]),
        ("a", [2, 5]),
        (None, [4]),
    ]
    assert group_by_topic([]) == []
    assert group_by_topic(papers[:1]) == [TopicGroup("b", papers[:1])]


async def test_a_digest_of_several_topics_shows_a_heading_per_topic_and_each_paper_once(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    async with session_factory() as session:
        # Overlapping topics: a paper on mixture-of-experts routing matches both.
        reader = await add_active_subscriber(
            "ann@example.org",
            Preferences(
                ["mixture of experts", "experts routing", "FPGA accelerators"], digest_size=12
            ),
            session=session,
        )
        single = await add_active_subscriber(
            "one@example.org", Preferences(["FPGA accelerators"]), session=session
        )
        await session.commit()
    await compose_job(session_factory=session_factory, settings=settings, on_date=DAY)
    async with session_factory() as session:
        ids = list(
            (
                await session.execute(
                    select(Digest.id)
                    .where(Digest.subscriber_id.in_([reader.id, single.id]))
                    .order_by(Digest.subscriber_id)
                )
            ).scalars()
        )
        several, one = await load_digest_views(ids, session=session)
    groups = several.groups
    assert len(groups) >= 2
    assert [p for g in groups for p in g.papers] == sorted(
        several.papers, key=lambda p: groups.index(next(g for g in groups if p in g.papers))
    )
    for group in groups:
        assert [p.rank for p in group.papers] == sorted(p.rank for p in group.papers)
        assert all(p.matched_topic == group.topic for p in group.papers)
    assert [g.papers[0].rank for g in groups] == sorted(g.papers[0].rank for g in groups)

    mailer = Mailer(settings)
    rendered = mailer.render(several)
    headings = re.findall(r"^== (.+) ==$", rendered.text, re.MULTILINE)
    assert headings == [g.topic for g in groups]
    html_headings = re.findall(r'class="pad topic"[^>]*>([^<]+)</td>', rendered.html)
    assert html_headings == [g.topic for g in groups]
    for paper in several.papers:  # each paper once, under its own heading
        assert rendered.text.count(f"{paper.rank}. {paper.card.title}\n") == 1
        section = rendered.text.split(f"== {paper.matched_topic} ==")[1].split("\n== ")[0]
        assert paper.card.title in section
    browser = mailer.render(several, for_browser=True)
    assert re.findall(r'class="pad topic"[^>]*>([^<]+)</td>', browser.html) == html_headings

    # One topic: no heading, the plain list.
    alone = mailer.render(one)
    assert "== " not in alone.text and 'class="pad topic"' not in alone.html
