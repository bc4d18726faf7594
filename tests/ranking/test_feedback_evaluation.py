"""What feedback is worth, measured on the judged set by words (the semantic figures are
bench/feedback.py's): a simulated reader's ranking of jargon topics gains by day 5 and no
jargon topic loses on any day;
day 1 is the ranking without feedback; `paperboy eval --feedback-days` reports the same."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from app.ranking.evaluation import read_judged_papers, read_qrels, read_topics
from app.ranking.feedback_evaluation import feedback_ndcg, feedback_pool, reported_days
from tests.conftest import DATA, SAMPLE_PAGE

THRESHOLD = 0.2


def group(name: str) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    topics = read_topics(DATA / f"eval-{name}topics.tsv")
    return topics, read_qrels(DATA / f"eval-{name}qrels.tsv", topics)


def test_a_reader_who_rates_their_digests_gets_a_better_ranking_by_words() -> None:
    pool = feedback_pool(read_judged_papers(str(SAMPLE_PAGE)), None, threshold=THRESHOLD)
    for name in ("", "plain-"):
        topics, qrels = group(name)
        judged = {t: text for t, text in topics.items() if any(qrels[t].values())}
        days = feedback_ndcg(pool, judged, qrels, days=5)
        first = sum(d.whole_pool[0] for d in days.values()) / len(days)
        fifth = sum(d.whole_pool[4] for d in days.values()) / len(days)
        # By words, plain-language topics bring almost nothing to rate: no gain, and no loss.
        assert fifth > first + 0.02 if not name else fifth >= first, name
        for topic_id, measured in days.items():
            # Day 1 has no feedback: with and without are the same ranking.
            assert measured.unseen_with_feedback[0] == measured.unseen_without[0]
            if not name:
                assert min(measured.whole_pool) >= measured.whole_pool[0] - 1e-9, topic_id


def test_reported_days() -> None:
    assert reported_days(10) == [1, 5, 10]
    assert reported_days(3) == [1, 3]
    assert reported_days(0) == []


@pytest.mark.slow
def test_eval_command_reports_feedback_days() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "paperboy"),
            "eval",
            "--topics",
            str(DATA / "eval-topics.tsv"),
            "--qrels",
            str(DATA / "eval-qrels.tsv"),
            "--corpus",
            str(SAMPLE_PAGE),
            "--feedback-days",
            "5",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PAPERBOY_EMBEDDING_MODEL": "none"},
    )
    report = orjson.loads(result.stdout)
    assert report["signals"] == ["lexical", "feedback day 1", "feedback day 5"]
    overall = report["means"][-1]
    assert overall["feedback day 1"] == pytest.approx(overall["lexical"])
    assert overall["feedback day 5"] > overall["feedback day 1"]
    assert report["mean_ndcg"] == overall["lexical"]
