"""The `paperboy` command line: a thin typer layer over the job functions, for operators and for
the one-command start. Each command builds the engine from the settings, calls a job, prints what
happened, and exits non-zero when anything failed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings, get_settings
from app.db import create_engine, create_session_factory, current_revision, migrate
from app.ingest import IngestReport
from app.jobs import ingest_job
from app.sources import FORMATS

T = TypeVar("T")
PROGRESS_MIN_BYTES = 4 * 1024 * 1024

cli = typer.Typer(
    name="paperboy",
    help="Paperboy: trending research papers on each subscriber's topics, by email, once a day.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
output = Console()


def run_with_engine(work: Callable[[AsyncEngine, Settings], Awaitable[T]]) -> T:
    settings = get_settings()

    async def main() -> T:
        engine = create_engine(settings.database_url, echo=settings.database_echo)
        try:
            return await work(engine, settings)
        finally:
            await engine.dispose()

    return asyncio.run(main())


@cli.command("migrate")
def migrate_command(
    revision: Annotated[str, typer.Option(help="Target revision (default: the latest).")] = "head",
    downgrade: Annotated[
        bool, typer.Option("--downgrade", help="Roll back to REVISION (e.g. base) instead.")
    ] = False,
) -> None:
    """Create or upgrade the database schema (safe to re-run: applies only what is missing)."""

    async def work(engine: AsyncEngine, _settings: Settings) -> str | None:
        await migrate(engine, revision=revision, downgrade=downgrade)
        return await current_revision(engine)

    now_at = run_with_engine(work)
    output.print(f"database at revision [bold]{now_at or 'base (empty)'}[/]")


def print_report(report: IngestReport) -> None:
    table = Table(title=f"ingest {report.source}", show_header=False, title_justify="left")
    table.add_row("format", report.format or "?")
    table.add_row("records read", str(report.records))
    table.add_row("inserted", str(report.inserted))
    table.add_row("updated", str(report.updated))
    table.add_row("unchanged", str(report.unchanged))
    table.add_row("rejected", str(report.rejected))
    rate = report.records / report.seconds if report.seconds else 0.0
    table.add_row("time", f"{report.seconds:.2f} s ({rate:,.0f} records/s)")
    output.print(table)
    for rejection in report.rejections[:10]:
        output.print(f"  rejected at {rejection['position']}: {rejection['reason']}")
    if report.rejected > 10:
        output.print(f"  … and {report.rejected - 10} more (see ingest_run.rejections)")
    if report.error:
        console.print(f"[bold red]error:[/] {report.error}")


@cli.command("ingest")
def ingest_command(
    sources: Annotated[
        list[str],
        typer.Argument(help="File paths, '-' for standard input, or http(s) URLs.", min=1),
    ],
    source_format: Annotated[
        str,
        typer.Option(
            "--format",
            help=f"Input format: auto (detect from content) or one of {', '.join(FORMATS)}.",
        ),
    ] = "auto",
) -> None:
    """Load papers from the given sources: papers-page text, arXiv API Atom, Hugging Face daily
    papers JSON or arXiv snapshot JSON Lines (optionally gzipped). Re-running is safe: known papers
    are updated, never duplicated. Exits 1 if any source could not be read."""
    if source_format != "auto" and source_format not in FORMATS:
        raise typer.BadParameter(
            f"{source_format!r} is not one of auto, {', '.join(FORMATS)}", param_hint="--format"
        )

    async def work(engine: AsyncEngine, settings: Settings) -> list[IngestReport]:
        session_factory = create_session_factory(engine)
        reports = []
        for location in sources:
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            ) as progress:
                task = progress.add_task(location, total=None, visible=False)

                def on_progress(done: int, total: int | None, task_id=task) -> None:  # type: ignore[no-untyped-def]
                    if total is not None and total >= PROGRESS_MIN_BYTES:
                        progress.update(task_id, completed=done, total=total, visible=True)

                report = await ingest_job(
                    location,
                    session_factory=session_factory,
                    settings=settings,
                    source_format=source_format,
                    on_progress=on_progress,
                )
            print_report(report)
            reports.append(report)
        return reports

    reports = run_with_engine(work)
    if not all(report.ok for report in reports):
        raise typer.Exit(code=1)


def main() -> None:
    cli()
