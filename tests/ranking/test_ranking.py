"""Pure ranking on the sample page: relevance puts the papers about a topic first and explains
why, trending orders by engagement and age, thresholds and sizes hold, duplicates never pair."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from app.ingest.sources import PAGE, PaperRecord, parse_source
from app.ranking.relevance import PaperText, RelevanceIndex, TopicScores, rank_topic, terms
from app.ranking.selection import Picks, Reader, select
from app.ranking.trend import trend_scores
from tests.conftest import SAMPLE_PAGE

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def sample() -> tuple[list[PaperRecord], RelevanceIndex]:
    with SAMPLE_PAGE.open("rb") as stream:
        papers = [r for r in parse_source(stream, PAGE) if isinstance(r, PaperRecord)]
    return papers, RelevanceIndex([PaperText(p.title, p.abstract) for p in papers])


def top_titles(sample: tuple[list[PaperRecord], RelevanceIndex], topic: str, n: int) -> list[str]:
    papers, index = sample
    return [papers[i].title for i, _ in rank_topic(index, topic)[:n]]


def test_terms_are_stemmed_without_stop_words() -> None:
    assert terms("Mixture-of-Experts for the LLMs") == ["mixtur", "expert", "llm"]
    assert terms("GPUs and an LLM on FPGAs") == terms("GPU and the LLMs on FPGA")


def test_mixture_of_experts_puts_the_moe_papers_first(sample) -> None:  # type: ignore[no-untyped-def]
    top = top_titles(sample, "mixture of experts", 8)
    assert all("mixture" in t.lower() or "moe" in t.lower() for t in top), top


@pytest.mark.parametrize(
    ("topic", "expected_first"),
    [
        ("speculative decoding", "Speculative"),
        ("KV cache", "KV Cache"),
        ("neural architecture search", "Architecture Search"),
        ("state space models", "Mamba"),
    ],
)
def test_topic_brings_its_papers_to_the_top(sample, topic: str, expected_first: str) -> None:  # type: ignore[no-untyped-def]
    top = top_titles(sample, topic, 3)
    assert any(expected_first.lower() in t.lower() for t in top), top


def test_phrase_beats_scattered_words() -> None:
    index = RelevanceIndex(
        [
            PaperText("Serving experts at scale", "A mixture of tricks for routing experts."),
            PaperText("Mixture of experts at scale", "Routing tokens to experts."),
            PaperText("Graph colouring", "Nothing about the topic at all."),
        ]
    )
    ranking = rank_topic(index, "mixture of experts")
    assert [column for column, _ in ranking] == [1, 0]
    assert 0 < ranking[1][1] < ranking[0][1] <= 1


def test_scores_are_normalised_per_topic(sample) -> None:  # type: ignore[no-untyped-def]
    _, index = sample
    scores = index.score(["mixture of experts", "FPGA accelerators", "quantum gravity"])
    assert scores.matrix.shape == (3, 185)
    assert float(scores.matrix.min()) >= 0.0 and float(scores.matrix.max()) <= 1.0
    best = scores.matrix.max(axis=1)
    assert best[0] > 0.6 and best[1] > 0.6  # well-covered topics reach a similar top score
    assert best[2] < 0.2  # a topic the corpus never mentions stays under any sane threshold


def test_matched_terms_use_the_topic_words(sample) -> None:  # type: ignore[no-untyped-def]
    _, index = sample
    first = rank_topic(index, "FPGA accelerators")[0][0]
    assert index.matched_terms("FPGA accelerators", first) == ["fpga", "accelerators"]


def test_trend_orders_by_engagement_and_decays_with_age() -> None:
    trend = trend_scores(
        [300, 10, None, 300, None],
        [20, 0, None, 20, 5],
        [NOW, NOW, NOW, NOW - timedelta(days=6), NOW - timedelta(hours=1)],
        now=NOW,
    )
    assert trend[0] > trend[1] > trend[2] > 0  # unknown engagement still ranks by recency
    assert trend[0] > trend[3]
    assert trend[3] < 0.3
    assert float(trend[0]) == pytest.approx(1.0, abs=0.01)


@dataclass(slots=True)
class Pick:
    paper: int
    score: float
    relevance: float
    trend: float
    topic: int | None


def picks_of(picks: Picks, reader: int) -> list[Pick]:
    """One reader's picks as objects, best first."""
    start, stop = int(picks.offsets[reader]), int(picks.offsets[reader + 1])
    return [
        Pick(paper, score, relevance, trend, None if topic < 0 else topic)
        for paper, score, relevance, trend, topic in zip(
            picks.paper[start:stop].tolist(),
            picks.score[start:stop].tolist(),
            picks.relevance[start:stop].tolist(),
            picks.trend[start:stop].tolist(),
            picks.topic[start:stop].tolist(),
            strict=True,
        )
    ]


def reader(topics: list[int], size: int = 3, weight: float = 0.3, **extra: object) -> Reader:
    return Reader(topics=topics, size=size, trending_weight=weight, **extra)  # type: ignore[arg-type]


