"""The arXiv API Atom feed (export.arxiv.org/api/query): one `entry` per paper, with versioned ids
such as http://arxiv.org/abs/2401.00001v2, wrapped titles and summaries, authors, PDF links,
categories, comments and DOIs. The API reports failures as a feed holding one error entry, and an
empty result as a feed with no entries: both are errors here, never zero papers silently.

The feed is parsed as a stream of events (lxml's parser target interface) that keeps only the
fields of the entry at hand, each capped at `MAX_FIELD_CHARS`: memory stays flat whatever the feed
holds, and an entry with an oversized field is rejected on its own (libxml2's tree builder would
refuse the whole feed over one text node past 10 MB). Entities are never fetched: an external or
undeclared one is left out and the text around it kept."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO, Final

from lxml import etree

from app.ingest.sources import (
    PaperRecord,
    ParseResult,
    RecordError,
    Rejection,
    SourceError,
)

ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV = "{http://arxiv.org/schemas/atom}"
ABS_ID = re.compile(r"arxiv\.org/abs/(.+)$")
GITHUB_URL = re.compile(r"https?://github\.com/[\w.-]+/[\w.-]+")
# Well past any limit the normaliser keeps (an abstract of 10,000 characters): a longer field is
# not read further and its entry is rejected.
MAX_FIELD_CHARS: Final = 100_000
READ_BYTES = 64 * 1024
# The text fields of an entry, by element, and the name each goes by in a rejection.
TEXT_FIELDS = {
    f"{ATOM}id": "id",
    f"{ATOM}title": "title",
    f"{ATOM}summary": "summary",
    f"{ATOM}published": "published",
    f"{ARXIV}comment": "comment",
    f"{ARXIV}doi": "doi",
}


@dataclass(slots=True)
class Entry:
    """What the parser keeps of one `<entry>`."""

    text: dict[str, str] = field(default_factory=dict)
    authors: list[str] = field(default_factory=list)
    links: list[dict[str, str]] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    oversized: str | None = None  # the first field past MAX_FIELD_CHARS


class FeedTarget:
    """lxml parser target: turns parse events into finished `Entry`s (collected in `entries`
    for the caller to take) and notes the root element."""

    def __init__(self) -> None:
        self.root: str | None = None
        self.entries: list[Entry] = []
        self._path: list[str] = []
        self._entry: Entry | None = None
        self._field: str | None = None  # the text field being read, or "author" for a name
        self._parts: list[str] = []
        self._chars = 0

    # lxml hands str (this parser decodes): the bytes in the signatures are the protocol's.
    def start(self, tag: str | bytes, attrib: dict[str | bytes, str | bytes]) -> None:
        assert isinstance(tag, str)
        if self.root is None:
            self.root = tag
        self._path.append(tag)
        depth = len(self._path)
        if depth == 2 and tag == f"{ATOM}entry":
            self._entry = Entry()
        elif self._entry is None:
            return
        elif depth == 3:
            if tag in TEXT_FIELDS:
                self._begin(TEXT_FIELDS[tag])
            elif tag == f"{ATOM}link":
                self._entry.links.append({str(k): str(v) for k, v in attrib.items()})
            elif tag in (f"{ATOM}category", f"{ARXIV}primary_category"):
                term = str(attrib.get("term", ""))
                if tag == f"{ARXIV}primary_category":
                    self._entry.categories.insert(0, term)
                else:
                    self._entry.categories.append(term)
        elif depth == 4 and tag == f"{ATOM}name" and self._path[2] == f"{ATOM}author":
            self._begin("author")

    def _begin(self, name: str) -> None:
        self._field, self._parts, self._chars = name, [], 0

    def data(self, data: str | bytes) -> None:
        if self._field is None:
            return
        text = data if isinstance(data, str) else data.decode()
        self._chars += len(text)
        if self._chars <= MAX_FIELD_CHARS:
            self._parts.append(text)
        elif self._entry is not None and self._entry.oversized is None:
            self._entry.oversized = "author name" if self._field == "author" else self._field

    def end(self, tag: str | bytes) -> None:
        depth = len(self._path)
        self._path.pop()
        entry = self._entry
        if entry is None:
            return
        if depth == 2:
            self.entries.append(entry)
            self._entry = None
        elif self._field is not None and depth == (4 if self._field == "author" else 3):
            value = "".join(self._parts)
            if self._field == "author":
                if value:
                    entry.authors.append(value)
            else:
                entry.text[self._field] = value
            self._field, self._parts = None, []

    def comment(self, text: str | bytes) -> None:
        return None

    def close(self) -> None:
        return None


def _datetime(entry: Entry, name: str) -> datetime | None:
    value = entry.text.get(name)
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError as error:
        raise RecordError(f"{name} is not an ISO 8601 date: {value[:40]!r}") from error


def _record(position: int, entry: Entry) -> PaperRecord:
    if entry.oversized is not None:
        raise RecordError(f"{entry.oversized} is too long (over {MAX_FIELD_CHARS:,} characters)")
    entry_id = entry.text.get("id", "").strip()
    match = ABS_ID.search(entry_id)
    if not match:
        raise RecordError(f"entry id is not an arXiv abstract URL: {entry_id[:80]!r}")
    url = pdf_url = doi_url = None
    for link in entry.links:
        if link.get("title") == "pdf":
            pdf_url = link.get("href")
        elif link.get("title") == "doi":
            doi_url = link.get("href")
        elif link.get("rel") == "alternate":
            url = link.get("href")
    github = GITHUB_URL.search(entry.text.get("comment", ""))
    doi = entry.text.get("doi")
    if doi is None and doi_url:
        doi = doi_url.split("doi.org/", 1)[-1]
    return PaperRecord(
        position=position,
        arxiv_id=match.group(1),
        title=entry.text.get("title", ""),
        abstract=entry.text.get("summary", ""),
        authors=entry.authors,
        categories=list(dict.fromkeys(term for term in entry.categories if term)),
        url=url,
        pdf_url=pdf_url,
        doi=doi,
        github_repo=github.group(0) if github else None,
        published_at=_datetime(entry, "published"),
    )


def _checked(entry: Entry) -> Entry:
    if "/api/errors" in entry.text.get("id", ""):
        detail = " ".join((entry.text.get("summary") or "unknown error").split())
        raise SourceError(f"the arXiv API answered with an error: {detail}")
    return entry


def parse(stream: BinaryIO) -> Iterator[ParseResult]:
    target = FeedTarget()
    parser = etree.XMLParser(target=target, resolve_entities=False, no_network=True)
    position = 0
    while True:
        chunk = stream.read(READ_BYTES)
        try:
            if chunk:
                parser.feed(chunk)
            else:
                parser.close()
        except etree.XMLSyntaxError as error:
            raise SourceError(f"the Atom feed is not well-formed XML: {error}") from error
        if target.root is not None and target.root != f"{ATOM}feed":
            raise SourceError(f"expected an Atom <feed> root element, found <{target.root}>")
        for entry in target.entries:
            position += 1
            try:
                yield _record(position, _checked(entry))
            except RecordError as error:
                yield Rejection(position, str(error))
        target.entries.clear()
        if not chunk:
            break
    if target.root is None:
        raise SourceError("the Atom feed is not well-formed XML: no root element")
    if position == 0:
        raise SourceError("the Atom feed has no entries (the query matched no papers)")
