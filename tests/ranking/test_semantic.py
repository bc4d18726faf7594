"""Relevance by meaning, end to end with the shipped model on a real database: papers embedded
once per model (and again under a new one), topic vectors cached per normalised text, compose
falling back to words for papers without a vector, a reader who writes in plain words getting a
full digest explained by meaning, and the notices for a topic that matches nothing."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.digests.plan import plan_digests
from app.digests.topic_coverage import topic_coverage
from app.jobs import compose_job, embed_job, ingest_job
from app.models import Digest, DigestItem, Paper, PaperVector, TopicVector
from app.ranking.embedding import DEFAULT_MODEL, load_embedding_model
from app.ranking.evaluation import read_judged_papers
from app.ranking.semantic import embedding_model, paper_text, store_paper_vectors, topic_vectors
from app.subscribers.rules import Preferences, add_active_subscriber
from tests.conftest import DATA, SAMPLE_PAGE

Sessions = async_sessionmaker[AsyncSession]
PLAIN_TOPIC = "making chatbots respond faster"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings, ranking by meaning with the shipped model."""
    return settings.model_copy(update={"embedding_model": DEFAULT_MODEL})


@pytest.fixture
async def sample_loaded(session_factory: Sessions, settings: Settings, sample_page: Path) -> None:
    report = await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    assert report.inserted == 185


@pytest.fixture(scope="session")
def sample_vectors() -> dict[str, np.ndarray]:
    """The sample papers' vectors by title, encoded once for the whole run (the model is the
    same in every test; only the databases differ)."""
    encoder = load_embedding_model(DEFAULT_MODEL)
    assert encoder is not None
    papers = read_judged_papers(str(SAMPLE_PAGE))
    vectors = encoder.encode([paper_text(p.title, p.abstract) for p in papers])
    return {paper.title: vector for paper, vector in zip(papers, vectors, strict=True)}


@pytest.fixture
async def sample_embedded(
    sample_loaded: None, session_factory: Sessions, sample_vectors: dict[str, np.ndarray]
) -> None:
    """The sample, with each paper's vector stored as the embed job would have stored it."""
    encoder = load_embedding_model(DEFAULT_MODEL)
    assert encoder is not None
    async with session_factory() as session:
        rows = (await session.execute(select(Paper.id, Paper.title))).all()
        await store_paper_vectors(
            [paper_id for paper_id, _ in rows],
            np.stack([sample_vectors[title] for _, title in rows]),
            session=session,
            model=encoder.name,
        )
        await session.commit()


def relevant_titles(topic_id: str) -> set[str]:
    with (DATA / "eval-plain-qrels.tsv").open(encoding="utf-8") as handle:
        return {
            row[1]
            for row in csv.reader(handle, delimiter="\t")
            if row and not row[0].startswith("#") and row[0] == topic_id
        }