def test_select_mixes_relevance_and_trend_and_respects_threshold_and_size() -> None:
    scores = TopicScores(
        ["a", "b"],
        np.asarray([[0.9, 0.5, 0.1, 0.45], [0.0, 0.0, 0.8, 0.0]], np.float32),
    )
    trend = np.asarray([0.0, 1.0, 0.0, 0.2], np.float32)
    relevance_first = reader([0], weight=0.0)
    trend_heavy = reader([0], weight=0.9)
    both_topics = reader([0, 1], size=10)
    no_topics = reader([], size=2)
    picks = select(
        [relevance_first, trend_heavy, both_topics, no_topics], scores, trend, threshold=0.3
    )
    assert [p.paper for p in picks_of(picks, 0)] == [0, 1, 3]
    assert picks_of(picks, 1)[0].paper == 1
    assert {p.paper for p in picks_of(picks, 2)} == {0, 1, 2, 3}
    assert next(p for p in picks_of(picks, 2) if p.paper == 2).topic == 1
    assert all(p.relevance >= 0.3 for p in picks_of(picks, 2))
    assert [p.paper for p in picks_of(picks, 3)] == [1, 3]
    assert all(p.topic is None and p.relevance == 0 for p in picks_of(picks, 3))
    assert list(picks.offsets) == [0, 3, 6, 10, 12]


def test_select_honours_cutoffs_exclusions_and_duplicates() -> None:
    scores = TopicScores(["a"], np.asarray([[0.9, 0.8, 0.7, 0.6]], np.float32))
    trend = np.zeros(4, np.float32)
    first_seen = np.asarray([100.0, 200.0, 300.0, 400.0])
    late = reader([0], size=10, seen_after=150.0, excluded=frozenset({2}))
    deduped = reader([0], size=10)
    late_picks = picks_of(select([late], scores, trend, first_seen=first_seen), 0)
    deduped_picks = picks_of(
        select([deduped], scores, trend, dedupe_keys=["k1", "k1", "k2", "k3"]), 0
    )
    assert [p.paper for p in late_picks] == [1, 3]
    assert [p.paper for p in deduped_picks] == [0, 2, 3]


def test_readers_whose_topics_agree_still_get_a_full_digest() -> None:
    # Five topics ranking the same papers identically: every paper repeats five times at the
    # head of the merged list, which must not leave the digest short.
    row = np.linspace(1.0, 0.3, 40, dtype=np.float32)
    scores = TopicScores(list("abcde"), np.tile(row, (5, 1)))
    reader_ = reader([0, 1, 2, 3, 4], size=10)
    picks = select([reader_], scores, np.zeros(40, np.float32))
    assert [p.paper for p in picks_of(picks, 0)] == list(range(10))


def one_by_one(
    reader_: Reader,
    matrix: np.ndarray,
    trend: np.ndarray,
    first_seen: np.ndarray,
    keys: list[str],
    threshold: float,
) -> list[tuple[int, int | None]]:
    """The selection rule applied to one reader at a time, in plain Python."""
    ranked: list[tuple[float, int, int | None]] = []
    w = reader_.trending_weight
    for paper in range(len(trend)):
        if first_seen[paper] <= reader_.seen_after or paper in reader_.excluded:
            continue
        if not reader_.topics:
            ranked.append((float(trend[paper]), paper, None))
            continue
        best = max(reader_.topics, key=lambda t: matrix[t, paper])
        if matrix[best, paper] >= threshold:
            score = (1 - w) * float(matrix[best, paper]) + w * float(trend[paper])
            ranked.append((score, paper, best))
    ranked.sort(key=lambda entry: -entry[0])
    picks: list[tuple[int, int | None]] = []
    taken: set[str] = set()
    for _, paper, topic in ranked:
        if keys[paper] not in taken and len(picks) < reader_.size:
            taken.add(keys[paper])
            picks.append((paper, topic))
    return picks


def test_selection_agrees_with_choosing_one_reader_at_a_time() -> None:
    rng = np.random.default_rng(3)
    papers, topics = 300, 40
    matrix = rng.random((topics, papers), dtype=np.float32) ** 3
    trend = rng.random(papers, dtype=np.float32)
    first_seen = rng.random(papers) * 100
    # A few papers share a dedupe key (the same arXiv id under two rows).
    keys = [f"k{i if rng.random() > 0.05 else i - 1}" for i in range(papers)]
    readers = []
    for _ in range(400):
        chosen = rng.choice(topics, int(rng.integers(0, 6)), replace=False).tolist()
        extra: dict[str, object] = {}
        if rng.random() < 0.3:
            extra["excluded"] = frozenset(rng.choice(papers, 20, replace=False).tolist())
        if rng.random() < 0.3:
            extra["seen_after"] = 50.0
        weight = float(rng.choice([0.0, 0.3, 0.8]))
        readers.append(reader(chosen, size=int(rng.integers(1, 15)), weight=weight, **extra))
    picks = select(
        readers,
        TopicScores([str(t) for t in range(topics)], matrix),
        trend,
        first_seen=first_seen,
        threshold=0.2,
        dedupe_keys=keys,
    )
    for number, reader_ in enumerate(readers):
        expected = one_by_one(reader_, matrix, trend, first_seen, keys, 0.2)
        assert [(p.paper, p.topic) for p in picks_of(picks, number)] == expected, number
        for pick in picks_of(picks, number):
            relevance = 0.0 if pick.topic is None else float(matrix[pick.topic, pick.paper])
            assert pick.relevance == pytest.approx(relevance)
            assert pick.trend == pytest.approx(float(trend[pick.paper]))
