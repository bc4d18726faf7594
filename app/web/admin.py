"""The admin JSON API under /admin/api, behind the bearer token: the subscriber routes (from
`admin_subscribers`), papers, ingest (an uploaded file or a URL) and its runs, digests, jobs run
on demand, and stats."""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import JSONResponse
from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import selectinload

from app.ingest.scheduled import scheduled_sources
from app.ingest.sources import FORMATS
from app.ingest.upsert import IngestReport
from app.jobs import compose_job, ingest_job, send_job
from app.mail.queue import count_due_digests
from app.models import (
    Digest,
    DigestItem,
    DigestStatus,
    IngestRun,
    JobRun,
    Paper,
    Subscriber,
    SubscriberStatus,
)
from app.web import admin_subscribers
from app.web.deps import AdminGuard, Session, State
from app.web.paging import Cursor, Id, Limit, after, like_pattern, next_cursor
from app.web.schemas import (
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


def paper_search(q: str | None) -> Select[Paper]:
    query = select(Paper)
    if q:
        pattern = like_pattern(q)
        query = query.where(
            or_(
                func.lower(Paper.title).like(pattern, escape="\\"),
                func.lower(Paper.arxiv_id).like(pattern, escape="\\"),
            )
        )
    return query


@router.get("/papers", response_model=PaperPage)
async def list_papers(
    session: Session,
    q: Annotated[
        str | None, Query(max_length=200, description="Title or arXiv id contains.")
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> PaperPage:
    rows = (
        await session.scalars(
            paper_search(q).where(Paper.id > after(cursor)).order_by(Paper.id).limit(limit)
        )
    ).all()
    return PaperPage(
        items=[PaperOut.model_validate(p) for p in rows],
        next_cursor=next_cursor([p.id for p in rows], limit),
    )


@router.get("/papers/{paper_id}", response_model=PaperOut)
async def get_paper(session: Session, paper_id: Id) -> PaperOut:
    paper = await session.get(Paper, paper_id)
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
    if url is not None and not url.startswith(("http://", "https://")):
        raise HTTPException(status_code=422, detail="url must be an http(s) URL")
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
    rows = (
        await session.scalars(select(IngestRun).order_by(IngestRun.id.desc()).limit(limit))
    ).all()
    return [IngestRunOut.model_validate(r) for r in rows]


@router.get("/digests", response_model=DigestPage)
async def list_digests(
    session: Session,
    on_date: Annotated[date | None, Query(alias="date")] = None,
    status: DigestStatus | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> DigestPage:
    query = select(Digest).where(Digest.id > after(cursor))
    if on_date is not None:
        query = query.where(Digest.digest_date == on_date)
    if status is not None:
        query = query.where(Digest.status == status)
    rows = (await session.scalars(query.order_by(Digest.id).limit(limit))).all()
    return DigestPage(
        items=[DigestOut.model_validate(d) for d in rows],
        next_cursor=next_cursor([d.id for d in rows], limit),
    )


@router.get("/digests/{digest_id}", response_model=DigestDetail)
async def get_digest(session: Session, digest_id: Id) -> DigestDetail:
    digest = await session.scalar(
        select(Digest)
        .where(Digest.id == digest_id)
        .options(selectinload(Digest.items).selectinload(DigestItem.paper))
    )
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
            async with state.sessions() as session:
                due = await count_due_digests(session=session, now=datetime.now(UTC))
            return JobResult(job=job, dry_run=True, report={"due": due})

        async def send() -> tuple[dict[str, Any], str | None]:
            sent = await send_job(
                session_factory=state.sessions,
                settings=state.settings,
                transport=state.transport,
                close_transport=False,
            )
            report = {
                "sent": sent.sent,
                "retry": sent.retry,
                "failed": sent.failed,
                "bounced": sent.bounced,
                "errors": sent.errors[:20],
            }
            return report, None

        return started(await state.start_job(job, {}, send))
    sources = source or scheduled_sources(state.settings, datetime.now(UTC))
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
    rows = (await session.scalars(select(JobRun).order_by(JobRun.id.desc()).limit(limit))).all()
    return [JobRunOut.model_validate(r) for r in rows]


@router.get("/job-runs/{run_id}", response_model=JobRunOut)
async def job_run(session: Session, run_id: Id) -> JobRunOut:
    """One job's run: `running` until it ends, then its report or error."""
    run = await session.get(JobRun, run_id)
    if run is None:
        raise HTTPException(status_code=404, detail=f"no job run {run_id}")
    return JobRunOut.model_validate(run)


@router.get("/stats", response_model=Stats)
async def stats(session: Session, days: Annotated[int, Query(ge=1, le=90)] = 14) -> Stats:
    by_status = dict(
        (
            await session.execute(
                select(Subscriber.status, func.count()).group_by(Subscriber.status)
            )
        ).all()
    )
    since = datetime.now(UTC).date() - timedelta(days=days)
    per_day: dict[str, dict[str, int]] = {}
    rows = await session.execute(
        select(Digest.digest_date, Digest.status, func.count())
        .where(Digest.digest_date >= since)
        .group_by(Digest.digest_date, Digest.status)
    )
    for digest_date, status, count in rows:
        per_day.setdefault(digest_date.isoformat(), {})[status.value] = count
    last = await session.scalar(select(IngestRun).order_by(IngestRun.id.desc()).limit(1))
    return Stats(
        subscribers={s.value: int(by_status.get(s, 0)) for s in SubscriberStatus},
        digests_by_day=dict(sorted(per_day.items())),
        bounced_subscribers=int(by_status.get(SubscriberStatus.BOUNCED, 0)),
        bounced_digests=int(
            await session.scalar(
                select(func.count())
                .select_from(Digest)
                .where(Digest.status == DigestStatus.BOUNCED)
            )
            or 0
        ),
        last_ingest=IngestRunOut.model_validate(last) if last else None,
    )
