"""Pure scoring, no database: how relevant each paper is to a free-text topic, how much it is
trending, and which papers each subscriber gets. Relevance is BM25F over title and abstract (the
title counts more), on stemmed, stop-word-free terms plus adjacent-term pairs so that a multi-word
topic found as a phrase scores above its words found apart. Each distinct topic is scored once
against all candidates (a sparse topic x paper product), normalised by the best score the topic
could reach, so one threshold means the same for every topic. Selection for many subscribers at
once is vectorised over that matrix."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
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
DEFAULT_THRESHOLD = 0.2
TREND_HALF_LIFE_HOURS = 72.0
# Engagement that saturates the trend signal: a paper with this many upvotes (comments count
# three times) is as trending as it gets.
ENGAGEMENT_SCALE = 300.0
UNENGAGED_TREND = 0.3  # share of the trend signal a fresh paper gets with no engagement known

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
        self._vectorizer = CountVectorizer(analyzer=features, dtype=np.float32)
        titles = [p.title for p in papers]
        abstracts = [p.abstract for p in papers]
        if not papers:
            self._weights = sparse.csr_matrix((0, 0), dtype=np.float32)
            self._idf = np.zeros(0, dtype=np.float32)
            self._vocabulary: dict[str, int] = {}
            self._doc_terms: list[set[int]] = []
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
        raw = (queries @ self._weights.T).toarray().astype(np.float32)
        raw /= np.asarray(best, np.float32)[:, None]
        np.clip(raw, 0.0, 1.0, out=raw)
        return TopicScores(list(topics), raw)

    def matched_terms(self, topic: str, paper: int) -> list[str]:
        """The topic's words found in the paper (as the topic spells them)."""
        present = self._doc_terms[paper]
        found = []
        for word in WORD.findall(topic.lower()):
            if word in STOP_WORDS or len(word) < 2:
                continue
            column = self._vocabulary.get(_stem(word))
            if column is not None and column in present and word not in found:
                found.append(word)
        return found


def trend_scores(
    upvotes: Sequence[int | None],
    comments: Sequence[int | None],
    seen_at: Sequence[datetime],
    *,
    now: datetime,
) -> Matrix:
    """Trend in [0, 1]: engagement on a log scale, decayed by age. Papers from sources without
    engagement still get a recency-only share, so they are not all tied at zero."""
    engagement = np.asarray(
        [(u or 0) + 3 * (c or 0) for u, c in zip(upvotes, comments, strict=True)], np.float32
    )
    known = np.asarray(
        [u is not None or c is not None for u, c in zip(upvotes, comments, strict=True)]
    )
    level = np.minimum(1.0, np.log1p(engagement) / math.log1p(ENGAGEMENT_SCALE))
    strength = np.where(known, UNENGAGED_TREND + (1 - UNENGAGED_TREND) * level, UNENGAGED_TREND)
    hours = np.asarray(
        [max(0.0, (now - when).total_seconds() / 3600) for when in seen_at], np.float32
    )
    decayed: Matrix = (strength * np.power(0.5, hours / TREND_HALF_LIFE_HOURS)).astype(np.float32)
    return decayed


@dataclass(slots=True)
class Pick:
    paper: int  # column in the candidate set
    score: float
    relevance: float
    trend: float
    topic: int | None  # row in TopicScores, None when chosen on trend alone


@dataclass(slots=True)
class Reader:
    """What selection needs to know about one subscriber."""

    topics: list[int]  # rows in TopicScores
    size: int
    trending_weight: float
    seen_after: float = -math.inf  # only papers first seen after this (epoch seconds) qualify
    excluded: frozenset[int] = frozenset()  # candidate columns this reader already received
    picks: list[Pick] = field(default_factory=list)


def select(
    readers: Sequence[Reader],
    scores: TopicScores,
    trend: Matrix,
    *,
    first_seen: NDArray[np.float64] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    dedupe_keys: Sequence[str] | None = None,
    chunk: int = 2048,
) -> None:
    """Fill each reader's `picks`: papers first seen after the reader's `seen_after`, not
    excluded, over the relevance threshold for one of their topics, best `(1 - w) relevance +
    w trend` first, at most `size`. A reader without topics gets the most trending papers.
    Papers sharing a dedupe key never both appear."""
    papers = trend.shape[0]
    if papers == 0:
        return
    table = np.vstack([scores.matrix, np.zeros((1, papers), np.float32)])
    for start in range(0, len(readers), chunk):
        group = readers[start : start + chunk]
        most_topics = max((len(r.topics) for r in group), default=0) or 1
        # Pad topic lists with an all-zero row so every reader is one fixed-width gather.
        padded = np.full((len(group), most_topics), scores.matrix.shape[0], np.int64)
        for i, reader in enumerate(group):
            padded[i, : len(reader.topics)] = reader.topics
        gathered = table[padded]  # readers x topics x papers
        best_topic = gathered.argmax(axis=1)
        relevance = np.take_along_axis(gathered, best_topic[:, None, :], axis=1)[:, 0, :]
        weight = np.asarray([r.trending_weight for r in group], np.float32)[:, None]
        has_topics = np.asarray([bool(r.topics) for r in group])[:, None]
        score = np.where(has_topics, (1 - weight) * relevance + weight * trend, trend)
        allowed = np.where(has_topics, relevance >= threshold, True)
        if first_seen is not None:
            cutoffs = np.asarray([r.seen_after for r in group], np.float64)[:, None]
            allowed &= first_seen[None, :] > cutoffs
        for i, reader in enumerate(group):
            if reader.excluded:
                allowed[i, list(reader.excluded)] = False
        score = np.where(allowed, score, -1.0)
        width = min(papers, max(r.size for r in group) * 2 + 4)
        top = (
            np.argpartition(-score, width - 1, axis=1)[:, :width]
            if width < papers
            else (np.tile(np.arange(papers), (len(group), 1)))
        )
        for i, reader in enumerate(group):
            order = top[i][np.argsort(-score[i, top[i]], kind="stable")]
            seen: set[str] = set()
            for column in order:
                if score[i, column] < 0 or len(reader.picks) >= reader.size:
                    break
                if dedupe_keys is not None:
                    if dedupe_keys[column] in seen:
                        continue
                    seen.add(dedupe_keys[column])
                topic_row = int(padded[i, best_topic[i, column]]) if reader.topics else None
                reader.picks.append(
                    Pick(
                        paper=int(column),
                        score=float(score[i, column]),
                        relevance=float(relevance[i, column]) if reader.topics else 0.0,
                        trend=float(trend[column]),
                        topic=topic_row,
                    )
                )


def rank_topic(index: RelevanceIndex, topic: str) -> list[tuple[int, float]]:
    """Papers by relevance to one topic, best first (for evaluation and previews)."""
    row = index.score([topic]).matrix[0]
    order = np.argsort(-row, kind="stable")
    return [(int(i), float(row[i])) for i in order if row[i] > 0]


def distinct(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
