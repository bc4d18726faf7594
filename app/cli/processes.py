"""The long-running commands: `paperboy up` (everything in one process on the embedded defaults)
and `paperboy scheduler [--run JOB]`. Both refuse to start in production with an unsafe
configuration."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from app.cli.base import (
    STOPPED_BY_SIGTERM,
    checked_settings,
    cli,
    console,
    counted,
    fail,
    output,
    run_async,
    stop_on_sigterm,
)
from app.cli.bounces import print_bounce_report
from app.cli.digests import print_compose_report, print_send_report
from app.cli.papers import print_report as print_ingest_report
from app.config import Settings
from app.db import create_engine, create_session_factory
from app.ingest.scheduled import scheduled_sources
from app.mail.bounces.mailbox_job import BounceReport
from app.mail.outcomes import SendReport
from app.scheduler import JOBS, JobOutcome, build_scheduler, run_job_now, stop_scheduler

if TYPE_CHECKING:
    from app.cli.allinone import Started


def where_mail_goes(settings: Settings) -> str:
    if settings.mail_url.startswith("maildir://"):
        path = Path(settings.mail_url.removeprefix("maildir://")).resolve()
        return f"the Maildir {path} (open it with any mail client, e.g. mutt -f {path})"
    return f"SMTP at {settings.mail_url.split('@')[-1]}"


@cli.command("up")
def up_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    send_now: Annotated[
        bool,
        typer.Option(
            "--send-now",
            help="Compose and send each active subscriber's digest for today within a minute, "
            "whatever their delivery hour (to see a digest without waiting for the morning).",
        ),
    ] = False,
    access_log: Annotated[
        bool, typer.Option(help="Log every request (link tokens are always masked).")
    ] = True,
) -> None:
    """Start everything in one process: migrate, seed the sample papers into an empty database,
    then serve the web app with the scheduler and a delivery worker. Ctrl-C stops cleanly."""
    # Imported here: the web app loads the ranking stack (~1 s), which other commands skip.
    from app.cli.allinone import CannotListen, run_all

    settings = checked_settings()

    def started(info: Started) -> None:
        output.print(f"[bold]Paperboy is up:[/] {info.url}", highlight=False)
        output.print(
            f"  links in mail: {escape(info.base_url)} ({escape(info.base_url_origin)})",
            highlight=False,
        )
        if info.seeded:
            output.print(f"  seeded {counted(info.seeded, 'sample paper')} into the empty database")
        output.print(f"  database: {escape(settings.database_url.split('@')[-1])}", highlight=False)
        output.print(f"  mail goes to {escape(where_mail_goes(settings))}", highlight=False)
        output.print(
            "  admin API: "
            + (
                "open with PAPERBOY_ADMIN_TOKEN"
                if settings.admin_token
                else "closed (set PAPERBOY_ADMIN_TOKEN)"
            )
        )
        if send_now:
            output.print("  --send-now: digests for today go out within a minute of confirming")
        output.print(
            "  production: PAPERBOY_DATABASE_URL=postgresql+asyncpg://user:pass@host/db, "
            "PAPERBOY_MAIL_URL=smtp://user:pass@host:587?starttls=true (see README)",
            highlight=False,
        )
        output.print("  Ctrl-C stops")

    try:
        with contextlib.suppress(KeyboardInterrupt):
            run_async(
                run_all(
                    settings,
                    host=host,
                    port=port,
                    send_now=send_now,
                    access_log=access_log,
                    on_started=started,
                )
            )
    except CannotListen as error:
        raise fail(str(error)) from None


@cli.command("scheduler")
def scheduler_command(
    run: Annotated[
        str | None,
        typer.Option(help=f"Run one job now and exit: {', '.join(JOBS)}.", metavar="JOB"),
    ] = None,
) -> None:
    """Run the scheduler (ingest on PAPERBOY_INGEST_CRON, compose every few minutes, send what
    is due, read PAPERBOY_BOUNCE_MAILBOX when set) until stopped; or, with --run JOB, run one
    job now and exit (non-zero if it failed). One scheduler is enough; a second one causes no
    duplicate work."""
    settings = checked_settings()
    if run is not None and run not in JOBS:
        raise typer.BadParameter(f"{run!r} is not one of {', '.join(JOBS)}", param_hint="--run")

    async def main() -> JobOutcome | None:
        engine = create_engine(settings.database_url, echo=settings.database_echo)
        sessions = create_session_factory(engine)
        try:
            if run is not None:
                stop_on_sigterm()
                return await run_job_now(run, session_factory=sessions, settings=settings)
            scheduler = build_scheduler(session_factory=sessions, settings=settings)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signal_number in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signal_number, stop.set)
            scheduler.start()
            console.print(
                f"scheduler running: ingest at '{settings.ingest_cron}' (UTC) over "
                f"{len(scheduled_sources(settings, datetime.now(UTC)))} sources, compose every "
                f"{settings.compose_interval_seconds} s, send every "
                f"{settings.send_interval_seconds} s; Ctrl-C stops"
            )
            await stop.wait()
            await stop_scheduler(scheduler)
            return None
        finally:
            await engine.dispose()

    try:
        outcome = run_async(main())
    except asyncio.CancelledError:
        console.print(f"[bold red]stopped:[/] {run} was interrupted by SIGTERM (recorded as such)")
        raise typer.Exit(code=STOPPED_BY_SIGTERM) from None
    if outcome is None:
        return
    print_job_report(outcome.report)
    if not outcome.ok:
        raise typer.Exit(code=1)


def print_job_report(report: object) -> None:
    """What `scheduler --run JOB` did, said as the job's own command says it."""
    if isinstance(report, list):
        for ingested in report:
            print_ingest_report(ingested)
        if not report:
            output.print("no sources to ingest (PAPERBOY_SOURCES is empty)")
    elif isinstance(report, SendReport):
        print_send_report(report)
    elif isinstance(report, BounceReport):
        print_bounce_report(report)
    elif report is None:
        console.print("[bold red]error:[/] the bounce mailbox could not be read (see the log)")
    else:
        print_compose_report(report)  # type: ignore[arg-type]
