"""Measuring what feedback is worth: a simulated reader per judged topic who, day after day,
gets a digest from the pool, asks for "more like this" of the relevant papers they were sent and
"less like this" of the others, and whose ranking is scored each day in two ways:

- whole pool: nDCG@k of the whole judged pool ranked with the day's feedback profile (the
  clicks of every earlier day), the papers already rated included, as the profile ranks them;
  day 1 has no feedback and is the baseline of the same run;
- unseen papers (the "residual collection" of relevance-feedback studies): nDCG@k over the
  papers not sent yet, ranked with the day's profile and without any, side by side. Sent papers
  are never sent again, so this is the gain a reader can actually get.

Ranked as compose ranks: the papers over the relevance threshold by relevance plus the feedback
term, then the others by relevance (feedback never lets a paper in)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.ingest.normalise import title_key
from app.ranking.evaluation import JudgedPaper, ndcg_at
from app.ranking.feedback_profile import (
    DEFAULT_FEEDBACK_WEIGHTS,
    FeedbackWeights,
    PaperSimilarity,
    ReaderFeedback,
    feedback_term,
    lexical_cosines,
    paper_similarity,
)
from app.ranking.fusion import fuse
from app.ranking.relevance import Matrix, PaperText, RelevanceIndex
from app.ranking.semantic import Encoder, paper_text

DIGEST_SIZE = 10
QUALIFIED = 10.0


@dataclass(slots=True)
class FeedbackPool:
    """The judged pool, scored once: each topic's relevance as compose computes it, and how
    similar every two papers are (by meaning where there are vectors, by words otherwise)."""

    papers: Sequence[JudgedPaper]
    index: RelevanceIndex
    vectors: Matrix | None
    similarity: PaperSimilarity
    encoder: Encoder | None
    threshold: float

    def relevance(self, topic: str) -> NDArray[np.float32]:
        words = self.index.score([topic]).matrix
        if self.encoder is None or self.vectors is None:
            return np.asarray(words[0], np.float32)
        cosine = self.encoder.encode([topic]) @ self.vectors.T
        present = np.ones(len(self.papers), np.bool_)
        return np.asarray(fuse(words, cosine, present, threshold=self.threshold)[0], np.float32)


def feedback_pool(
    papers: Sequence[JudgedPaper],
    encoder: Encoder | None,
    *,
    threshold: float,
) -> FeedbackPool:
    texts = [PaperText(p.title, p.abstract) for p in papers]
    lexical = lexical_cosines(texts, texts)
    vectors = None
    if encoder is None:
        similarity = paper_similarity(*lexical)
    else:
        vectors = encoder.encode([paper_text(p.title, p.abstract) for p in papers])
        present = np.ones(len(papers), np.bool_)
        similarity = paper_similarity(
            *lexical,
            feedback_vectors=vectors,
            feedback_has_vector=present,
            candidate_vectors=vectors,
            candidate_has_vector=present,
        )
    return FeedbackPool(papers, RelevanceIndex(texts), vectors, similarity, encoder, threshold)


def pool_grades(papers: Sequence[JudgedPaper], judged: dict[str, int]) -> list[int]:
    """Each paper's grade for one topic (0 when not judged)."""
    grades = []
    for paper in papers:
        by_title = judged.get("t:" + title_key(paper.title), 0)
        grades.append(judged.get("a:" + paper.arxiv_id, by_title) if paper.arxiv_id else by_title)
    return grades


@dataclass(slots=True)
class ReaderDays:
    """One simulated reader's nDCG@k per day: whole pool with feedback, and the papers not
    sent yet with and without feedback."""

    whole_pool: list[float]
    unseen_with_feedback: list[float]
    unseen_without: list[float]


def simulate_reader(
    pool: FeedbackPool,
    topic: str,
    grades: Sequence[int],
    *,
    days: int,
    k: int = 10,
    weights: FeedbackWeights = DEFAULT_FEEDBACK_WEIGHTS,
    digest_size: int = DIGEST_SIZE,
) -> ReaderDays:
    """nDCG@k of each day 1..days for a reader of `topic` who rates what they are sent."""
    relevance = pool.relevance(topic)
    qualifies = relevance >= pool.threshold
    grade_of = np.asarray(grades)
    sent = np.zeros(len(grades), np.bool_)
    liked: list[int] = []
    disliked: list[int] = []
    result = ReaderDays([], [], [])
    baseline = _order(relevance, qualifies, np.zeros_like(relevance))
    for _ in range(days):
        term = feedback_term(pool.similarity, ReaderFeedback(liked, disliked), weights)
        order = _order(relevance, qualifies, term.adjustment)
        result.whole_pool.append(ndcg_at([int(grade_of[i]) for i in order], list(grades), k))
        unseen = [int(g) for g, was_sent in zip(grades, sent, strict=True) if not was_sent]
        for ranking, scores in (
            (order, result.unseen_with_feedback),
            (baseline, result.unseen_without),
        ):
            ranked = [int(grade_of[i]) for i in ranking if not sent[i]]
            scores.append(ndcg_at(ranked, unseen, k))
        digest = [i for i in order if qualifies[i] and not sent[i]][:digest_size]
        for paper in digest:
            sent[paper] = True
            (liked if grade_of[paper] > 0 else disliked).append(paper)
    return result


def _order(
    relevance: NDArray[np.float32], qualifies: NDArray[np.bool_], term: NDArray[np.float32]
) -> list[int]:
    """The papers with some relevance, best first: qualifying ones (QUALIFIED is above any
    relevance) by relevance plus the term, then the others by relevance."""
    adjusted = np.where(qualifies, QUALIFIED + np.maximum(relevance + term, 0.0), relevance)
    order = np.argsort(-adjusted, kind="stable")
    return [int(i) for i in order if relevance[i] > 0]


def feedback_ndcg(
    pool: FeedbackPool,
    topics: dict[str, str],
    qrels: dict[str, dict[str, int]],
    *,
    days: int,
    k: int = 10,
    weights: FeedbackWeights = DEFAULT_FEEDBACK_WEIGHTS,
) -> dict[str, ReaderDays]:
    """Each topic's nDCG@k per simulated day."""
    return {
        topic_id: simulate_reader(
            pool,
            topic,
            pool_grades(pool.papers, qrels.get(topic_id, {})),
            days=days,
            k=k,
            weights=weights,
        )
        for topic_id, topic in topics.items()
    }


def reported_days(days: int) -> list[int]:
    """The days a report shows: the first (no feedback), the fifth and the last."""
    return sorted({day for day in (1, 5, days) if 1 <= day <= days})
