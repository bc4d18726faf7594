"""Each source format parses its recorded payload into the right records, and refuses input it
cannot read as a whole with a clear `SourceError`."""

from __future__ import annotations

import gzip
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from app.ingest.sources import (
    ARXIV_ATOM,
    ARXIV_JSONL,
    HF_DAILY,
    PAGE,
    PaperRecord,
    Rejection,
    SourceError,
    detect_format,
    parse_source,
)


def parse_file(path: Path, source_format: str) -> list[PaperRecord | Rejection]:
    with path.open("rb") as stream:
        return list(parse_source(stream, source_format))


def parse_bytes(payload: bytes, source_format: str) -> list[PaperRecord | Rejection]:
    return list(parse_source(io.BytesIO(payload), source_format))


def records(results: list[PaperRecord | Rejection]) -> list[PaperRecord]:
    return [r for r in results if isinstance(r, PaperRecord)]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("arxiv-atom.xml", ARXIV_ATOM),
        ("arxiv-atom-error.xml", ARXIV_ATOM),
        ("hf-daily.json", HF_DAILY),
        ("arxiv-snapshot.jsonl", ARXIV_JSONL),
    ],
)
def test_detects_each_recorded_format(data: Path, name: str, expected: str) -> None:
    assert detect_format((data / name).read_bytes()[:4096]) == expected


def test_detects_the_papers_page(sample_page: Path) -> None:
    assert detect_format(sample_page.read_bytes()[:65536]) == PAGE


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"", "empty"),
        (b"   \n\n", "empty"),
        (b"<html><body>nope</body></html>", "not an Atom feed"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        (b"\xff\xfe\xfa garbage \xc3\x28 more text here", "neither UTF-8"),
    ],
)
def test_refuses_unknown_input(head: bytes, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        detect_format(head)


def test_page_yields_all_185_papers_without_chrome(sample_page: Path) -> None:
    results = parse_file(sample_page, PAGE)
    assert len(results) == 185
    papers = records(results)
    assert len(papers) == 185
    assert papers[0].title == "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"
    assert papers[0].abstract.startswith("Foundation models, now powering")
    assert papers[0].position == 3
    assert papers[-1].title.startswith("Parallel Neural Computing for Scene Understanding")
    assert not any("Get trending papers" in p.title or "Subscribe" in p.title for p in papers)
    assert all(p.arxiv_id is None and p.upvotes is None for p in papers)


def test_page_with_button_on_its_own_line_and_a_dangling_title() -> None:
    page = (
        b"Get trending papers in your email inbox!\r\nSubscribe\r\n\r\n"
        b"First Title\r\nFirst abstract.\r\nOrphan Title\r\n"
    )
    results = parse_bytes(page, PAGE)
    assert results[0] == PaperRecord(position=4, title="First Title", abstract="First abstract.")
    assert results[1] == Rejection(6, "title line without an abstract line after it")


@pytest.mark.parametrize(
    "payload",
    [b"Get trending papers in your email inbox once a day!\nSubscribe\n", b"\xff\xfeabc"],
)
def test_page_without_papers_or_not_text_is_an_error(payload: bytes) -> None:
    with pytest.raises(SourceError):
        parse_bytes(payload, PAGE)


def test_arxiv_atom_entries(data: Path) -> None:
    papers = records(parse_file(data / "arxiv-atom.xml", ARXIV_ATOM))
    assert len(papers) == 5
    mamba = next(p for p in papers if p.arxiv_id and p.arxiv_id.startswith("2312.00752"))
    assert mamba.arxiv_id == "2312.00752v2"  # the version is the normaliser's to strip
    assert mamba.title.startswith("Mamba: Linear-Time")
    assert "\n" in mamba.abstract  # wrapped as arXiv sends it; collapsed at normalisation
    assert mamba.authors[:2] == ["Albert Gu", "Tri Dao"]
    assert mamba.categories[0] == "cs.LG"
    assert len(mamba.categories) == len(set(mamba.categories))
    assert mamba.pdf_url and mamba.pdf_url.startswith("http://arxiv.org/pdf/2312.00752")
    assert mamba.url == "http://arxiv.org/abs/2312.00752v2"
    assert mamba.github_repo == "https://github.com/state-spaces/mamba"
    assert mamba.published_at is not None and mamba.published_at.tzinfo is not None
    tmac = next(p for p in papers if p.arxiv_id and p.arxiv_id.startswith("2407.00088"))
    assert tmac.doi == "10.48550/arXiv.2407.00088"
    assert any("$O(n^2)$" in p.title for p in papers)
    assert any("Christopher Ré" in p.authors for p in papers)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("arxiv-atom-error.xml", "arXiv API answered with an error: incorrect id format"),
        ("arxiv-atom-empty.xml", "no entries"),
    ],
)
def test_arxiv_atom_error_and_empty_feeds_are_errors(data: Path, name: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse_file(data / name, ARXIV_ATOM)


def test_arxiv_atom_truncated_or_foreign_xml_is_an_error(data: Path) -> None:
    truncated = (data / "arxiv-atom.xml").read_bytes()[:3000]
    with pytest.raises(SourceError, match="not well-formed"):
        parse_bytes(truncated, ARXIV_ATOM)
    with pytest.raises(SourceError, match="Atom <feed> root"):
        parse_bytes(b'<rss xmlns:a="http://www.w3.org/2005/Atom"></rss>', ARXIV_ATOM)


def test_arxiv_atom_does_not_resolve_external_entities() -> None:
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>http://arxiv.org/abs/2401.00001v1'
        b"</id><title>T &x;</title><summary>S</summary></entry></feed>"
    )
    [paper] = records(parse_bytes(xxe, ARXIV_ATOM))
    assert "root:" not in paper.title


