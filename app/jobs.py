"""The pipeline's jobs, each owning its database session and its commits: the CLI, the scheduler
and the admin API all call these same functions. `ingest_job` reads one source into `paper` rows in
batches that are committed whole (or not at all), and records the run in `ingest_run`;
`compose_job` freezes the digests of every subscriber who is due; `send_job` delivers them, one
outcome per message committed as soon as the server has answered."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, cast

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import engine_of, is_postgres
from app.digests.views import DigestView, DigestViewLoader
from app.ingest.fetch import OpenedSource, open_source
from app.ingest.normalise import PreparedBatch, prepare_batches
from app.ingest.parsing_worker import batches_from_workers
from app.ingest.sources import SourceError, detect_format, parse_source
from app.ingest.upsert import IngestReport, upsert_papers
from app.mail.message import Mailer
from app.mail.queue import (
    DigestChanges,
    Outcome,
    RecordedCounts,
    apply_changes,
    apply_changes_at_once,
    claim_digests,
    digest_changes,
    release_digests,
)
from app.mail.transports import Transport, Verdict, open_transport
from app.metrics import MESSAGES, PAPERS_INGESTED, SEND_LATENCY, SMTP_ERRORS, error_class
from app.models import DigestStatus, IngestRun, IngestStatus
from app.subscribers.localtime import digest_day_end

if TYPE_CHECKING:
    from app.digests.compose import ComposeReport

ProgressCallback = Callable[[int, int | None], None]
WORKER_MIN_BYTES = 16 * 1024 * 1024  # files this large are parsed in worker processes
PARSING_WORKERS = 2  # splittable files (plain JSON Lines) are cut into this many byte ranges
COMPOSE_SLICE = 5_000  # subscribers whose digests are written (and committed) at a time
# Slices written at once on Postgres: while one connection's server process checks and stores
# items, the next slice's rows are being prepared and sent on another.
COMPOSE_WRITERS = 3
OUTCOME_WRITER = "paperboy outcomes"  # the outcome writer's connection, as Postgres lists it
# Messages in flight per SMTP connection: while one message's outcome is being committed, the
# connection carries the next (with one per connection, connections sat idle through every
# commit: 370 against 440 messages/s in bench/send.py). A crash can repeat at most these.
IN_FLIGHT_PER_CONNECTION = 2
OUTCOME_GROUP_SECONDS = 0.003  # how long the outcome writer gathers a group before writing it


async def _record_run(
    session: AsyncSession, run_id: int, report: IngestReport, status: IngestStatus
) -> None:
    run = await session.get_one(IngestRun, run_id)
    run.format = report.format
    run.status = status
    run.records = report.records
    run.inserted = report.inserted
    run.updated = report.updated
    run.unchanged = report.unchanged
    run.rejected = report.rejected
    run.rejections = list(report.rejections)
    run.error = report.error
    if status is not IngestStatus.RUNNING:
        run.finished_at = datetime.now(UTC)


async def ingest_job(
    location: str,
    *,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    source_format: str = "auto",
    on_progress: ProgressCallback | None = None,
) -> IngestReport:
    """Ingest one source. A source that cannot be read at all ends as a failed run with the
    reason in `report.error` and no papers written; bad records are rejected one by one."""
    report = IngestReport(source=location)
    started = time.perf_counter()
    async with session_factory() as session:
        run = IngestRun(source=location[:2000], format=None)
        session.add(run)
        await session.commit()
        run_id = run.id
        try:
            async with AsyncExitStack() as exit_stack:
                source = await open_source(
                    location,
                    read_timeout=settings.http_timeout,
                    retries=settings.http_retries,
                    max_retry_after=settings.http_max_retry_after,
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
        except (OSError, EOFError) as error:
            # A stream that breaks mid-way (truncated gzip, vanished file): the batches committed
            # so far stay, whole; the run is failed and says how far it got.
            await session.rollback()
            report.error = f"reading {location} failed after {report.records} records: {error}"
        except Exception as error:
            await session.rollback()
            report.error = f"{type(error).__name__}: {error}"
            report.seconds = time.perf_counter() - started
            await _record_run(session, run_id, report, IngestStatus.FAILED)
            await session.commit()
            raise
        report.seconds = time.perf_counter() - started
        status = IngestStatus.SUCCEEDED if report.ok else IngestStatus.FAILED
        await _record_run(session, run_id, report, status)
        await session.commit()
    for outcome in ("inserted", "updated", "unchanged", "rejected"):
        PAPERS_INGESTED.labels(outcome).inc(getattr(report, outcome))
    return report


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
    the next batch is parsed and normalised in a thread."""
    assert report.format is not None
    source_format = report.format

    async def write(batch: PreparedBatch, position: int) -> None:
        counts = await upsert_papers(batch.rows, session=session)
        report.add_batch(batch, counts)
        await _record_run(session, run_id, report, IngestStatus.RUNNING)
        await session.commit()
        if on_progress is not None:
            on_progress(position, source.size)

    async def in_thread() -> AsyncIterator[tuple[PreparedBatch, int]]:
        batches = prepare_batches(
            parse_source(source.stream, source_format), source=source_format, batch_size=batch_size
        )
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


