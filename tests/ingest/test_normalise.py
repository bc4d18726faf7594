"""Normalisation and in-batch dedupe: the rules that decide what a stored paper looks like and
which records are rejected, with the reason an operator reads in the run report."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.ingest.normalise import (
    PaperRow,
    merge_duplicates,
    normalise,
    normalise_arxiv_id,
    title_key,
)
from app.ingest.sources import PaperRecord, RecordError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2401.00001v3", "2401.00001"),
        ("2401.00001", "2401.00001"),
        ("0704.0001v1", "0704.0001"),
        ("cs/0112017", "cs/0112017"),
        ("cs/0112017v2", "cs/0112017"),
        ("math.GT/0309136v1", "math.GT/0309136"),
        ("hep-th/9901001", "hep-th/9901001"),
        ("arXiv:2312.00752v2", "2312.00752"),
        ("http://arxiv.org/abs/2312.00752v2", "2312.00752"),
        ("https://arxiv.org/pdf/2312.00752v1.pdf", "2312.00752"),
        (" 2312.00752 ", "2312.00752"),
    ],
)
def test_arxiv_ids_lose_their_version(raw: str, expected: str) -> None:
    assert normalise_arxiv_id(raw) == expected


@pytest.mark.parametrize("raw", ["not-an-id", "2401.1", "12345.67890", "CS/0112017", "2401.00001v"])
def test_invalid_arxiv_ids_are_rejected(raw: str) -> None:
    with pytest.raises(RecordError, match="invalid arXiv id"):
        normalise_arxiv_id(raw)


def test_title_key_ignores_case_punctuation_and_spacing() -> None:
    assert (
        title_key("Mamba: Linear-Time  Sequence Modeling") == "mamba linear time sequence modeling"
    )
    assert title_key("MAMBA — linear time sequence modeling!") == title_key(
        "Mamba: Linear-Time Sequence Modeling"
    )
    assert title_key("Ｆｕｌｌｗｉｄｔｈ Title") == "fullwidth title"
    assert title_key("Straße für $\\alpha$-Netze") == "strasse für alpha netze"


def record(**fields: object) -> PaperRecord:
    base: dict[str, object] = {"position": 1, "title": "A Title", "abstract": "An abstract."}
    return PaperRecord(**(base | fields))  # type: ignore[arg-type]


def test_whitespace_collapses_and_latex_and_unicode_stay() -> None:
    row = normalise(
        record(
            title="Self-attention Does Not Need\n  $O(n^2)$ Memory",
            abstract="  We present\n  a  very simple algorithm — Łukasz's   $\\sqrt{n}$ trick.\n",
            arxiv_id="2112.05682v3",
        ),
        source="arxiv-atom",
    )
    assert row.title == "Self-attention Does Not Need $O(n^2)$ Memory"
    assert row.abstract == "We present a very simple algorithm — Łukasz's $\\sqrt{n}$ trick."
    assert row.arxiv_id == "2112.05682"
    assert row.url == "https://arxiv.org/abs/2112.05682"
    assert row.pdf_url == "https://arxiv.org/pdf/2112.05682"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"title": ""}, "no title"),
        ({"title": "   \n "}, "no title"),
        ({"abstract": ""}, "no abstract"),
        ({"title": "!!! ???"}, "title has no letters or digits"),
        ({"title": "x" * 501}, "title is too long (501 characters, limit 500)"),
        ({"abstract": "word " * 2500}, "abstract is too long"),
        ({"abstract": "bell \x07 here"}, "abstract contains control characters"),
        ({"title": "null \x00 byte"}, "title contains control characters"),
        ({"title": "escape \x1b[31m red"}, "title contains control characters"),
        ({"title": "c1 \x9b control"}, "title contains control characters"),
        ({"authors": ["Ok Name", "bad\x00name"]}, "author name contains control characters"),
        ({"url": "javascript:alert(1)"}, "url is not an http(s) URL"),
        ({"pdf_url": "ftp://example.org/x.pdf"}, "pdf_url is not an http(s) URL"),
        ({"github_repo": "https://github.com/a/b\r\nBcc: x"}, "contains whitespace or control"),
        ({"arxiv_id": "nope"}, "invalid arXiv id"),
    ],
)
def test_bad_records_are_rejected_with_a_reason(fields: dict[str, object], reason: str) -> None:
    with pytest.raises(RecordError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        normalise(record(**fields), source="page")


def test_naive_dates_are_utc_and_huge_author_lists_are_shortened() -> None:
    row = normalise(
        record(
            published_at=datetime(2024, 1, 2, 3, 4, 5),
            authors=[f"Author {i}" for i in range(3000)],
            github_repo="http://github.com/state-spaces/mamba.git",
        ),
        source="arxiv-jsonl",
    )
    assert row.published_at is not None and row.published_at.utcoffset() is not None
    assert row.authors is not None and len(row.authors) == 201 and row.authors[-1] == "et al."
    assert row.github_repo == "https://github.com/state-spaces/mamba"


def row(title: str, arxiv_id: str | None = None, **fields: object) -> PaperRow:
    return PaperRow(
        arxiv_id=arxiv_id,
        title=title,
        title_key=title_key(title),
        abstract="A.",
        source="t",
        **fields,  # type: ignore[arg-type]
    )


def test_merge_joins_same_id_and_same_title() -> None:
    merged = merge_duplicates(
        [
            row("Alpha Paper", upvotes=1),
            row("ALPHA paper!", "2401.00001", authors=["A"]),
            row("Alpha Paper v2 title", "2401.00001", upvotes=5),
            row("Beta Paper"),
        ]
    )
    assert len(merged) == 2
    alpha = merged[0]
    assert (alpha.title, alpha.arxiv_id, alpha.authors, alpha.upvotes) == (
        "Alpha Paper",
        "2401.00001",
        ["A"],
        5,
    )


def test_merge_bridges_two_earlier_groups() -> None:
    merged = merge_duplicates(
        [row("One", "2401.00001"), row("Two", "2401.00002"), row("Two", "2401.00001")]
    )
    assert len(merged) == 1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"upvotes": 3_000_000_000}, "upvotes is out of range (3000000000; from 0 to 2147483647)"),
        ({"comments": 2**31}, "comments is out of range"),
        (
            {"published_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))},
            "published_at is out of range (0001-01-01T00:00:00+05:00)",
        ),
        (
            {"published_at": datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))},
            "published_at is out of range (9999-12-31T23:00:00-05:00)",
        ),
        ({"published_at": datetime(1066, 10, 14, tzinfo=UTC)}, "published_at is out of range"),
        ({"published_at": datetime(2999, 1, 1)}, "published_at is out of range"),
        ({"arxiv_id": "a" * 40 + "/2401001"}, "invalid arXiv id"),
    ],
)
def test_values_the_paper_table_cannot_hold_are_rejected(
    fields: dict[str, object], reason: str
) -> None:
    with pytest.raises(RecordError, match=re.escape(reason)):
        normalise(record(**fields), source="hf-daily")


def test_dates_are_stored_in_utc_and_counts_at_the_edge_pass() -> None:
    row = normalise(
        record(
            published_at=datetime(2024, 1, 2, 3, 0, tzinfo=timezone(timedelta(hours=5))),
            upvotes=2**31 - 1,
            comments=0,
        ),
        source="hf-daily",
    )
    assert row.published_at == datetime(2024, 1, 1, 22, 0, tzinfo=UTC)
    assert row.published_at.tzinfo is UTC
    assert (row.upvotes, row.comments) == (2**31 - 1, 0)
