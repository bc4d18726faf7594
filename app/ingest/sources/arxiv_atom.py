"""The arXiv API Atom feed (export.arxiv.org/api/query): one `entry` per paper, with versioned ids
such as http://arxiv.org/abs/2401.00001v2, wrapped titles and summaries, authors, PDF links,
categories, comments and DOIs. The API reports failures as a feed holding one error entry, and an
empty result as a feed with no entries: both are errors here, never zero papers silently."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import BinaryIO

from lxml import etree

from app.ingest.sources import (
    PaperRecord,
    ParseResult,
    RecordError,
    SourceError,
    records_or_rejections,
)

ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV = "{http://arxiv.org/schemas/atom}"
ABS_ID = re.compile(r"arxiv\.org/abs/(.+)$")
GITHUB_URL = re.compile(r"https?://github\.com/[\w.-]+/[\w.-]+")


def _text(element: etree._Element, path: str) -> str | None:
    found = element.find(path)
    return found.text if found is not None and found.text is not None else None


def _datetime(entry: etree._Element, tag: str) -> datetime | None:
    value = _text(entry, f"{ATOM}{tag}")
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError as error:
        raise RecordError(f"{tag} is not an ISO 8601 date: {value[:40]!r}") from error


def _record(position: int, entry: etree._Element) -> PaperRecord:
    entry_id = (_text(entry, f"{ATOM}id") or "").strip()
    match = ABS_ID.search(entry_id)
    if not match:
        raise RecordError(f"entry id is not an arXiv abstract URL: {entry_id[:80]!r}")
    url = pdf_url = doi_url = None
    for link in entry.iterfind(f"{ATOM}link"):
        if link.get("title") == "pdf":
            pdf_url = link.get("href")
        elif link.get("title") == "doi":
            doi_url = link.get("href")
        elif link.get("rel") == "alternate":
            url = link.get("href")
    primary = entry.find(f"{ARXIV}primary_category")
    categories = [primary.get("term", "")] if primary is not None else []
    categories += [c.get("term", "") for c in entry.iterfind(f"{ATOM}category")]
    comment = _text(entry, f"{ARXIV}comment") or ""
    github = GITHUB_URL.search(comment)
    doi = _text(entry, f"{ARXIV}doi")
    if doi is None and doi_url:
        doi = doi_url.split("doi.org/", 1)[-1]
    return PaperRecord(
        position=position,
        arxiv_id=match.group(1),
        title=_text(entry, f"{ATOM}title") or "",
        abstract=_text(entry, f"{ATOM}summary") or "",
        authors=[
            name
            for author in entry.iterfind(f"{ATOM}author")
            if (name := _text(author, f"{ATOM}name"))
        ],
        categories=list(dict.fromkeys(term for term in categories if term)),
        url=url,
        pdf_url=pdf_url,
        doi=doi,
        github_repo=github.group(0) if github else None,
        published_at=_datetime(entry, "published"),
    )


def parse(stream: BinaryIO) -> Iterator[ParseResult]:
    # API responses are a few MB at most, so the whole feed is parsed before anything is yielded:
    # a truncated or malformed feed fails as a whole and writes nothing.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.parse(stream, parser).getroot()
    except etree.XMLSyntaxError as error:
        raise SourceError(f"the Atom feed is not well-formed XML: {error}") from error
    if root.tag != f"{ATOM}feed":
        raise SourceError(f"expected an Atom <feed> root element, found <{root.tag}>")
    entries = root.findall(f"{ATOM}entry")
    for entry in entries:
        if "/api/errors" in (_text(entry, f"{ATOM}id") or ""):
            detail = " ".join((_text(entry, f"{ATOM}summary") or "unknown error").split())
            raise SourceError(f"the arXiv API answered with an error: {detail}")
    if not entries:
        raise SourceError("the Atom feed has no entries (the query matched no papers)")
    yield from records_or_rejections(entries, _record)
