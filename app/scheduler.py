"""The scheduler: APScheduler 3 (AsyncIOScheduler, UTC) calling the same job functions as the CLI.
Ingest runs on `PAPERBOY_INGEST_CRON` over `PAPERBOY_SOURCES` and an arXiv API query per category
of `PAPERBOY_ARXIV_CATEGORIES` (each source on its own, so one that fails or cannot be reached is
reported and the others still load; `{date}` in a source becomes today's UTC date, for the
daily-papers API); compose runs every few minutes and freezes the
digests whose subscriber-local send time has come; a send trigger delivers what is due; the
bounce mailbox, when there is one, is read every `PAPERBOY_BOUNCE_POLL_SECONDS`. Jobs coalesce,
never overlap, and survive their own exceptions. At start, ingest runs left "running" by a process
that died are closed as interrupted; at stop (`stop_scheduler`), running jobs are cancelled and
awaited, so that an ingest cut short records itself as interrupted. A second scheduler is
harmless: the database keys make every job idempotent."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.ingest.scheduled import scheduled_sources
from app.ingest.upsert import IngestReport
from app.jobs import (
    bounces_job,
    close_interrupted_ingest_runs,
    compose_job,
    embed_job,
    ingest_job,
    send_job,
)
from app.mail.bounces.mailbox_job import BounceReport
from app.mail.bounces.mailboxes import MailboxError
from app.mail.outcomes import SendReport

if TYPE_CHECKING:
    from app.digests.plan import ComposeReport

logger = logging.getLogger("paperboy.scheduler")
JOBS = ("ingest", "compose", "send", "bounces")
MISFIRE_GRACE_SECONDS = 600
STOP_GRACE_SECONDS = 15.0  # how long cancelled jobs get to record how they ended
# The jobs this process's schedulers are running now, for `stop_scheduler` to await.
RUNNING_JOBS: set[asyncio.Task[None]] = set()

Sessions = async_sessionmaker[AsyncSession]


async def run_ingest(
    *, session_factory: Sessions, settings: Settings, now: datetime | None = None
) -> list[IngestReport]:
    reports = []
    for source in scheduled_sources(settings, now or datetime.now(UTC)):
        try:
            report = await ingest_job(source, session_factory=session_factory, settings=settings)
        except Exception:  # one broken source must not keep the others from loading
            logger.exception("ingest of %s crashed", source)
            continue
        if report.error:
            logger.warning("ingest of %s failed: %s", source, report.error)
        else:
            logger.info(
                "ingested %s: %d new, %d updated, %d rejected",
                source,
                report.inserted,
                report.updated,
                report.rejected,
            )
        reports.append(report)
    try:  # the new papers' vectors, so that the next compose need not wait for them
        embedded = await embed_job(session_factory=session_factory, settings=settings)
    except Exception:  # relevance by words still works without them
        logger.exception("embedding the new papers failed")
    else:
        if embedded.embedded:
            logger.info("embedded %d papers with %s", embedded.embedded, embedded.model)
    return reports


async def run_compose(
    *,
    session_factory: Sessions,
    settings: Settings,
    on_date: date | None = None,
    whatever_the_hour: bool = False,
) -> ComposeReport:
    report = await compose_job(
        session_factory=session_factory,
        settings=settings,
        on_date=on_date,
        whatever_the_hour=whatever_the_hour,
    )
    if report.due:
        logger.info(
            "composed: %d due, %d queued, %d skipped, %d already composed",
            report.due,
            report.queued,
            report.skipped,
            report.already_composed,
        )
    return report


async def run_send(*, session_factory: Sessions, settings: Settings) -> SendReport:
    report = await send_job(session_factory=session_factory, settings=settings, once=True)
    if report.claimed:
        logger.info(
            "sent %d, %d to retry, %d failed, %d bounced",
            report.sent,
            report.retry,
            report.failed,
            report.bounced,
        )
    return report


async def run_bounces(*, session_factory: Sessions, settings: Settings) -> BounceReport | None:
    """Read the bounce mailbox; None (the reason logged) when it could not be read."""
    try:
        report = await bounces_job(session_factory=session_factory, settings=settings)
    except MailboxError as error:  # a clear reason, no traceback: the next run tries again
        logger.error("reading the bounce mailbox failed: %s", error)
        return None
    events = report.events
    if report.read or report.already_read:
        logger.info(
            "bounce mailbox: %d read, %d hard bounces (%d suppressed), %d soft, %d blocked, "
            "%d complaints (%d unsubscribed), %d unmatched, %d not reports, %d left unread",
            report.read,
            events.hard_bounces,
            events.suppressed,
            events.soft_bounces,
            events.blocked,
            events.complaints,
            events.unsubscribed,
            events.unmatched,
            report.not_reports,
            report.unreadable,
        )
    return report


def guarded(name: str, job: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
    """The job as the scheduler runs it: timed, logged, and never letting an exception out."""

    async def run() -> None:
        started = time.perf_counter()
        task = asyncio.current_task()
        assert task is not None
        RUNNING_JOBS.add(task)
        try:
            await job()
        except asyncio.CancelledError:
            # The scheduler is stopping (its shutdown cancels running jobs): the job has
            # recorded what it must; the task ends here instead of as an error with a traceback.
            logger.info("scheduled %s interrupted: the scheduler is stopping", name)
            return
        except Exception:
            logger.exception("scheduled %s failed", name)
            return
        finally:
            RUNNING_JOBS.discard(task)
        logger.debug("scheduled %s done in %.2f s", name, time.perf_counter() - started)

    return run


async def stop_scheduler(scheduler: AsyncIOScheduler, *, grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop the scheduler: nothing new starts, and running jobs are cancelled and awaited (up
    to `grace` seconds) so that each records how it ended before the process goes."""
    running = [task for task in RUNNING_JOBS if not task.done()]
    scheduler.shutdown(wait=False)  # cancels the running jobs
    if running:
        await asyncio.wait(running, timeout=grace)


