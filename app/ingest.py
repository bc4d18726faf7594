"""Turning parsed `PaperRecord`s into `paper` rows: validation with a reason for every rejection,
normalisation (arXiv ids without version, collapsed whitespace, a `title_key` for dedupe, https
links), merging duplicates inside a batch, and the bulk upsert. The upsert loads a batch into a
temporary staging table (COPY on Postgres, executemany on SQLite) and merges it with a few set-based
statements, so a batch is whole or absent and per-row ORM work never happens."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit

import asyncpg
import orjson
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.schema import CreateTable

from app.db import JsonValue, is_postgres
from app.models import Paper
from app.sources import PaperRecord, RecordError, Rejection

MAX_TITLE_CHARS = 500
MAX_ABSTRACT_CHARS = 10_000
MAX_SUMMARY_CHARS = 2_000
MAX_AUTHORS = 200
MAX_NAME_CHARS = 300
MAX_KEYWORDS = 50
MAX_URL_CHARS = 2_000
MAX_REJECTIONS_KEPT = 50

NEW_STYLE_ID = re.compile(r"(\d{4}\.\d{4,5})(?:v\d+)?")
OLD_STYLE_ID = re.compile(r"([a-z][a-z-]*(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?")
ID_PREFIX = re.compile(r"^(?:arxiv:|https?://(?:export\.)?arxiv\.org/(?:abs|pdf)/)", re.IGNORECASE)
# C0 and C1 control characters other than tab, newline and carriage return.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
WORD = re.compile(r"\w+")
GITHUB_REPO = re.compile(r"^https?://(?:www\.)?github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?$")


@dataclass(slots=True)
class PaperRow:
    """A validated, normalised paper, shaped like the staging table."""

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


@dataclass(slots=True)
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass(slots=True)
class IngestReport:
    source: str
    format: str | None = None
    records: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def add_rejection(self, position: int, reason: str) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_REJECTIONS_KEPT:
            self.rejections.append({"position": position, "reason": reason})

    def add_batch(self, batch: PreparedBatch, counts: UpsertCounts) -> None:
        self.records += batch.records
        for position, reason in batch.rejections:
            self.add_rejection(position, reason)
        self.add_counts(counts)

    def add_counts(self, counts: UpsertCounts) -> None:
        self.inserted += counts.inserted
        self.updated += counts.updated
        self.unchanged += counts.unchanged

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalise_arxiv_id(raw: str) -> str:
    candidate = ID_PREFIX.sub("", raw.strip()).removesuffix(".pdf")
    for pattern in (NEW_STYLE_ID, OLD_STYLE_ID):
        match = pattern.fullmatch(candidate)
        if match:
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
    published_at = record.published_at
    if published_at is not None and published_at.tzinfo is None:
        published_at = published_at.replace(tzinfo=UTC)
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
        published_at=published_at,
        upvotes=record.upvotes,
        comments=record.comments,
    )


def _absorb(target: PaperRow, other: PaperRow) -> None:
    """Fold a duplicate into `target`: fill what target lacks; newer engagement wins."""
    for name in PaperRow.__slots__:
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
    """One batch ready to write: its rows (duplicates merged) and what was read to get them."""

    rows: list[PaperRow]
    records: int
    rejections: list[tuple[int, str]]


def prepare_batches(
    results: Iterable[PaperRecord | Rejection], *, source: str, batch_size: int
) -> Iterator[PreparedBatch]:
    """Normalise parsed records into batches of at most `batch_size` rows."""
    batch = PreparedBatch([], 0, [])
    for result in results:
        batch.records += 1
        if isinstance(result, Rejection):
            batch.rejections.append((result.position, result.reason))
            continue
        try:
            batch.rows.append(normalise(result, source=source))
        except RecordError as error:
            batch.rejections.append((result.position, str(error)))
            continue
        if len(batch.rows) >= batch_size:
            batch.rows = merge_duplicates(batch.rows)
            yield batch
            batch = PreparedBatch([], 0, [])
    if batch.records:
        batch.rows = merge_duplicates(batch.rows)
        yield batch


_staging_metadata = MetaData()
paper_staging = Table(
    "paper_staging",
    _staging_metadata,
    Column("arxiv_id", String(32)),
    Column("title", Text),
    Column("title_key", Text),
    Column("abstract", Text),
    Column("source", String(16)),
    Column("authors", JsonValue),
    Column("categories", JsonValue),
    Column("keywords", JsonValue),
    Column("ai_summary", Text),
    Column("url", Text),
    Column("pdf_url", Text),
    Column("doi", String(255)),
    Column("github_repo", Text),
    Column("published_at", DateTime(timezone=True)),
    Column("upvotes", Integer),
    Column("comments", Integer),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DELETE ROWS",
)
ROW_COLUMNS = [column.name for column in paper_staging.columns]
ENGAGEMENT = ("upvotes", "comments")
FILL_ONLY = (
    "arxiv_id",
    "authors",
    "categories",
    "keywords",
    "ai_summary",
    "url",
    "pdf_url",
    "doi",
    "github_repo",
    "published_at",
)
JSON_COLUMNS = ("authors", "categories", "keywords")


def _json_or_none(value: list[str] | None) -> str | None:
    return orjson.dumps(value).decode() if value is not None else None


def _copy_record(row: PaperRow) -> tuple[Any, ...]:
    # Spelled out (in ROW_COLUMNS order) because a getattr loop costs more than the COPY itself.
    return (
        row.arxiv_id,
        row.title,
        row.title_key,
        row.abstract,
        row.source,
        _json_or_none(row.authors),
        _json_or_none(row.categories),
        _json_or_none(row.keywords),
        row.ai_summary,
        row.url,
        row.pdf_url,
        row.doi,
        row.github_repo,
        row.published_at,
        row.upvotes,
        row.comments,
    )


async def _load_staging(rows: list[PaperRow], *, session: AsyncSession) -> None:
    if is_postgres(session):
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        records = [_copy_record(row) for row in rows]
        await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
            paper_staging.name, records=records, columns=ROW_COLUMNS
        )
    else:
        await session.execute(insert(paper_staging), [asdict(row) for row in rows])


async def _copy_if_all_new(rows: list[PaperRow], *, session: AsyncSession, now: datetime) -> bool:
    """On a batch of only unknown papers (a bulk first load), COPY straight into `paper`: half
    the database work of staging and merging. A paper that appears concurrently makes the COPY
    fail; it is rolled back to a savepoint and the caller merges through staging instead."""
    connection = await session.connection()
    raw = (await connection.get_raw_connection()).driver_connection
    assert raw is not None
    known = await raw.fetchval(
        "SELECT EXISTS (SELECT 1 FROM paper WHERE arxiv_id = ANY($1::text[]) "
        "OR title_key = ANY($2::text[]))",
        [row.arxiv_id for row in rows if row.arxiv_id],
        [row.title_key for row in rows],
    )
    if known:
        return False
    try:
        async with session.begin_nested():
            await raw.copy_records_to_table(
                Paper.__tablename__,
                records=[(*_copy_record(row), now, now) for row in rows],
                columns=[*ROW_COLUMNS, "first_seen_at", "updated_at"],
            )
    except asyncpg.UniqueViolationError:
        return False
    return True


async def upsert_papers(rows: list[PaperRow], *, session: AsyncSession) -> UpsertCounts:
    """Insert new papers and update known ones (engagement refreshed, missing fields filled, no
    field ever blanked, first_seen_at untouched). `rows` must be free of duplicates."""
    if not rows:
        return UpsertCounts()
    now = datetime.now(UTC)
    if is_postgres(session) and await _copy_if_all_new(rows, session=session, now=now):
        return UpsertCounts(inserted=len(rows))
    paper = cast(Table, Paper.__table__)
    staged = paper_staging.c
    await session.execute(CreateTable(paper_staging, if_not_exists=True))
    if not is_postgres(session):
        await session.execute(delete(paper_staging))  # Postgres empties it at each commit
    await _load_staging(rows, session=session)

    known = paper.alias("known")
    known_by_id = exists().where(known.c.arxiv_id == staged.arxiv_id)
    known_by_title = exists().where(known.c.title_key == staged.title_key)
    changes: dict[str, Any] = {
        name: func.coalesce(staged[name], paper.c[name]) for name in ENGAGEMENT
    }
    changes |= {name: func.coalesce(paper.c[name], staged[name]) for name in FILL_ONLY}
    changed = or_(*(paper.c[name].is_distinct_from(value) for name, value in changes.items()))
    refresh = update(paper).where(changed).values(**changes, updated_at=now)
    dialect_insert = postgresql.insert if is_postgres(session) else sqlite.insert
    inserted = await session.execute(
        dialect_insert(paper)
        .from_select(
            [*ROW_COLUMNS, "first_seen_at", "updated_at"],
            select(
                *(staged[name] for name in ROW_COLUMNS),
                literal(now, DateTime(timezone=True)),
                literal(now, DateTime(timezone=True)),
            ).where(~known_by_id, ~known_by_title),
        )
        .on_conflict_do_nothing()
    )
    inserted_count = max(inserted.rowcount, 0)  # type: ignore[attr-defined]
    updated_count = 0
    if inserted_count < len(rows):
        # Same arXiv id first; then same title, for staged papers whose id (if any) is not stored
        # yet. Papers inserted just now match as well but change nothing; on a batch of only new
        # papers (a first load) the updates are skipped altogether.
        for match in (
            paper.c.arxiv_id == staged.arxiv_id,
            and_(paper.c.title_key == staged.title_key, ~known_by_id),
        ):
            result = await session.execute(refresh.where(match))
            updated_count += max(result.rowcount, 0)  # type: ignore[attr-defined]
    # Rows neither inserted nor updated matched an unchanged paper (or lost an insert race to a
    # concurrent ingest of the same paper, which then exists just the same).
    return UpsertCounts(
        inserted=inserted_count,
        updated=updated_count,
        unchanged=len(rows) - inserted_count - updated_count,
    )
