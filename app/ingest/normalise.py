"""Turning parsed `PaperRecord`s into rows ready to store: validation with a reason for every
rejection, normalisation (arXiv ids without version, collapsed whitespace, a `title_key` for
dedupe, https links, values within what the `paper` table stores), merging duplicates inside a
batch, and cutting a stream of records into batches bounded in rows and in text. Pure Python, no
database: the parsing workers run it too."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast
from urllib.parse import urlsplit

from app.ingest.sources import PaperRecord, RecordError, Rejection

MAX_TITLE_CHARS = 500
MAX_ABSTRACT_CHARS = 10_000
MAX_SUMMARY_CHARS = 2_000
MAX_AUTHORS = 200
MAX_NAME_CHARS = 300
MAX_KEYWORDS = 50
MAX_URL_CHARS = 2_000
MAX_ARXIV_ID_CHARS = 32  # the width of `paper.arxiv_id`
MAX_COUNT = 2**31 - 1  # `paper.upvotes` and `paper.comments` are 32-bit integers
EARLIEST_PUBLISHED = datetime(1800, 1, 1, tzinfo=UTC)
# A publication date may run ahead of this machine's clock by a time-zone day or so, not more.
FUTURE_SLACK = timedelta(days=2)
# Text (in characters) a batch holds at most, whatever its row count: a batch of records each at
# the field limits would otherwise hold hundreds of MB.
MAX_BATCH_CHARS = 16_000_000

NEW_STYLE_ID = re.compile(r"(\d{4}\.\d{4,5})(?:v\d+)?")
OLD_STYLE_ID = re.compile(r"([a-z][a-z-]*(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?")
ID_PREFIX = re.compile(r"^(?:arxiv:|https?://(?:export\.)?arxiv\.org/(?:abs|pdf)/)", re.IGNORECASE)
# C0 and C1 control characters other than tab, newline and carriage return.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
WORD = re.compile(r"\w+")
GITHUB_REPO = re.compile(r"^https?://(?:www\.)?github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?$")


@dataclass(slots=True)
class PaperRow:
    """A validated, normalised paper: the one declaration of a stored paper's fields. It repeats
    `PaperRecord`'s fields on purpose: a record is what a parser read (lists empty when absent),
    a row what is stored (None when absent, plus `title_key` and `source`);
    tests/test_record_declarations.py holds both to the `paper` table."""

    arxiv_id: str | None
    title: str
    title_key: str
    abstract: str
    source: str
    authors: list[str] | None = None
    categories: list[str] | None = None
    keywords: list[str] | None = None
    ai_summary: str | None = None
    url: str | None = None
    pdf_url: str | None = None
    doi: str | None = None
    github_repo: str | None = None
    published_at: datetime | None = None
    upvotes: int | None = None
    comments: int | None = None


# The stored fields of a paper, in one order: the staging table, COPY records and the parsing
# workers' pickles are all derived from it, so a field added here reaches every one of them.
PAPER_ROW_FIELDS: Final = tuple(row_field.name for row_field in dataclasses.fields(PaperRow))


def row_tuple_builder(
    convert: Mapping[str, Callable[[Any], Any]],
) -> Callable[[PaperRow], tuple[Any, ...]]:
    """A function from a `PaperRow` to its values in `PAPER_ROW_FIELDS` order, the fields named
    in `convert` passed through their converter (None stays None). It is compiled once from the
    field list, as if spelled out by hand: a getattr loop, or `attrgetter` and a fix-up pass,
    took twice as long as the tuple written out (docs/ingest.md), yet the tuple written out
    fell out of step with the fields whenever one was added."""
    namespace = {f"convert_{name}": function for name, function in convert.items()}
    values = [
        f"(None if row.{name} is None else convert_{name}(row.{name}))"
        if name in convert
        else f"row.{name}"
        for name in PAPER_ROW_FIELDS
    ]
    # Built from the dataclass's own field names (identifiers), never from data.
    builder = eval(f"lambda row: ({', '.join(values)},)", namespace)  # noqa: S307
    return cast(Callable[[PaperRow], tuple[Any, ...]], builder)


def normalise_arxiv_id(raw: str) -> str:
    candidate = ID_PREFIX.sub("", raw.strip()).removesuffix(".pdf")
    for pattern in (NEW_STYLE_ID, OLD_STYLE_ID):
        match = pattern.fullmatch(candidate)
        if match and len(match.group(1)) <= MAX_ARXIV_ID_CHARS:
            return match.group(1)
    raise RecordError(f"invalid arXiv id {raw[:40]!r}")


def title_key(title: str) -> str:
    """Case-, accent-width- and punctuation-blind form of a title: the dedupe key."""
    return " ".join(WORD.findall(unicodedata.normalize("NFKC", title).casefold()))


def clean_text(value: str | None, name: str, limit: int, *, required: bool = False) -> str | None:
    if value is None or not value.strip():
        if required:
            raise RecordError(f"no {name}")
        return None
    collapsed = " ".join(value.split())
    # isprintable() is a fast C scan; only text it flags (controls, but also harmless format
    # characters such as soft hyphens) needs the precise check. Tab, newline, carriage return and
    # the other whitespace controls were already collapsed into spaces by split().
    if not collapsed.isprintable() and CONTROL_CHARACTERS.search(collapsed):
        raise RecordError(f"{name} contains control characters")
    if len(collapsed) > limit:
        raise RecordError(f"{name} is too long ({len(collapsed)} characters, limit {limit})")
    return collapsed


def clean_url(value: str | None, name: str) -> str | None:
    if value is None or not value.strip():
        return None
    url = value.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > MAX_URL_CHARS:
        raise RecordError(f"{name} is not an http(s) URL: {url[:60]!r}")
    if CONTROL_CHARACTERS.search(url) or any(c.isspace() for c in url):
        raise RecordError(f"{name} contains whitespace or control characters")
    if parts.netloc.endswith("arxiv.org") and parts.scheme == "http":
        url = "https" + url[4:]
    return url


def clean_github_repo(value: str | None) -> str | None:
    url = clean_url(value, "github_repo")
    if url is None:
        return None
    match = GITHUB_REPO.match(url)
    return f"https://github.com/{match.group(1)}/{match.group(2)}" if match else url


def clean_names(values: list[str], name: str, limit: int, most: int) -> list[str] | None:
    if not values:
        return None
    values = values[:most]
    # One scan over all names instead of one per name: this runs for every author of millions
    # of snapshot lines.
    if CONTROL_CHARACTERS.search("\n".join(values)):
        raise RecordError(f"{name} contains control characters")
    names = [collapsed for value in values if (collapsed := " ".join(value.split()))]
    if names and max(map(len, names)) > limit:
        raise RecordError(f"{name} is too long (limit {limit} characters)")
    return list(dict.fromkeys(names)) or None


def clean_count(value: int | None, name: str) -> int | None:
    if value is not None and not 0 <= value <= MAX_COUNT:
        raise RecordError(f"{name} is out of range ({value}; from 0 to {MAX_COUNT})")
    return value


def clean_published_at(value: datetime | None) -> datetime | None:
    """The date in UTC (a naive date is taken as UTC), between `EARLIEST_PUBLISHED` and a little
    past now: year 1 or 9999 with an offset has no UTC form a database can store."""
    if value is None:
        return None
    try:
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as error:
        raise RecordError(f"published_at is out of range ({value.isoformat()})") from error
    if not EARLIEST_PUBLISHED <= moment <= datetime.now(UTC) + FUTURE_SLACK:
        raise RecordError(
            f"published_at is out of range ({value.isoformat()}; from "
            f"{EARLIEST_PUBLISHED.date().isoformat()} to {FUTURE_SLACK.days} days from now)"
        )
    return moment


def normalise(record: PaperRecord, *, source: str) -> PaperRow:
    """Validate and normalise one record; `RecordError` says why it cannot be stored."""
    title = clean_text(record.title, "title", MAX_TITLE_CHARS, required=True)
    abstract = clean_text(record.abstract, "abstract", MAX_ABSTRACT_CHARS, required=True)
    assert title is not None and abstract is not None
    key = title_key(title)
    if not key:
        raise RecordError("title has no letters or digits")
    arxiv_id = normalise_arxiv_id(record.arxiv_id) if record.arxiv_id else None
    authors = clean_names(record.authors, "author name", MAX_NAME_CHARS, MAX_AUTHORS)
    if authors and len(record.authors) > MAX_AUTHORS:
        # Collaboration papers list thousands of authors; a digest shows a handful at most.
        authors.append("et al.")
    url = clean_url(record.url, "url")
    pdf_url = clean_url(record.pdf_url, "pdf_url")
    if arxiv_id:
        url = url or f"https://arxiv.org/abs/{arxiv_id}"
        pdf_url = pdf_url or f"https://arxiv.org/pdf/{arxiv_id}"
    return PaperRow(
        arxiv_id=arxiv_id,
        title=title,
        title_key=key,
        abstract=abstract,
        source=source,
        authors=authors,
        categories=clean_names(record.categories, "category", 64, 50),
        keywords=clean_names(record.keywords, "keyword", 200, MAX_KEYWORDS),
        ai_summary=clean_text(record.ai_summary, "ai_summary", MAX_SUMMARY_CHARS),
        url=url,
        pdf_url=pdf_url,
        doi=clean_text(record.doi, "doi", 255),
        github_repo=clean_github_repo(record.github_repo),
        published_at=clean_published_at(record.published_at),
        upvotes=clean_count(record.upvotes, "upvotes"),
        comments=clean_count(record.comments, "comments"),
    )


def _absorb(target: PaperRow, other: PaperRow) -> None:
    """Fold a duplicate into `target`: fill what target lacks; newer engagement wins."""
    for name in PAPER_ROW_FIELDS:
        mine, theirs = getattr(target, name), getattr(other, name)
        if name in ("upvotes", "comments"):
            if theirs is not None:
                setattr(target, name, theirs)
        elif mine is None and theirs is not None:
            setattr(target, name, theirs)


def merge_duplicates(rows: list[PaperRow]) -> list[PaperRow]:
    """Collapse rows that are the same paper (same arXiv id or same title key) into one."""
    merged: list[PaperRow | None] = []
    owner: dict[str, int] = {}
    for row in rows:
        keys = [f"t:{row.title_key}"] + ([f"a:{row.arxiv_id}"] if row.arxiv_id else [])
        groups = sorted({owner[k] for k in keys if k in owner})
        if not groups:
            merged.append(row)
            index = len(merged) - 1
        else:
            index = groups[0]
            target = merged[index]
            assert target is not None
            _absorb(target, row)
            for other_index in groups[1:]:
                # The row bridges two groups seen earlier (one by id, one by title): join them.
                other = merged[other_index]
                assert other is not None
                _absorb(target, other)
                merged[other_index] = None
                for key, value in list(owner.items()):
                    if value == other_index:
                        owner[key] = index
            keys.append(f"t:{target.title_key}")
            if target.arxiv_id:
                keys.append(f"a:{target.arxiv_id}")
        for key in keys:
            owner[key] = index
    return [row for row in merged if row is not None]


@dataclass(slots=True)
class PreparedBatch:
    """One batch ready to write: its rows (duplicates merged), the source position of each row's
    first record, and what was read to get them."""

    rows: list[PaperRow]
    records: int
    rejections: list[tuple[int, str]]
    positions: list[int] = dataclasses.field(default_factory=list)


def text_size(row: PaperRow) -> int:
    """A row's text in characters, roughly what it holds in memory beyond its fixed overhead."""
    size = len(row.title) + len(row.abstract) + len(row.ai_summary or "")
    for names in (row.authors, row.keywords):
        if names:
            size += sum(map(len, names))
    return size


