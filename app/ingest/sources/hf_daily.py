"""The Hugging Face daily-papers JSON (huggingface.co/api/daily_papers): a list of items, each with
a `paper` object (arXiv id, title, summary, authors, upvotes, optional AI summary, keywords and
GitHub repository) and the item's own comment count. Upvotes and comments are the trending signal
every other format lacks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson

from app.ingest.sources import (
    PaperRecord,
    ParseResult,
    RecordError,
    SourceError,
    fields,
    records_or_rejections,
)

PAPER_PAGE = "https://huggingface.co/papers/{}"


def _authors(paper: dict[str, Any]) -> list[str]:
    authors = paper.get("authors") or []
    if not isinstance(authors, list):
        raise RecordError("paper.authors must be a list")
    names = []
    for author in authors:
        if not isinstance(author, dict):
            raise RecordError("paper.authors must hold objects with a name")
        name = fields.text(author, "name")
        if name:
            names.append(name)
    return names


def _record(position: int, item: Any) -> PaperRecord:
    if not isinstance(item, dict):
        raise RecordError(f"item must be an object, not {type(item).__name__}")
    paper = fields.mapping(item, "paper")
    arxiv_id = fields.text(paper, "id", required=True)
    return PaperRecord(
        position=position,
        arxiv_id=arxiv_id,
        title=fields.text(paper, "title") or fields.text(item, "title") or "",
        abstract=fields.text(paper, "summary") or "",
        authors=_authors(paper),
        keywords=fields.text_list(paper, "ai_keywords"),
        ai_summary=fields.text(paper, "ai_summary"),
        url=PAPER_PAGE.format(arxiv_id),
        github_repo=fields.text(paper, "githubRepo"),
        published_at=fields.iso_datetime(paper, "publishedAt")
        or fields.iso_datetime(item, "publishedAt"),
        upvotes=fields.count(paper, "upvotes"),
        comments=fields.count(item, "numComments"),
    )


def parse(stream: BinaryIO) -> Iterator[ParseResult]:
    try:
        items = orjson.loads(stream.read())
    except orjson.JSONDecodeError as error:
        raise SourceError(f"the daily-papers JSON is malformed: {error}") from error
    if not isinstance(items, list):
        raise SourceError("expected a JSON list of daily-paper items")
    if not items:
        raise SourceError("the daily-papers list is empty")
    yield from records_or_rejections(items, _record)
