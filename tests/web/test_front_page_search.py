"""The front page's search and topic filter over real HTTP: every word in the title or abstract,
LIKE wildcards taken literally, pages that keep the search, topic chips, and a clear answer (never
a 500) for text that cannot be searched."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.digests.front_page import SearchError, search_words
from app.jobs import ingest_job
from app.models import Paper
from tests.support.web_app import RunningApp, serve_app

Sessions = async_sessionmaker[AsyncSession]
PAPER = '<li class="paper">'


@pytest.fixture
def web(engine: AsyncEngine, settings: Settings) -> Iterator[RunningApp]:
    with serve_app(settings) as running:
        yield running


@pytest.fixture
async def client(
    web: RunningApp, session_factory: Sessions, settings: Settings, sample_page: Path
) -> AsyncIterator[httpx.AsyncClient]:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    async with httpx.AsyncClient(base_url=web.base_url, timeout=20) as http:
        yield http


async def papers_containing(sessions: Sessions, *words: str) -> int:
    async with sessions() as session:
        conditions = [
            or_(
                func.lower(Paper.title).contains(w, autoescape=True),
                func.lower(Paper.abstract).contains(w, autoescape=True),
            )
            for w in words
        ]
        return int(await session.scalar(select(func.count()).where(*conditions)) or 0)


def titles(page: str) -> list[str]:
    return re.findall(r'<h3><a href="[^"]*" rel="noopener noreferrer">([^<]+)</a>', page)


def test_search_words_are_checked_before_any_query() -> None:
    assert search_words("  Mixture  of EXPERTS mixture ") == ["mixture", "of", "experts"]
    assert search_words("") == search_words("   ") == search_words(None) == []
    assert search_words("100% a_b") == ["100%", "a_b"]
    for bad, reason in (
        ("x" * 201, "too long"),
        ("a b c d e f g h i", "too many words"),
        ("nul\x00byte", "cannot be searched"),
        ("tab\there", "cannot be searched"),
    ):
        with pytest.raises(SearchError, match=reason):
            search_words(bad)


async def test_search_narrows_the_trending_list_and_pages_keep_it(
    client: httpx.AsyncClient, session_factory: Sessions
) -> None:
    expected = await papers_containing(session_factory, "language", "models")
    assert 20 < expected < 185
    first = await client.get("/", params={"q": "Language  MODELS"})
    assert first.status_code == 200
    assert f"{expected} trending papers matching “Language  MODELS”" in first.text
    assert first.text.count(PAPER) == 20 and 'value="Language  MODELS"' in first.text
    assert 'href="/?q=Language++MODELS&amp;page=2"' in first.text
    second = await client.get("/", params={"q": "Language MODELS", "page": 2})
    assert second.text.count(PAPER) == min(20, expected - 20)
    assert not set(titles(first.text)) & set(titles(second.text))

    # Wildcards are only characters: "%" matches papers that contain "%", not every paper.
    percent = await client.get("/", params={"q": "%"})
    literal = await papers_containing(session_factory, "%")
    assert percent.status_code == 200 and percent.text.count(PAPER) == min(20, literal)
    assert literal < 185
    underscore = await client.get("/", params={"q": "_"})
    assert underscore.text.count(PAPER) == min(20, await papers_containing(session_factory, "_"))
    nothing = await client.get("/", params={"q": "zzzqqq"})
    assert "0 trending papers" in nothing.text and "No recent paper matches" in nothing.text
    assert nothing.text.count(PAPER) == 0


async def test_topic_chips_filter_and_combine_with_a_search(
    client: httpx.AsyncClient, session_factory: Sessions
) -> None:
    front = (await client.get("/")).text
    chips = re.findall(r'<a class="chip" href="/\?topic=([^"]+)">([^<]+)</a>', front)
    assert len(chips) >= 5
    _, topic = chips[0]
    chosen = await client.get("/", params={"topic": topic})
    assert chosen.status_code == 200 and f" on {topic}</h2>" in chosen.text
    assert 'aria-current="true"' in chosen.text and "All topics" in chosen.text
    shown = chosen.text.count(PAPER)
    assert shown > 0
    assert shown == min(20, await papers_containing(session_factory, *topic.lower().split()))
    both = await client.get("/", params={"topic": topic, "q": "zzzqqq"})
    assert both.text.count(PAPER) == 0 and f'name="topic" value="{topic}"' in both.text


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"q": "x" * 201}, 400, "too long"),
        ({"q": "a b c d e f g h i"}, 400, "too many words"),
        ({"q": "nul\x00byte"}, 400, "cannot be searched"),
        ({"topic": "x" * 300}, 400, "The topic is too long"),
        ({"q": "x" * 5000}, 422, "Please check the form"),
        ({"q": "ok", "page": "0"}, 200, "ok"),  # an odd page clamps to the first
        ({"q": "<script>alert(1)</script>"}, 200, "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ],
)
async def test_unsearchable_text_gets_a_clear_answer(
    client: httpx.AsyncClient, params: dict[str, str], status: int, says: str
) -> None:
    answer = await client.get("/", params=params)
    assert answer.status_code == status
    assert says in answer.text
    assert "<script>alert" not in answer.text
