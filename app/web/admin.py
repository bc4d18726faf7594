"""The admin JSON API under /admin/api, behind the bearer token: the subscriber routes (from
`admin_subscribers`), bounce and complaint reports (`admin_delivery_events`), papers, ingest (an
uploaded file or a URL) and its runs, digests, jobs run on demand, and stats."""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import JSONResponse

from app.config import Settings
from app.digests.history import count_digests, digest_with_items, digests_per_day, search_digests
from app.ingest.catalogue import find_paper, latest_ingest_runs, search_papers
from app.ingest.fetch import http_url_problem
from app.ingest.scheduled import expand_source, scheduled_sources
from app.ingest.sources import FORMATS
from app.ingest.upsert import IngestReport
from app.jobs import compose_job, find_job_run, ingest_job, latest_job_runs, send_job
from app.mail.queue import count_due_digests
from app.mail.workers import HeldDigests, delivery_state, held_digests
from app.models import (
    DigestStatus,
    JobRun,
    SubscriberStatus,
)
from app.subscribers.operator_actions import count_by_status
from app.web import admin_delivery_events, admin_subscribers
from app.web.deps import AdminGuard, Session, State
from app.web.paging import Cursor, Id, Limit, after, like_pattern, next_cursor
from app.web.schemas import (
    DeliveryOut,
    DigestDetail,
    DigestItemOut,
    DigestOut,
    DigestPage,
    IngestResult,
    IngestRunOut,
    JobResult,
    JobRunOut,
    PaperOut,
    PaperPage,
    Stats,
)

if TYPE_CHECKING:
    from app.digests.plan import ComposeReport

router = APIRouter(prefix="/admin/api", dependencies=[AdminGuard], tags=["admin"])
router.include_router(admin_subscribers.router)
router.include_router(admin_delivery_events.router)


