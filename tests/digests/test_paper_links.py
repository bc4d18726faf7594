"""A paper's links and facts as every reader sees them (the mail, the digest in the browser, the
front page): arXiv abstract and PDF from the arXiv id, the Hugging Face page for papers from
there, the code repository, shortened authors, the publication date and upvotes; only http(s)
URLs ever become links."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.digests.views import load_digest_views, paper_card, web_link
from app.jobs import compose_job, ingest_job
from app.mail.message import Mailer
from app.models import Digest, Paper
from app.subscribers.rules import Preferences, add_active_subscriber
from tests.support.web_app import serve_app

Sessions = async_sessionmaker[AsyncSession]


@dataclass
class Facts:
    title: str = "A paper"
    url: str | None = None
    arxiv_id: str | None = None
    pdf_url: str | None = None
    github_repo: str | None = None
    authors: list[str] | None = field(default_factory=list)
    ai_summary: str | None = None
    abstract: str = "It works."
    upvotes: int | None = None
    comments: int | None = None
    source: str = "arxiv-atom"
    published_at: datetime | None = None


def test_a_hugging_face_paper_links_everywhere_it_lives() -> None:
    card = paper_card(
        Facts(
            url="https://huggingface.co/papers/2312.00752",
            arxiv_id="2312.00752",
            github_repo="https://github.com/state-spaces/mamba",
            authors=["Albert Gu", "Tri Dao", "Ann Other", "Bo Third", "Cy Fourth"],
            upvotes=42,
            source="hf-daily",
            published_at=datetime(2023, 12, 1, 18, 0, tzinfo=UTC),
        )
    )
    assert card.url == card.hf_url == "https://huggingface.co/papers/2312.00752"
    assert card.abstract_url == "https://arxiv.org/abs/2312.00752"
    assert card.pdf_url == "https://arxiv.org/pdf/2312.00752"
    assert card.code_url == "https://github.com/state-spaces/mamba"
    assert card.authors == "Albert Gu, Tri Dao, Ann Other et al."
    assert (card.published, card.upvotes) == ("1 Dec 2023", 42)


def test_papers_without_ids_and_from_elsewhere() -> None:
    arxiv = paper_card(Facts(arxiv_id="hep-th/9901001", authors=["A", "B"]))
    assert arxiv.url == arxiv.abstract_url == "https://arxiv.org/abs/hep-th/9901001"
    assert arxiv.hf_url is None and arxiv.authors == "A, B" and arxiv.published is None
    seen_first_elsewhere = paper_card(
        Facts(arxiv_id="2401.1", url="https://huggingface.co/papers/2401.1", source="page")
    )
    assert seen_first_elsewhere.hf_url == "https://huggingface.co/papers/2401.1"
    page = paper_card(Facts(title="Attention & more", source="page", authors=None))
    assert page.url is not None and page.url.startswith("https://arxiv.org/search/")
    assert "Attention+%26+more" in page.url
    assert (page.abstract_url, page.pdf_url, page.hf_url, page.code_url) == (None,) * 4


def test_only_http_urls_become_links() -> None:
    for hostile in (
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "data:text/html,<script>",
        "//evil.example/x",
        "https://ok.example/a b",
        "https://ok.example/\x00",
        "vbscript:x",
        "",
    ):
        assert web_link(hostile) is None
        card = paper_card(Facts(url=hostile, pdf_url=hostile, github_repo=hostile))
        assert card.url is not None and card.url.startswith("https://arxiv.org/search/")
        assert card.pdf_url is None and card.code_url is None
    assert web_link("HTTPS://Example.org/x?a=1&b=2") == "HTTPS://Example.org/x?a=1&b=2"


async def test_links_in_the_mail_the_browser_view_and_the_front_page(
    session_factory: Sessions, settings: Settings, data: Path, engine: AsyncEngine
) -> None:
    hf_daily = str(data / "hf-daily.json")
    await ingest_job(hf_daily, session_factory=session_factory, settings=settings)
    async with session_factory() as session:
        # Text from outside, as hostile as it gets: it is shown, escaped, never run.
        await session.execute(
            update(Paper)
            .where(Paper.arxiv_id == "2410.20399")
            .values(title="</title><script>alert(1)</script>", url="javascript:alert(1)")
        )
        reader = await add_active_subscriber("ann@example.org", Preferences([]), session=session)
        await session.commit()
    day = date(2026, 11, 26)
    await compose_job(session_factory=session_factory, settings=settings, on_date=day)
    async with session_factory() as session:
        digest_id = await session.scalar(select(Digest.id).where(Digest.subscriber_id == reader.id))
        assert digest_id is not None
        (view,) = await load_digest_views([digest_id], session=session)
    rendered = Mailer(settings).render(view)
    for part in (rendered.html, rendered.text):
        assert "https://huggingface.co/papers/2312.00752" in part
        assert "https://arxiv.org/pdf/2312.00752" in part
        assert "https://github.com/state-spaces/mamba" in part
        assert "javascript:" not in part
        assert "Dec 2023" in part  # published
    assert "https://arxiv.org/abs/2312.00752" in rendered.html
    assert ">Hugging Face</a>" in rendered.html and "et al." in rendered.html
    assert "<script>alert" not in rendered.html
    assert "&lt;/title&gt;&lt;script&gt;" in rendered.html
    assert "▲" in rendered.html

    with serve_app(settings) as web:
        async with httpx.AsyncClient(base_url=web.base_url) as client:
            front = (await client.get("/")).text
    assert ">Hugging Face</a>" in front and "https://arxiv.org/pdf/2312.00752" in front
    assert "https://github.com/state-spaces/mamba" in front
    assert "javascript:" not in front and "<script>alert" not in front
    assert "&lt;/title&gt;&lt;script&gt;" in front
