"""The one-command start (`paperboy up`): apply migrations, seed the bundled sample papers when
the database has none, then run the web app, the scheduler and one delivery worker together in
one process and one event loop. Stopping (Ctrl-C, SIGTERM) lets in-flight messages finish and
releases what the worker had claimed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from sqlalchemy import func, select

from app.config import Settings
from app.db import create_engine, create_session_factory, migrate
from app.jobs import ingest_job, send_job
from app.models import Paper
from app.scheduler import build_scheduler, stop_scheduler
from app.web import create_app

logger = logging.getLogger("paperboy.up")
SAMPLE = Path(__file__).resolve().parents[1] / "sample" / "trending-papers-page.txt"
SEND_NOW_COMPOSE_SECONDS = 20


@dataclass(frozen=True, slots=True)
class Started:
    url: str
    seeded: int


async def run_all(
    settings: Settings,
    *,
    host: str,
    port: int,
    send_now: bool,
    on_started: Callable[[Started], None],
) -> None:
    if "base_url" not in settings.model_fields_set:
        # Links in mail must lead back to this very server unless told otherwise.
        settings = settings.model_copy(update={"base_url": f"http://{host}:{port}"})
    engine = create_engine(settings.database_url, echo=settings.database_echo)
    await migrate(engine)
    sessions = create_session_factory(engine)
    seeded = 0
    async with sessions() as session:
        empty = not await session.scalar(select(func.count()).select_from(Paper))
    if empty:
        report = await ingest_job(str(SAMPLE), session_factory=sessions, settings=settings)
        seeded = report.inserted
    if send_now:
        settings = settings.model_copy(
            update={
                "compose_interval_seconds": min(
                    settings.compose_interval_seconds, SEND_NOW_COMPOSE_SECONDS
                )
            }
        )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=host,
            port=port,
            log_config=None,
            lifespan="on",
            forwarded_allow_ips=settings.forwarded_allow_ips,
        )
    )
    scheduler = build_scheduler(
        session_factory=sessions, settings=settings, include_send=False, compose_for_today=send_now
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(
        send_job(session_factory=sessions, settings=settings, once=False, stop=stop)
    )
    scheduler.start()

    async def announce() -> None:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
            await asyncio.sleep(0.05)
        on_started(Started(f"http://{host}:{port}", seeded))

    announcing = asyncio.create_task(announce())
    try:
        await server.serve()
    finally:
        announcing.cancel()
        await stop_scheduler(scheduler)
        stop.set()
        sent = await worker
        if sent.attempted:
            logger.info("worker stopped after %d messages", sent.attempted)
        await engine.dispose()
