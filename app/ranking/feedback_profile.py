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
    trend are on a 0-1 scale); each side reaches half of it after `half_at` clicks. Chosen on
    the tune topics of the judged set (bench/feedback.py, docs/ranking.md)."""

    bound: float = 0.2
    half_at: float = 1.0
    # Closeness on a 0-1 scale: cosine to the liked (or disliked) papers' centroid, from
    # `semantic_floor` (papers of one field are rarely further apart) to `semantic_full` by
    # meaning, and likewise by words (tf-idf).
    semantic_floor: float = 0.50
    semantic_full: float = 0.80
    lexical_floor: float = 0.05
    lexical_full: float = 0.40
    # A liked paper explains an item when the likes raised the item's score by at least this.
    explain_least: float = 0.02


DEFAULT_FEEDBACK_WEIGHTS = FeedbackWeights()


@dataclass(frozen=True, slots=True)
class ReaderFeedback:
    """One reader's feedback, as rows of the feedback papers (`PaperSimilarity`'s rows)."""

    liked: Sequence[int] = ()
    disliked: Sequence[int] = ()

    def __bool__(self) -> bool:
        return bool(self.liked) or bool(self.disliked)


@dataclass(slots=True)
class PaperSimilarity:
    """Cosines of the papers readers clicked on (rows) to the candidates and among themselves,
    by meaning where both papers have a vector, by words otherwise; `by_meaning` says which
    candidates were measured by meaning (their cosines are on another scale)."""

    to_candidates: Matrix
    among_feedback: Matrix
    by_meaning: NDArray[np.bool_]


@dataclass(slots=True)
class FeedbackTerm:
    """A reader's term per candidate paper, what their likes alone add, and the liked paper
    (row) that explains it."""

    adjustment: Matrix
    liked_gain: Matrix
    liked_row: NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))


def side_weight(clicks: int, weights: FeedbackWeights = DEFAULT_FEEDBACK_WEIGHTS) -> float:
    """The weight of one side (liked or disliked) after `clicks` clicks: grows, never past
    the bound."""
    return weights.bound * clicks / (clicks + weights.half_at) if clicks > 0 else 0.0


def lexical_cosines(
    feedback: Sequence[PaperText], candidates: Sequence[PaperText]
) -> tuple[Matrix, Matrix]:
    """tf-idf cosines over the relevance index's terms (the title counted twice): feedback
    papers x candidates, and feedback papers x feedback papers."""
    if not feedback or not candidates:
        return (
            np.zeros((len(feedback), len(candidates)), np.float32),
            np.eye(len(feedback), dtype=np.float32),
        )
    vectorizer = TfidfVectorizer(analyzer=features, sublinear_tf=True, dtype=np.float32)
    texts = [f"{p.title}. {p.title}. {p.abstract}" for p in (*feedback, *candidates)]
    matrix = vectorizer.fit_transform(texts)
    rows = matrix[: len(feedback)]
    to_candidates = np.asarray((rows @ matrix[len(feedback) :].T).toarray(), np.float32)
    among = np.asarray((rows @ rows.T).toarray(), np.float32)
    return to_candidates, among


def paper_similarity(
    lexical_to_candidates: Matrix,
    lexical_among: Matrix,
    *,
    feedback_vectors: Matrix | None = None,
    feedback_has_vector: NDArray[np.bool_] | None = None,
    candidate_vectors: Matrix | None = None,
    candidate_has_vector: NDArray[np.bool_] | None = None,
) -> PaperSimilarity:
    """The cosines to rank with: by meaning where the candidate and the clicked paper both have
    a vector, by words (`lexical_cosines`) otherwise."""
    papers = lexical_to_candidates.shape[1]
    if (
        feedback_vectors is None
        or candidate_vectors is None
        or feedback_has_vector is None
        or candidate_has_vector is None
        or not feedback_has_vector.any()
        or not candidate_has_vector.any()
    ):
        return PaperSimilarity(lexical_to_candidates, lexical_among, np.zeros(papers, np.bool_))
    both = feedback_has_vector[:, None] & candidate_has_vector[None, :]
    to_candidates = np.where(
        both, feedback_vectors @ candidate_vectors.T, lexical_to_candidates
    ).astype(np.float32)
    among = np.where(
        feedback_has_vector[:, None] & feedback_has_vector[None, :],
        feedback_vectors @ feedback_vectors.T,
        lexical_among,
    ).astype(np.float32)
    return PaperSimilarity(to_candidates, among, candidate_has_vector.copy())


def centroid_closeness(
    similarity: PaperSimilarity,
    rows: Sequence[int] | NDArray[np.int64],
    weights: FeedbackWeights = DEFAULT_FEEDBACK_WEIGHTS,
) -> Matrix:
    """How close each candidate is (0-1) to the centroid of the papers `rows`: the cosine to
    their mean vector, which is the sum of the cosines to each over the mean's length."""
    chosen = np.asarray(rows, np.int64)
    length = float(np.sqrt(max(similarity.among_feedback[np.ix_(chosen, chosen)].sum(), 1e-12)))
    cosine = similarity.to_candidates[chosen].sum(axis=0) / length
    floor = np.where(similarity.by_meaning, weights.semantic_floor, weights.lexical_floor)
    full = np.where(similarity.by_meaning, weights.semantic_full, weights.lexical_full)
    closeness: Matrix = np.clip((cosine - floor) / (full - floor), 0.0, 1.0).astype(np.float32)
    return closeness


def feedback_term(
    similarity: PaperSimilarity,
    reader: ReaderFeedback,
    weights: FeedbackWeights = DEFAULT_FEEDBACK_WEIGHTS,
    *,
    explain: bool = True,
) -> FeedbackTerm:
    """The reader's term for every candidate: the weight of their likes times the closeness to
    what they liked (the centroid of the liked papers, as in Rocchio's relevance feedback),
    minus the same for what they disliked; within ±`bound`. Centroids, not the closest single
    paper: one liked paper's near twin that is off the reader's interest moves little. Without
    `explain`, `liked_row` is left for `explaining_likes` to work out for the papers picked."""
    papers = similarity.to_candidates.shape[1]
    adjustment = np.zeros(papers, np.float32)
    liked_gain = np.zeros(papers, np.float32)
    liked_row = np.full(papers, -1, np.int32)
    if reader.liked:
        rows = np.asarray(reader.liked, np.int64)
        liked_gain = side_weight(len(rows), weights) * centroid_closeness(similarity, rows, weights)
        adjustment += liked_gain
        if explain:
            liked_row = explaining_likes(similarity, rows, np.arange(papers), liked_gain, weights)
    if reader.disliked:
        rows = np.asarray(reader.disliked, np.int64)
        adjustment -= side_weight(len(rows), weights) * centroid_closeness(
            similarity, rows, weights
        )
    return FeedbackTerm(adjustment, liked_gain, liked_row)


def explaining_likes(
    similarity: PaperSimilarity,
    liked: Sequence[int] | NDArray[np.int64],
    columns: NDArray[np.int64],
    gain: Matrix,
    weights: FeedbackWeights = DEFAULT_FEEDBACK_WEIGHTS,
) -> NDArray[np.int32]:
    """For the candidates `columns` (raised by `gain` each), the liked paper (row) closest to
    each, or -1 where the likes raised it too little to say so."""
    rows = np.asarray(liked, np.int64)
    closest = rows[similarity.to_candidates[np.ix_(rows, columns)].argmax(axis=0)]
    return np.where(gain >= weights.explain_least, closest, -1).astype(np.int32)
