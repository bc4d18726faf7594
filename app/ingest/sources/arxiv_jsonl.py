"""The arXiv metadata snapshot (the Kaggle `arxiv-metadata-oai-snapshot.json`): JSON Lines, one
paper per line, millions of lines. It is read line by line so memory stays flat whatever the size
(a line over `MAX_LINE_BYTES` is rejected unread); a line that is not a JSON object is rejected on
its own, while a first line that is not JSON at all means the input is not this format, and a
first object that is not a paper (an API's error body such as {"error": "rate limited"}) fails the
source with what it says."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from app.ingest.sources import (
    MAX_LINE_BYTES,
    PaperRecord,
    ParseResult,
    RecordError,
    Rejection,
    SourceError,
    api_error_message,
    fields,
)

# Fields of which a snapshot line has at least one; a first object with none is not a paper.
PAPER_KEYS = ("id", "title", "abstract")
# How much of a source whose first line is not JSON is read to see whether it is one JSON
# document over several lines (an indented error body).
DOCUMENT_PROBE_BYTES = 1024 * 1024
TOO_LONG = f"line is longer than {MAX_LINE_BYTES // (1024 * 1024)} MB"
AUTHOR_SEPARATOR = re.compile(r",\s*|\s+and\s+")
GITHUB_URL = re.compile(r"https?://github\.com/[\w.-]+/[\w.-]+")


def _authors(obj: dict[str, Any]) -> list[str]:
    parsed = obj.get("authors_parsed")
    if isinstance(parsed, list) and parsed:
        names = []
        for parts in parsed:
            # [last, first, suffix] -> "first last suffix"
            if type(parts) is not list or not parts or any(type(p) is not str for p in parts):
                raise RecordError("authors_parsed must be a list of [last, first, suffix] lists")
            names.append(" ".join(p for p in (*parts[1:2], parts[0], *parts[2:3]) if p))
        return names
    authors = fields.text(obj, "authors") or ""
    return [name for name in AUTHOR_SEPARATOR.split(authors) if name.strip()]


MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}


def _rfc2822_date(value: str) -> datetime:
    # The snapshot always writes "Mon, 2 Apr 2007 19:18:42 GMT"; the general RFC 2822 parser is
    # ten times slower, so it is only the fallback.
    parts = value.split()
    if len(parts) == 6 and parts[5] == "GMT" and parts[2] in MONTHS:
        hour, minute, second = parts[4].split(":")
        return datetime(
            int(parts[3]),
            MONTHS[parts[2]],
            int(parts[1]),
            int(hour),
            int(minute),
            int(second),
            tzinfo=UTC,
        )
    return parsedate_to_datetime(value)


def _published_at(obj: dict[str, Any]) -> datetime | None:
    versions = obj.get("versions")
    if isinstance(versions, list) and versions and isinstance(versions[0], dict):
        created = versions[0].get("created")
        if isinstance(created, str):
            try:
                return _rfc2822_date(created)
            except (TypeError, ValueError) as error:
                raise RecordError(f"versions[0].created is not a date: {created[:40]!r}") from error
    update_date = fields.text(obj, "update_date")
    if update_date:
        try:
            return datetime.fromisoformat(update_date).replace(tzinfo=UTC)
        except ValueError as error:
            raise RecordError(f"update_date is not a date: {update_date[:40]!r}") from error
    return None


def _record(position: int, obj: dict[str, Any]) -> PaperRecord:
    comments = fields.text(obj, "comments") or ""
    github = GITHUB_URL.search(comments)
    return PaperRecord(
        position=position,
        arxiv_id=fields.text(obj, "id", required=True),
        title=fields.text(obj, "title") or "",
        abstract=fields.text(obj, "abstract") or "",
        authors=_authors(obj),
        categories=(fields.text(obj, "categories") or "").split(),
        doi=fields.text(obj, "doi"),
        github_repo=github.group(0) if github else None,
        published_at=_published_at(obj),
    )


def _not_json_lines(first: bytes, lines: Iterator[bytes | None]) -> SourceError:
    """Why a source whose first line is not JSON is not JSON Lines: if it is one JSON document
    over several lines, what that document says."""
    document = [first]
    size = len(first)
    for line in lines:
        if line is None or size > DOCUMENT_PROBE_BYTES:
            break
        document.append(line)
        size += len(line)
    try:
        value = orjson.loads(b"".join(document))
    except orjson.JSONDecodeError:
        return SourceError("line 1 is not JSON: this is not JSON Lines")
    kind = "an object" if isinstance(value, dict) else f"a {type(value).__name__}"
    return SourceError(
        f"the source is one JSON document ({kind}), not papers: {api_error_message(value)}"
    )


def parse(
    lines: Iterable[bytes | None], *, first_line: int = 1, starts_file: bool = True
) -> Iterator[ParseResult]:
    """Parse lines (None for a line too long to read, see `bounded_lines`); `first_line`
    numbers them when a worker reads a slice of a larger file, and only the real start of a
    file decides whether the input is JSON Lines at all."""
    seen_json = not starts_file
    numbered = iter(lines)
    for position, line in enumerate(numbered, start=first_line):
        if line is None:
            yield Rejection(position, TOO_LONG)
            continue
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            if not seen_json:
                raise _not_json_lines(line, numbered) from error
            yield Rejection(position, "line is not valid JSON")
            continue
        if not seen_json and isinstance(obj, dict) and not any(k in obj for k in PAPER_KEYS):
            raise SourceError(f"the source is a JSON object, not papers: {api_error_message(obj)}")
        seen_json = True
        if not isinstance(obj, dict):
            yield Rejection(position, f"line is a JSON {type(obj).__name__}, not an object")
            continue
        try:
            yield _record(position, obj)
        except RecordError as error:
            yield Rejection(position, str(error))