def build_scheduler(
    *,
    session_factory: Sessions,
    settings: Settings,
    include_send: bool = True,
    compose_for_today: bool = False,
) -> AsyncIOScheduler:
    """The scheduler with its jobs (not started). `compose_for_today` composes every active
    subscriber's digest for today at once, whatever their send hour (to see a digest now)."""
    scheduler = AsyncIOScheduler(
        timezone=UTC,
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": MISFIRE_GRACE_SECONDS,
        },
    )
    now = datetime.now(UTC)

    async def compose() -> None:
        # Each reader's own local date: in Tokyo, Tuesday morning UTC is already Tuesday evening,
        # and in Honolulu it is still Monday.
        await run_compose(
            session_factory=session_factory,
            settings=settings,
            whatever_the_hour=compose_for_today,
        )

    scheduler.add_job(
        guarded(
            "closing of interrupted ingest runs",
            lambda: close_interrupted_ingest_runs(session_factory=session_factory),
        ),
        id="close-interrupted-ingest-runs",
        name="close ingest runs whose process died",
        next_run_time=now,
    )
    scheduler.add_job(
        guarded("ingest", lambda: run_ingest(session_factory=session_factory, settings=settings)),
        CronTrigger.from_crontab(settings.ingest_cron, timezone=UTC),
        id="ingest",
        name="ingest PAPERBOY_SOURCES",
    )
    scheduler.add_job(
        guarded("compose", compose),
        IntervalTrigger(seconds=settings.compose_interval_seconds, timezone=UTC),
        id="compose",
        name="compose due digests",
        next_run_time=now,
    )
    if include_send:
        scheduler.add_job(
            guarded("send", lambda: run_send(session_factory=session_factory, settings=settings)),
            IntervalTrigger(seconds=settings.send_interval_seconds, timezone=UTC),
            id="send",
            name="send due digests",
            next_run_time=now + timedelta(seconds=5),
        )
    if settings.bounce_mailbox is not None:
        scheduler.add_job(
            guarded(
                "bounces",
                lambda: run_bounces(session_factory=session_factory, settings=settings),
            ),
            IntervalTrigger(seconds=settings.bounce_poll_seconds, timezone=UTC),
            id="bounces",
            name="read the bounce mailbox",
            next_run_time=now + timedelta(seconds=15),
        )
    return scheduler


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """How a job run now went, with its report for the operator who asked for it."""

    ok: bool
    report: list[IngestReport] | ComposeReport | SendReport | BounceReport | None


async def run_job_now(name: str, *, session_factory: Sessions, settings: Settings) -> JobOutcome:
    """One job, now (for cron users and operators): whether it went well, and its report."""
    if name == "ingest":
        reports = await run_ingest(session_factory=session_factory, settings=settings)
        expected = len(scheduled_sources(settings, datetime.now(UTC)))
        return JobOutcome(len(reports) == expected and all(r.ok for r in reports), reports)
    if name == "compose":
        composed = await run_compose(session_factory=session_factory, settings=settings)
        return JobOutcome(True, composed)
    if name == "send":
        report = await run_send(session_factory=session_factory, settings=settings)
        return JobOutcome(not report.errors, report)
    if name == "bounces":
        bounces = await run_bounces(session_factory=session_factory, settings=settings)
        return JobOutcome(bounces is not None and not bounces.unreadable, bounces)
    raise ValueError(f"unknown job {name!r}: one of {', '.join(JOBS)}")
