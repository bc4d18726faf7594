"""The scheduler's jobs: how they are scheduled, that a broken or unreachable source never stops
the others, that two schedulers at once cause no duplicate digest or mail, and `paperboy
scheduler --run JOB` for cron users."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.ingest.scheduled import expand_source, scheduled_sources
from app.jobs import ingest_job
from app.models import Digest, IngestRun, Paper
from app.scheduler import build_scheduler, run_compose, run_ingest, run_send
from app.subscribers.rules import Preferences, add_active_subscriber
from tests.conftest import isolated_settings
from tests.support.http_server import Route, serve
from tests.support.smtp_sink import smtp_sink

Sessions = async_sessionmaker[AsyncSession]
PAPERBOY = str(Path(sys.executable).parent / "paperboy")


def test_sources_name_today_and_each_arxiv_category() -> None:
    now = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)
    source = "https://huggingface.co/api/daily_papers?date={date}"
    assert expand_source(source, now).endswith("date=2026-11-26")
    configured = isolated_settings(
        sources=f"{source}, papers.jsonl", arxiv_categories="cs.LG cs.CL", arxiv_max_results=50
    )
    assert scheduled_sources(configured, now) == [
        "https://huggingface.co/api/daily_papers?date=2026-11-26",
        "papers.jsonl",
        "http://export.arxiv.org/api/query?search_query=cat:cs.LG"
        "&sortBy=submittedDate&sortOrder=descending&max_results=50",
        "http://export.arxiv.org/api/query?search_query=cat:cs.CL"
        "&sortBy=submittedDate&sortOrder=descending&max_results=50",
    ]
    with pytest.raises(ValueError, match="not an arXiv category"):
        isolated_settings(arxiv_categories="cs.LG; DROP TABLE")


async def test_jobs_are_scheduled_once_at_a_time(
    session_factory: Sessions, settings: Settings
) -> None:
    scheduler = build_scheduler(
        session_factory=session_factory,
        settings=settings.model_copy(update={"ingest_cron": "5 */2 * * *"}),
    )
    scheduler.start(paused=True)
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
    finally:
        scheduler.shutdown(wait=False)
    assert set(jobs) == {"close-interrupted-ingest-runs", "ingest", "compose", "send"}
    assert isinstance(jobs["ingest"].trigger, CronTrigger)
    assert str(jobs["ingest"].trigger.fields[5]) == "*/2"  # hour field
    assert isinstance(jobs["compose"].trigger, IntervalTrigger)
    for job in jobs.values():
        assert job.coalesce and job.max_instances == 1 and job.misfire_grace_time >= 60
    assert "send" not in {
        j.id
        for j in build_scheduler(
            session_factory=session_factory, settings=settings, include_send=False
        ).get_jobs()
    }
    with pytest.raises(ValueError, match="crontab"):
        isolated_settings(ingest_cron="every day at noon")


async def test_a_failing_source_never_stops_the_others(
    session_factory: Sessions,
    settings: Settings,
    sample_page: Path,
    data: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    routes = {
        "/broken": Route(always=503),
        "/daily.json": Route(body=(data / "hf-daily.json").read_bytes()),
    }
    with serve(routes) as server:
        configured = settings.model_copy(
            update={
                "sources": [
                    server.url("/broken"),
                    "/no/such/file.jsonl",
                    "http://127.0.0.1:9/unreachable",
                    str(sample_page),
                    server.url("/daily.json"),
                ],
                "http_retries": 0,
                "http_timeout": 2.0,
            }
        )
        with caplog.at_level(logging.WARNING, logger="paperboy.scheduler"):
            reports = await run_ingest(session_factory=session_factory, settings=configured)
    assert [r.ok for r in reports] == [False, False, False, True, True]
    assert sum("failed" in record.getMessage() for record in caplog.records) == 3
    async with session_factory() as session:
        papers = await session.scalar(select(func.count()).select_from(Paper))
        runs = await session.scalar(select(func.count()).select_from(IngestRun))
    assert papers is not None and papers >= 185
    assert runs == 5


async def test_two_schedulers_make_no_duplicate_work(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    addresses = [f"twice{n}@example.org" for n in range(30)]
    async with session_factory() as session:
        for address in addresses:
            await add_active_subscriber(
                address, Preferences(["mixture of experts"]), session=session
            )
        await session.commit()
    with smtp_sink() as (sink, port):
        configured = settings.model_copy(update={"mail_url": f"smtp://127.0.0.1:{port}"})
        today = datetime.now(UTC).date()
        await asyncio.gather(
            run_compose(session_factory=session_factory, settings=configured, on_date=today),
            run_compose(session_factory=session_factory, settings=configured, on_date=today),
        )
        await asyncio.gather(
            run_send(session_factory=session_factory, settings=configured),
            run_send(session_factory=session_factory, settings=configured),
        )
    async with session_factory() as session:
        digests = await session.scalar(select(func.count()).select_from(Digest))
    assert digests == 30
    assert sink.per_recipient() == {address: 1 for address in addresses}


@pytest.mark.slow
async def test_run_one_job_from_the_command_line(database_url: str, engine: object) -> None:
    env = os.environ | {"PAPERBOY_DATABASE_URL": database_url}
    done = subprocess.run(  # noqa: ASYNC221 - a short command, the loop has nothing else to do
        [PAPERBOY, "scheduler", "--run", "compose"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # Said as `paperboy compose` says it, not left to the log.
    assert done.stdout.startswith("0 due: 0 queued (0 papers)"), done.stdout
    sent = subprocess.run(  # noqa: ASYNC221
        [PAPERBOY, "scheduler", "--run", "send"],
        env=env | {"PAPERBOY_MAIL_URL": f"maildir://{Path(database_url).parent}/mail"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert sent.returncode == 0 and sent.stdout.startswith("0 sent, 0 to retry"), sent.stdout
    unknown = subprocess.run(  # noqa: ASYNC221
        [PAPERBOY, "scheduler", "--run", "dance"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unknown.returncode == 2 and "is not one of" in unknown.stderr
    no_sources = subprocess.run(  # noqa: ASYNC221
        [PAPERBOY, "scheduler", "--run", "ingest"],
        env=env | {"PAPERBOY_SOURCES": "/no/such/source.json"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert no_sources.returncode == 1


@pytest.mark.slow
async def test_a_scheduled_ingest_stopped_by_sigterm_is_recorded_and_exits_cleanly(
    database_url: str, session_factory: Sessions, data: Path
) -> None:
    slow = Route((data / "hf-daily.json").read_bytes(), drip_seconds=0.05, drip_bytes=8)
    with serve({"/slow.json": slow}) as server:
        process = await asyncio.create_subprocess_exec(
            PAPERBOY,
            "scheduler",
            "--run",
            "ingest",
            env=os.environ
            | {"PAPERBOY_DATABASE_URL": database_url, "PAPERBOY_SOURCES": server.url("/slow.json")},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(1500):  # the run is opened once the process has started: up to 30 s
            async with session_factory() as session:
                if await session.scalar(select(func.count()).select_from(IngestRun)):
                    break
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 143 and b"Traceback" not in err, err.decode()
    async with session_factory() as session:
        run = (await session.scalars(select(IngestRun))).one()
    assert run.status == "failed"
    assert run.error == "interrupted after 0 records: the process was stopped (SIGTERM)"
