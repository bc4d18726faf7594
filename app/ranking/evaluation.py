"""Measuring ranking quality: reads judged topics and graded relevance (qrels), ranks a corpus for
each topic with the production relevance function, and scores the ranking with nDCG@k. Papers in
the qrels are named by arXiv id or by title (matched through the same title key ingest dedupes
on), so a judged set survives re-ingests and source changes."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.ingest.normalise import normalise_arxiv_id, prepare_batches, title_key
from app.ingest.sources import RecordError, SourceError, detect_format, parse_source
from app.models import Paper
from app.ranking.fusion import DEFAULT_WEIGHTS, FusionWeights, fuse
from app.ranking.relevance import Matrix, PaperText, RelevanceIndex, rank_topic
from app.ranking.semantic import Encoder, paper_text

Ranker = Callable[[str], list[int]]
MAX_CORPUS = 100_000


class EvaluationError(ValueError):
    """The topics or qrels file is malformed; the message names the line."""


@dataclass(frozen=True, slots=True)
class JudgedPaper:
    title: str
    abstract: str
    arxiv_id: str | None = None


@dataclass(slots=True)
class TopicResult:
    topic_id: str
    topic: str
    ndcg: float
    judged: int


def _rows(path: Path, columns: int) -> list[tuple[int, list[str]]]:
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or not "".join(row).strip() or row[0].startswith("#"):
                continue
            if len(row) != columns:
                raise EvaluationError(
                    f"{path.name}:{number}: expected {columns} tab-separated fields, not {len(row)}"
                )
            rows.append((number, [cell.strip() for cell in row]))
    return rows


def read_topics(path: Path) -> dict[str, str]:
    topics: dict[str, str] = {}
    for number, (topic_id, text) in _rows(path, 2):
        if topic_id in topics:
            raise EvaluationError(f"{path.name}:{number}: topic {topic_id!r} appears twice")
        topics[topic_id] = text
    return topics


def paper_key(reference: str) -> str:
    """'a:<arXiv id>' when the reference is an arXiv id, else 't:<title key>'."""
    try:
        return "a:" + normalise_arxiv_id(reference)
    except RecordError:
        return "t:" + title_key(reference)


def read_qrels(path: Path, topics: dict[str, str]) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {topic_id: {} for topic_id in topics}
    for number, (topic_id, reference, grade) in _rows(path, 3):
        if topic_id not in topics:
            raise EvaluationError(f"{path.name}:{number}: unknown topic {topic_id!r}")
        if grade not in ("0", "1", "2"):
            raise EvaluationError(f"{path.name}:{number}: grade must be 0, 1 or 2, not {grade!r}")
        qrels[topic_id][paper_key(reference)] = int(grade)
    return qrels


def ndcg_at(ranked_grades: Sequence[int], all_grades: Sequence[int], k: int = 10) -> float:
    def dcg(grades: Sequence[int]) -> float:
        return sum((2.0**g - 1) / math.log2(i + 2) for i, g in enumerate(grades[:k]))

    ideal = dcg(sorted(all_grades, reverse=True))
    return float(dcg(ranked_grades) / ideal) if ideal > 0 else 0.0


def production_ranker(papers: Sequence[JudgedPaper]) -> Ranker:
    index = RelevanceIndex([PaperText(p.title, p.abstract) for p in papers])
    return lambda topic: [column for column, _ in rank_topic(index, topic)]


SIGNALS = ("lexical", "semantic", "fused")


def signal_rankers(
    papers: Sequence[JudgedPaper],
    encoder: Encoder,
    *,
    threshold: float,
    weights: FusionWeights = DEFAULT_WEIGHTS,
) -> dict[str, Ranker]:
    """Rankers by words alone, by meaning alone, and by the fusion compose uses: side by side,
    over the same papers (each embedded once here)."""
    index = RelevanceIndex([PaperText(p.title, p.abstract) for p in papers])
    vectors = encoder.encode([paper_text(p.title, p.abstract) for p in papers])
    has_vector = np.ones(len(papers), np.bool_)

    def rows(topic: str) -> tuple[Matrix, Matrix]:
        return index.score([topic]).matrix, encoder.encode([topic]) @ vectors.T

    def ranked(scores: NDArray[np.float32]) -> list[int]:
        order = np.argsort(-scores, kind="stable")
        return [int(i) for i in order if scores[i] > 0]

    def lexical(topic: str) -> list[int]:
        return ranked(rows(topic)[0][0])

    def semantic(topic: str) -> list[int]:
        return ranked(rows(topic)[1][0])

    def fused(topic: str) -> list[int]:
        words, cosine = rows(topic)
        return ranked(fuse(words, cosine, has_vector, threshold=threshold, weights=weights)[0])

    return {"lexical": lexical, "semantic": semantic, "fused": fused}


def read_holdout(path: Path) -> dict[str, str]:
    """Which topics tune the fusion's weights and which are held out: topic_id<TAB>tune|holdout."""
    split: dict[str, str] = {}
    for number, (topic_id, part) in _rows(path, 2):
        if part not in ("tune", "holdout"):
            raise EvaluationError(f"{path.name}:{number}: expected tune or holdout, not {part!r}")
        split[topic_id] = part
    return split


def evaluate(
    papers: Sequence[JudgedPaper],
    topics: dict[str, str],
    qrels: dict[str, dict[str, int]],
    *,
    ranker: Ranker | None = None,
    k: int = 10,
) -> list[TopicResult]:
    rank = ranker or production_ranker(papers)
    keys = [
        ("a:" + p.arxiv_id, "t:" + title_key(p.title))
        if p.arxiv_id
        else (None, "t:" + title_key(p.title))
        for p in papers
    ]
    results = []
    for topic_id, topic in topics.items():
        judged = qrels.get(topic_id, {})

        def grade(column: int, judged: dict[str, int] = judged) -> int:
            by_id, by_title = keys[column]
            return judged.get(by_id or "", judged.get(by_title, 0))

        ranked = [grade(column) for column in rank(topic)[:k]]
        ndcg = ndcg_at(ranked, list(judged.values()), k)
        results.append(TopicResult(topic_id, topic, ndcg, sum(1 for g in judged.values() if g)))
    return results


def read_judged_papers(location: str) -> list[JudgedPaper]:
    """The papers of a source file (any ingest format), normalised as ingest would store them."""
    path = Path(location)
    if not path.is_file():
        raise SourceError(f"no such file: {location}")
    with path.open("rb") as stream:
        source_format = detect_format(stream.peek(65536))
        papers: dict[str, JudgedPaper] = {}
        for batch in prepare_batches(
            parse_source(stream, source_format), source=source_format, batch_size=5000
        ):
            for row in batch.rows:
                papers.setdefault(
                    row.arxiv_id or row.title_key,
                    JudgedPaper(row.title, row.abstract, row.arxiv_id),
                )
    return list(papers.values())


async def load_judged_papers(*, session: AsyncSession) -> list[JudgedPaper]:
    rows = await session.execute(
        select(Paper.title, Paper.abstract, Paper.arxiv_id).order_by(Paper.id).limit(MAX_CORPUS)
    )
    return [JudgedPaper(title, abstract, arxiv_id) for title, abstract, arxiv_id in rows]
