"""Feedback from the mail over real HTTP: the "more / less like this" and "mute this topic" links
of a rendered digest change nothing on GET (mail scanners fetch every link) and record on the
confirming POST; the last click on a paper wins; revoked links die; the preferences page lists
feedback and muted topics and undoes them; a muted topic brings no papers to the next digest;
a reader's feedback is erased with them."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.digests.views import DigestView, load_digest_views
from app.jobs import compose_job, ingest_job
from app.mail.message import Mailer
from app.models import (
    Digest,
    DigestItem,
    DigestStatus,
    Feedback,
    FeedbackSignal,
    Paper,
    Subscriber,
)
from app.subscribers.rules import Preferences, add_active_subscriber
from tests.support.web_app import ADMIN_TOKEN, RunningApp

Sessions = async_sessionmaker[AsyncSession]
DAY_ONE, DAY_TWO = date(2026, 11, 26), date(2026, 11, 27)


@pytest.fixture
async def loaded(session_factory: Sessions, settings: Settings, sample_page: Path) -> None:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)


async def reader_with_digest(
    sessions: Sessions, web: RunningApp, topics: list[str]
) -> tuple[Subscriber, DigestView, str]:
    """A reader, their composed digest of DAY_ONE and its text part as the mailer renders it."""
    async with sessions() as session:
        reader = await add_active_subscriber(
            "ada@example.org", Preferences(topics), session=session
        )
        await session.commit()
    await compose_job(session_factory=sessions, settings=web.settings, on_date=DAY_ONE)
    async with sessions() as session:
        digest_id = await session.scalar(select(Digest.id).where(Digest.subscriber_id == reader.id))
        assert digest_id is not None
        view = (await load_digest_views([digest_id], session=session))[0]
    return reader, view, Mailer(web.settings).render(view).text


def path_of(text: str, label: str, web: RunningApp, nth: int = 0) -> str:
    """The path of the `nth` link after `label` in a mail's text part."""
    links = re.findall(rf"{re.escape(label)}\s*(\S+)", text)
    assert len(links) > nth, f"no link {label!r}"
    assert links[nth].startswith(web.settings.base_url)
    return str(links[nth]).removeprefix(web.settings.base_url)


async def clicks(sessions: Sessions, reader: Subscriber) -> list[tuple[int, FeedbackSignal]]:
    async with sessions() as session:
        rows = await session.execute(
            select(Feedback.paper_id, Feedback.signal).where(Feedback.subscriber_id == reader.id)
        )
        return [(paper_id, signal) for paper_id, signal in rows]


@pytest.mark.usefixtures("loaded")
async def test_a_get_changes_nothing_the_post_records_and_the_last_click_wins(
    client: httpx.AsyncClient, web: RunningApp, session_factory: Sessions
) -> None:
    reader, view, text = await reader_with_digest(session_factory, web, ["mixture of experts"])
    first = view.papers[0]
    more = path_of(text, "More like this:", web)
    less = path_of(text, "Less like this:", web)

    # What a link scanner does: fetch, twice, and follow nothing.
    for _ in range(2):
        shown = await client.get(more)
        assert shown.status_code == 200
        assert first.card.title in shown.text
        assert f'<form method="post" action="{more}">' in shown.text
        assert shown.headers["cache-control"] == "no-store"
    assert (await client.get(less)).status_code == 200
    assert await clicks(session_factory, reader) == []

    recorded = await client.post(more)
    assert recorded.status_code == 200 and "Noted: more like this" in recorded.text
    assert recorded.headers["cache-control"] == "no-store"
    assert await clicks(session_factory, reader) == [(first.paper_id, FeedbackSignal.MORE)]
    # The same paper's "less" replaces the "more": one row per reader and paper.
    assert (await client.post(less)).status_code == 200
    assert await clicks(session_factory, reader) == [(first.paper_id, FeedbackSignal.LESS)]

    # The paper and the signal ride in the clear beside the reader's signed token: a paper that
    # was in none of the reader's digests, or a signal that is neither, records nothing.
    token = more.split("/")[2]
    async with session_factory() as session:
        unsent = await session.scalar(
            select(Paper.id).where(Paper.id.not_in([p.paper_id for p in view.papers])).limit(1)
        )
    for forged in (f"/feedback/{token}/{unsent}/more", f"/feedback/{token}/{first.paper_id}/all"):
        answer = await client.post(forged)
        assert answer.status_code == 400 and "Noted" not in answer.text, forged
    assert await clicks(session_factory, reader) == [(first.paper_id, FeedbackSignal.LESS)]

    # A revoked link (token version bumped) records nothing and says so.
    async with session_factory() as session:
        stored = await session.get(Subscriber, reader.id)
        assert stored is not None
        stored.token_version += 1
        await session.commit()
    refused = await client.post(more)
    assert refused.status_code == 400 and "no longer valid" in refused.text
    assert await clicks(session_factory, reader) == [(first.paper_id, FeedbackSignal.LESS)]
    # A feedback token does not open any other page.
    assert (await client.get(f"/preferences/{token}")).status_code == 400


