"""Topic relevance, pure and without a database: how relevant each paper is to a free-text topic,
and why. BM25F over title and abstract (the title counts more), on stemmed, stop-word-free terms
plus adjacent-term pairs so that a multi-word topic found as a phrase scores above its words found
apart. Each distinct topic is scored once against all candidates (a sparse topic x paper product),
normalised by the best score the topic could reach, so one threshold means the same for every
topic. Trend and per-subscriber selection are `app.ranking.selection`'s."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import Stemmer
from numpy.typing import NDArray
from scipy import sparse
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

K1 = 1.2
B = 0.75
TITLE_WEIGHT = 3.0
PHRASE_WEIGHT = 0.6  # a matched adjacent pair adds this share of a term's weight
SCORE_SLICE = 2048  # topics scored at a time

WORD = re.compile(r"[a-z0-9]+")
BARE_S = "ss"
_stemmer = Stemmer.Stemmer("english")
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS) | {"via", "using", "based", "towards", "toward"}

Matrix = NDArray[np.float32]


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    stem = str(_stemmer.stemWord(word))
    # Snowball leaves acronym plurals alone ("llms", "gpus", "fpgas"); papers write both forms.
    if stem == word and len(word) > 3 and word.endswith("s") and not word.endswith(BARE_S):
        return str(_stemmer.stemWord(word[:-1]))
    return stem


def terms(text: str) -> list[str]:
    """Stemmed content words of `text`, in order."""
    return [_stem(w) for w in WORD.findall(text.lower()) if w not in STOP_WORDS and len(w) > 1]


def features(text: str) -> list[str]:
    """The index terms of `text`: its stemmed words and each adjacent pair ("mixtur expert")."""
    words = terms(text)
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


@dataclass(frozen=True, slots=True)
class PaperText:
    title: str
    abstract: str


@dataclass(slots=True)
class TopicScores:
    """Normalised relevance of each topic (rows) to each paper (columns), in [0, 1]."""

    topics: list[str]
    matrix: Matrix


class RelevanceIndex:
    """BM25F index over one candidate set of papers."""

    def __init__(self, papers: Sequence[PaperText]) -> None:
        self.size = len(papers)
        self._words_cache: dict[str, list[tuple[str, int]]] = {}
        self._vectorizer = CountVectorizer(analyzer=features, dtype=np.float32)
        titles = [p.title for p in papers]
        abstracts = [p.abstract for p in papers]
        if not papers:
            self._weights = sparse.csr_matrix((0, 0), dtype=np.float32)
            self._idf = np.zeros(0, dtype=np.float32)
            self._vocabulary: dict[str, int] = {}
            self._doc_terms: list[set[int]] = []
            self._max_idf = 0.0
            return
        self._vectorizer.fit(t + "\n" + a for t, a in zip(titles, abstracts, strict=True))
        self._vocabulary = self._vectorizer.vocabulary_
        title_tf = self._vectorizer.transform(titles)
        abstract_tf = self._vectorizer.transform(abstracts)
        tf = (title_tf * TITLE_WEIGHT + abstract_tf).tocsr()
        lengths = np.asarray(tf.sum(axis=1)).ravel()
        average = float(lengths.mean()) or 1.0
        document_frequency = np.bincount(tf.indices, minlength=tf.shape[1])
        n = self.size
        self._idf = np.log1p((n - document_frequency + 0.5) / (document_frequency + 0.5)).astype(
            np.float32
        )
        # BM25 saturation per (paper, term): tf (k1 + 1) / (tf + k1 (1 - b + b len / avg)).
        norms = K1 * (1 - B + B * lengths / average)
        row_norms = np.repeat(norms, np.diff(tf.indptr))
        saturated = tf.data * (K1 + 1) / (tf.data + row_norms)
        weights = sparse.csr_matrix((saturated, tf.indices, tf.indptr), shape=tf.shape)
        self._weights = (weights @ sparse.diags(self._idf)).astype(np.float32).tocsc()
        self._doc_terms = [set(tf.indices[tf.indptr[i] : tf.indptr[i + 1]]) for i in range(n)]
        self._max_idf = float(math.log1p((n + 0.5) / 0.5))

    def _query(self, topic: str) -> tuple[dict[int, float], float]:
        """Query term weights (pairs weigh PHRASE_WEIGHT) and the best raw score reachable."""
        words = list(dict.fromkeys(terms(topic)))
        pairs = list(dict.fromkeys(f"{a} {b}" for a, b in itertools.pairwise(words)))
        weights: dict[int, float] = {}
        best = 0.0
        for term, weight in [(w, 1.0) for w in words] + [(p, PHRASE_WEIGHT) for p in pairs]:
            column = self._vocabulary.get(term)
            idf = float(self._idf[column]) if column is not None else self._max_idf
            best += weight * idf * (K1 + 1)
            if column is not None:
                weights[column] = weights.get(column, 0.0) + weight
        return weights, best

    def score(self, topics: Sequence[str]) -> TopicScores:
        """Relevance of every topic to every paper, in one sparse product."""
        rows, columns, values, best = [], [], [], []
        for row, topic in enumerate(topics):
            weights, reachable = self._query(topic)
            best.append(reachable or 1.0)
            for column, weight in weights.items():
                rows.append(row)
                columns.append(column)
                values.append(weight)
        if not self.size or not topics:
            return TopicScores(list(topics), np.zeros((len(topics), self.size), np.float32))
        queries = sparse.csr_matrix(
            (np.asarray(values, np.float32), (rows, columns)),
            shape=(len(topics), self._weights.shape[1]),
        )
        raw = np.empty((len(topics), self.size), np.float32)
        transposed = self._weights.T
        # In slices of topics, so the sparse intermediate stays small next to the dense result.
        for start in range(0, len(topics), SCORE_SLICE):
            stop = start + SCORE_SLICE
            raw[start:stop] = (queries[start:stop] @ transposed).toarray()
        raw /= np.asarray(best, np.float32)[:, None]
        np.clip(raw, 0.0, 1.0, out=raw)
        return TopicScores(list(topics), raw)

    def matched_terms(self, topic: str, paper: int) -> list[str]:
        """The topic's words found in the paper (as the topic spells them)."""
        present = self._doc_terms[paper]
        return [word for word, column in self._topic_words(topic) if column in present]

    def _topic_words(self, topic: str) -> list[tuple[str, int]]:
        words = self._words_cache.get(topic)
        if words is None:
            words = []
            for word in dict.fromkeys(WORD.findall(topic.lower())):
                if word in STOP_WORDS or len(word) < 2:
                    continue
                column = self._vocabulary.get(_stem(word))
                if column is not None:
                    words.append((word, column))
            self._words_cache[topic] = words
        return words


def rank_topic(index: RelevanceIndex, topic: str) -> list[tuple[int, float]]:
    """Papers by relevance to one topic, best first (for evaluation and previews)."""
    row = index.score([topic]).matrix[0]
    order = np.argsort(-row, kind="stable")
    return [(int(i), float(row[i])) for i in order if row[i] > 0]
