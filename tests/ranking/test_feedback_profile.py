"""The feedback term, pure: a liked paper's neighbour rises, a disliked paper's neighbour sinks,
the term grows with the amount of feedback and stays within its bound, topic relevance still
leads (feedback reorders qualifying papers, never lets in another), and the liked paper that
raised a pick is named."""

from __future__ import annotations

import itertools

import numpy as np

from app.ranking.feedback_profile import (
    DEFAULT_FEEDBACK_WEIGHTS,
    PaperSimilarity,
    ReaderFeedback,
    centroid_closeness,
    feedback_term,
    lexical_cosines,
    paper_similarity,
    side_weight,
)
from app.ranking.relevance import PaperText, TopicScores
from app.ranking.selection import Reader, select

# Candidates: four papers of one topic, of nearly equal relevance, two about attention kernels
# and two about quantisation; and one paper off the topic that is very like the liked one.
CANDIDATES = [
    PaperText("Quantising LLM weights to 4 bits", "Post-training quantization of weights."),
    PaperText("FlashAttention kernels for long context", "IO-aware exact attention kernels."),
    PaperText("Int8 activation quantization", "Quantization of activations with outliers."),
    PaperText("Fused attention kernels on GPUs", "Tiled exact attention kernels, IO-aware."),
    PaperText("Attention kernels for vision", "IO-aware exact attention kernels for images."),
]
RELEVANCE = np.asarray([[0.61, 0.60, 0.59, 0.58, 0.05]], np.float32)  # paper 4 is off topic
LIKED = PaperText("FlashAttention-3", "Fast IO-aware exact attention kernels on Hopper GPUs.")
DISLIKED = PaperText("GPTQ", "Accurate post-training quantization of weights to 4 bits.")


def similarity() -> PaperSimilarity:
    return paper_similarity(*lexical_cosines([LIKED, DISLIKED], CANDIDATES))


def order(feedback: ReaderFeedback, size: int = 5) -> list[int]:
    reader = Reader([0], size, 0.0, feedback=feedback)
    picks = select(
        [reader],
        TopicScores(["llm efficiency"], RELEVANCE.copy()),
        np.zeros(len(CANDIDATES), np.float32),
        similarity=similarity(),
    )
    return [int(p) for p in picks.paper]


def test_similarity_finds_the_neighbours_by_words() -> None:
    liked = centroid_closeness(similarity(), [0])
    assert liked[1] > 0.3 and liked[3] > 0.3  # liked ~ attention kernels
    assert liked[0] == 0 and liked[2] == 0
    disliked = centroid_closeness(similarity(), [1])
    assert disliked[0] > 0.3  # disliked ~ weight quantisation
    assert disliked[1] == 0


def test_without_feedback_relevance_orders() -> None:
    assert order(ReaderFeedback()) == [0, 1, 2, 3]


def test_a_liked_papers_neighbours_rise_and_a_disliked_ones_sink() -> None:
    liked = order(ReaderFeedback(liked=[0]))
    assert liked.index(1) < liked.index(0) and liked.index(3) < liked.index(2)
    disliked = order(ReaderFeedback(disliked=[1]))
    assert disliked.index(0) > disliked.index(2)  # the GPTQ-like paper sinks
    both = order(ReaderFeedback(liked=[0], disliked=[1]))
    assert both[:2] == [1, 3] and both[-1] == 0


def test_topic_relevance_still_leads() -> None:
    # The off-topic paper, however like the liked one, is never let in; and a clear relevance
    # lead survives the largest term.
    many_likes = ReaderFeedback(liked=[0] * 50)
    assert 4 not in order(many_likes)
    term = feedback_term(similarity(), many_likes).adjustment
    assert float(np.abs(term).max()) <= DEFAULT_FEEDBACK_WEIGHTS.bound
    # A squarely relevant paper like the disliked one, against papers less relevant by more
    # than twice the bound, like the liked one.
    relevance = np.asarray([[1.0, 0.55, 0.5, 0.5, 0.05]], np.float32)
    reader = Reader([0], 5, 0.0, feedback=ReaderFeedback(liked=[0] * 50, disliked=[1] * 50))
    picks = select(
        [reader],
        TopicScores(["llm efficiency"], relevance),
        np.zeros(len(CANDIDATES), np.float32),
        similarity=similarity(),
    )
    # 1.0 - bound beats 0.55 + bound: topics lead.
    assert int(picks.paper[0]) == 0