@pytest.mark.usefixtures("loaded")
async def test_mute_on_post_only_then_the_topic_brings_nothing_until_unmuted(
    client: httpx.AsyncClient, web: RunningApp, session_factory: Sessions
) -> None:
    topics = ["mixture of experts", "speculative decoding"]
    reader, view, text = await reader_with_digest(session_factory, web, topics)
    assert set(view.topics) == set(topics)
    mute_paths = dict(re.findall(r'Mute "([^"]+)": \S+?(/mute/\S+)', text))
    assert set(mute_paths) == set(topics)
    mute = mute_paths["mixture of experts"]

    shown = await client.get(mute)
    assert shown.status_code == 200 and "Mute “mixture of experts”?" in shown.text
    assert shown.headers["cache-control"] == "no-store"
    async with session_factory() as session:
        stored = await session.get(Subscriber, reader.id)
        assert stored is not None and stored.muted_topics == []
    assert (await client.post(mute)).status_code == 200
    async with session_factory() as session:
        stored = await session.get(Subscriber, reader.id)
        assert stored is not None and stored.muted_topics == ["mixture of experts"]
        assert stored.topics == topics  # kept, to be unmuted

    await compose_job(session_factory=session_factory, settings=web.settings, on_date=DAY_TWO)
    async with session_factory() as session:
        matched = set(
            (
                await session.scalars(
                    select(DigestItem.matched_topic)
                    .join(Digest, Digest.id == DigestItem.digest_id)
                    .where(Digest.subscriber_id == reader.id, Digest.digest_date == DAY_TWO)
                )
            ).all()
        )
    assert matched == {"speculative decoding"}
    # Operators see it too.
    shown = await client.get(
        f"/admin/api/subscribers/{reader.id}",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert shown.json()["muted_topics"] == ["mixture of experts"]

    preferences = path_of(text, "Change topics or time:", web)
    page = await client.get(preferences)
    assert "Muted topics" in page.text and "mixture of experts" in page.text
    unmuted = await client.post(
        f"{preferences}/unmute", data={"topic": "mixture of experts"}, follow_redirects=True
    )
    assert unmuted.status_code == 200 and "Muted topics" not in unmuted.text
    async with session_factory() as session:
        stored = await session.get(Subscriber, reader.id)
        assert stored is not None and stored.muted_topics == []


@pytest.mark.usefixtures("loaded")
async def test_preferences_list_feedback_and_undo_it(
    client: httpx.AsyncClient, web: RunningApp, session_factory: Sessions
) -> None:
    reader, view, text = await reader_with_digest(session_factory, web, ["mixture of experts"])
    await client.post(path_of(text, "More like this:", web, 0))
    await client.post(path_of(text, "Less like this:", web, 1))
    preferences = path_of(text, "Change topics or time:", web)
    page = await client.get(preferences)
    assert "Recent papers you rated" in page.text
    assert view.papers[0].card.title in page.text and "more like this" in page.text
    assert view.papers[1].card.title in page.text and "less like this" in page.text
    # A GET of the undo address changes nothing: only the form's POST does.
    undo = f"{preferences}/feedback/{view.papers[1].paper_id}/undo"
    assert (await client.get(undo)).status_code == 405
    assert len(await clicks(session_factory, reader)) == 2
    undone = await client.post(undo, follow_redirects=True)
    assert undone.status_code == 200 and view.papers[1].card.title not in undone.text
    assert await clicks(session_factory, reader) == [(view.papers[0].paper_id, FeedbackSignal.MORE)]


@pytest.mark.usefixtures("loaded")
async def test_feedback_is_erased_with_the_reader(
    client: httpx.AsyncClient, web: RunningApp, session_factory: Sessions
) -> None:
    reader, _, text = await reader_with_digest(session_factory, web, ["mixture of experts"])
    await client.post(path_of(text, "More like this:", web))
    assert len(await clicks(session_factory, reader)) == 1
    async with session_factory() as session:
        # The database's own cascade, as an operator's bulk erasure would use it.
        await session.execute(delete(Subscriber).where(Subscriber.id == reader.id))
        await session.commit()
        assert await session.scalar(select(func.count()).select_from(Feedback)) == 0


@pytest.mark.usefixtures("loaded")
async def test_feedback_goes_with_the_reader_through_the_orm_too(
    client: httpx.AsyncClient, web: RunningApp, session_factory: Sessions
) -> None:
    reader, _, text = await reader_with_digest(session_factory, web, ["mixture of experts"])
    await client.post(path_of(text, "Less like this:", web))
    async with session_factory() as session:
        stored = await session.get(Subscriber, reader.id)
        assert stored is not None
        await session.delete(stored)
        await session.commit()
        assert await session.scalar(select(func.count()).select_from(Feedback)) == 0


@pytest.mark.usefixtures("loaded")
async def test_a_reader_who_muted_every_topic_gets_no_digest_and_is_told_why(
    client: httpx.AsyncClient, web: RunningApp, session_factory: Sessions
) -> None:
    reader, _, text = await reader_with_digest(session_factory, web, ["mixture of experts"])
    mute = re.findall(r'Mute "[^"]+": \S+?(/mute/\S+)', text)[0]
    assert (await client.post(mute)).status_code == 200
    await compose_job(session_factory=session_factory, settings=web.settings, on_date=DAY_TWO)
    async with session_factory() as session:
        status = await session.scalar(
            select(Digest.status).where(
                Digest.subscriber_id == reader.id, Digest.digest_date == DAY_TWO
            )
        )
    assert status is DigestStatus.SKIPPED
    page = await client.get(path_of(text, "Change topics or time:", web))
    assert "every one of your topics is muted" in page.text
