"""Choosing each subscriber's papers, pure and without a database: the selection that mixes topic
relevance (`app.ranking.relevance`) with the trend signal (`app.ranking.trend`) under each reader's
weight, threshold, size, cutoff and exclusions. One implementation serves every reader: readers who
share a weight and a "first seen after" cutoff (everyone composed in the same run) are served from
short per-topic lists of the best papers, merged per reader. Exact (the tests hold it to choosing
for one reader at a time) and fast enough for a hundred thousand subscribers a run. Readers who
gave feedback add their own bounded term (`app.ranking.feedback_profile`) and are chosen for one
at a time, over all the candidates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from app.ranking.feedback_profile import (
    DEFAULT_FEEDBACK_WEIGHTS,
    FeedbackWeights,
    PaperSimilarity,
    ReaderFeedback,
    explaining_likes,
    feedback_term,
)
from app.ranking.relevance import SCORE_SLICE, Matrix, TopicScores

DEFAULT_THRESHOLD = 0.2
READERS_AT_ONCE = 8192  # readers gathered at once: bounds the temporary arrays


@dataclass(slots=True)
class Reader:
    """What selection needs to know about one subscriber."""

    topics: list[int]  # rows in TopicScores
    size: int
    trending_weight: float
    seen_after: float = -math.inf  # only papers first seen after this (epoch seconds) qualify
    excluded: frozenset[int] = frozenset()  # candidate columns this reader already received
    feedback: ReaderFeedback = field(default_factory=ReaderFeedback)  # similarity rows


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
    liked: NDArray[np.int32]  # row of the liked paper that raised it, -1 when none did

    def __len__(self) -> int:
        return len(self.paper)


@dataclass(slots=True)
class _Chosen:
    """Picks of some readers, in no particular order (reader, position, paper, topic, score)."""

    reader: list[NDArray[np.int32]] = field(default_factory=list)
    position: list[NDArray[np.int32]] = field(default_factory=list)
    paper: list[NDArray[np.int32]] = field(default_factory=list)
    topic: list[NDArray[np.int32]] = field(default_factory=list)
    score: list[Matrix] = field(default_factory=list)
    liked: list[NDArray[np.int32]] = field(default_factory=list)

    def add_rows(
        self,
        readers: NDArray[np.int64],
        chosen: NDArray[np.bool_],
        rank: NDArray[np.int64],
        paper: NDArray[np.int64],
        topic: NDArray[np.int64],
        score: Matrix,
        liked: NDArray[np.int32] | None = None,
    ) -> None:
        self.reader.append(np.broadcast_to(readers[:, None], chosen.shape)[chosen].astype(np.int32))
        self.position.append((rank[chosen] - 1).astype(np.int32))
        self.paper.append(paper[chosen].astype(np.int32))
        self.topic.append(topic[chosen].astype(np.int32))
        self.score.append(score[chosen].astype(np.float32))
        picked = int(np.count_nonzero(chosen))
        self.liked.append(
            np.full(picked, -1, np.int32) if liked is None else liked[chosen].astype(np.int32)
        )

    def picks(self, readers: int, matrix: Matrix, trend: Matrix) -> Picks:
        if not self.reader:
            empty = np.zeros(0, np.int32)
            nothing = np.zeros(0, np.float32)
            return Picks(
                np.zeros(readers + 1, np.int64), empty, empty, nothing, nothing, nothing, empty
            )
        reader = np.concatenate(self.reader)
        order = np.lexsort((np.concatenate(self.position), reader))
        paper = np.concatenate(self.paper)[order]
        topic = np.concatenate(self.topic)[order]
        score = np.concatenate(self.score)[order]
        liked = np.concatenate(self.liked)[order]
        self.reader, self.position, self.paper, self.topic, self.score = [], [], [], [], []
        self.liked = []
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
            liked=liked,
        )


def _first_picks(
    score: Matrix, paper: NDArray[np.int64], sizes: NDArray[np.int64], key_of: NDArray[np.int64]
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """For rows sorted best first: which entries are picked (qualifying, not a repeat of an
    earlier qualifying entry's dedupe key, within the reader's size) and each entry's running
    rank. An entry that does not qualify claims no key, wherever it stands in the row."""
    columns = np.arange(paper.shape[1], dtype=np.int64)
    keys = np.where(score >= 0, key_of[paper], -1 - columns)
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
    similarity: PaperSimilarity | None = None,
    feedback_weights: FeedbackWeights = DEFAULT_FEEDBACK_WEIGHTS,
) -> Picks:
    """Every reader's picks: papers first seen after the reader's `seen_after`, not excluded,
    over the relevance threshold for one of their topics, best `(1 - w) relevance + w trend`
    (plus the feedback term of a reader with feedback, from `similarity`: the clicked
    papers' cosines to the candidates) first, at most `size`. A reader without topics gets the
    most trending papers. Papers sharing a dedupe key never both appear."""
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
    # cutoff are served from one short list per topic.
    groups: dict[tuple[float, float], list[int]] = {}
    for number, reader in enumerate(readers):
        if reader.feedback and reader.topics and similarity is not None:
            eligible = (
                first_seen > reader.seen_after
                if first_seen is not None
                else np.ones(papers, np.bool_)
            )
            _pick_with_feedback(
                readers, number, scores.matrix, trend, eligible, threshold, key_of, chosen,
                similarity, feedback_weights,
            )  # fmt: skip
            continue
        groups.setdefault((reader.seen_after, reader.trending_weight), []).append(number)
    for (seen_after, weight), members in groups.items():
        eligible = first_seen > seen_after if first_seen is not None else np.ones(papers, np.bool_)
        _select_group(
            readers, members, scores.matrix, trend, eligible, weight, threshold, key_of, chosen
        )
    return chosen.picks(len(readers), scores.matrix, trend)


def _pick_with_feedback(
    readers: Sequence[Reader],
    number: int,
    matrix: Matrix,
    trend: Matrix,
    eligible: NDArray[np.bool_],
    threshold: float,
    key_of: NDArray[np.int64],
    chosen: _Chosen,
    similarity: PaperSimilarity,
    weights: FeedbackWeights,
) -> None:
    """One reader with feedback, over every candidate: the feedback term reorders papers that
    qualify for a topic; it never lets in one that does not."""
    reader = readers[number]
    rows = np.asarray(reader.topics, np.int64)
    relevance = matrix[rows]
    weight = reader.trending_weight
    per_topic = (1 - weight) * relevance + weight * trend[None, :]
    per_topic[(relevance < threshold) | ~eligible[None, :]] = -1.0
    # The best topic per paper, a row at a time: an argmax down a few long rows is slow.
    base, best_topic = per_topic[0].copy(), np.zeros(trend.shape[0], np.int64)
    for row in range(1, len(rows)):
        better = per_topic[row] > base
        base[better], best_topic[better] = per_topic[row][better], row
    columns = np.arange(trend.shape[0])
    term = feedback_term(similarity, reader.feedback, weights, explain=False)
    # Qualifying papers stay at zero or above however much the reader disliked them.
    score = np.where(base >= 0, np.maximum(base + term.adjustment, 0.0), -1.0).astype(np.float32)
    # The reader's best few are enough unless repeats or papers they already have use them up:
    # then they are chosen again over every candidate.
    width = _list_width(readers, [number], len(score))
    head = np.argpartition(-score, width - 1)[:width] if width < len(score) else columns
    for whole in (width >= len(score), True):
        order = (
            np.argsort(-score, kind="stable")
            if whole
            else head[np.argsort(-score[head], kind="stable")]
        )
        short = _pick(
            readers,
            np.asarray([number], np.int64),
            score[order][None, :],
            order[None, :],
            rows[best_topic[order]][None, :],
            key_of,
            chosen,
            complete=whole,
            liked=_explained(similarity, reader.feedback, order, weights, term.liked_gain)[None, :],
        )
        if not short.any():
            return


def _explained(
    similarity: PaperSimilarity,
    feedback: ReaderFeedback,
    order: NDArray[np.int64],
    weights: FeedbackWeights,
    liked_gain: Matrix,
) -> NDArray[np.int32]:
    """The liked paper explaining each paper of `order` (-1 for none), worked out for these
    papers only."""
    if not feedback.liked:
        return np.full(len(order), -1, np.int32)
    return explaining_likes(similarity, feedback.liked, order, liked_gain[order], weights)


def _list_width(readers: Sequence[Reader], members: list[int], papers: int) -> int:
    """How many of a topic's best papers the group's readers can use: twice the digest size plus
    slack for repeats of one paper, and one more place for each paper a reader already has."""
    return min(papers, max(readers[m].size * 2 + 4 + len(readers[m].excluded) for m in members))


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
    width = _list_width(readers, members, papers)
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
    for count, with_count in by_count.items():
        for begin in range(0, len(with_count), READERS_AT_ONCE):
            numbers = np.asarray(with_count[begin : begin + READERS_AT_ONCE], np.int64)
            if count == 0:
                _pick_trending(readers, numbers, trend, eligible, width, key_of, chosen)
            else:
                _pick_from_topics(
                    readers, numbers, local, top, top_score, used_rows, key_of, chosen
                )


def _pick_trending(
    readers: Sequence[Reader],
    numbers: NDArray[np.int64],
    trend: Matrix,
    eligible: NDArray[np.bool_],
    width: int,
    key_of: NDArray[np.int64],
    chosen: _Chosen,
) -> None:
    """Readers without topics all read one list: the most trending eligible papers."""
    trending = np.where(eligible, trend, -1.0).astype(np.float32)
    order = np.argsort(-trending, kind="stable")[:width]
    shape = (len(numbers), len(order))
    _pick(
        readers,
        numbers,
        np.broadcast_to(trending[order], shape),
        np.broadcast_to(order, shape),
        np.full(shape, -1, np.int64),
        key_of,
        chosen,
        complete=True,
    )


def _pick_from_topics(
    readers: Sequence[Reader],
    numbers: NDArray[np.int64],
    local: dict[int, int],
    top: NDArray[np.int64],
    top_score: Matrix,
    used_rows: NDArray[np.int64],
    key_of: NDArray[np.int64],
    chosen: _Chosen,
) -> None:
    """Readers with the same number of topics: each merges the lists of their topics."""
    count, width = len(readers[int(numbers[0])].topics), top.shape[1]
    rows = np.asarray([[local[t] for t in readers[n].topics] for n in numbers.tolist()], np.int64)
    candidates = top_score[rows].reshape(len(rows), count * width)
    order = np.argsort(-candidates, axis=1, kind="stable")
    # The head of each sorted row is enough unless repeats of one paper across the reader's
    # topics (or papers they already have) use it up: those readers are redone over their row.
    sizes = np.asarray([readers[n].size for n in numbers.tolist()], np.int64)
    needed = min(count * width, int(sizes.max()) + 2 * count + 4)
    short = _pick_in_order(
        readers, numbers, rows, candidates, order[:, :needed], top, used_rows, key_of, chosen
    )
    if short.any():
        _pick_in_order(
            readers, numbers[short], rows[short], candidates[short], order[short], top, used_rows,
            key_of, chosen,
        )  # fmt: skip


def _pick_in_order(
    readers: Sequence[Reader],
    numbers: NDArray[np.int64],
    rows: NDArray[np.int64],
    candidates: Matrix,
    order: NDArray[np.int64],
    top: NDArray[np.int64],
    used_rows: NDArray[np.int64],
    key_of: NDArray[np.int64],
    chosen: _Chosen,
) -> NDArray[np.bool_]:
    """Pick from each reader's merged per-topic lists, read in `order`."""
    width = top.shape[1]
    score = np.take_along_axis(candidates, order, axis=1)
    topic_rows = np.take_along_axis(rows, order // width, axis=1)
    paper = top[topic_rows, order % width]
    return _pick(
        readers,
        numbers,
        score,
        paper,
        used_rows[topic_rows],
        key_of,
        chosen,
        complete=order.shape[1] == candidates.shape[1],
    )


def _pick(
    readers: Sequence[Reader],
    numbers: NDArray[np.int64],
    score: Matrix,
    paper: NDArray[np.int64],
    topic: NDArray[np.int64],
    key_of: NDArray[np.int64],
    chosen: _Chosen,
    *,
    complete: bool,
    liked: NDArray[np.int32] | None = None,
) -> NDArray[np.bool_]:
    """Pick from each reader's row, sorted best first, leaving out what they already have;
    returns which readers came up short of their size while more of their row was left unread
    (`complete` says nothing was): they are not added, and read further."""
    sizes = np.asarray([readers[n].size for n in numbers.tolist()], np.int64)
    more_may_follow = score[:, -1] >= 0
    having = [
        (i, readers[n].excluded) for i, n in enumerate(numbers.tolist()) if readers[n].excluded
    ]
    if having:
        score = np.array(score, np.float32)
        for i, excluded in having:
            score[i, np.isin(paper[i], list(excluded))] = -1.0
    picked, rank = _first_picks(score, paper, sizes, key_of)
    short: NDArray[np.bool_] = (picked.sum(axis=1) < sizes) & more_may_follow
    if complete:
        short[:] = False
    keep = ~short
    chosen.add_rows(
        numbers[keep],
        picked[keep],
        rank[keep],
        paper[keep],
        topic[keep],
        score[keep],
        None if liked is None else liked[keep],
    )
    return short
