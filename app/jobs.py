"""The pipeline's jobs, each owning its database session and its commits: the CLI, the scheduler
and the admin API all call these same functions. `ingest_job` reads one source into `paper` rows in
batches that are committed whole (or not at all), and records the run in `ingest_run`;
`compose_job` freezes the digests of every subscriber who is due; `send_job` delivers them through
the delivery engine (`app.mail.delivery`), one outcome per message committed as soon as the server
has answered; `bounces_job` reads the bounce mailbox (`app.mail.bounces.mailbox_job`). A job an
operator starts through the admin API runs apart from the request and is recorded in `job_run`
(`start_job_run`, `finish_job_run`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import is_postgres
from app.ingest.fetch import OpenedSource, open_source
from app.ingest.normalise import PreparedBatch, held_until_complete, prepare_batches
from app.ingest.parsing_worker import batches_from_workers
from app.ingest.runs import (
    close_abandoned_runs,
    heartbeat,
    interrupted,
    open_run,
    record_run,
    record_stopped_run,
)
from app.ingest.sources import (
    ARXIV_ATOM,
    HF_DAILY,
    PAGE,
    READ_ERRORS,
    SourceError,
    detect_format,
    parse_source,
)
from app.ingest.upsert import (
    IngestReport,
    describe_refusal,
    is_about_the_database,
    upsert_isolating_refusals,
    upsert_papers,
)
from app.mail.bounces.mailbox_job import read_bounce_mailbox
from app.mail.delivery import deliver_digests
from app.metrics import PAPERS_INGESTED
from app.models import IngestStatus, JobRun

if TYPE_CHECKING:
    from app.digests.plan import ComposeReport

logger = logging.getLogger("paperboy.jobs")
ProgressCallback = Callable[[int, int | None], None]
WORKER_MIN_BYTES = 16 * 1024 * 1024  # files this large are parsed in worker processes
PARSING_WORKERS = 2  # splittable files (plain JSON Lines) are cut into this many byte ranges
# Formats small by nature: read to their end before the first write, so that one found malformed
# writes nothing (up to a bound on what is held: see `held_until_complete`).
READ_WHOLE_FORMATS = (PAGE, ARXIV_ATOM, HF_DAILY)
COMPOSE_SLICE = 5_000  # subscribers whose digests are written (and committed) at a time
# Slices written at once on Postgres: while one connection's server process checks and stores
# items, the next slice's rows are being prepared and sent on another.
COMPOSE_WRITERS = 3


async def ingest_job(
    location: str,
    *,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    source_format: str = "auto",
    on_progress: ProgressCallback | None = None,
) -> IngestReport:
    """Ingest one source. A source that cannot be read at all ends as a failed run with the
    reason in `report.error` and no papers written; bad records are rejected one by one. A run
    cut short (the task cancelled: SIGTERM, a scheduler or web app stopping) is recorded as
    failed, interrupted, before the cancellation goes on."""
    report = IngestReport(source=location)
    started = time.perf_counter()
    async with session_factory() as session:
        await close_abandoned_runs(session=session, now=datetime.now(UTC))
        run_id = (await open_run(location, session=session)).id
        try:
            await session.commit()
            async with (
                heartbeat(run_id, session_factory=session_factory),
                AsyncExitStack() as exit_stack,
            ):
                source = await open_source(
                    location,
                    read_timeout=settings.http_timeout,
                    retries=settings.http_retries,
                    max_retry_after=settings.http_max_retry_after,
                    deadline=settings.http_deadline,
                    max_bytes=settings.http_max_bytes,
                    exit_stack=exit_stack,
                )
                report.format = (
                    detect_format(source.head()) if source_format == "auto" else source_format
                )
                await _ingest_stream(
                    source,
                    report,
                    session=session,
                    run_id=run_id,
                    batch_size=settings.ingest_batch_size,
                    on_progress=on_progress,
                )
        except SourceError as error:
            await session.rollback()
            report.error = str(error)
        except READ_ERRORS as error:
            # A stream that breaks mid-way (truncated or corrupt gzip, vanished file): the
            # batches committed so far stay, whole; the run is failed and says how far it got.
            await session.rollback()
            report.error = f"reading {location} failed after {report.records} records: {error}"
        except asyncio.CancelledError as stop:
            reason = f"the process was stopped ({stop.args[0]})" if stop.args else None
            report.error = interrupted(
                reason or "the process running it was stopped", report.records
            )
            report.seconds = time.perf_counter() - started
            await record_stopped_run(
                run_id, report, session=session, session_factory=session_factory
            )
            raise
        except Exception as error:
            await session.rollback()
            report.error = f"{type(error).__name__}: {error}"
            report.seconds = time.perf_counter() - started
            await record_run(run_id, report, IngestStatus.FAILED, session=session)
            await session.commit()
            raise
        report.seconds = time.perf_counter() - started
        status = IngestStatus.SUCCEEDED if report.ok else IngestStatus.FAILED
        await record_run(run_id, report, status, session=session)
        await session.commit()
    for outcome in ("inserted", "updated", "unchanged", "rejected"):
        PAPERS_INGESTED.labels(outcome).inc(getattr(report, outcome))
    return report


async def close_interrupted_ingest_runs(
    *, session_factory: async_sessionmaker[AsyncSession]
) -> int:
    """At a process's start: close as interrupted the ingest runs whose process died."""
    async with session_factory() as session:
        closed = await close_abandoned_runs(session=session, now=datetime.now(UTC))
        await session.commit()
    return closed