def test_the_term_grows_with_feedback_and_is_bounded() -> None:
    weights = [side_weight(n) for n in (0, 1, 2, 3, 10, 1000)]
    assert weights[0] == 0 and all(a < b for a, b in itertools.pairwise(weights))
    assert weights[-1] < DEFAULT_FEEDBACK_WEIGHTS.bound
    half_at = int(DEFAULT_FEEDBACK_WEIGHTS.half_at)
    assert side_weight(half_at) == DEFAULT_FEEDBACK_WEIGHTS.bound / 2  # half the bound


def test_the_liked_paper_that_raised_a_pick_is_named() -> None:
    reader = Reader([0], 5, 0.0, feedback=ReaderFeedback(liked=[0]))
    picks = select(
        [reader],
        TopicScores(["llm efficiency"], RELEVANCE.copy()),
        np.zeros(len(CANDIDATES), np.float32),
        similarity=similarity(),
    )
    liked_row = dict(zip(picks.paper.tolist(), picks.liked.tolist(), strict=True))
    assert liked_row[1] == 0 and liked_row[3] == 0  # raised by the liked paper (row 0)
    assert liked_row[0] == -1 and liked_row[2] == -1


def test_meaning_is_used_where_both_papers_have_a_vector() -> None:
    lexical = np.full((1, 2), 0.2, np.float32)
    vectors = np.asarray([[1.0, 0.0], [0.0, 1.0]], np.float32)
    measured = paper_similarity(
        lexical,
        np.ones((1, 1), np.float32),
        feedback_vectors=np.asarray([[1.0, 0.0]], np.float32),
        feedback_has_vector=np.asarray([True]),
        candidate_vectors=vectors,
        candidate_has_vector=np.asarray([True, False]),
    )
    assert measured.to_candidates.tolist() == [[1.0, np.float32(0.2)]]
    assert measured.by_meaning.tolist() == [True, False]
    closeness = centroid_closeness(measured, [0])
    assert closeness[0] == 1.0 and 0 < closeness[1] < 1  # words, on the words' own scale


def test_the_centroid_of_what_was_liked_counts_not_one_near_twin() -> None:
    # Two liked papers about one thing; a candidate twin of only one of them is less close
    # to what the reader likes than one between both.
    vectors = np.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    between = np.asarray([0.7071, 0.7071, 0.0], np.float32)
    twin = np.asarray([1.0, 0.0, 0.0], np.float32)
    measured = paper_similarity(
        np.zeros((2, 2), np.float32),
        np.eye(2, dtype=np.float32),
        feedback_vectors=vectors,
        feedback_has_vector=np.asarray([True, True]),
        candidate_vectors=np.stack([between, twin]),
        candidate_has_vector=np.asarray([True, True]),
    )
    closeness = centroid_closeness(measured, [0, 1])
    assert closeness[0] > closeness[1]


def test_a_reader_whose_feedback_moves_nothing_gets_what_the_shared_lists_give() -> None:
    # The one-reader-at-a-time path agrees with the shared per-topic lists (cutoffs, papers
    # already received, repeats of one paper, sizes), feedback aside.
    rng = np.random.default_rng(7)
    papers, topics = 400, 12
    relevance = TopicScores(
        [str(t) for t in range(topics)], rng.random((topics, papers), np.float32)
    )
    trend = rng.random(papers, dtype=np.float32)
    first_seen = rng.random(papers) * 100
    dedupe = [f"key{rng.integers(0, 300)}" for _ in range(papers)]
    nothing = PaperSimilarity(
        np.zeros((1, papers), np.float32), np.ones((1, 1), np.float32), np.zeros(papers, np.bool_)
    )
    for _ in range(30):
        kwargs = {
            "topics": [int(t) for t in rng.choice(topics, int(rng.integers(1, 4)), replace=False)],
            "size": int(rng.integers(1, 15)),
            "trending_weight": float(rng.random()),
            "seen_after": float(rng.random() * 50),
            "excluded": frozenset(int(p) for p in rng.choice(papers, 40, replace=False)),
        }
        picks = [
            select(
                [Reader(**kwargs, feedback=feedback)],  # type: ignore[arg-type]
                relevance,
                trend,
                first_seen=first_seen,
                dedupe_keys=dedupe,
                similarity=nothing,
            )
            for feedback in (ReaderFeedback(), ReaderFeedback(liked=[0]))
        ]
        assert picks[0].paper.tolist() == picks[1].paper.tolist()
        assert picks[0].topic.tolist() == picks[1].topic.tolist()
        assert picks[1].liked.tolist() == [-1] * len(picks[1])
