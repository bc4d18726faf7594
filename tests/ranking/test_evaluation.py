"""Ranking quality, measured on the judged set in tests/data (10 topics graded by reading the 185
sample abstracts): the production relevance keeps its nDCG@10 and beats plain BM25."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bm25s
import numpy as np
import orjson
import pytest

from app.ranking.evaluation import (
    EvaluationError,
    JudgedPaper,
    evaluate,
    ndcg_at,
    read_judged_papers,
    read_qrels,
    read_topics,
)
from tests.conftest import DATA, SAMPLE_PAGE

# The level lexical ranking reaches on the first ten judged jargon topics (0.917 when this was
# written); a change that drops below it made ranking worse. The topics judged later are
# measured by `paperboy eval` per group, lexical beside fused.
MEAN_NDCG_FLOOR = 0.90
FIRST_TOPICS = {
    "moe", "llm-quant", "fpga", "kv-cache", "spec-dec", "nas", "ssm", "dist-train",
    "gpu-kernels", "edge",
}  # fmt: skip


@pytest.fixture(scope="module")
def judged(
    request: pytest.FixtureRequest,
) -> tuple[list[JudgedPaper], dict[str, str], dict[str, dict[str, int]]]:
    topics = read_topics(DATA / "eval-topics.tsv")
    qrels = read_qrels(DATA / "eval-qrels.tsv", topics)
    first = {topic_id: text for topic_id, text in topics.items() if topic_id in FIRST_TOPICS}
    return read_judged_papers(str(SAMPLE_PAGE)), first, qrels


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_ndcg() -> None:
    assert ndcg_at([2, 1, 0], [2, 1]) == pytest.approx(1.0)
    assert ndcg_at([0, 0, 0], [2]) == 0.0
    assert ndcg_at([1, 2], [2, 1]) < 1.0
    assert ndcg_at([], []) == 0.0


def test_production_ranking_keeps_its_quality(judged) -> None:  # type: ignore[no-untyped-def]
    papers, topics, qrels = judged
    assert len(papers) == 185 and len(topics) >= 8
    results = evaluate(papers, topics, qrels)
    assert mean([r.ndcg for r in results]) >= MEAN_NDCG_FLOOR
    assert all(r.ndcg > 0.6 for r in results), [(r.topic_id, r.ndcg) for r in results]


def test_production_ranking_beats_plain_bm25(judged) -> None:  # type: ignore[no-untyped-def]
    papers, topics, qrels = judged
    retriever = bm25s.BM25()
    corpus = [f"{p.title} {p.abstract}" for p in papers]
    retriever.index(
        bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False
    )

    def plain(topic: str) -> list[int]:
        query = bm25s.tokenize(topic, stopwords="en", return_ids=False, show_progress=False)[0]
        scores = retriever.get_scores(query)
        return [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] > 0]

    ours = mean([r.ndcg for r in evaluate(papers, topics, qrels)])
    baseline = mean([r.ndcg for r in evaluate(papers, topics, qrels, ranker=plain)])
    assert ours > baseline + 0.02, (ours, baseline)


def test_malformed_judgements_name_the_line(tmp_path: Path) -> None:
    topics = tmp_path / "topics.tsv"
    topics.write_text("a\tmixture of experts\nb only one column\n")
    with pytest.raises(EvaluationError, match=r"topics\.tsv:2: expected 2"):
        read_topics(topics)
    topics.write_text("a\tmixture of experts\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("a\tSome paper\t3\n")
    with pytest.raises(EvaluationError, match=r"qrels\.tsv:1: grade must be 0, 1 or 2"):
        read_qrels(qrels, read_topics(topics))
    qrels.write_text("z\tSome paper\t2\n")
    with pytest.raises(EvaluationError, match="unknown topic 'z'"):
        read_qrels(qrels, read_topics(topics))


def test_qrels_may_name_papers_by_arxiv_id(tmp_path: Path) -> None:
    papers = [
        JudgedPaper("Alpha", "mixture of experts routing", "2401.00001"),
        JudgedPaper("Beta", "graphs"),
    ]
    topics = {"moe": "mixture of experts"}
    qrels = tmp_path / "q.tsv"
    qrels.write_text("moe\tarXiv:2401.00001v2\t2\n")
    [result] = evaluate(papers, topics, read_qrels(qrels, topics))
    assert result.ndcg == pytest.approx(1.0)


@pytest.mark.slow
def test_eval_command_prints_json(data: Path, sample_page: Path) -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "paperboy"),
            "eval",
            "--topics",
            str(data / "eval-topics.tsv"),
            "--qrels",
            str(data / "eval-qrels.tsv"),
            "--corpus",
            str(sample_page),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    report = orjson.loads(result.stdout)
    assert report["papers"] == 185 and report["k"] == 10
    first = [t["ndcg"] for t in report["topics"] if t["id"] in FIRST_TOPICS]
    assert len(first) == len(FIRST_TOPICS) and mean(first) >= MEAN_NDCG_FLOOR
    assert {t["id"] for t in report["topics"]} >= {"moe", "llm-quant", "fpga"}
