"""The one-command start (`paperboy up`): apply migrations, seed the bundled sample papers when
the database has none, then run the web app, the scheduler and one delivery worker together in
one process and one event loop. Stopping (Ctrl-C, SIGTERM) lets in-flight messages finish and
releases what the worker had claimed."""

from __future__ import annotations

import asyncio
import logging
import socket
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
# Addresses that mean "every interface": a listener's address, never one a reader can open.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 - recognised, not bound


@dataclass(frozen=True, slots=True)
class Started:
    url: str
    seeded: int
    base_url: str
    base_url_origin: str


class CannotListen(Exception):
    """The address and port to serve on cannot be taken (in use, or not this machine's)."""


@dataclass(frozen=True, slots=True)
class PublicAddress:
    url: str
    origin: str  # where it came from, for the start-up banner


def http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def public_address(settings: Settings, *, host: str, port: int) -> PublicAddress:
    """The address every link in mail starts with: PAPERBOY_BASE_URL when set; else this machine's
    name when listening on every interface (a wildcard such as 0.0.0.0 leads nowhere from a
    reader's mail client); else the address listened on."""
    if "base_url" in settings.model_fields_set:
        return PublicAddress(settings.base_url, "PAPERBOY_BASE_URL")
    if host.strip() in WILDCARD_HOSTS:
        name = socket.getfqdn()
        if name in {"", "localhost", "localhost.localdomain"}:
            name = socket.gethostname()
        return PublicAddress(
            http_url(name, port), "this machine's name; set PAPERBOY_BASE_URL to change it"
        )
    return PublicAddress(http_url(host, port), "the address Paperboy listens on")


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything else starts, so that a taken port ends the
    start with one clear error rather than a half-started process."""
    bind_host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - the operator asked for it
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((bind_host, port))
    except OSError as error:
        listener.close()
        reason = error.strerror or str(error)
        raise CannotListen(
            f"cannot listen on {http_url(bind_host, port).removeprefix('http://')}: "
            f"{reason.lower()} (choose another with --port, or stop what holds it)"
        ) from None
    return listener


async def run_all(
    settings: Settings,
    *,
    host: str,
    port: int,
    send_now: bool,
    access_log: bool = True,
    on_started: Callable[[Started], None],
) -> None:
    # Bound first: a taken port ends the start before anything else has begun.
    with listening_socket(host, port) as listener:
        public = public_address(settings, host=host, port=port)
        # Links in mail must lead back to this very server unless told otherwise.
        settings = settings.model_copy(update={"base_url": public.url})
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
                create_app(settings, sends_today=send_now),
                host=host,
                port=port,
                log_config=None,
                lifespan="on",
                access_log=access_log,
                forwarded_allow_ips=settings.forwarded_allow_ips,
            )
        )
        scheduler = build_scheduler(
            session_factory=sessions,
            settings=settings,
            include_send=False,
            compose_for_today=send_now,
        )
        stop = asyncio.Event()
        worker = asyncio.create_task(
            send_job(session_factory=sessions, settings=settings, once=False, stop=stop)
        )
        scheduler.start()

        async def announce() -> None:
            while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
                await asyncio.sleep(0.05)
            on_started(
                Started(
                    http_url(host.strip("[]") or "0.0.0.0", port),  # noqa: S104 - what was asked
                    seeded,
                    public.url,
                    public.origin,
                )
            )

        announcing = asyncio.create_task(announce())
        try:
            await server.serve(sockets=[listener])
        finally:
            announcing.cancel()
            await stop_scheduler(scheduler)
            stop.set()
            sent = await worker
            if sent.attempted:
                logger.info("worker stopped after %d messages", sent.attempted)
            await engine.dispose()