@router.get("/papers", response_model=PaperPage)
async def list_papers(
    session: Session,
    q: Annotated[
        str | None, Query(max_length=200, description="Title or arXiv id contains.")
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> PaperPage:
    rows = await search_papers(
        session=session,
        after_id=after(cursor),
        limit=limit,
        text_like=like_pattern(q) if q else None,
    )
    return PaperPage(
        items=[PaperOut.model_validate(p) for p in rows],
        next_cursor=next_cursor([p.id for p in rows], limit),
    )


@router.get("/papers/{paper_id}", response_model=PaperOut)
async def get_paper(session: Session, paper_id: Id) -> PaperOut:
    paper = await find_paper(paper_id, session=session)
    if paper is None:
        raise HTTPException(status_code=404, detail=f"no paper {paper_id}")
    return PaperOut.model_validate(paper)


def ingest_summary(report: IngestReport) -> dict[str, Any]:
    return IngestResult(
        source=report.source,
        format=report.format,
        records=report.records,
        inserted=report.inserted,
        updated=report.updated,
        unchanged=report.unchanged,
        rejected=report.rejected,
        rejections=list(report.rejections),
        error=report.error,
        seconds=round(report.seconds, 3),
    ).model_dump(mode="json")


def started(run: JobRun) -> JSONResponse:
    """202: the job runs on; its run record says how it ends."""
    return JSONResponse(
        JobRunOut.model_validate(run).model_dump(mode="json"),
        status_code=202,
        headers={"location": f"/admin/api/job-runs/{run.id}"},
    )


STARTED: dict[int | str, dict[str, Any]] = {
    202: {"model": JobRunOut, "description": "Started; poll the run record."}
}


@router.post("/ingest", status_code=202, response_model=JobRunOut, responses=STARTED)
async def ingest(
    state: State,
    file: Annotated[UploadFile | None, File(description="A source file to ingest.")] = None,
    url: Annotated[str | None, Form(max_length=2000, description="Or an http(s) URL.")] = None,
    source_format: Annotated[str, Form(alias="format")] = "auto",
) -> JSONResponse:
    """Ingest an uploaded file or an http(s) URL as a job: the answer is its run record."""
    if (file is None) == (url is None):
        raise HTTPException(status_code=422, detail="send exactly one of: file, url")
    if source_format != "auto" and source_format not in FORMATS:
        raise HTTPException(
            status_code=422, detail=f"format must be auto or one of {', '.join(FORMATS)}"
        )
    if url is not None and (problem := http_url_problem(url)) is not None:
        raise HTTPException(status_code=422, detail=f"url must be an http(s) URL: {problem}")
    workdir: Path | None = None
    if file is not None:
        workdir = Path(tempfile.mkdtemp(prefix="paperboy-upload-"))
        with (workdir / "upload").open("wb") as target:
            while chunk := await file.read(1024 * 1024):
                target.write(chunk)
    location = str(workdir / "upload") if workdir else str(url)
    shown_as = (file.filename or "upload") if file is not None else str(url)

    async def work() -> tuple[dict[str, Any], str | None]:
        try:
            report = await ingest_job(
                location,
                session_factory=state.sessions,
                settings=state.settings,
                source_format=source_format,
            )
        finally:
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
        report.source = shown_as
        return ingest_summary(report), report.error

    run = await state.start_job("ingest", {"source": shown_as, "format": source_format}, work)
    return started(run)


@router.get("/ingest-runs", response_model=list[IngestRunOut])
async def ingest_runs(session: Session, limit: Limit = 50) -> list[IngestRunOut]:
    rows = await latest_ingest_runs(session=session, limit=limit)
    return [IngestRunOut.model_validate(r) for r in rows]


@router.get("/digests", response_model=DigestPage)
async def list_digests(
    session: Session,
    on_date: Annotated[date | None, Query(alias="date")] = None,
    status: DigestStatus | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> DigestPage:
    rows = await search_digests(
        session=session, after_id=after(cursor), limit=limit, on_date=on_date, status=status
    )
    return DigestPage(
        items=[DigestOut.model_validate(d) for d in rows],
        next_cursor=next_cursor([d.id for d in rows], limit),
    )


@router.get("/digests/{digest_id}", response_model=DigestDetail)
async def get_digest(session: Session, digest_id: Id) -> DigestDetail:
    digest = await digest_with_items(digest_id, session=session)
    if digest is None:
        raise HTTPException(status_code=404, detail=f"no digest {digest_id}")
    items = [
        DigestItemOut(
            rank=i.rank,
            paper_id=i.paper_id,
            title=i.paper.title,
            score=i.score,
            relevance=i.relevance,
            trend=i.trend,
            matched_topic=i.matched_topic,
            matched_terms=list(i.matched_terms),
            liked_title=i.liked_title,
        )
        for i in digest.items
    ]
    return DigestDetail(**DigestOut.model_validate(digest).model_dump(), items=items)


@router.post(
    "/jobs/{job}",
    response_model=JobResult,
    responses={200: {"description": "A dry run's report."}, **STARTED},
)
async def run_job(
    state: State,
    job: Literal["compose", "send", "ingest"],
    dry_run: Annotated[
        bool, Query(description="Report what would happen; change nothing.")
    ] = False,
    on_date: Annotated[
        date | None, Query(alias="date", description="compose: digest date.")
    ] = None,
    source: Annotated[
        list[str] | None, Query(max_length=20, description="ingest: sources (default: configured).")
    ] = None,
    reclaim: Annotated[
        bool,
        Query(
            description="send: first release the digests leased to send workers known dead "
            "(stopped, or silent for three heartbeats); never a live worker's."
        ),
    ] = False,
) -> JobResult | JSONResponse:
    """Run a job now. A dry run answers at once with what would happen; a real run starts apart
    from the request and the answer (202) is its run record."""
    if job == "compose":
        if dry_run:
            planned = await compose_job(
                session_factory=state.sessions,
                settings=state.settings,
                on_date=on_date,
                dry_run=True,
            )
            report = compose_summary(planned)
            report["planned"] = sum(1 for plan in planned.plans if plan.items)
            return JobResult(job=job, dry_run=True, report=report)

        async def compose() -> tuple[dict[str, Any], str | None]:
            composed = await compose_job(
                session_factory=state.sessions, settings=state.settings, on_date=on_date
            )
            return compose_summary(composed), None

        parameters = {"date": on_date.isoformat() if on_date else None}
        return started(await state.start_job(job, parameters, compose))
    if job == "send":
        if dry_run:
            now = datetime.now(UTC)
            async with state.sessions() as session:
                due = await count_due_digests(session=session, now=now)
                held = await held_digests(
                    session=session,
                    now=now,
                    heartbeat_seconds=state.settings.send_heartbeat_seconds,
                )
            return JobResult(job=job, dry_run=True, report={"due": due, **held_report(held)})

        async def send() -> tuple[dict[str, Any], str | None]:
            sent = await send_job(
                session_factory=state.sessions,
                settings=state.settings,
                transport=state.transport,
                close_transport=False,
                reclaim=reclaim,
            )
            report = {
                "sent": sent.sent,
                "retry": sent.retry,
                "failed": sent.failed,
                "bounced": sent.bounced,
                "refused_us": sent.refused_us,
                "reclaimed": sent.reclaimed,
                **held_report(sent.held),
                "retries_waiting": sent.retries_waiting,
                "next_retry": sent.next_retry.isoformat() if sent.next_retry else None,
                "errors": sent.errors[:20],
            }
            return report, (sent.halted_message if sent.halted else None)

        return started(await state.start_job(job, {"reclaim": reclaim}, send))
    now = datetime.now(UTC)
    sources = (
        [remote_or_configured(location, state.settings, now) for location in source]
        if source
        else scheduled_sources(state.settings, now)
    )
    if not sources:
        raise HTTPException(
            status_code=422,
            detail="no source given; PAPERBOY_SOURCES and PAPERBOY_ARXIV_CATEGORIES are empty",
        )
    if dry_run:
        return JobResult(job=job, dry_run=True, report={"sources": sources})

    async def ingest_sources() -> tuple[dict[str, Any], str | None]:
        results: list[dict[str, Any]] = []
        for location in sources:
            run = await ingest_job(
                location, session_factory=state.sessions, settings=state.settings
            )
            results.append(
                {
                    "source": location,
                    "inserted": run.inserted,
                    "updated": run.updated,
                    "rejected": run.rejected,
                    "error": run.error,
                }
            )
        failed = [str(result["source"]) for result in results if result["error"]]
        return {"sources": results}, (f"failed: {', '.join(failed)}" if failed else None)

    return started(await state.start_job(job, {"sources": sources}, ingest_sources))


def held_report(held: HeldDigests) -> dict[str, Any]:
    return {
        "held_by_stopped_workers": held.by_stopped,
        "held_by_stopped_workers_until": (
            held.stopped_until.isoformat() if held.stopped_until else None
        ),
        "held_by_other_workers": held.by_others,
    }


def remote_or_configured(location: str, settings: Settings, now: datetime) -> str:
    """A source an operator names over HTTP: an entry of PAPERBOY_SOURCES (its `{date}` filled
    in) or an http(s) URL. A local path given over HTTP would publish any file the server can
    read on the front page: paths are for the CLI and the scheduler's configured sources."""
    if location in settings.sources:
        return expand_source(location, now)
    problem = http_url_problem(location)
    if problem is not None:
        raise HTTPException(
            status_code=422,
            detail=f"source {location[:200]!r} refused: {problem}. Over the admin API a source "
            "is an http(s) URL or an entry of PAPERBOY_SOURCES; local files are ingested with "
            "the CLI (paperboy ingest PATH) or configured in PAPERBOY_SOURCES.",
        )
    return location


def compose_summary(report: ComposeReport) -> dict[str, Any]:
    return {
        "due": report.due,
        "queued": report.queued,
        "skipped": report.skipped,
        "items": report.items,
        "already_composed": report.already_composed,
        "candidates": report.candidates,
    }


@router.get("/job-runs", response_model=list[JobRunOut])
async def job_runs(session: Session, limit: Limit = 50) -> list[JobRunOut]:
    """The jobs operators started, newest first."""
    rows = await latest_job_runs(session=session, limit=limit)
    return [JobRunOut.model_validate(r) for r in rows]


@router.get("/job-runs/{run_id}", response_model=JobRunOut)
async def job_run(session: Session, run_id: Id) -> JobRunOut:
    """One job's run: `running` until it ends, then its report or error."""
    run = await find_job_run(run_id, session=session)
    if run is None:
        raise HTTPException(status_code=404, detail=f"no job run {run_id}")
    return JobRunOut.model_validate(run)


@router.get("/stats", response_model=Stats)
async def stats(
    session: Session, state: State, days: Annotated[int, Query(ge=1, le=90)] = 14
) -> Stats:
    by_status = await count_by_status(session=session)
    latest = await latest_ingest_runs(session=session, limit=1)
    delivery = await delivery_state(
        session=session,
        now=datetime.now(UTC),
        heartbeat_seconds=state.settings.send_heartbeat_seconds,
    )
    return Stats(
        subscribers={status.value: count for status, count in by_status.items()},
        digests_by_day=await digests_per_day(
            session=session, since=datetime.now(UTC).date() - timedelta(days=days)
        ),
        bounced_subscribers=by_status[SubscriberStatus.BOUNCED],
        bounced_digests=await count_digests(DigestStatus.BOUNCED, session=session),
        last_ingest=IngestRunOut.model_validate(latest[0]) if latest else None,
        delivery=DeliveryOut(
            refusal=delivery.refusal,
            refused_at=delivery.refused_at,
            workers_alive=delivery.workers_alive,
            held_by_stopped_workers=delivery.held.by_stopped,
            held_by_stopped_workers_until=delivery.held.stopped_until,
            held_by_other_workers=delivery.held.by_others,
        ),
    )
