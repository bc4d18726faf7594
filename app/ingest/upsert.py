"""Storing normalised papers: the bulk upsert and the report of an ingest run. A batch of only new
papers is COPYed straight into `paper` (Postgres); otherwise it is loaded into a temporary staging
table (COPY on Postgres, executemany on SQLite) and merged with a few set-based statements, so a
batch is whole or absent and per-row ORM work never happens. A batch the database refuses for its
data (a value out of range, a constraint) is written again in halves, each in a savepoint, down to
single papers: the papers it refuses are rejected with its reason and the others load."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import orjson
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    MetaData,
    Table,
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
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.schema import CreateTable

from app.db import dialect_insert, is_postgres
from app.ingest.normalise import PAPER_ROW_FIELDS, PaperRow, PreparedBatch, row_tuple_builder
from app.models import Paper

MAX_REJECTIONS_KEPT = 50
# SQLSTATE classes that are about the database, not the data: connection (08), transaction
# rollback such as a deadlock (40), resources (53), operator intervention (57), system (58, XX).
ENVIRONMENT_SQLSTATES = ("08", "40", "53", "57", "58", "XX")


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
        self.inserted += counts.inserted
        self.updated += counts.updated
        self.unchanged += counts.unchanged


_staging_metadata = MetaData()
# Shaped like `PaperRow`, each column typed as the `paper` column of the same name.
paper_staging = Table(
    "paper_staging",
    _staging_metadata,
    *(Column(name, Paper.__table__.c[name].type) for name in PAPER_ROW_FIELDS),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DELETE ROWS",
)
ROW_COLUMNS = list(PAPER_ROW_FIELDS)
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
_copy_record = row_tuple_builder(
    {
        name: lambda values: orjson.dumps(values).decode()  # COPY takes jsonb as JSON text
        for name in PAPER_ROW_FIELDS
        if isinstance(Paper.__table__.c[name].type, JSON)
    }
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
    inserted = await session.execute(
        dialect_insert(session)(paper)
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


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__


def is_about_the_database(error: BaseException) -> bool:
    """Whether `error` says the database or the connection failed (nothing to blame on the
    papers written): then the run fails, and no paper is rejected for it."""
    for cause in _causes(error):
        if isinstance(cause, (OSError, TimeoutError, OperationalError, InterfaceError)):
            return True
        if isinstance(cause, (asyncpg.InterfaceError, asyncpg.PostgresConnectionError)):
            return True
        if isinstance(cause, DBAPIError) and cause.connection_invalidated:
            return True
        state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
        if isinstance(state, str) and state.startswith(ENVIRONMENT_SQLSTATES):
            return True
    return False


def describe_refusal(error: BaseException) -> str:
    detail = " ".join(str(error).split("[SQL:")[0].split())
    return f"the database refused it: {type(error).__name__}: {detail[:300]}"


async def upsert_isolating_refusals(
    rows: list[PaperRow], positions: list[int], *, session: AsyncSession
) -> tuple[UpsertCounts, list[tuple[int, str]]]:
    """Write a batch the database refused as a whole (already rolled back): in halves, each in
    a savepoint, down to single papers. Returns the counts of what was stored and a rejection
    (position, reason) for each paper the database still refuses; an error about the database
    itself (`is_about_the_database`) is raised, never turned into rejections."""
    counts = UpsertCounts()
    refused: list[tuple[int, str]] = []
    pending = [(rows, positions)]
    while pending:
        part, where = pending.pop()
        try:
            async with session.begin_nested():
                stored = await upsert_papers(part, session=session)
        except Exception as error:
            if is_about_the_database(error):
                raise
            if len(part) == 1:
                refused.append((where[0], describe_refusal(error)))
                continue
            half = len(part) // 2
            pending += [(part[half:], where[half:]), (part[:half], where[:half])]
            continue
        counts.inserted += stored.inserted
        counts.updated += stored.updated
        counts.unchanged += stored.unchanged
    refused.sort()
    return counts, refused
