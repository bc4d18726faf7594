"""Commands over papers: `migrate`, `ingest` and `eval` (ranking quality on judged topics)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cli.base import cli, console, output, run_with_engine
from app.config import Settings
from app.db import create_session_factory, current_revision, migrate
from app.ingest.sources import FORMATS, SourceError
from app.ingest.upsert import IngestReport
from app.jobs import ingest_job

if TYPE_CHECKING:
    from app.ranking.evaluation import JudgedPaper

PROGRESS_MIN_BYTES = 4 * 1024 * 1024


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
    # Imported here: the ranking stack takes a second to load and only this command needs it.
    from app.ranking.evaluation import (
        EvaluationError,
        evaluate,
        load_judged_papers,
        read_judged_papers,
        read_qrels,
        read_topics,
    )

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