async def _ingest_stream(
    source: OpenedSource,
    report: IngestReport,
    *,
    session: AsyncSession,
    run_id: int,
    batch_size: int,
    on_progress: ProgressCallback | None,
) -> None:
    """Write batches of `batch_size` rows, each committed whole (with the run's counters), while
    the next batch is parsed and normalised in a thread. A batch the database refuses for its
    data is rolled back and written again in parts, so that only the papers it refuses are
    rejected."""
    assert report.format is not None
    source_format = report.format

    async def write(batch: PreparedBatch, position: int) -> None:
        try:
            counts = await upsert_papers(batch.rows, session=session)
        except Exception as error:
            if is_about_the_database(error):
                raise
            logger.warning(
                "a batch of %s was refused as a whole (%s); writing it in parts",
                report.source,
                describe_refusal(error),
            )
            await session.rollback()
            counts, refused = await upsert_isolating_refusals(
                batch.rows, batch.positions, session=session
            )
            batch.rejections.extend(refused)
        report.add_batch(batch, counts)
        await record_run(run_id, report, IngestStatus.RUNNING, session=session)
        await session.commit()
        if on_progress is not None:
            on_progress(position, source.size)

    async def in_thread() -> AsyncIterator[tuple[PreparedBatch, int]]:
        batches = prepare_batches(
            parse_source(source.stream, source_format), source=source_format, batch_size=batch_size
        )
        if source_format in READ_WHOLE_FORMATS:
            batches = held_until_complete(batches)
        while (batch := await asyncio.to_thread(next, batches, None)) is not None:
            yield batch, source.position()

    large_file = source.local_path is not None and (source.size or 0) >= WORKER_MIN_BYTES
    producer = (
        batches_from_workers(
            cast(str, source.local_path),
            source_format,
            batch_size,
            size=source.size or 0,
            workers=PARSING_WORKERS,
        )
        if large_file
        else in_thread()
    )
    writing: asyncio.Task[None] | None = None
    try:
        # The next batch is parsed (in a thread, or a worker process for large files) while the
        # previous one is being written.
        async for batch, position in producer:
            if writing is not None:
                await writing
            writing = asyncio.create_task(write(batch, position))
    finally:
        if writing is not None:
            # Let the batch in flight land whole before any error is reported.
            await writing


@dataclass(slots=True)
class EmbedReport:
    model: str | None = None  # None: the semantic layer is off
    embedded: int = 0
    seconds: float = 0.0


async def embed_job(
    *,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    now: datetime | None = None,
) -> EmbedReport:
    """Embed the papers that can still enter a digest (first seen within the compose window) and
    have no vector under the configured model yet, newest first, a chunk per commit. Idempotent;
    a model change embeds them again under the new model's name."""
    import numpy as np

    from app.ranking.semantic import (
        EMBED_CHUNK,
        ENCODE_SLICE,
        embedding_model,
        papers_to_embed,
        store_paper_vectors,
    )

    report = EmbedReport()
    encoder = embedding_model(settings)
    if encoder is None:
        return report
    report.model = encoder.name
    started = time.perf_counter()
    since = (now or datetime.now(UTC)) - timedelta(days=settings.compose_window_days)
    while True:
        async with session_factory() as session:
            chunk = await papers_to_embed(
                session=session, model=encoder.name, since=since, limit=EMBED_CHUNK
            )
        if not chunk:
            break
        # In a thread, holding no connection, a slice at a time: a stop (Ctrl-C, SIGTERM) cancels
        # between slices, and a thread still encoding would hold the process until it finished.
        texts = [text for _, text in chunk]
        vectors = np.concatenate(
            [
                await asyncio.to_thread(encoder.encode, texts[start : start + ENCODE_SLICE])
                for start in range(0, len(texts), ENCODE_SLICE)
            ]
        )
        async with session_factory() as session:
            await store_paper_vectors(
                [paper_id for paper_id, _ in chunk], vectors, session=session, model=encoder.name
            )
            await session.commit()
        report.embedded += len(chunk)
    report.seconds = time.perf_counter() - started
    return report


