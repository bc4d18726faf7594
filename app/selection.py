"""Choosing each subscriber's papers, pure and without a database: the trend signal (engagement
decayed by age) and the selection that mixes it with topic relevance under each subscriber's
weight, threshold, size, cutoff and exclusions. Vectorised over the topic x paper relevance matrix
of `app.ranking`, exact, and fast enough for a hundred thousand subscribers a run."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.ranking import SCORE_SLICE, Matrix, TopicScores

DEFAULT_THRESHOLD = 0.2
TREND_HALF_LIFE_HOURS = 72.0
# Engagement that saturates the trend signal: a paper with this many upvotes (comments count
# three times) is as trending as it gets.
ENGAGEMENT_SCALE = 300.0
UNENGAGED_TREND = 0.3  # share of the trend signal a fresh paper gets with no engagement known


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
    chunk: int = 1024,
) -> None:
    """Fill each reader's `picks`: papers first seen after the reader's `seen_after`, not
    excluded, over the relevance threshold for one of their topics, best `(1 - w) relevance +
    w trend` first, at most `size`. A reader without topics gets the most trending papers.
    Papers sharing a dedupe key never both appear."""
    papers = trend.shape[0]
    if papers == 0:
        return
    # A reader's best papers are among the best papers of each of their topics (their score is
    # the max over topics of (1 - w) relevance + w trend), so readers who share a weight and a
    # "first seen after" cutoff (everyone composed in the same run) are served from one short
    # per-topic list. Readers with exclusions take the exact full-width path.
    groups: dict[tuple[float, float], list[Reader]] = {}
    full_width: list[Reader] = []
    for reader in readers:
        if reader.excluded:
            full_width.append(reader)
        else:
            groups.setdefault((reader.seen_after, reader.trending_weight), []).append(reader)
    for (seen_after, weight), members in groups.items():
        eligible = first_seen > seen_after if first_seen is not None else np.ones(papers, np.bool_)
        _select_group(members, scores.matrix, trend, eligible, weight, threshold, dedupe_keys)
    by_topic_count: dict[int, list[Reader]] = {}
    for reader in full_width:
        by_topic_count.setdefault(len(reader.topics), []).append(reader)
    for same in by_topic_count.values():
        for start in range(0, len(same), chunk):
            _select_chunk(
                same[start : start + chunk],
                scores.matrix,
                trend,
                first_seen=first_seen,
                threshold=threshold,
                dedupe_keys=dedupe_keys,
            )


def _select_group(
    members: Sequence[Reader],
    matrix: Matrix,
    trend: Matrix,
    eligible: NDArray[np.bool_],
    weight: float,
    threshold: float,
    dedupe_keys: Sequence[str] | None,
) -> None:
    papers = trend.shape[0]
    width = min(papers, max(r.size for r in members) * 2 + 4)
    used = sorted({t for r in members for t in r.topics})
    local = {topic: i for i, topic in enumerate(used)}
    # Per topic: its `width` best papers for this weight (paper, score, relevance); one extra
    # empty row pads readers with fewer topics.
    top = np.empty((len(used), width), np.int64)
    top_score = np.empty((len(used), width), np.float32)
    used_rows = np.asarray(used, np.int64)
    for start in range(0, len(used), SCORE_SLICE):
        relevance = matrix[used_rows[start : start + SCORE_SLICE]]
        score = (1 - weight) * relevance + weight * trend[None, :]
        score[(relevance < threshold) | ~eligible[None, :]] = -1.0
        if width < papers:
            best = np.argpartition(-score, width - 1, axis=1)[:, :width]
        else:
            best = np.broadcast_to(np.arange(papers), score.shape)
        top[start : start + SCORE_SLICE] = best
        top_score[start : start + SCORE_SLICE] = np.take_along_axis(score, best, axis=1)
    trend_of = trend.tolist()
    trending = np.where(eligible, trend, -1.0)
    trending_order = np.argsort(-trending, kind="stable")[:width].tolist()
    trending_of = trending.tolist()
    top_topic = np.repeat(np.arange(len(used), dtype=np.int64)[:, None], width, axis=1)
    by_count: dict[int, list[Reader]] = {}
    for reader in members:
        by_count.setdefault(len(reader.topics), []).append(reader)
    slice_size = 8192  # readers gathered at once: bounds the temporary arrays
    for count, readers_with_count in by_count.items():
        if count == 0:
            ranked = [(c, trending_of[c], 0.0, None) for c in trending_order]
            for reader in readers_with_count:
                _take(reader, ranked, dedupe_keys, trend_of)
            continue
        for begin in range(0, len(readers_with_count), slice_size):
            _take_slice(
                readers_with_count[begin : begin + slice_size],
                count,
                width,
                local,
                used,
                top,
                top_score,
                top_topic,
                matrix,
                weight,
                trend_of,
                dedupe_keys,
            )


def _take_slice(
    same: Sequence[Reader],
    count: int,
    width: int,
    local: dict[int, int],
    used: list[int],
    top: NDArray[Any],
    top_score: Matrix,
    top_topic: NDArray[np.int64],
    matrix: Matrix,
    weight: float,
    trend_of: list[float],
    dedupe_keys: Sequence[str] | None,
) -> None:
    rows = np.asarray([[local[t] for t in r.topics] for r in same], np.int64)

    def gather(
        table: NDArray[Any], rows: NDArray[np.int64] = rows, shape: int = count * width
    ) -> NDArray[Any]:
        return table[rows].reshape(len(rows), shape)

    candidates = gather(top_score)
    order = np.argsort(-candidates, axis=1, kind="stable")
    # Only the head of each sorted row becomes Python objects (the conversion is the slow
    # part); a reader whose head runs dry because of repeats falls back to the whole row.
    needed = min(count * width, max(r.size for r in same) + 2 * count + 4)
    slots = len(used) + 1
    packed = gather(top) * slots + gather(top_topic)  # paper column and topic in one int
    head = order[:, :needed]
    packed_of = np.take_along_axis(packed, head, axis=1).tolist()
    scores_of = np.take_along_axis(candidates, head, axis=1).tolist()
    for i, reader in enumerate(same):
        codes, scores = packed_of[i], scores_of[i]
        while True:
            _take_packed(reader, codes, scores, slots, used, matrix, weight, trend_of, dedupe_keys)
            if len(reader.picks) >= reader.size or len(codes) == count * width:
                break
            reader.picks.clear()
            codes, scores = packed[i, order[i]].tolist(), candidates[i, order[i]].tolist()


def _take_packed(
    reader: Reader,
    packed: list[int],
    scores: list[float],
    slots: int,
    used: list[int],
    matrix: Matrix,
    weight: float,
    trend_of: list[float],
    dedupe_keys: Sequence[str] | None,
) -> None:
    taken: set[object] = set()
    picks = reader.picks
    for code, score_value in zip(packed, scores, strict=True):
        if score_value < 0 or len(picks) >= reader.size:
            break
        column, local = divmod(code, slots)
        key = dedupe_keys[column] if dedupe_keys is not None else column
        if key in taken:
            continue
        taken.add(key)
        trend_value = trend_of[column]
        relevance_value = (
            (score_value - weight * trend_value) / (1 - weight)
            if weight < 1
            else float(matrix[used[local], column])
        )
        picks.append(Pick(column, score_value, relevance_value, trend_value, used[local]))


def _take(
    reader: Reader,
    ranked: Iterable[tuple[int, float, float, int | None]],
    dedupe_keys: Sequence[str] | None,
    trend_of: list[float],
) -> None:
    """Append the first qualifying papers of `ranked` (best first) not taken yet."""
    taken: set[object] = set()
    for column, score_value, relevance_value, topic_row in ranked:
        if score_value < 0 or len(reader.picks) >= reader.size:
            break
        key = dedupe_keys[column] if dedupe_keys is not None else column
        if key in taken:
            continue
        taken.add(key)
        reader.picks.append(
            Pick(
                paper=column,
                score=score_value,
                relevance=relevance_value,
                trend=trend_of[column],
                topic=topic_row,
            )
        )


def _select_chunk(
    group: Sequence[Reader],
    matrix: Matrix,
    trend: Matrix,
    *,
    first_seen: NDArray[np.float64] | None,
    threshold: float,
    dedupe_keys: Sequence[str] | None,
) -> None:
    count, papers = len(group), trend.shape[0]
    topic_count = len(group[0].topics)
    rows = np.asarray([r.topics for r in group], np.int64).reshape(count, topic_count)
    weight = np.asarray([r.trending_weight for r in group], np.float32)[:, None]
    if topic_count:
        score = matrix[rows[:, 0]]
        for position in range(1, topic_count):
            np.maximum(score, matrix[rows[:, position]], out=score)
        qualifies = score >= threshold
        # relevance -> (1 - w) relevance + w trend, in place
        score *= 1 - weight
        score += weight * trend[None, :]
        score[~qualifies] = -1.0
    else:
        score = np.repeat(trend[None, :], count, axis=0)
    if first_seen is not None:
        cutoffs = np.asarray([r.seen_after for r in group], np.float64)[:, None]
        score[first_seen[None, :] <= cutoffs] = -1.0
    for i, reader in enumerate(group):
        if reader.excluded:
            score[i, list(reader.excluded)] = -1.0
    # Twice the digest size (plus slack for duplicates) is all a reader can use.
    width = min(papers, max(r.size for r in group) * 2 + 4)
    if width < papers:
        top = np.argpartition(-score, width - 1, axis=1)[:, :width]
    else:
        top = np.broadcast_to(np.arange(papers), (count, papers))
    top_scores = np.take_along_axis(score, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    top_scores = np.take_along_axis(top_scores, order, axis=1)
    if topic_count:
        # Which topic matched, only for the few papers that can be picked.
        per_topic = matrix[rows[:, :, None], top[:, None, :]]  # readers x topics x width
        best = per_topic.argmax(axis=1)
        topic_of = np.take_along_axis(rows, best, axis=1).tolist()
        relevance_of = per_topic.max(axis=1).tolist()
    else:
        topic_of = relevance_of = np.zeros_like(top).tolist()
    # Whole-chunk conversion to Python lists: per-element numpy indexing costs far more.
    columns, scores_of, trend_of = top.tolist(), top_scores.tolist(), trend.tolist()
    for i, reader in enumerate(group):
        topics = topic_of[i] if topic_count else [None] * len(columns[i])
        ranked = zip(columns[i], scores_of[i], relevance_of[i], topics, strict=True)
        _take(reader, ranked, dedupe_keys, trend_of)
