"""The `paperboy` command line: a thin typer layer over the job functions, for operators and for
the one-command start. Each command builds the engine from the settings, calls a job, prints what
happened, and exits non-zero when anything failed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Annotated, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings, get_settings
from app.db import create_engine, create_session_factory, current_revision, migrate
from app.digests import ComposeReport
from app.evaluation import (
    EvaluationError,
    JudgedPaper,
    evaluate,
    load_judged_papers,
    read_judged_papers,
    read_qrels,
    read_topics,
)
from app.ingest import IngestReport
from app.jobs import compose_job, ingest_job
from app.models import Subscriber, SubscriberStatus
from app.sources import FORMATS, SourceError
from app.subscribers import (
    Preferences,
    SubscriberError,
    add_active_subscriber,
    list_subscribers,
)

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
    try:
        digest_date = date.fromisoformat(on_date) if on_date else None
    except ValueError as error:
        raise typer.BadParameter(
            f"{on_date!r} is not a YYYY-MM-DD date", param_hint="--date"
        ) from error

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
            output.print(f"[bold]{plan.email}[/] {plan.digest_date}: {len(plan.items)} papers")
            for item in plan.items:
                why = (
                    f"{item.matched_topic}: {', '.join(item.matched_terms)}"
                    if item.matched_topic
                    else "trending"
                )
                output.print(
                    f"  {item.rank:>2}. {item.score:.3f} (relevance {item.relevance:.2f}, "
                    f"trend {item.trend:.2f}) {escape(item.title)} [dim]({escape(why)})[/]",
                    highlight=False,
                )
        output.print(
            f"dry run: {report.due} due, {sum(1 for p in plans if p.items)} with papers, "
            f"{report.candidates} candidate papers; nothing written"
        )
        return
    output.print(
        f"{report.due} due: {report.queued} queued ({report.items} papers), {report.skipped} "
        f"skipped (nothing qualified), {report.already_composed} already composed; "
        f"{report.candidates} candidate papers"
    )


subscriber_cli = typer.Typer(help="Operator tools for subscribers.", no_args_is_help=True)
cli.add_typer(subscriber_cli, name="subscriber")


@subscriber_cli.command("add")
def subscriber_add_command(
    email: Annotated[str, typer.Argument(help="The subscriber's address.")],
    topics: Annotated[
        list[str] | None, typer.Option("--topic", help="A topic (repeat for several).")
    ] = None,
    timezone: Annotated[str, typer.Option(help="IANA timezone, e.g. Europe/Berlin.")] = "UTC",
    hour: Annotated[int, typer.Option(help="Local hour (0-23) the digest is sent.")] = 7,
    size: Annotated[int, typer.Option(help="Papers per digest (1-50).")] = 10,
    trending_weight: Annotated[
        float, typer.Option(help="0 = relevance only, 1 = trending only.")
    ] = 0.3,
) -> None:
    """Add a subscriber who is active at once (no confirmation mail), or update one."""

    async def work(engine: AsyncEngine, _settings: Settings) -> tuple[int, str]:
        async with create_session_factory(engine)() as session:
            subscriber = await add_active_subscriber(
                email,
                Preferences(
                    topics=topics or [],
                    timezone=timezone,
                    send_hour=hour,
                    digest_size=size,
                    trending_weight=trending_weight,
                ),
                session=session,
            )
            await session.commit()
            return subscriber.id, subscriber.email

    try:
        subscriber_id, address = run_with_engine(work)
    except SubscriberError as error:
        console.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(code=1) from error
    output.print(f"subscriber {subscriber_id} <{address}> is active")


@subscriber_cli.command("list")
def subscriber_list_command(
    status: Annotated[
        SubscriberStatus | None, typer.Option(help="Only subscribers with this status.")
    ] = None,
) -> None:
    """List subscribers with their status, topics and schedule."""

    async def work(engine: AsyncEngine, _settings: Settings) -> list[Subscriber]:
        async with create_session_factory(engine)() as session:
            return await list_subscribers(session=session, status=status)

    table = Table("id", "email", "status", "topics", "timezone", "hour", "size")
    for s in run_with_engine(work):
        table.add_row(
            str(s.id),
            s.email,
            s.status.value,
            "; ".join(s.topics),
            s.timezone,
            str(s.send_hour),
            str(s.digest_size),
        )
    output.print(table)


@cli.command("eval")
def eval_command(
    topics_file: Annotated[
        Path, typer.Option("--topics", help="TSV: topic_id<TAB>topic text.", exists=True)
    ],
    qrels_file: Annotated[
        Path,
        typer.Option(
            "--qrels", help="TSV: topic_id<TAB>paper title or arXiv id<TAB>grade 0-2.", exists=True
        ),
    ],
    corpus: Annotated[
        str | None,
        typer.Option(help="Rank the papers of this source instead of the database's."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
    k: Annotated[int, typer.Option(help="Cut-off rank of nDCG.")] = 10,
) -> None:
    """Measure ranking quality: nDCG@k per judged topic and the mean, with the production
    relevance function."""
    try:
        topics = read_topics(topics_file)
        qrels = read_qrels(qrels_file, topics)
    except EvaluationError as error:
        console.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(code=1) from error

    async def work(engine: AsyncEngine, _settings: Settings) -> list[JudgedPaper]:
        async with create_session_factory(engine)() as session:
            return await load_judged_papers(session=session)

    try:
        papers = read_judged_papers(corpus) if corpus else run_with_engine(work)
    except SourceError as error:
        console.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(code=1) from error
    if not papers:
        console.print("[bold red]error:[/] the corpus is empty: ingest papers or pass --corpus")
        raise typer.Exit(code=1)
    results = evaluate(papers, topics, qrels, k=k)
    mean = sum(r.ndcg for r in results) / len(results) if results else 0.0
    if as_json:
        payload = {
            "k": k,
            "papers": len(papers),
            "mean_ndcg": round(mean, 4),
            "topics": [
                {"id": r.topic_id, "topic": r.topic, "ndcg": round(r.ndcg, 4), "judged": r.judged}
                for r in results
            ],
        }
        typer.echo(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table("topic", "text", "judged", f"nDCG@{k}", title=f"{len(papers)} papers")
    for r in results:
        table.add_row(r.topic_id, r.topic, str(r.judged), f"{r.ndcg:.3f}")
    table.add_row("mean", "", "", f"{mean:.3f}", style="bold")
    output.print(table)


def main() -> None:
    cli()
