"""Commands over papers: `migrate`, `ingest`, `embed` (vectors for relevance by meaning) and `eval`
(ranking quality on judged topics)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cli.base import (
    STOPPED_BY_SIGINT,
    STOPPED_BY_SIGTERM,
    checked_settings,
    cli,
    console,
    counted,
    output,
    run_with_engine,
    stop_on_sigterm,
)
from app.config import Settings
from app.db import create_session_factory, current_revision, migrate
from app.ingest.sources import FORMATS, SourceError
from app.ingest.upsert import IngestReport
from app.jobs import EmbedReport, embed_job, ingest_job

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
        output.print(f"  … and {report.rejected - 10:,} more (see ingest_run.rejections)")
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

    current: list[str] = []

    async def work(engine: AsyncEngine, settings: Settings) -> list[IngestReport]:
        stop_on_sigterm()
        session_factory = create_session_factory(engine)
        reports = []
        for location in sources:
            current[:] = [location]
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

    try:
        reports = run_with_engine(work)
    except (asyncio.CancelledError, KeyboardInterrupt) as stop:
        signal_name = "Ctrl-C" if isinstance(stop, KeyboardInterrupt) else "SIGTERM"
        where = f" while reading {current[0]}" if current else ""
        console.print(
            f"[bold red]stopped:[/] {signal_name}{where}; batches committed so far are kept and "
            "the run is recorded as failed (interrupted)"
        )
        code = STOPPED_BY_SIGINT if isinstance(stop, KeyboardInterrupt) else STOPPED_BY_SIGTERM
        raise typer.Exit(code=code) from None
    if not all(report.ok for report in reports):
        raise typer.Exit(code=1)


@cli.command("embed")
def embed_command() -> None:
    """Embed the papers that can still enter a digest (first seen within the compose window) with
    the configured sentence-embedding model, for relevance by meaning. Compose does this itself
    first; run it after a large ingest to spread the work."""

    async def work(engine: AsyncEngine, settings: Settings) -> EmbedReport:
        return await embed_job(session_factory=create_session_factory(engine), settings=settings)

    report = run_with_engine(work)
    if report.model is None:
        output.print("The semantic layer is off (PAPERBOY_EMBEDDING_MODEL=none): nothing to embed.")
        return
    noun = "paper" if report.embedded == 1 else "papers"
    output.print(
        f"Embedded {report.embedded} {noun} with {report.model} in {report.seconds:.1f} s."
    )


@cli.command("eval")
def eval_command(
    topics_files: Annotated[
        list[Path],
        typer.Option(
            "--topics",
            help="TSV: topic_id<TAB>topic text. Repeat for several groups (e.g. jargon, plain "
            "language): each file is a group, named by the file.",
            exists=True,
        ),
    ],
    qrels_files: Annotated[
        list[Path],
        typer.Option(
            "--qrels",
            help="TSV: topic_id<TAB>paper title or arXiv id<TAB>grade 0-2; one per --topics, "
            "in order.",
            exists=True,
        ),
    ],
    holdout_file: Annotated[
        Path | None,
        typer.Option(
            "--holdout",
            help="TSV: topic_id<TAB>tune|holdout; means are also given per part.",
            exists=True,
        ),
    ] = None,
    corpus: Annotated[
        str | None,
        typer.Option(help="Rank the papers of this source instead of the database's."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
    k: Annotated[int, typer.Option(help="Cut-off rank of nDCG.")] = 10,
    feedback_days: Annotated[
        int,
        typer.Option(
            "--feedback-days",
            help="Also simulate a reader per topic rating their daily digest of 10 for this "
            "many days; adds nDCG@k of the whole pool on days 1, 5 and the last.",
            min=0,
            max=60,
        ),
    ] = 0,
) -> None:
    """Measure ranking quality: nDCG@k per judged topic and the means per group (and per tune /
    held-out part), by words alone, by meaning alone and fused, as compose ranks; with
    --feedback-days, as it learns from a simulated reader's feedback. Topics with no relevant
    paper are listed but left out of the means."""
    # Imported here: the ranking stack takes a second to load and only this command needs it.
    from app.ranking.evaluation import (
        EvaluationError,
        evaluate,
        load_judged_papers,
        read_holdout,
        read_judged_papers,
        read_qrels,
        read_topics,
        signal_rankers,
    )
    from app.ranking.feedback_evaluation import feedback_ndcg, feedback_pool, reported_days
    from app.ranking.semantic import embedding_model

    if len(topics_files) != len(qrels_files):
        console.print("[bold red]error:[/] give one --qrels file for each --topics file")
        raise typer.Exit(code=1)
    try:
        groups = []
        for topics_file, qrels_file in zip(topics_files, qrels_files, strict=True):
            topics = read_topics(topics_file)
            groups.append((topics_file.stem, topics, read_qrels(qrels_file, topics)))
        split = read_holdout(holdout_file) if holdout_file else {}
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
    settings = checked_settings()
    encoder = embedding_model(settings)
    rankers = (
        signal_rankers(papers, encoder, threshold=settings.relevance_threshold)
        if encoder is not None
        else {"lexical": None}
    )
    pool = (
        feedback_pool(papers, encoder, threshold=settings.relevance_threshold)
        if feedback_days
        else None
    )
    days_shown = reported_days(feedback_days)
    rows = []  # (group, topic id, topic, judged, part, {signal: nDCG})
    for group, topics, qrels in groups:
        by_signal = {
            signal: evaluate(papers, topics, qrels, ranker=ranker, k=k)
            for signal, ranker in rankers.items()
        }
        learning = (
            feedback_ndcg(pool, topics, qrels, days=feedback_days, k=k) if pool is not None else {}
        )
        for position, result in enumerate(next(iter(by_signal.values()))):
            scores = {signal: results[position].ndcg for signal, results in by_signal.items()}
            if result.topic_id in learning:
                whole_pool = learning[result.topic_id].whole_pool
                scores |= {f"feedback day {day}": whole_pool[day - 1] for day in days_shown}
            part = split.get(result.topic_id, "")
            rows.append((group, result.topic_id, result.topic, result.judged, part, scores))
    production = list(rankers)[-1]  # what compose ranks by, without feedback
    signals = list(rankers) + [f"feedback day {day}" for day in days_shown]

    def mean(selected: list[dict[str, float]], signal: str) -> float:
        return sum(s[signal] for s in selected) / len(selected) if selected else 0.0

    summaries = []  # (label, count, {signal: mean})
    for group, _, _ in groups:
        for part in ("", "tune", "holdout") if split else ("",):
            # A topic with no relevant paper has no nDCG to speak of: it is listed, not averaged.
            selected = [r[5] for r in rows if r[0] == group and r[3] and (not part or r[4] == part)]
            label = group + (f" ({part})" if part else "")
            summaries.append((label, len(selected), {s: mean(selected, s) for s in signals}))
    everything = [r[5] for r in rows if r[3]]
    summaries.append(("all", len(everything), {s: mean(everything, s) for s in signals}))
    if as_json:
        payload = {
            "k": k,
            "papers": len(papers),
            "signals": signals,
            "mean_ndcg": round(summaries[-1][2][production], 4),
            "means": [
                {"group": label, "topics": count, **{s: round(v, 4) for s, v in means.items()}}
                for label, count, means in summaries
            ],
            "topics": [
                {
                    "group": group,
                    "id": topic_id,
                    "topic": topic,
                    "judged": judged,
                    "part": part or None,
                    "ndcg": round(scores[production], 4),
                    **{s: round(v, 4) for s, v in scores.items()},
                }
                for group, topic_id, topic, judged, part, scores in rows
            ],
        }
        typer.echo(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table("group", "topic", "text", "judged", "part", *(f"{s} nDCG@{k}" for s in signals))
    table.title = counted(len(papers), "paper")
    for group, topic_id, topic, judged, part, scores in rows:
        table.add_row(
            group, topic_id, topic, str(judged), part, *(f"{scores[s]:.3f}" for s in signals)
        )
    for label, count, means in summaries:
        table.add_row(
            "mean", label, f"{count} topics", "", "", *(f"{means[s]:.3f}" for s in signals),
            style="bold",
        )  # fmt: skip
    output.print(table)
