"""The paper sources Paperboy reads and what they all parse into. Each format has its own module
that turns bytes into `PaperRecord`s (or `Rejection`s for records it cannot read), with no database
access; `detect_format` picks the module from the first bytes of the input, and `parse_source`
dispatches. Every parser reads its input in bounded pieces (lines of at most `MAX_LINE_BYTES`,
JSON items of at most `MAX_ITEM_BYTES`, XML text capped per field), so memory stays flat whatever
the input holds. Normalising and writing is `app.ingest.upsert`'s job."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, Final, TypeVar

import orjson


class SourceError(Exception):
    """The source as a whole cannot be read: nothing from it is written."""


# What reading a source's bytes can raise once it is open: the file or the network failing, and a
# gzip stream that is cut short (EOFError) or corrupt (zlib.error, which is no OSError).
READ_ERRORS: Final = (OSError, EOFError, zlib.error)


class RecordError(ValueError):
    """One record is unusable; the parser turns it into a `Rejection` and carries on."""


@dataclass(slots=True)
class PaperRecord:
    position: int
    title: str
    abstract: str
    arxiv_id: str | None = None
    authors: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    ai_summary: str | None = None
    url: str | None = None
    pdf_url: str | None = None
    doi: str | None = None
    github_repo: str | None = None
    published_at: datetime | None = None
    upvotes: int | None = None
    comments: int | None = None


@dataclass(slots=True, frozen=True)
class Rejection:
    position: int
    reason: str


ParseResult = PaperRecord | Rejection
T = TypeVar("T")
Parser = Callable[[BinaryIO], Iterator[ParseResult]]

PAGE: Final = "page"
ARXIV_ATOM: Final = "arxiv-atom"
HF_DAILY: Final = "hf-daily"
ARXIV_JSONL: Final = "arxiv-jsonl"
FORMATS: Final = (PAGE, ARXIV_ATOM, HF_DAILY, ARXIV_JSONL)

ATOM_NAMESPACE = b"http://www.w3.org/2005/Atom"
# The longest line a line-based format reads (a snapshot line is a few kB; one with thousands of
# authors some hundreds): a longer one is skipped and rejected, never held in memory.
MAX_LINE_BYTES: Final = 4 * 1024 * 1024
# Share of NUL bytes in the first bytes above which the input is binary (UTF-16 has one in two):
# a stray NUL in text only costs the record it is in.
BINARY_NUL_SHARE: Final = 0.01


def records_or_rejections(
    items: Iterable[T], build: Callable[[int, T], PaperRecord]
) -> Iterator[ParseResult]:
    """Build a record from each item (numbered from 1), turning a `RecordError` into a
    `Rejection` so one bad item never stops the others."""
    for position, item in enumerate(items, start=1):
        try:
            yield build(position, item)
        except RecordError as error:
            yield Rejection(position, str(error))


def detect_format(head: bytes) -> str:
    """Name the format of a source from its first bytes (a few kB are plenty)."""
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not start:
        raise SourceError("the source is empty")
    if start.startswith(b"<"):
        if ATOM_NAMESPACE in head:
            return ARXIV_ATOM
        raise SourceError("the source is XML but not an Atom feed (expected an arXiv API response)")
    if start.startswith(b"["):
        return HF_DAILY
    if start.startswith(b"{"):
        return ARXIV_JSONL
    if head.count(b"\x00") > len(head) * BINARY_NUL_SHARE:
        raise SourceError("the source is binary, not one of: " + ", ".join(FORMATS))
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut at the end of the sample is fine; anything earlier is not.
        if error.start < len(head) - 4:
            raise SourceError("the source is neither UTF-8 text nor a known format") from error
    return PAGE


def bounded_lines(
    stream: BinaryIO, *, limit: int = MAX_LINE_BYTES, end: int | None = None
) -> Iterator[bytes | None]:
    """The lines of `stream` (newline included), each read with at most `limit` bytes in memory;
    a longer line is skipped to its end and yields None in its place, so that line numbers stay
    true. With `end`, only the lines that begin before that offset (one crossing it is read
    whole)."""
    while end is None or stream.tell() < end:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        while (rest := stream.readline(limit)) and not rest.endswith(b"\n"):
            pass
        yield None


def api_error_message(document: Any) -> str:
    """What a JSON document that is not papers says about itself: the message of an API error
    body such as {"error": "rate limited"}, else the document itself, shortened."""
    if isinstance(document, dict):
        for key in ("error", "message", "detail", "error_description", "errors"):
            value = document.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("detail") or value
            if isinstance(value, str) and value.strip():
                return " ".join(value.split())[:300]
            if value:
                return orjson.dumps(value).decode()[:300]
    return orjson.dumps(document).decode()[:300]


def parse_source(stream: BinaryIO, source_format: str) -> Iterator[ParseResult]:
    from app.ingest.sources import arxiv_atom, arxiv_jsonl, hf_daily, page

    parsers: dict[str, Parser] = {
        PAGE: page.parse,
        ARXIV_ATOM: arxiv_atom.parse,
        HF_DAILY: hf_daily.parse,
        ARXIV_JSONL: lambda lines: arxiv_jsonl.parse(bounded_lines(lines)),
    }
    if source_format not in parsers:
        raise SourceError(f"unknown format {source_format!r}; expected one of {', '.join(FORMATS)}")
    return parsers[source_format](stream)
