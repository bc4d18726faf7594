"""Commands over digests: `compose` (freeze the day's picks), `preview`, `send` and `worker`."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cli.base import cli, console, counted, fail, output, run_with_engine
from app.config import Settings
from app.db import create_session_factory
from app.digests.views import PreviewError, preview_digest_view
from app.jobs import compose_job, send_job
from app.mail.message import Mailer, RenderedDigest
from app.mail.outcomes import SendReport
from app.mail.queue import count_due_digests

if TYPE_CHECKING:
    from app.digests.plan import ComposeReport

PROGRESS_MIN_DIGESTS = 200


def parse_date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError as error:
        raise typer.BadParameter(
            f"{value!r} is not a YYYY-MM-DD date", param_hint="--date"
        ) from error


@cli.command("compose")
def compose_command(
    on_date: Annotated[
        str | None,
        typer.Option(
            "--date",
            help="Compose digests dated D (YYYY-MM-DD) for every active subscriber without one, "
            "whatever their send hour. Default: those whose local send time has come.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print each digest and why; write nothing.")
    ] = False,
) -> None:
    """Pick and freeze each due subscriber's papers (idempotent: safe to re-run any time)."""
    digest_date = parse_date(on_date)

    async def work(engine: AsyncEngine, settings: Settings) -> ComposeReport:
        return await compose_job(
            session_factory=create_session_factory(engine),
            settings=settings,
            on_date=digest_date,
            dry_run=dry_run,
        )

    report = run_with_engine(work)
    if dry_run:
        plans = report.plans
        for plan in plans:
            output.print(
                f"[bold]{escape(plan.email)}[/] {plan.digest_date}: "
                f"{counted(len(plan.items), 'paper')}"
            )
            for item in plan.items:
                why = (
                    f"{item.matched_topic}: {', '.join(item.matched_terms)}"
                    if item.matched_topic
                    else "trending"
                )
                if item.liked_title:
                    why += f"; similar to '{item.liked_title}', which they liked"
                output.print(
                    f"  {item.rank:>2}. {item.score:.3f} (relevance {item.relevance:.2f}, "
                    f"trend {item.trend:.2f}) {escape(item.title)} [dim]({escape(why)})[/]",
                    highlight=False,
                )
        output.print(
            f"dry run: {report.due:,} due, {sum(1 for p in plans if p.items):,} with papers, "
            f"{counted(report.candidates, 'candidate paper')}; nothing written",
            highlight=False,
        )
        return
    print_compose_report(report)


def print_compose_report(report: ComposeReport) -> None:
    output.print(
        f"{report.due:,} due: {report.queued:,} queued ({counted(report.items, 'paper')}), "
        f"{report.skipped:,} skipped (nothing qualified), {report.already_composed:,} already "
        f"composed; {counted(report.candidates, 'candidate paper')}",
        highlight=False,
    )


@cli.command("preview")
def preview_command(
    email: Annotated[str, typer.Argument(help="The subscriber's address.")],
    on_date: Annotated[
        str | None,
        typer.Option("--date", help="Digest date YYYY-MM-DD (default: their local today)."),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Write the HTML part to this file.")
    ] = None,
    text: Annotated[bool, typer.Option("--text", help="Print the plain-text part.")] = False,
) -> None:
    """Render a subscriber's digest without sending it: the frozen one for the date, or what
    compose would choose for them now. Prints the subject (and the text with --text)."""
    digest_date = parse_date(on_date)

    async def work(engine: AsyncEngine, settings: Settings) -> RenderedDigest:
        mailer = Mailer(settings)
        async with create_session_factory(engine)() as session:
            view = await preview_digest_view(
                email,
                session=session,
                settings=settings,
                now=datetime.now(UTC),
                on_date=digest_date,
            )
        return mailer.render(view)

    try:
        rendered = run_with_engine(work)
    except PreviewError as error:
        raise fail(str(error)) from error
    output.print(f"Subject: {escape(rendered.subject)}", highlight=False)
    if html is not None:
        html.write_text(rendered.html, encoding="utf-8")
        output.print(f"HTML written to {html}")
    if text:
        typer.echo(rendered.text)