async def compose_job(
    *,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    now: datetime | None = None,
    on_date: date | None = None,
    whatever_the_hour: bool = False,
    dry_run: bool = False,
) -> ComposeReport:
    """Compose and freeze the digests of every subscriber who is due. Safe to run at any time
    and in several processes at once: each digest is created once."""
    # Imported here so that ingest and send never load ranking's numerical stack (~1 s).
    from app.digests.freeze import freeze_digests
    from app.digests.plan import plan_digests

    moment = now or datetime.now(UTC)
    # Papers ingested since the last embed get their vectors first, whoever ingested them.
    await embed_job(session_factory=session_factory, settings=settings, now=moment)
    async with session_factory() as session:
        report = await plan_digests(
            session=session,
            now=moment,
            settings=settings,
            on_date=on_date,
            whatever_the_hour=whatever_the_hour,
        )
        await session.commit()  # the vectors of topics met for the first time, now cached
        writers = COMPOSE_WRITERS if is_postgres(session) else 1
    composition = report.composition
    if dry_run or composition is None:
        return report
    # Each slice's digests and items commit together: a crash keeps whole digests only, and a
    # re-run composes the rest. Slices follow subscriber id order in every process, so two
    # concurrent composes wait on each other's rows instead of deadlocking.
    slices = iter(range(0, len(composition.due), COMPOSE_SLICE))

    async def write_slices() -> None:
        for start in slices:
            digests = composition.frozen(start, start + COMPOSE_SLICE)
            async with session_factory() as session:
                queued, skipped, items = await freeze_digests(digests, session=session, now=moment)
                await session.commit()
            report.queued += queued
            report.skipped += skipped
            report.items += items
            report.already_composed += len(digests.subscriber_ids) - queued - skipped

    await asyncio.gather(*(write_slices() for _ in range(writers)))
    return report


# The send job is the delivery engine itself: it owns its sessions and commits each outcome.
send_job = deliver_digests
# Likewise the bounce mailbox reader: a commit per message, before the message is marked read.
bounces_job = read_bounce_mailbox


# What a job started by an operator does: its report, and why it failed (None when it did not).
JobWork = Callable[[], Awaitable[tuple[dict[str, Any], str | None]]]
INTERRUPTED = "interrupted: the process running the job stopped before it finished"


async def start_job_run(
    job: str, parameters: dict[str, Any], *, session_factory: async_sessionmaker[AsyncSession]
) -> JobRun:
    """Record that a job has started; `finish_job_run` records how it ends."""
    async with session_factory() as session:
        run = JobRun(job=job, parameters=parameters)
        session.add(run)
        await session.commit()
    return run


async def finish_job_run(
    run_id: int, work: JobWork, *, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    """Do a recorded job's work and store how it ended: its report, or its error. A job cut
    short (its process stopping) is stored as interrupted before the cancellation goes on."""
    status = IngestStatus.FAILED
    report: dict[str, Any] | None = None
    error: str | None = INTERRUPTED
    try:
        report, error = await work()
        status = IngestStatus.FAILED if error else IngestStatus.SUCCEEDED
    except Exception as failure:  # the run records it: nobody else is waiting for this job
        logger.exception("job run %d failed", run_id)
        error = f"{type(failure).__name__}: {failure}"
    finally:
        async with session_factory() as session:
            run = await session.get_one(JobRun, run_id)
            run.status, run.report, run.error = status, report, error
            run.finished_at = datetime.now(UTC)
            await session.commit()


async def latest_job_runs(*, session: AsyncSession, limit: int) -> Sequence[JobRun]:
    """The jobs operators started, newest first."""
    return (await session.scalars(select(JobRun).order_by(JobRun.id.desc()).limit(limit))).all()


async def find_job_run(run_id: int, *, session: AsyncSession) -> JobRun | None:
    return await session.get(JobRun, run_id)
