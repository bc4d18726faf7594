"""Jobs an operator starts run apart from the request and are recorded in `job_run`: the record
says how each ended, and a job cut short by the web process stopping is recorded as
interrupted, never left `running`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.jobs import INTERRUPTED
from app.mail.message import Mailer
from app.mail.transports import open_transport
from app.models import IngestStatus, JobRun
from app.web.deps import WebState
from app.web.security import SlidingWindowLimiter

Sessions = async_sessionmaker[AsyncSession]


def web_state(session_factory: Sessions, settings: Settings, tmp_path: Path) -> WebState:
    return WebState(
        settings=settings,
        sessions=session_factory,
        mailer=Mailer(settings),
        transport=open_transport(
            f"maildir://{tmp_path / 'mail'}", concurrency=1, rate_limit=0, timeout=5
        ),
        signup_limiter=SlidingWindowLimiter(10, 60),
        address_limiter=SlidingWindowLimiter(1, 60),
    )


async def runs(session_factory: Sessions) -> dict[str, JobRun]:
    async with session_factory() as session:
        return {run.job: run for run in await session.scalars(select(JobRun))}


async def test_each_job_run_records_how_it_ended(
    session_factory: Sessions, settings: Settings, tmp_path: Path
) -> None:
    state = web_state(session_factory, settings, tmp_path)

    async def succeeds() -> tuple[dict[str, Any], str | None]:
        return {"done": 3}, None

    async def reports_a_failure() -> tuple[dict[str, Any], str | None]:
        return {"done": 0}, "the source could not be read"

    async def crashes() -> tuple[dict[str, Any], str | None]:
        raise RuntimeError("boom")

    for job, work in (("compose", succeeds), ("ingest", reports_a_failure), ("send", crashes)):
        started = await state.start_job(job, {"n": 1}, work)
        assert started.status is IngestStatus.RUNNING and started.finished_at is None
    await asyncio.gather(*state.job_tasks)
    recorded = await runs(session_factory)
    assert (recorded["compose"].status, recorded["compose"].report) == (
        IngestStatus.SUCCEEDED,
        {"done": 3},
    )
    assert recorded["ingest"].status is IngestStatus.FAILED
    assert recorded["ingest"].error == "the source could not be read"
    assert recorded["send"].status is IngestStatus.FAILED
    assert recorded["send"].error == "RuntimeError: boom" and recorded["send"].report is None
    assert all(
        run.finished_at is not None and run.parameters == {"n": 1} for run in recorded.values()
    )


async def test_a_job_cut_short_by_shutdown_is_recorded_as_interrupted(
    session_factory: Sessions, settings: Settings, tmp_path: Path
) -> None:
    state = web_state(session_factory, settings, tmp_path)
    began = asyncio.Event()

    async def never_ends() -> tuple[dict[str, Any], str | None]:
        began.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    await state.start_job("compose", {}, never_ends)
    await began.wait()
    await state.drain(0.01)
    run = (await runs(session_factory))["compose"]
    assert run.status is IngestStatus.FAILED and run.error == INTERRUPTED
    assert run.finished_at is not None and not state.job_tasks
