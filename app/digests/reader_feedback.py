"""What compose knows of readers' feedback: each due reader's recent "more / less like this"
clicks, and how similar the papers they clicked on are to today's candidates (by meaning where
both have a vector under the configured model, by words otherwise). The term it adds to a
reader's scores is `app.ranking.feedback_profile`'s; this module only loads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.digests.candidates import Candidate
from app.models import Feedback, FeedbackSignal, Paper, PaperVector
from app.ranking.feedback_profile import (
    PaperSimilarity,
    ReaderFeedback,
    lexical_cosines,
    paper_similarity,
)
from app.ranking.relevance import Matrix, PaperText
from app.ranking.semantic import Encoder, load_paper_vectors

# A reader's most recent clicks are what they want now; older ones stop counting.
RECENT_CLICKS = 100
SUBSCRIBERS_AT_ONCE = 5000


@dataclass(slots=True)
class LoadedFeedback:
    """The papers due readers clicked on (rows), their similarity to the candidates, and each
    reader's clicks as rows."""

    titles: list[str] = field(default_factory=list)
    similarity: PaperSimilarity | None = None
    of_reader: dict[int, ReaderFeedback] = field(default_factory=dict)


async def load_feedback(
    subscriber_ids: Sequence[int],
    candidates: Sequence[Candidate],
    *,
    session: AsyncSession,
    encoder: Encoder | None,
) -> LoadedFeedback:
    """The feedback of `subscriber_ids` (their latest `RECENT_CLICKS` each), ready to rank
    `candidates` with."""
    row_of: dict[int, int] = {}
    texts: list[PaperText] = []
    liked: dict[int, list[int]] = {}
    disliked: dict[int, list[int]] = {}
    for start in range(0, len(subscriber_ids), SUBSCRIBERS_AT_ONCE):
        chunk = list(subscriber_ids[start : start + SUBSCRIBERS_AT_ONCE])
        rows = await session.execute(
            select(
                Feedback.subscriber_id,
                Feedback.paper_id,
                Feedback.signal,
                Paper.title,
                Paper.abstract,
            )
            .join(Paper, Paper.id == Feedback.paper_id)
            .where(Feedback.subscriber_id.in_(chunk))
            .order_by(Feedback.subscriber_id, Feedback.clicked_at.desc(), Feedback.paper_id)
        )
        for subscriber_id, paper_id, signal, title, abstract in rows:
            side = liked if signal == FeedbackSignal.MORE else disliked
            if len(liked.get(subscriber_id, ())) + len(disliked.get(subscriber_id, ())) >= (
                RECENT_CLICKS
            ):
                continue
            if paper_id not in row_of:
                row_of[paper_id] = len(texts)
                texts.append(PaperText(title, abstract))
            side.setdefault(subscriber_id, []).append(row_of[paper_id])
    loaded = LoadedFeedback(titles=[text.title for text in texts])
    if not texts or not candidates:
        return loaded
    loaded.of_reader = {
        subscriber_id: ReaderFeedback(liked.get(subscriber_id, ()), disliked.get(subscriber_id, ()))
        for subscriber_id in liked.keys() | disliked.keys()
    }
    lexical = lexical_cosines(texts, [PaperText(c.title, c.abstract) for c in candidates])
    loaded.similarity = await _similarity(
        list(row_of), [c.paper_id for c in candidates], lexical, session=session, encoder=encoder
    )
    return loaded


async def _similarity(
    feedback_ids: list[int],
    candidate_ids: list[int],
    lexical: tuple[Matrix, Matrix],
    *,
    session: AsyncSession,
    encoder: Encoder | None,
) -> PaperSimilarity:
    if encoder is None:
        return paper_similarity(*lexical)
    sample = await session.scalar(
        select(PaperVector.vector)
        .where(PaperVector.model == encoder.name, PaperVector.paper_id.in_(feedback_ids))
        .limit(1)
    )
    if sample is None:
        return paper_similarity(*lexical)
    dimension = len(sample) // np.dtype(np.float32).itemsize
    feedback = await load_paper_vectors(
        feedback_ids, session=session, model=encoder.name, dimension=dimension
    )
    candidates = await load_paper_vectors(
        candidate_ids, session=session, model=encoder.name, dimension=dimension
    )
    return paper_similarity(
        *lexical,
        feedback_vectors=feedback.matrix,
        feedback_has_vector=feedback.present,
        candidate_vectors=candidates.matrix,
        candidate_has_vector=candidates.present,
    )