def prepare_batches(
    results: Iterable[PaperRecord | Rejection], *, source: str, batch_size: int
) -> Iterator[PreparedBatch]:
    """Normalise parsed records into batches of at most `batch_size` rows and about
    `MAX_BATCH_CHARS` of text."""
    batch = PreparedBatch([], 0, [])
    position_of: dict[int, int] = {}  # id(row) -> position of its record
    chars = 0

    def finished() -> PreparedBatch:
        batch.rows = merge_duplicates(batch.rows)
        # Merging keeps the first row of each paper (the others fold into it).
        batch.positions = [position_of[id(row)] for row in batch.rows]
        return batch

    for result in results:
        batch.records += 1
        if isinstance(result, Rejection):
            batch.rejections.append((result.position, result.reason))
            continue
        try:
            row = normalise(result, source=source)
        except RecordError as error:
            batch.rejections.append((result.position, str(error)))
            continue
        batch.rows.append(row)
        position_of[id(row)] = result.position
        chars += text_size(row)
        if len(batch.rows) >= batch_size or chars >= MAX_BATCH_CHARS:
            yield finished()
            batch, chars = PreparedBatch([], 0, []), 0
            position_of.clear()
    if batch.records:
        yield finished()


def held_until_complete(
    batches: Iterable[PreparedBatch], *, limit: int = 2 * MAX_BATCH_CHARS
) -> Iterator[PreparedBatch]:
    """The batches, held back until the source has been read to its end, so that a source that
    turns out to be malformed writes nothing; past `limit` characters of text held, they flow
    on as they come (memory stays bounded, and what came before the fault stays, whole)."""
    held: list[PreparedBatch] = []
    chars = 0
    iterator = iter(batches)
    for batch in iterator:
        held.append(batch)
        chars += sum(map(text_size, batch.rows))
        if chars > limit:
            break
    else:
        yield from held
        return
    yield from held
    held.clear()
    yield from iterator
