"""Learning from a reader's feedback, pure and without a database: how much each candidate paper
gains from being like the papers a reader asked "more like this" of, and loses from being like
those they asked "less like this" of. Likeness is closeness in meaning (paper vectors) where both
papers have a vector, shared words (tf-idf over the relevance index's stemmed terms and pairs)
otherwise. The term grows with the amount of feedback and is bounded, so that topic relevance
still leads: it reorders papers of a reader's topics, it never admits a paper on its own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from sklearn.feature_extraction.text import TfidfVectorizer

from app.ranking.relevance import Matrix, PaperText, features


@dataclass(frozen=True, slots=True)
class FeedbackWeights:
    """The feedback term's shape. `bound` is the most it can add or take away (relevance and
    trend are on a 0-1 scale); each side reaches half of it after `half_at` clicks."""

    bound: float = 0.15
    half_at: float = 3.0
    # Likeness on a 0-1 scale: cosine of paper vectors from `semantic_floor` (papers of one
    # field are rarely further apart) to `semantic_full`, tf-idf cosine likewise.
    semantic_floor: float = 0.30
    semantic_full: float = 0.75
    lexical_floor: float = 0.05
    lexical_full: float = 0.40
    # A liked paper explains an item when it raised the item's score by at least this much.
    explain_least: float = 0.02


DEFAULT_FEEDBACK_WEIGHTS = FeedbackWeights()


@dataclass(frozen=True, slots=True)
class ReaderFeedback:
    """One reader's feedback, as rows of the feedback papers (`paper_likeness`'s rows)."""

    liked: Sequence[int] = ()
    disliked: Sequence[int] = ()

    def __bool__(self) -> bool:
        return bool(self.liked) or bool(self.disliked)


@dataclass(slots=True)
class FeedbackTerm:
    """A reader's term per candidate paper, and the liked paper (row) that explains it."""

    adjustment: Matrix
    liked_row: NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))


def side_weight(clicks: int, weights: FeedbackWeights = DEFAULT_FEEDBACK_WEIGHTS) -> float:
    """The weight of one side (liked or disliked) after `clicks` clicks: grows, never past
    the bound."""
    return weights.bound * clicks / (clicks + weights.half_at) if clicks > 0 else 0.0


def _rescale(cosine: Matrix, floor: float, full: float) -> Matrix:
    rescaled: Matrix = np.clip((cosine - floor) / (full - floor), 0.0, 1.0).astype(np.float32)
    return rescaled


def lexical_cosine(feedback: Sequence[PaperText], candidates: Sequence[PaperText]) -> Matrix:
    """tf-idf cosine (feedback papers x candidates) over the relevance index's terms, the title
    counted twice."""
    if not feedback or not candidates:
        return np.zeros((len(feedback), len(candidates)), np.float32)
    vectorizer = TfidfVectorizer(analyzer=features, sublinear_tf=True, dtype=np.float32)
    texts = [f"{p.title}. {p.title}. {p.abstract}" for p in (*feedback, *candidates)]
    matrix = vectorizer.fit_transform(texts)
    cosine = (matrix[: len(feedback)] @ matrix[len(feedback) :].T).toarray()
    return np.asarray(cosine, np.float32)


def paper_likeness(
    lexical: Matrix,
    *,
    feedback_vectors: Matrix | None = None,
    feedback_has_vector: NDArray[np.bool_] | None = None,
    candidate_vectors: Matrix | None = None,
    candidate_has_vector: NDArray[np.bool_] | None = None,
    weights: FeedbackWeights = DEFAULT_FEEDBACK_WEIGHTS,
) -> Matrix:
    """How alike each feedback paper and each candidate are (feedback x candidates, 0-1): by
    meaning where both have a vector, by words (`lexical`, from `lexical_cosine`) otherwise."""
    likeness = _rescale(lexical, weights.lexical_floor, weights.lexical_full)
    if (
        feedback_vectors is None
        or candidate_vectors is None
        or feedback_has_vector is None
        or candidate_has_vector is None
        or not feedback_has_vector.any()
        or not candidate_has_vector.any()
    ):
        return likeness
    meaning = _rescale(
        feedback_vectors @ candidate_vectors.T, weights.semantic_floor, weights.semantic_full
    )
    both = feedback_has_vector[:, None] & candidate_has_vector[None, :]
    return np.where(both, meaning, likeness).astype(np.float32)


def feedback_term(
    likeness: Matrix,
    reader: ReaderFeedback,
    weights: FeedbackWeights = DEFAULT_FEEDBACK_WEIGHTS,
) -> FeedbackTerm:
    """The reader's term for every candidate: the weight of their likes times the likeness to
    the closest liked paper, minus the same for disliked papers; within ±`bound`."""
    papers = likeness.shape[1]
    adjustment = np.zeros(papers, np.float32)
    liked_row = np.full(papers, -1, np.int32)
    if reader.liked:
        rows = np.asarray(reader.liked, np.int64)
        liked = likeness[rows]
        closest = liked.argmax(axis=0)
        gain = side_weight(len(rows), weights) * liked[closest, np.arange(papers)]
        adjustment += gain
        explained = gain >= weights.explain_least
        liked_row[explained] = rows[closest[explained]]
    if reader.disliked:
        disliked = likeness[np.asarray(reader.disliked, np.int64)]
        adjustment -= side_weight(len(reader.disliked), weights) * disliked.max(axis=0)
    return FeedbackTerm(adjustment, liked_row)
