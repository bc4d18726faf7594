"""Fusing words and meaning: one 0-1 relevance that selection's single threshold gates. A strong
match of either kind is admitted on its own, a topic leans on words when its words occur in the
papers and on meaning when they do not, order is kept, and a paper without a vector keeps its
lexical relevance."""

from __future__ import annotations

import numpy as np

from app.ranking.fusion import DEFAULT_WEIGHTS, blend, fuse, lexical_weights, meaning_scores

THRESHOLD = 0.2


def matrix(*rows: list[float]) -> np.ndarray:
    return np.asarray(rows, np.float32)


def test_meaning_goes_from_nothing_at_the_floor_to_full_at_the_ceiling() -> None:
    cosine = matrix([0.0, DEFAULT_WEIGHTS.cosine_floor, 0.375, DEFAULT_WEIGHTS.cosine_ceiling, 0.9])
    scaled = meaning_scores(cosine)[0]
    assert scaled[0] == scaled[1] == 0.0 and scaled[3] == scaled[4] == 1.0
    assert 0.0 < scaled[2] < 1.0


def test_a_topic_whose_words_occur_leans_on_words() -> None:
    jargon = [1.0, 0.4, 0.0]  # its words found squarely in one paper
    plain = [0.1, 0.05, 0.0]  # its words barely occur anywhere
    weights = lexical_weights(matrix(jargon, plain))[:, 0]
    assert weights[0] == DEFAULT_WEIGHTS.most_lexical_weight
    assert DEFAULT_WEIGHTS.least_lexical_weight <= weights[1] < 0.4


def test_a_strong_match_in_meaning_is_admitted_without_shared_words() -> None:
    lexical = matrix([0.0, 0.0, 0.05])
    cosine = matrix([0.7, 0.1, 0.2])
    fused = fuse(lexical, cosine, np.ones(3, np.bool_), threshold=THRESHOLD)[0]
    assert fused[0] >= THRESHOLD  # close in meaning: in
    assert fused[1] < THRESHOLD and fused[2] < THRESHOLD  # neither words nor meaning: out


def test_a_strong_match_in_words_stays_in_whatever_the_meaning() -> None:
    lexical = matrix([0.9, 0.25])
    cosine = matrix([0.0, 0.0])
    fused = fuse(lexical, cosine, np.ones(2, np.bool_), threshold=THRESHOLD)[0]
    assert (fused >= THRESHOLD).all() and fused[0] > fused[1]


def test_admitted_papers_keep_the_blends_order() -> None:
    rng = np.random.default_rng(1)
    lexical = rng.random((5, 40), dtype=np.float32)
    cosine = rng.random((5, 40), dtype=np.float32)
    present = rng.random(40) > 0.2
    fused = fuse(lexical, cosine, present, threshold=THRESHOLD)
    blended = blend(lexical, cosine, present)
    for row in range(5):
        admitted = fused[row] >= THRESHOLD
        order = np.argsort(-blended[row][admitted], kind="stable")
        assert (np.diff(fused[row][admitted][order]) <= 1e-6).all()
        # Whoever is in ranks above whoever is out.
        if admitted.any() and (~admitted).any():
            assert fused[row][admitted].min() > fused[row][~admitted].max()


def test_a_paper_without_a_vector_keeps_its_lexical_relevance() -> None:
    lexical = matrix([0.5, 0.1])
    cosine = matrix([0.0, 0.9])  # meaningless: no vector
    absent = np.zeros(2, np.bool_)
    fused = fuse(lexical, cosine, absent, threshold=THRESHOLD)[0]
    assert fused[0] >= THRESHOLD and fused[1] < THRESHOLD
    assert blend(lexical, cosine, absent)[0].tolist() == lexical[0].tolist()