async def count(sessions: Sessions, model: type[PaperVector] | type[TopicVector]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.slow
@pytest.mark.usefixtures("sample_loaded")
async def test_papers_are_embedded_once_and_again_under_a_new_model(
    session_factory: Sessions, settings: Settings
) -> None:
    first = await embed_job(session_factory=session_factory, settings=settings)
    assert first.model is not None and first.embedded == 185
    assert (await embed_job(session_factory=session_factory, settings=settings)).embedded == 0
    async with session_factory() as session:
        vector = await session.scalar(select(PaperVector.vector).limit(1))
        assert vector is not None
        values = np.frombuffer(vector, np.float32)
        assert values.shape == (384,) and abs(float(np.linalg.norm(values)) - 1.0) < 1e-3
        # Vectors of another model do not count: a model change embeds every paper again.
        await session.execute(update(PaperVector).values(model="an-older-model"))
        await session.commit()
    again = await embed_job(session_factory=session_factory, settings=settings)
    assert again.embedded == 185 and await count(session_factory, PaperVector) == 370


@pytest.mark.usefixtures("sample_loaded")
async def test_no_model_means_no_vectors(session_factory: Sessions, settings: Settings) -> None:
    off = settings.model_copy(update={"embedding_model": "none"})
    report = await embed_job(session_factory=session_factory, settings=off)
    assert report.model is None and report.embedded == 0
    assert await count(session_factory, PaperVector) == 0


async def test_topic_vectors_are_cached_per_normalised_text(
    session_factory: Sessions, settings: Settings
) -> None:
    encoder = embedding_model(settings)
    assert encoder is not None
    async with session_factory() as session:
        first = await topic_vectors(
            ["Speculative decoding", "speculative   DECODING", "mixture of experts"],
            session=session,
            encoder=encoder,
        )
        await session.commit()
    assert first.shape == (3, 384) and np.allclose(first[0], first[1])
    assert await count(session_factory, TopicVector) == 2
    async with session_factory() as session:
        second = await topic_vectors(["mixture of experts"], session=session, encoder=encoder)
    assert np.allclose(second[0], first[2]) and await count(session_factory, TopicVector) == 2


@pytest.mark.slow
@pytest.mark.usefixtures("sample_embedded")
async def test_a_plain_language_reader_gets_a_full_digest_explained_by_meaning(
    session_factory: Sessions, settings: Settings
) -> None:
    async with session_factory() as session:
        reader = await add_active_subscriber(
            "plain@example.org", Preferences([PLAIN_TOPIC]), session=session
        )
        await session.commit()
    today = datetime.now(UTC).date()
    report = await compose_job(session_factory=session_factory, settings=settings, on_date=today)
    assert report.queued == 1
    async with session_factory() as session:
        items = (
            await session.execute(
                select(Paper.title, DigestItem.matched_topic, DigestItem.matched_terms)
                .join(DigestItem, DigestItem.paper_id == Paper.id)
                .join(Digest, Digest.id == DigestItem.digest_id)
                .where(Digest.subscriber_id == reader.id)
                .order_by(DigestItem.rank)
            )
        ).all()
    assert len(items) == 10  # a full digest, where words alone found one paper
    relevant = relevant_titles("plain-fast-chatbots")
    # 5 of the 10 are judged relevant with the shipped model (the others are LLM serving and
    # long-context papers); words alone found 1.
    assert sum(title in relevant for title, _, _ in items) >= 4, [t for t, _, _ in items]
    assert all(topic == PLAIN_TOPIC for _, topic, _ in items)
    assert any(terms == [] for _, _, terms in items)  # chosen for meaning, not shared words


@pytest.mark.usefixtures("sample_loaded")
async def test_papers_without_a_vector_are_ranked_by_words(
    session_factory: Sessions, settings: Settings, sample_vectors: dict[str, np.ndarray]
) -> None:
    async with session_factory() as session:
        await add_active_subscriber(
            "moe@example.org", Preferences(["mixture of experts"]), session=session
        )
        await session.commit()
    now = datetime.now(UTC)
    words_only = settings.model_copy(update={"embedding_model": "none"})
    async with session_factory() as session:
        by_words = await plan_digests(
            session=session, now=now, settings=words_only, on_date=now.date()
        )
        # The model is on, but no paper has a vector yet (no embed has run).
        unembedded = await plan_digests(
            session=session, now=now, settings=settings, on_date=now.date()
        )
    assert await count(session_factory, PaperVector) == 0
    assert [i.paper_id for i in unembedded.plans[0].items] == [
        i.paper_id for i in by_words.plans[0].items
    ]
    # One paper with a vector is enough to be ranked by meaning too, and nothing breaks.
    encoder = embedding_model(settings)
    assert encoder is not None
    async with session_factory() as session:
        paper_id, title = (await session.execute(select(Paper.id, Paper.title).limit(1))).one()
        await store_paper_vectors(
            [paper_id], sample_vectors[title][None, :], session=session, model=encoder.name
        )
        mixed = await plan_digests(session=session, now=now, settings=settings, on_date=now.date())
    assert len(mixed.plans[0].items) == 10


@pytest.mark.usefixtures("sample_embedded")
async def test_a_topic_that_matches_nothing_is_told_with_close_topics(
    session_factory: Sessions, settings: Settings
) -> None:
    async with session_factory() as session:
        coverage = await topic_coverage(
            ["speculative decoding", "teaching robots to use their hands"],
            session=session,
            settings=settings,
            now=datetime.now(UTC),
        )
    decoding, robots = coverage
    assert decoding.matched >= 5 and decoding.suggestions == []
    assert robots.matched == 0 and 1 <= len(robots.suggestions) <= 3
