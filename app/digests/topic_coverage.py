"""How well a reader's topics meet the papers: for each topic, how many papers of the compose
window it would have matched (ranked as compose ranks, words and meaning), and for a topic that
matched none, close topics from the corpus that did. Shown where a reader writes their topics
(the preferences page, the page after confirming), so that a topic that matches nothing is
noticed there rather than as a missing digest."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.digests.candidates import load_candidates
from app.digests.plan import score_topics
from app.digests.topic_suggestions import topic_suggestions

SUGGESTIONS_PER_TOPIC = 3


@dataclass(slots=True)
class TopicCoverage:
    topic: str
    matched: int  # papers of the compose window this topic would have matched
    suggestions: list[str] = field(default_factory=list)  # close topics that did match papers


async def topic_coverage(
    topics: list[str], *, session: AsyncSession, settings: Settings, now: datetime
) -> list[TopicCoverage]:
    """Per topic, in the reader's order: its matches over the compose window, and suggestions
    when it has none."""
    if not topics:
        return []
    candidates = await load_candidates(
        session=session,
        since=now - timedelta(days=settings.compose_window_days),
        limit=settings.compose_max_candidates,
    )
    if not candidates:
        return [TopicCoverage(topic, 0) for topic in topics]
    offered = [s for s in await topic_suggestions(session=session) if s not in topics]
    _, relevance = await score_topics(
        topics + offered, candidates, session=session, settings=settings
    )
    matches = (relevance.matrix >= settings.relevance_threshold).sum(axis=1)
    coverage = [TopicCoverage(topic, int(matches[row])) for row, topic in enumerate(topics)]
    if offered and any(c.matched == 0 for c in coverage):
        # A suggestion is close to a topic when they rank the same papers highly.
        scores = relevance.matrix
        for row, entry in enumerate(coverage):
            if entry.matched:
                continue
            closeness = scores[len(topics) :] @ scores[row]
            order = np.argsort(-closeness, kind="stable")
            entry.suggestions = [offered[i] for i in order if matches[len(topics) + i] > 0][
                :SUGGESTIONS_PER_TOPIC
            ]
    return coverage