def test_arxiv_atom_entry_without_arxiv_id_is_rejected() -> None:
    feed = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>urn:x</id><title>T</title>'
        b"<summary>S</summary></entry></feed>"
    )
    assert parse_bytes(feed, ARXIV_ATOM) == [
        Rejection(1, "entry id is not an arXiv abstract URL: 'urn:x'")
    ]


def test_hf_daily_items(data: Path) -> None:
    papers = records(parse_file(data / "hf-daily.json", HF_DAILY))
    assert [p.arxiv_id for p in papers] == ["2312.00752", "2410.20399", "2406.03719", "2401.05127"]
    mamba = papers[0]
    assert mamba.upvotes is not None and mamba.upvotes > 0
    assert mamba.comments is not None
    assert mamba.ai_summary and mamba.keywords
    assert mamba.github_repo == "https://github.com/state-spaces/mamba"
    assert mamba.url == "https://huggingface.co/papers/2312.00752"
    assert papers[3].ai_summary is None and papers[3].keywords == []
    assert papers[0].published_at == datetime(2023, 12, 1, 18, 1, 34, tzinfo=UTC)


def test_hf_daily_wrong_types_are_rejected_one_by_one() -> None:
    payload = (
        b'[{"paper": {"id": "2401.00001", "title": "Good", "summary": "Fine."}},'
        b' {"paper": {"id": "2401.00002", "title": 7, "summary": "x"}},'
        b' {"paper": {"id": "2401.00003", "title": "T", "summary": "S", "upvotes": "many"}},'
        b' {"paper": "not an object"}, 42]'
    )
    results = parse_bytes(payload, HF_DAILY)
    assert isinstance(results[0], PaperRecord)
    assert results[1:] == [
        Rejection(2, "title must be a string, not int"),
        Rejection(3, "upvotes must be an integer, not str"),
        Rejection(4, "paper must be an object"),
        Rejection(5, "item must be an object, not int"),
    ]


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"[1, 2", "malformed"), (b'{"a": 1}', "list"), (b"[]", "empty")],
)
def test_hf_daily_unreadable_is_an_error(payload: bytes, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse_bytes(payload, HF_DAILY)


def test_arxiv_jsonl_lines(data: Path) -> None:
    papers = records(parse_file(data / "arxiv-snapshot.jsonl", ARXIV_JSONL))
    assert len(papers) == 8
    assert papers[0].arxiv_id == "2312.00752"
    assert papers[0].authors == ["Albert Gu", "Tri Dao"]
    assert papers[0].categories == ["cs.LG", "cs.AI"]
    assert papers[0].published_at == datetime(2023, 12, 1, 18, 1, 34, tzinfo=UTC)
    assert papers[1].arxiv_id == "cs/0112017"
    splitwise = next(p for p in papers if p.arxiv_id == "2311.09188")
    assert "Íñigo Goiri" in splitwise.authors


def test_arxiv_jsonl_bad_lines_are_rejected_with_reasons(data: Path) -> None:
    results = parse_file(data / "arxiv-snapshot-bad.jsonl", ARXIV_JSONL)
    rejected = {r.position: r.reason for r in results if isinstance(r, Rejection)}
    assert rejected == {
        2: "line is not valid JSON",
        4: "line is a JSON list, not an object",
        8: "title must be a string, not int",
    }
    # Empty titles, missing abstracts, control characters, over-long fields and bad ids parse
    # fine here: rejecting them is the normaliser's job (see test_ingest_rules).
    assert len(records(results)) == 11


def test_arxiv_jsonl_that_is_not_json_lines_is_an_error(sample_page: Path) -> None:
    with pytest.raises(SourceError, match="not JSON Lines"):
        parse_file(sample_page, ARXIV_JSONL)


@pytest.mark.parametrize(
    "authors_parsed", ['["Gu, Albert"]', '[["Gu", 5, ""]]', "[[]]", '["x"]', "[null]"]
)
def test_arxiv_jsonl_malformed_parsed_authors_are_rejected(authors_parsed: str) -> None:
    line = b'{"id": "2401.00001", "title": "T", "abstract": "A.", "authors_parsed": '
    line += authors_parsed.encode() + b"}"
    assert parse_bytes(line, ARXIV_JSONL) == [
        Rejection(1, "authors_parsed must be a list of [last, first, suffix] lists")
    ]


def test_an_over_long_line_costs_its_record_not_the_source() -> None:
    long_line = b'{"id": "2401.00002", "title": "T", "abstract": "' + b"a" * 5_000_000 + b'"}'
    jsonl = (
        b'{"id": "2401.00001", "title": "First", "abstract": "A."}\n'
        + long_line
        + b'\n{"id": "2401.00003", "title": "Third", "abstract": "C."}\n'
    )
    compressed = gzip.GzipFile(fileobj=io.BytesIO(gzip.compress(jsonl)))
    results = list(parse_source(cast(BinaryIO, compressed), ARXIV_JSONL))
    assert [getattr(r, "arxiv_id", None) for r in results] == ["2401.00001", None, "2401.00003"]
    assert results[1] == Rejection(2, "line is longer than 4 MB")
    page = b"Subscribe First\nAbstract one.\nSecond\n" + b"b" * 5_000_000 + b"\nThird\nC.\n"
    results = parse_bytes(page, PAGE)
    assert [getattr(r, "title", None) for r in results] == ["First", None, "Third"]
    assert results[1] == Rejection(3, "line is longer than 4 MB")


def test_one_huge_atom_summary_costs_its_entry_not_the_feed() -> None:
    # libxml2's tree builder refuses a text node over 10 MB, and with it the whole feed.
    entry = (
        "<entry><id>http://arxiv.org/abs/2401.0000{n}v1</id><title>Paper {n}</title>"
        "<summary>{summary}</summary><author><name>A. Author</name></author></entry>"
    )
    feed = (
        '<feed xmlns="http://www.w3.org/2005/Atom">'
        + entry.format(n=1, summary="Fine.")
        + entry.format(n=2, summary="x" * (11 * 1024 * 1024))
        + entry.format(n=3, summary="Also fine.")
        + "</feed>"
    ).encode()
    results = parse_bytes(feed, ARXIV_ATOM)
    assert [r.arxiv_id for r in records(results)] == ["2401.00001v1", "2401.00003v1"]
    assert results[1] == Rejection(2, "summary is too long (over 100,000 characters)")
    assert records(results)[1].authors == ["A. Author"]


def test_text_after_an_unresolved_entity_is_kept() -> None:
    feed = (
        b'<?xml version="1.0"?><!DOCTYPE feed SYSTEM "http://example.org/feed.dtd">'
        b'<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>http://arxiv.org/abs/2401.00001v1'
        b"</id><title>Caf&eacute; culture &amp; scaling laws</title>"
        b"<summary>Before &nbsp; after the entity, all of it.</summary></entry></feed>"
    )
    [paper] = records(parse_bytes(feed, ARXIV_ATOM))
    assert paper.title == "Caf culture & scaling laws"
    assert paper.abstract == "Before  after the entity, all of it."


def test_a_stray_nul_in_a_page_is_text_not_binary(sample_page: Path) -> None:
    with_nul = sample_page.read_bytes().replace(b"Linear-Time Sequence", b"Linear-Time\x00Sequence")
    assert detect_format(with_nul[:65536]) == PAGE
    papers = records(parse_bytes(with_nul, PAGE))
    assert len(papers) == 185 and "\x00" in papers[0].title  # rejecting it is the normaliser's


@pytest.mark.parametrize(
    ("payload", "source_format", "message"),
    [
        (b'{"error": "rate limited"}', ARXIV_JSONL, "JSON object, not papers: rate limited"),
        (
            b'{\n  "error": {\n    "message": "Invalid date",\n    "code": 400\n  }\n}\n',
            ARXIV_JSONL,
            r"one JSON document \(an object\), not papers: Invalid date",
        ),
        (b'{"detail": "Not Found"}', HF_DAILY, "expected a JSON list of daily-paper items: Not"),
    ],
)
def test_a_json_error_body_fails_with_what_it_says(
    payload: bytes, source_format: str, message: str
) -> None:
    assert detect_format(payload) == ARXIV_JSONL
    with pytest.raises(SourceError, match=message):
        parse_bytes(payload, source_format)


def test_a_daily_papers_item_over_the_cap_fails_the_source() -> None:
    huge = b'{"paper": {"id": "2401.00002", "title": "T", "summary": "' + b"s" * 9_000_000 + b'"}}'
    payload = b'[{"paper": {"id": "2401.00001", "title": "T", "summary": "S"}}, ' + huge + b"]"
    with pytest.raises(SourceError, match="an item of the daily-papers list is larger than 8 MB"):
        parse_bytes(payload, HF_DAILY)
