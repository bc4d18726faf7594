"""The admin JSON API under /admin/api, behind the bearer token: the subscriber routes (from
`admin_subscribers`), papers, ingest (an uploaded file or a URL) and its runs, digests, jobs run
on demand, and stats."""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import selectinload

from app.ingest.scheduled import scheduled_sources
from app.ingest.sources import FORMATS
from app.jobs import compose_job, ingest_job, send_job
from app.mail.queue import count_due_digests
from app.models import (
    Digest,
    DigestItem,
    DigestStatus,
    IngestRun,
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
    PaperOut,
    PaperPage,
    Stats,
)

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


@router.post("/ingest", response_model=IngestResult)
async def ingest(
    state: State,
    file: Annotated[UploadFile | None, File(description="A source file to ingest.")] = None,
    url: Annotated[str | None, Form(max_length=2000, description="Or an http(s) URL.")] = None,
    source_format: Annotated[str, Form(alias="format")] = "auto",
) -> IngestResult:
    if (file is None) == (url is None):
        raise HTTPException(status_code=422, detail="send exactly one of: file, url")
    if source_format != "auto" and source_format not in FORMATS:
        raise HTTPException(
            status_code=422, detail=f"format must be auto or one of {', '.join(FORMATS)}"
        )
    if url is not None:
        if not url.startswith(("http://", "https://")):
            raise HTTPException(status_code=422, detail="url must be an http(s) URL")
        location = url
        report = await ingest_job(
            location,
            session_factory=state.sessions,
            settings=state.settings,
            source_format=source_format,
        )
    else:
        assert file is not None
        with tempfile.TemporaryDirectory() as workdir:
            path = Path(workdir) / "upload"
            with path.open("wb") as target:
                while chunk := await file.read(1024 * 1024):
                    target.write(chunk)
            report = await ingest_job(
                str(path),
                session_factory=state.sessions,
                settings=state.settings,
                source_format=source_format,
            )
        report.source = file.filename or "upload"
    result = IngestResult(
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
    )
    if report.error:
        raise HTTPException(status_code=422, detail=result.model_dump(mode="json"))
    return result


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


@router.post("/jobs/{job}", response_model=JobResult)
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
) -> JobResult:
    if job == "compose":
        composed = await compose_job(
            session_factory=state.sessions,
            settings=state.settings,
            on_date=on_date,
            dry_run=dry_run,
        )
        report = {
            "due": composed.due,
            "queued": composed.queued,
            "skipped": composed.skipped,
            "items": composed.items,
            "already_composed": composed.already_composed,
            "candidates": composed.candidates,
        }
        if dry_run:
            report["planned"] = sum(1 for plan in composed.plans if plan.items)
        return JobResult(job=job, dry_run=dry_run, report=report)
    if job == "send":
        if dry_run:
            async with state.sessions() as session:
                due = await count_due_digests(session=session, now=datetime.now(UTC))
            return JobResult(job=job, dry_run=True, report={"due": due})
        sent = await send_job(
            session_factory=state.sessions,
            settings=state.settings,
            transport=state.transport,
            close_transport=False,
        )
        return JobResult(
            job=job,
            dry_run=False,
            report={
                "sent": sent.sent,
                "retry": sent.retry,
                "failed": sent.failed,
                "bounced": sent.bounced,
                "errors": sent.errors[:20],
            },
        )
    sources = source or scheduled_sources(state.settings, datetime.now(UTC))
    if not sources:
        raise HTTPException(
            status_code=422,
            detail="no source given; PAPERBOY_SOURCES and PAPERBOY_ARXIV_CATEGORIES are empty",
        )
    if dry_run:
        return JobResult(job=job, dry_run=True, report={"sources": sources})
    results = []
    for location in sources:
        run = await ingest_job(location, session_factory=state.sessions, settings=state.settings)
        results.append(
            {
                "source": location,
                "inserted": run.inserted,
                "updated": run.updated,
                "rejected": run.rejected,
                "error": run.error,
            }
        )
    return JobResult(job=job, dry_run=False, report={"sources": results})


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
