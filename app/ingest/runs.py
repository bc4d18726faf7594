"""The `ingest_run` bookkeeping: a run is opened owned by this process, its counters are written
with each batch, a heartbeat says it is alive while it lasts, and it is closed succeeded or failed
with the reason (a source that cannot be read, a crash, a stop). A run whose process died without
closing it (SIGKILL, an out-of-memory kill, a lost host) is closed as interrupted by the next
process that starts an ingest, a scheduler or the web app: at once when its owner ran on this host
and that process is gone, else once its heartbeat is older than `STALE_AFTER`."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import cache

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.ingest.upsert import IngestReport
from app.models import IngestRun, IngestStatus

logger = logging.getLogger("paperboy.ingest")
HEARTBEAT_SECONDS = 30.0
# Ten heartbeats missed: the owner on another host is taken for dead.
STALE_AFTER = timedelta(seconds=10 * HEARTBEAT_SECONDS)


def _start_ticks(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot; Linux): with the pid, it names one
    process, so a pid reused by another process is not mistaken for the owner."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # The command name (2nd field) may hold spaces; the fields after its ")" do not.
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19].decode() if len(fields) > 19 else None


@cache
def this_process() -> str:
    """This process as a run's owner: "host:pid:start ticks" ("-" where unknown)."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or '-'}"


def owner_alive(owner: str) -> bool | None:
    """Whether the process named by `owner` still runs: None when it cannot be told from here
    (another host, or an owner written by another system)."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    pid, ticks = int(parts[1]), parts[2]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    return ticks == "-" or _start_ticks(pid) in (ticks, None)


def interrupted(reason: str, records: int) -> str:
    return f"interrupted after {records} records: {reason}"


async def open_run(location: str, *, session: AsyncSession) -> IngestRun:
    now = datetime.now(UTC)
    run = IngestRun(source=location[:2000], format=None, owner=this_process(), heartbeat_at=now)
    session.add(run)
    await session.flush()
    return run


async def record_run(
    run_id: int, report: IngestReport, status: IngestStatus, *, session: AsyncSession
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
    now = datetime.now(UTC)
    run.heartbeat_at = now
    if status is not IngestStatus.RUNNING:
        run.finished_at = now


async def record_stopped_run(
    run_id: int,
    report: IngestReport,
    *,
    session: AsyncSession,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """Record a stopped run as failed (and commit: nothing else is left to). The ingest's own
    connection may have been cut in the middle of a statement, so its transaction is rolled
    back (the connection dropped if that fails) and a fresh session writes the record."""
    try:
        await session.rollback()
    except Exception:
        await session.invalidate()
    try:
        async with session_factory() as recording:
            if await recording.get(IngestRun, run_id) is None:
                return  # stopped before the run was stored: there is nothing to record
            await record_run(run_id, report, IngestStatus.FAILED, session=recording)
            await recording.commit()
    except Exception:  # the next start closes the run instead (close_abandoned_runs)
        logger.exception("recording the stop of ingest run %d failed", run_id)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def close_abandoned_runs(*, session: AsyncSession, now: datetime) -> int:
    """Close as interrupted (failed, with the reason) every run still "running" whose process is
    gone; the number closed."""
    running = (
        await session.scalars(select(IngestRun).where(IngestRun.status == IngestStatus.RUNNING))
    ).all()
    closed = 0
    for run in running:
        alive = owner_alive(run.owner) if run.owner else None
        last_sign = _aware(run.heartbeat_at or run.started_at)
        if alive is False:
            reason = f"its process ({run.owner}) stopped without closing the run"
        elif alive is None and now - last_sign > STALE_AFTER:
            reason = (
                f"its process ({run.owner or 'unknown'}) gave no sign of life since "
                f"{last_sign.isoformat(timespec='seconds')}"
            )
        else:
            continue
        run.status = IngestStatus.FAILED
        run.error = interrupted(reason, run.records)
        run.finished_at = now
        closed += 1
        logger.warning("ingest run %d of %s closed: %s", run.id, run.source, run.error)
    return closed


@asynccontextmanager
async def heartbeat(
    run_id: int,
    *,
    session_factory: async_sessionmaker[AsyncSession],
    every: float = HEARTBEAT_SECONDS,
) -> AsyncIterator[None]:
    """Beat the run's heartbeat every `every` seconds while the block runs (on a session of
    its own: the ingest's session is busy with batches, or waiting on a download)."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                async with session_factory() as session:
                    await session.execute(
                        update(IngestRun)
                        .where(IngestRun.id == run_id, IngestRun.status == IngestStatus.RUNNING)
                        .values(heartbeat_at=datetime.now(UTC))
                    )
                    await session.commit()
            except Exception:  # a missed beat is retried at the next; the ingest goes on
                logger.warning("the heartbeat of ingest run %d failed", run_id, exc_info=True)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