def clock(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%H:%M %Z") if moment else "?"


def are(number: int) -> str:
    return "is" if number == 1 else "are"


def print_send_report(report: SendReport) -> None:
    if report.reclaimed:
        output.print(
            f"released {counted(report.reclaimed, 'digest')} held by stopped workers",
            highlight=False,
        )
    output.print(
        f"{report.sent:,} sent, {report.retry:,} to retry, {report.failed:,} failed, "
        f"{report.bounced:,} bounced ({report.suppressed:,} suppressed) in "
        f"{report.seconds:.1f} s ({report.rate:,.0f}/s) to {report.destination}",
        highlight=False,
    )
    held = report.held
    if held.by_stopped:
        output.print(
            f"{counted(held.by_stopped, 'digest')} {are(held.by_stopped)} held by a stopped "
            "worker until "
            f"{clock(held.stopped_until)}: `paperboy send --reclaim` sends them now",
            highlight=False,
        )
    if held.by_others:
        output.print(
            f"{counted(held.by_others, 'digest')} {are(held.by_others)} held by another worker "
            "until "
            f"{clock(held.others_until)} (a worker counts as stopped "
            f"{held.dead_after:g} s after its last heartbeat; "
            "`paperboy send --reclaim` then sends them)",
            highlight=False,
        )
    if report.retries_waiting:
        output.print(
            f"{counted(report.retries_waiting, 'digest')} {are(report.retries_waiting)} waiting "
            "for a retry, the first at "
            f"{clock(report.next_retry)}",
            highlight=False,
        )
    for error in report.errors[:10]:
        console.print(f"[bold red]error:[/] {escape(error)}")


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)


@cli.command("send")
def send_command(
    once: Annotated[
        bool,
        typer.Option(
            "--once/--watch",
            help="Send what is due and exit (default), or keep sending as digests become due.",
        ),
    ] = True,
    reclaim: Annotated[
        bool,
        typer.Option(
            "--reclaim",
            help="First release the digests leased to workers known dead (stopped, or silent "
            "for three heartbeats), instead of waiting for their leases to run out. A live "
            "worker's digests are never taken.",
        ),
    ] = False,
) -> None:
    """Deliver the queued digests (and retries that are due) through PAPERBOY_MAIL_URL, with a
    progress bar and a summary. Ctrl-C finishes the messages in flight and stops. Says so when
    digests are held by another (or a stopped) worker, and stops, exiting non-zero, when the
    mail server refuses mail from us for recipient after recipient."""

    async def work(engine: AsyncEngine, settings: Settings) -> SendReport:
        session_factory = create_session_factory(engine)
        async with session_factory() as session:
            due = await count_due_digests(session=session, now=datetime.now(UTC))
        stop = asyncio.Event()
        stop_on_signals(stop)
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=due < PROGRESS_MIN_DIGESTS,
        ) as progress:
            task = progress.add_task("sending", total=due if once else None)

            def on_progress(report: SendReport) -> None:
                progress.update(task, completed=report.attempted)

            return await send_job(
                session_factory=session_factory,
                settings=settings,
                once=once,
                stop=stop,
                on_progress=on_progress,
                reclaim=reclaim,
            )

    report = run_with_engine(work)
    print_send_report(report)
    if report.errors or report.halted:
        raise typer.Exit(code=1)


@cli.command("worker")
def worker_command() -> None:
    """Run a delivery worker until stopped (SIGINT/SIGTERM): claims due digests in batches under
    a lease and sends them. Start as many as you like, on any host, against Postgres."""

    async def work(engine: AsyncEngine, settings: Settings) -> SendReport:
        stop = asyncio.Event()
        stop_on_signals(stop)
        console.print(f"worker sending through {settings.mail_url.split('@')[-1]}; Ctrl-C stops")
        return await send_job(
            session_factory=create_session_factory(engine), settings=settings, once=False, stop=stop
        )

    report = run_with_engine(work)
    print_send_report(report)
