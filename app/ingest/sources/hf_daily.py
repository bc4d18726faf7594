"""The Hugging Face daily-papers JSON (huggingface.co/api/daily_papers): a list of items, each with
a `paper` object (arXiv id, title, summary, authors, upvotes, optional AI summary, keywords and
GitHub repository) and the item's own comment count. Upvotes and comments are the trending signal
every other format lacks. The list is parsed item by item as its bytes arrive (ijson), so a large
list never sits in memory whole; an item over `MAX_ITEM_BYTES` fails the source, saying so."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO, Final

import ijson
import orjson

from app.ingest.sources import (
    PaperRecord,
    ParseResult,
    RecordError,
    SourceError,
    api_error_message,
    fields,
    records_or_rejections,
)

PAPER_PAGE = "https://huggingface.co/papers/{}"
# An item is a few kB (the abstract, an AI summary, some authors); the parser holds one at a
# time, and a source whose item grows past this is refused rather than read into memory.
MAX_ITEM_BYTES: Final = 8 * 1024 * 1024
READ_BYTES = 64 * 1024


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


def _not_a_list(start: bytes, stream: BinaryIO) -> SourceError:
    """Why a source that does not open with `[` is not a daily-papers list, with what it says
    when it is a JSON document (an API error body)."""
    document = start + stream.read(MAX_ITEM_BYTES)
    try:
        detail = f": {api_error_message(orjson.loads(document))}"
    except orjson.JSONDecodeError:
        detail = ""
    return SourceError(f"expected a JSON list of daily-paper items{detail}")


def items(stream: BinaryIO) -> Iterator[Any]:
    """The list's items, one at a time, from reads of `READ_BYTES`."""
    start = stream.read(READ_BYTES).removeprefix(b"\xef\xbb\xbf")
    if not start.lstrip():
        raise SourceError("the daily-papers JSON is empty")
    if not start.lstrip().startswith(b"["):
        raise _not_a_list(start, stream)
    parsed: list[Any] = ijson.sendable_list()
    parser = ijson.items_coro(parsed, "item", use_float=True)
    since_item = 0  # bytes fed since the last item was complete
    chunk = start
    try:
        while chunk:
            parser.send(chunk)
            since_item = 0 if parsed else since_item + len(chunk)
            yield from parsed
            del parsed[:]
            if since_item > MAX_ITEM_BYTES:
                raise SourceError(
                    f"an item of the daily-papers list is larger than "
                    f"{MAX_ITEM_BYTES // (1024 * 1024)} MB"
                )
            chunk = stream.read(READ_BYTES)
        parser.close()
    except ijson.JSONError as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SourceError(f"the daily-papers JSON is malformed: {detail}") from error
    yield from parsed


def parse(stream: BinaryIO) -> Iterator[ParseResult]:
    found = False
    for result in records_or_rejections(items(stream), _record):
        found = True
        yield result
    if not found:
        raise SourceError("the daily-papers list is empty")
