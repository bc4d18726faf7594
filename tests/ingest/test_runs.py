"""The ingest run record when a run does not end on its own: a run cut short (the task cancelled,
as SIGTERM or a stopping scheduler does) is recorded as failed, interrupted; a run whose process
died (SIGKILL) is closed as interrupted at the next start, whether its owner ran here (the process
is gone) or elsewhere (its heartbeat went quiet); a live run is never touched. `paperboy ingest`
stopped by SIGTERM exits 143 (Ctrl-C: 130) without a traceback."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.ingest.runs import STALE_AFTER, heartbeat, this_process
from app.jobs import close_interrupted_ingest_runs, ingest_job
from app.models import IngestRun, IngestStatus
from app.scheduler import build_scheduler, stop_scheduler
from tests.support.http_server import Route, serve

Sessions = async_sessionmaker[AsyncSession]
PAPERBOY = str(Path(sys.executable).parent / "paperboy")


def dripping(data: Path) -> Route:
    """A daily-papers payload that takes a minute to arrive: an ingest stays on it."""
    return Route((data / "hf-daily.json").read_bytes(), drip_seconds=0.05, drip_bytes=8)


async def runs(sessions: Sessions) -> list[IngestRun]:
    async with sessions() as session:
        return list((await session.scalars(select(IngestRun).order_by(IngestRun.id))).all())


async def until_running(sessions: Sessions, count: int = 1, seconds: float = 30) -> IngestRun:
    """The latest run once `count` runs exist, the last of them running (a process has opened
    it): no event announces that, so look every 20 ms."""
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        found = await runs(sessions)
        if len(found) >= count and found[-1].status is IngestStatus.RUNNING:
            return found[-1]
        await asyncio.sleep(0.02)
    raise AssertionError("no ingest run started")


async def test_a_cancelled_ingest_is_recorded_as_interrupted(
    session_factory: Sessions, settings: Settings, data: Path
) -> None:
    with serve({"/slow.json": dripping(data)}) as server:
        task = asyncio.create_task(
            ingest_job(server.url("/slow.json"), session_factory=session_factory, settings=settings)
        )
        await until_running(session_factory)
        task.cancel("SIGTERM")
        with pytest.raises(asyncio.CancelledError):
            await task
    [run] = await runs(session_factory)
    assert run.status is IngestStatus.FAILED and run.finished_at is not None
    assert run.error == "interrupted after 0 records: the process was stopped (SIGTERM)"


async def test_a_stopping_scheduler_records_its_ingest_as_interrupted(
    session_factory: Sessions, settings: Settings, data: Path
) -> None:
    with serve({"/slow.json": dripping(data)}) as server:
        configured = settings.model_copy(update={"sources": [server.url("/slow.json")]})
        scheduler = build_scheduler(session_factory=session_factory, settings=configured)
        scheduler.start()
        try:
            scheduler.modify_job("ingest", next_run_time=datetime.now(UTC))
            await until_running(session_factory)
        finally:
            await stop_scheduler(scheduler)
    [run] = await runs(session_factory)
    assert run.status is IngestStatus.FAILED
    assert run.error == "interrupted after 0 records: the process running it was stopped"


def dead_process() -> str:
    """The owner name of a process of this host that has ended."""
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return f"{socket.gethostname()}:{int(ended.stdout)}:-"


async def test_runs_whose_process_died_are_closed_at_start_and_live_ones_kept(
    session_factory: Sessions,
) -> None:
    now = datetime.now(UTC)
    quiet = now - STALE_AFTER - timedelta(seconds=1)
    owners = {
        "killed here": (dead_process(), now),
        "quiet elsewhere": ("another-host:4242:123", quiet),
        "busy elsewhere": ("another-host:4243:456", now - timedelta(seconds=5)),
        "this process": (this_process(), quiet),
        "from before owners": (None, quiet),
    }
    async with session_factory() as session:
        for source, (owner, beat) in owners.items():
            session.add(IngestRun(source=source, owner=owner, heartbeat_at=beat, started_at=quiet))
        await session.commit()
    assert await close_interrupted_ingest_runs(session_factory=session_factory) == 3
    by_source = {run.source: run for run in await runs(session_factory)}
    assert {s for s, run in by_source.items() if run.status is IngestStatus.RUNNING} == {
        "busy elsewhere",
        "this process",
    }
    killed = by_source["killed here"]
    assert killed.status is IngestStatus.FAILED and killed.finished_at is not None
    assert killed.error == (
        f"interrupted after 0 records: its process ({killed.owner}) stopped without closing the run"
    )
    assert (by_source["quiet elsewhere"].error or "").startswith(
        "interrupted after 0 records: its process (another-host:4242:123) gave no sign of life"
    )


async def test_a_running_ingest_beats_its_heartbeat(session_factory: Sessions) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    async with session_factory() as session:
        run = IngestRun(source="s", owner="another-host:1:1", heartbeat_at=long_ago)
        session.add(run)
        await session.commit()
    async with heartbeat(run.id, session_factory=session_factory, every=0.05):
        await asyncio.sleep(0.5)
    [beaten] = await runs(session_factory)
    assert beaten.heartbeat_at is not None
    assert beaten.heartbeat_at.replace(tzinfo=UTC) > long_ago + timedelta(minutes=59)
    assert await close_interrupted_ingest_runs(session_factory=session_factory) == 0


async def paperboy_ingest(database_url: str, source: str) -> asyncio.subprocess.Process:
    env = os.environ | {"PAPERBOY_DATABASE_URL": database_url, "COLUMNS": "200"}
    return await asyncio.create_subprocess_exec(
        PAPERBOY,
        "ingest",
        source,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.slow
async def test_paperboy_ingest_stopped_or_killed_leaves_no_run_running(
    session_factory: Sessions, database_url: str, data: Path, sample_page: Path
) -> None:
    with serve({"/slow.json": dripping(data)}) as server:
        stopped = await paperboy_ingest(database_url, server.url("/slow.json"))
        await until_running(session_factory, count=1)
        stopped.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(stopped.communicate(), 60)
        assert stopped.returncode == 143, err.decode()
        assert b"Traceback" not in err and b"stopped:" in err and b"SIGTERM" in err

        interrupted = await paperboy_ingest(database_url, server.url("/slow.json"))
        await until_running(session_factory, count=2)
        interrupted.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(interrupted.communicate(), 60)
        assert interrupted.returncode == 130, err.decode()
        assert b"Traceback" not in err and b"Ctrl-C" in err

        killed = await paperboy_ingest(database_url, server.url("/slow.json"))
        await until_running(session_factory, count=3)
        killed.send_signal(signal.SIGKILL)
        await killed.wait()
    by_term, by_int, by_kill = await runs(session_factory)
    assert by_term.status is by_int.status is IngestStatus.FAILED
    assert by_term.error == "interrupted after 0 records: the process was stopped (SIGTERM)"
    assert by_int.error == "interrupted after 0 records: the process running it was stopped"
    assert by_kill.status is IngestStatus.RUNNING  # nobody was left to record it

    after = await paperboy_ingest(database_url, str(sample_page))
    await asyncio.wait_for(after.communicate(), 120)
    assert after.returncode == 0
    *_, by_kill, last = await runs(session_factory)
    assert by_kill.status is IngestStatus.FAILED
    assert (by_kill.error or "").endswith("stopped without closing the run")
    assert last.status is IngestStatus.SUCCEEDED and last.inserted == 185