async def compose_job(
    *,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    now: datetime | None = None,
    on_date: date | None = None,
    dry_run: bool = False,
) -> ComposeReport:
    """Compose and freeze the digests of every subscriber who is due. Safe to run at any time
    and in several processes at once: each digest is created once."""
    # Imported here so that ingest and send never load ranking's numerical stack (~1 s).
    from app.digests.compose import freeze_digests, plan_digests

    moment = now or datetime.now(UTC)
    async with session_factory() as session:
        report = await plan_digests(
            session=session,
            now=moment,
            settings=settings,
            on_date=on_date,
        )
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


@dataclass(slots=True)
class SendReport:
    claimed: int = 0
    sent: int = 0
    retry: int = 0
    failed: int = 0
    bounced: int = 0
    suppressed: int = 0
    seconds: float = 0.0
    destination: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return self.sent + self.retry + self.failed + self.bounced

    @property
    def rate(self) -> float:
        return self.attempted / self.seconds if self.seconds else 0.0


class OutcomeWriter:
    """Records outcomes as they come: the replies of a few milliseconds form a group, written
    and committed at once (group commit: a busy worker pays one commit per group, not per
    message; see `OutcomeWriter._write` for the statements). A send
    waits for its outcome to be committed before its slot frees, so a crash can repeat only
    the messages in flight. The writer keeps one connection for the run: a pooled session per
    group (checkout, ping, ORM session) cost three times the statements themselves."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        settings: Settings,
        report: SendReport,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.report = report
        self.pending: list[tuple[Outcome, asyncio.Future[None]]] = []
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run())
        self.closing = False

    async def record(self, outcome: Outcome) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((outcome, done))
        self.wake.set()
        await done

    async def _run(self) -> None:
        connection: AsyncConnection | None = None
        try:
            while not (self.closing and not self.pending):
                await self.wake.wait()
                # Replies arriving within the window join this group: three outcomes a commit
                # instead of one at full speed, and Postgres spends a third as much per outcome.
                # Each connection has its next message in flight meanwhile, so none waits.
                await asyncio.sleep(OUTCOME_GROUP_SECONDS)
                self.wake.clear()
                group, self.pending = self.pending, []
                if not group:
                    continue
                now = datetime.now(UTC)
                changes = digest_changes(
                    [outcome for outcome, _ in group],
                    now=now,
                    retry_base=self.settings.retry_base_seconds,
                    retry_ceiling=self.settings.retry_max_seconds,
                )
                try:
                    if connection is None:
                        connection = await self._connect()
                    counts = await self._write(connection, changes, now)
                except Exception as error:  # the sends stay leased; the lease expiry retries them
                    if connection is not None:  # it may be broken: the next group takes a new one
                        with contextlib.suppress(Exception):
                            await self._release(connection)
                        connection = None
                    for _, done in group:
                        if not done.done():
                            done.set_exception(error)
                    continue
                for name in ("sent", "retry", "failed", "bounced", "suppressed"):
                    setattr(self.report, name, getattr(self.report, name) + getattr(counts, name))
                for name in ("sent", "retry", "failed", "bounced"):
                    MESSAGES.labels(name).inc(getattr(counts, name))
                for _, done in group:
                    if not done.done():
                        done.set_result(None)
        finally:
            if connection is not None:
                await self._release(connection)

    async def _write(
        self, connection: AsyncConnection, changes: DigestChanges, now: datetime
    ) -> RecordedCounts:
        """On Postgres a group without bounces is one statement, committing itself; bounces
        change subscribers too, so those groups (and every group on SQLite) are a transaction."""
        if connection.dialect.name == "postgresql" and not changes.bounced_subscribers:
            raw = await connection.get_raw_connection()
            return await apply_changes_at_once(changes, driver=raw.driver_connection)
        async with connection.begin():
            return await apply_changes(
                changes,
                session=connection,
                now=now,
                bounce_limit=self.settings.bounce_limit,
            )

    async def _connect(self) -> AsyncConnection:
        connection = await engine_of(self.session_factory).connect()
        if connection.dialect.name == "postgresql":  # named in pg_stat_activity
            await connection.exec_driver_sql(f"SET application_name = '{OUTCOME_WRITER}'")
            await connection.commit()
        return connection

    async def _release(self, connection: AsyncConnection) -> None:
        """Back to the pool, no longer named as the writer."""
        try:
            if connection.dialect.name == "postgresql":
                await connection.exec_driver_sql("RESET application_name")
                await connection.commit()
        finally:
            await connection.close()

    async def close(self) -> None:
        self.closing = True
        self.wake.set()
        await self.task


SendProgress = Callable[[SendReport], None]
POLL_SECONDS = 5.0
VIEWS_AT_ONCE = 50  # digests loaded per query while claiming: the event loop breathes between


async def send_job(
    *,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    once: bool = True,
    transport: Transport | None = None,
    stop: asyncio.Event | None = None,
    on_progress: SendProgress | None = None,
    close_transport: bool = True,
) -> SendReport:
    """Send every digest that is due. With `once`, stop when none is left to claim; otherwise
    keep polling until `stop` is set (a worker). On stop, in-flight messages finish and the
    claimed but unstarted digests are released at once for other workers."""
    report = SendReport()
    mailer = Mailer(settings)
    transport = transport or open_transport(
        settings.mail_url,
        concurrency=settings.smtp_concurrency,
        rate_limit=settings.smtp_rate_limit,
        timeout=settings.smtp_timeout,
    )
    report.destination = transport.description
    stop = stop or asyncio.Event()
    writer = OutcomeWriter(session_factory, settings, report)
    slots = asyncio.Semaphore(transport.concurrency * IN_FLIGHT_PER_CONNECTION)
    in_flight: set[asyncio.Task[None]] = set()
    started = time.perf_counter()

    async def send_one(view: DigestView, attempts: int) -> None:
        try:
            mail = mailer.message(view)
            sending = time.perf_counter()
            delivery = await transport.deliver(mailer.sender_address, view.email, mail.data)
            SEND_LATENCY.observe(time.perf_counter() - sending)
            if delivery.verdict is not Verdict.ACCEPTED:
                SMTP_ERRORS.labels(error_class(delivery.detail)).inc()
            status = {
                Verdict.ACCEPTED: DigestStatus.SENT,
                Verdict.TRY_LATER: DigestStatus.RETRY,
                Verdict.REFUSED: DigestStatus.BOUNCED,
            }[delivery.verdict]
            assert view.digest_id is not None
            await writer.record(
                Outcome(
                    digest_id=view.digest_id,
                    subscriber_id=view.subscriber_id,
                    status=status,
                    detail=delivery.detail,
                    attempts=attempts,
                    day_end=digest_day_end(view.digest_date, view.timezone),
                    message_id=mail.message_id,
                )
            )
            if on_progress is not None:
                on_progress(report)
        except Exception as error:  # one broken digest must not stop the others
            report.errors.append(f"digest {view.digest_id}: {error}")
        finally:
            slots.release()

    # Claimed digests wait here, loaded, for a slot: the next batch is claimed and loaded while
    # this one is sent, in chunks, so neither the claim's round trips nor its Python work hold
    # up the replies of the messages in flight. None marks the end of claiming.
    ready: asyncio.Queue[tuple[DigestView, int] | None] = asyncio.Queue()
    room = asyncio.Semaphore(settings.send_batch_size)  # loaded digests waiting, at most
    undispatched: set[int] = set()  # claimed, not yet handed to a send: released at the end
    views = DigestViewLoader()

    async def claim_batches() -> None:
        while not stop.is_set():
            async with session_factory() as session:
                claimed = await claim_digests(
                    session=session,
                    now=datetime.now(UTC),
                    limit=settings.send_batch_size,
                    lease=timedelta(seconds=settings.send_lease_seconds),
                )
                await session.commit()
                undispatched.update(claimed)
                report.claimed += len(claimed)
                if not claimed:
                    if once:
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), POLL_SECONDS)
                    continue
                ids = list(claimed)
                for first in range(0, len(ids), VIEWS_AT_ONCE):
                    chunk = ids[first : first + VIEWS_AT_ONCE]
                    for view in await views.load(chunk, session=session):
                        assert view.digest_id is not None
                        await room.acquire()
                        ready.put_nowait((view, claimed[view.digest_id]))

    claiming = asyncio.create_task(claim_batches())
    claiming.add_done_callback(lambda _: ready.put_nowait(None))
    try:
        while (item := await ready.get()) is not None:
            room.release()
            view, attempts = item
            await slots.acquire()
            if stop.is_set():
                slots.release()
                break
            assert view.digest_id is not None
            undispatched.discard(view.digest_id)
            task = asyncio.create_task(send_one(view, attempts))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            # One send starts (and renders) per turn of the event loop, with the replies that came
            # in between read first: when a group commit frees many slots at once, rendering
            # them back to back kept every connection's reply waiting for milliseconds.
            await asyncio.sleep(0)
    finally:
        claiming.cancel()
        claim_error: BaseException | None = None
        try:
            await claiming
        except asyncio.CancelledError:
            pass
        except Exception as error:  # raised once the sends in flight are recorded
            claim_error = error
        if undispatched:
            async with session_factory() as session:
                await release_digests(sorted(undispatched), session=session)
                await session.commit()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        await writer.close()
        if close_transport:
            await transport.close()
        report.seconds = time.perf_counter() - started
    if claim_error is not None:
        raise claim_error
    return report
