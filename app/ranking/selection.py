"""Choosing each subscriber's papers, pure and without a database: the trend signal (engagement
decayed by age) and the selection that mixes it with topic relevance under each subscriber's
weight, threshold, size, cutoff and exclusions. Vectorised over the topic x paper relevance matrix
of `app.ranking.relevance`, exact, and fast enough for a hundred thousand subscribers a run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from app.ranking.relevance import SCORE_SLICE, Matrix, TopicScores

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


@dataclass(slots=True)
class Picks:
    """Every reader's picks as flat arrays, best first within a reader: the picks of reader `r`
    are the entries `offsets[r]:offsets[r + 1]`. A million picks stay a few tens of MB and are
    written to the database without one Python object per pick."""

    offsets: NDArray[np.int64]
    paper: NDArray[np.int32]  # column in the candidate set
    topic: NDArray[np.int32]  # row in TopicScores, -1 when chosen on trend alone
    score: Matrix
    relevance: Matrix
    trend: Matrix

    def __len__(self) -> int:
        return len(self.paper)

    def of(self, reader: int) -> list[Pick]:
        """One reader's picks as objects (previews, dry runs and tests)."""
        start, stop = int(self.offsets[reader]), int(self.offsets[reader + 1])
        return [
            Pick(paper, score, relevance, trend, None if topic < 0 else topic)
            for paper, score, relevance, trend, topic in zip(
                self.paper[start:stop].tolist(),
                self.score[start:stop].tolist(),
                self.relevance[start:stop].tolist(),
                self.trend[start:stop].tolist(),
                self.topic[start:stop].tolist(),
                strict=True,
            )
        ]


@dataclass(slots=True)
class _Chosen:
    """Picks of some readers, in no particular order (reader, position, paper, topic, score)."""

    reader: list[NDArray[np.int32]] = field(default_factory=list)
    position: list[NDArray[np.int32]] = field(default_factory=list)
    paper: list[NDArray[np.int32]] = field(default_factory=list)
    topic: list[NDArray[np.int32]] = field(default_factory=list)
    score: list[Matrix] = field(default_factory=list)

    def add_rows(
        self,
        readers: NDArray[np.int64],
        chosen: NDArray[np.bool_],
        rank: NDArray[np.int64],
        paper: NDArray[np.int64],
        topic: NDArray[np.int64],
        score: Matrix,
    ) -> None:
        self.reader.append(np.broadcast_to(readers[:, None], chosen.shape)[chosen].astype(np.int32))
        self.position.append((rank[chosen] - 1).astype(np.int32))
        self.paper.append(paper[chosen].astype(np.int32))
        self.topic.append(topic[chosen].astype(np.int32))
        self.score.append(score[chosen].astype(np.float32))

    def picks(self, readers: int, matrix: Matrix, trend: Matrix) -> Picks:
        if not self.reader:
            empty = np.zeros(0, np.int32)
            nothing = np.zeros(0, np.float32)
            return Picks(np.zeros(readers + 1, np.int64), empty, empty, nothing, nothing, nothing)
        reader = np.concatenate(self.reader)
        order = np.lexsort((np.concatenate(self.position), reader))
        paper = np.concatenate(self.paper)[order]
        topic = np.concatenate(self.topic)[order]
        score = np.concatenate(self.score)[order]
        self.reader, self.position, self.paper, self.topic, self.score = [], [], [], [], []
        offsets = np.zeros(readers + 1, np.int64)
        np.cumsum(np.bincount(reader, minlength=readers), out=offsets[1:])
        relevance = np.zeros(len(paper), np.float32)
        matched = topic >= 0
        relevance[matched] = matrix[topic[matched], paper[matched]]
        return Picks(
            offsets=offsets,
            paper=paper,
            topic=topic,
            score=score,
            relevance=relevance,
            trend=trend[paper],
        )


