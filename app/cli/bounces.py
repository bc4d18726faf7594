"""`paperboy bounces`: read the bounce mailbox once, apply what it reports and say what it found."""

from __future__ import annotations

import typer
from rich.markup import escape
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cli.base import cli, console, counted, fail, output, run_with_engine
from app.config import Settings
from app.db import create_session_factory
from app.jobs import bounces_job
from app.mail.bounces.mailbox_job import BounceReport
from app.mail.bounces.mailboxes import MailboxError


def print_bounce_report(report: BounceReport) -> None:
    events = report.events
    output.print(
        f"{escape(report.mailbox)}: {counted(report.read, 'message')} read; "
        f"{counted(events.hard_bounces, 'hard bounce')} ({events.suppressed:,} suppressed), "
        f"{counted(events.soft_bounces, 'soft bounce')}, {events.blocked:,} blocked, "
        f"{counted(events.complaints, 'complaint')} ({events.unsubscribed:,} unsubscribed), "
        f"{events.unmatched:,} unmatched, {events.duplicates:,} seen before, "
        f"{counted(report.not_reports, 'message')} not a report, "
        f"{report.unreadable:,} left unread",
        highlight=False,
    )
    for problem in report.problems[:20]:
        console.print(f"[bold red]error:[/] {escape(problem)}")


@cli.command("bounces")
def bounces_command() -> None:
    """Read PAPERBOY_BOUNCE_MAILBOX once: bounces (RFC 3464) and abuse reports (RFC 5965) not
    read before are matched to their digests and applied (a hard bounce counts toward the
    bounce limit, a complaint unsubscribes). Exits 1 when the mailbox cannot be read or a
    message could not be made sense of (it is left unread)."""

    async def work(engine: AsyncEngine, settings: Settings) -> BounceReport:
        return await bounces_job(session_factory=create_session_factory(engine), settings=settings)

    try:
        report = run_with_engine(work)
    except MailboxError as error:
        raise fail(str(error)) from None
    print_bounce_report(report)
    if report.unreadable:
        raise typer.Exit(code=1)
