"""Topic suggestions from the bundled sample page (what `paperboy up` seeds): each says something
no other chip says, and none is a fragment of a phrase the titles use."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.digests.topic_suggestions import contains, topic_suggestions
from app.jobs import ingest_job
from app.ranking.relevance import terms


async def test_suggestions_hold_no_near_duplicates_or_fragments(
    session_factory: async_sessionmaker[AsyncSession], settings: Settings, sample_page: Path
) -> None:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    async with session_factory() as session:
        chips = await topic_suggestions(session=session)
    assert len(chips) == 16
    # Before: "large language", "language models" and "language model", side by side.
    assert "large language models" in chips
    assert not {"large language", "language model", "language models"} & set(chips)
    keys = [tuple(terms(chip)) for chip in chips]
    for i, key in enumerate(keys):
        for j, other in enumerate(keys):
            assert i == j or not contains(other, key), (chips[i], chips[j])