def _first_picks(
    score: Matrix, paper: NDArray[np.int64], sizes: NDArray[np.int64], key_of: NDArray[np.int64]
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """For rows sorted best first: which entries are picked (qualifying, not a repeat of an
    earlier entry's dedupe key, within the reader's size) and each entry's running rank."""
    keys = key_of[paper]
    by_key = np.argsort(keys, axis=1, kind="stable")  # stable: a key's best entry comes first
    sorted_keys = np.take_along_axis(keys, by_key, axis=1)
    repeat_sorted = np.zeros(keys.shape, np.bool_)
    repeat_sorted[:, 1:] = sorted_keys[:, 1:] == sorted_keys[:, :-1]
    repeat = np.empty_like(repeat_sorted)
    np.put_along_axis(repeat, by_key, repeat_sorted, axis=1)
    valid = (score >= 0) & ~repeat
    rank = np.cumsum(valid, axis=1, dtype=np.int64)
    return valid & (rank <= sizes[:, None]), rank


def select(
    readers: Sequence[Reader],
    scores: TopicScores,
    trend: Matrix,
    *,
    first_seen: NDArray[np.float64] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    dedupe_keys: Sequence[str] | None = None,
    chunk: int = 1024,
) -> Picks:
    """Every reader's picks: papers first seen after the reader's `seen_after`, not excluded,
    over the relevance threshold for one of their topics, best `(1 - w) relevance + w trend`
    first, at most `size`. A reader without topics gets the most trending papers. Papers
    sharing a dedupe key never both appear."""
    papers = trend.shape[0]
    chosen = _Chosen()
    if papers == 0:
        return chosen.picks(len(readers), scores.matrix, trend)
    if dedupe_keys is None:
        key_of = np.arange(papers, dtype=np.int64)
    else:
        key_of = np.unique(np.asarray(dedupe_keys, dtype=object), return_inverse=True)[1]
        key_of = key_of.astype(np.int64)
    # A reader's best papers are among the best papers of each of their topics (their score is
    # the max over topics of (1 - w) relevance + w trend), so readers who share a weight and a
    # "first seen after" cutoff (everyone composed in the same run) are served from one short
    # per-topic list. Readers with exclusions take the exact full-width path.
    groups: dict[tuple[float, float], list[int]] = {}
    full_width: dict[int, list[int]] = {}
    for number, reader in enumerate(readers):
        if reader.excluded:
            full_width.setdefault(len(reader.topics), []).append(number)
        else:
            groups.setdefault((reader.seen_after, reader.trending_weight), []).append(number)
    for (seen_after, weight), members in groups.items():
        eligible = first_seen > seen_after if first_seen is not None else np.ones(papers, np.bool_)
        _select_group(
            readers, members, scores.matrix, trend, eligible, weight, threshold, key_of, chosen
        )
    for same in full_width.values():
        for start in range(0, len(same), chunk):
            _select_chunk(
                readers,
                same[start : start + chunk],
                scores.matrix,
                trend,
                first_seen=first_seen,
                threshold=threshold,
                key_of=key_of,
                chosen=chosen,
            )
    return chosen.picks(len(readers), scores.matrix, trend)


def _select_group(
    readers: Sequence[Reader],
    members: list[int],
    matrix: Matrix,
    trend: Matrix,
    eligible: NDArray[np.bool_],
    weight: float,
    threshold: float,
    key_of: NDArray[np.int64],
    chosen: _Chosen,
) -> None:
    papers = trend.shape[0]
    width = min(papers, max(readers[m].size for m in members) * 2 + 4)
    used = sorted({t for m in members for t in readers[m].topics})
    local = {topic: i for i, topic in enumerate(used)}
    # Per topic: its `width` best papers for this weight and their scores.
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
    by_count: dict[int, list[int]] = {}
    for member in members:
        by_count.setdefault(len(readers[member].topics), []).append(member)
    slice_size = 8192  # readers gathered at once: bounds the temporary arrays
    for count, with_count in by_count.items():
        if count == 0:
            trending = np.where(eligible, trend, -1.0).astype(np.float32)
            order = np.argsort(-trending, kind="stable")[:width]
            no_topic = np.full(len(order), -1, np.int64)
            _add_same_list(readers, with_count, trending[order], order, no_topic, key_of, chosen)
            continue
        for begin in range(0, len(with_count), slice_size):
            numbers = np.asarray(with_count[begin : begin + slice_size], np.int64)
            rows = np.asarray(
                [[local[t] for t in readers[n].topics] for n in numbers.tolist()], np.int64
            )
            sizes = np.asarray([readers[n].size for n in numbers.tolist()], np.int64)
            candidates = top_score[rows].reshape(len(rows), count * width)
            order = np.argsort(-candidates, axis=1, kind="stable")
            # The head of each sorted row is enough unless repeats of one paper across the
            # reader's topics use it up: those readers are redone over their whole row.
            needed = min(count * width, int(sizes.max()) + 2 * count + 4)
            short = _take_sorted(
                numbers,
                rows,
                sizes,
                candidates,
                order[:, :needed],
                top,
                width,
                used_rows,
                key_of,
                chosen,
            )
            if needed < count * width and short.any():
                _take_sorted(
                    numbers[short],
                    rows[short],
                    sizes[short],
                    candidates[short],
                    order[short],
                    top,
                    width,
                    used_rows,
                    key_of,
                    chosen,
                )


def _take_sorted(
    numbers: NDArray[np.int64],
    rows: NDArray[np.int64],
    sizes: NDArray[np.int64],
    candidates: Matrix,
    order: NDArray[np.int64],
    top: NDArray[np.int64],
    width: int,
    used_rows: NDArray[np.int64],
    key_of: NDArray[np.int64],
    chosen: _Chosen,
) -> NDArray[np.bool_]:
    """Pick from each reader's merged per-topic lists, read in `order`; returns which readers
    came up short of their size with this much of their row (they are not added)."""
    score = np.take_along_axis(candidates, order, axis=1)
    topic_position = order // width
    paper = top[np.take_along_axis(rows, topic_position, axis=1), order % width]
    picked, rank = _first_picks(score, paper, sizes, key_of)
    # Short of its size although the last entry read still qualifies: more may lie beyond.
    short: NDArray[np.bool_] = (picked.sum(axis=1) < sizes) & (score[:, -1] >= 0)
    if order.shape[1] == candidates.shape[1]:
        short[:] = False
    keep = ~short
    topic = used_rows[np.take_along_axis(rows, topic_position, axis=1)]
    chosen.add_rows(numbers[keep], picked[keep], rank[keep], paper[keep], topic[keep], score[keep])
    return short


def _add_same_list(
    readers: Sequence[Reader],
    numbers: list[int],
    score: Matrix,
    paper: NDArray[np.int64],
    topic: NDArray[np.int64],
    key_of: NDArray[np.int64],
    chosen: _Chosen,
) -> None:
    """Readers who all read one ranked list: each takes its first `size` picks of it."""
    sizes = np.asarray([readers[n].size for n in numbers], np.int64)
    picked, _ = _first_picks(score[None, :], paper[None, :], sizes.max(keepdims=True), key_of)
    columns = np.flatnonzero(picked[0])
    counts = np.minimum(sizes, len(columns))
    position = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    chosen.reader.append(np.repeat(np.asarray(numbers, np.int32), counts))
    chosen.position.append(position.astype(np.int32))
    chosen.paper.append(paper[columns][position].astype(np.int32))
    chosen.topic.append(topic[columns][position].astype(np.int32))
    chosen.score.append(score[columns][position].astype(np.float32))


def _select_chunk(
    readers: Sequence[Reader],
    numbers: list[int],
    matrix: Matrix,
    trend: Matrix,
    *,
    first_seen: NDArray[np.float64] | None,
    threshold: float,
    key_of: NDArray[np.int64],
    chosen: _Chosen,
) -> None:
    group = [readers[n] for n in numbers]
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
        topic = np.take_along_axis(rows, per_topic.argmax(axis=1), axis=1)
    else:
        topic = np.full(top.shape, -1, np.int64)
    sizes = np.asarray([r.size for r in group], np.int64)
    picked, rank = _first_picks(top_scores, top, sizes, key_of)
    chosen.add_rows(np.asarray(numbers, np.int64), picked, rank, top, topic, top_scores)
