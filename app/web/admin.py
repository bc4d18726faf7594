"""The admin JSON API under /admin/api, behind the bearer token: subscribers (search with cursor
pages, get, create, update, GDPR erase, CSV import with a dry run and CSV export), papers, ingest
(an uploaded file or a URL) and its runs, digests and previews, jobs run on demand, and stats."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from sqlalchemy import Select, delete, func, or_, select
from sqlalchemy.orm import selectinload

from app.delivery import count_due_digests
from app.jobs import compose_job, ingest_job, send_job
from app.mailer import PreviewError, preview_digest_view
from app.models import (
    Digest,
    DigestItem,
    DigestStatus,
    IngestRun,
    Paper,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from app.sources import FORMATS
from app.subscriber_csv import export_subscribers, import_subscribers
from app.subscribers import (
    Preferences,
    SubscriberError,
    find_by_email,
    normalise_email,
    validate_preferences,
)
from app.web.deps import AdminGuard, Session, State
from app.web.schemas import (
    DigestDetail,
    DigestItemOut,
    DigestOut,
    DigestPage,
    ImportRejection,
    ImportReport,
    IngestResult,
    IngestRunOut,
    JobResult,
    PaperOut,
    PaperPage,
    Stats,
    SubscriberCreate,
    SubscriberOut,
    SubscriberPage,
    SubscriberUpdate,
)

router = APIRouter(prefix="/admin/api", dependencies=[AdminGuard], tags=["admin"])
Limit = Annotated[int, Query(ge=1, le=500, description="Items per page.")]
Cursor = Annotated[
    str | None, Query(max_length=20, description="next_cursor of the previous page.")
]
UPLOAD_LIMIT = 512 * 1024 * 1024
MAX_ID = 2**63 - 1  # the largest BIGINT
Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]


def after(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not (cursor.isascii() and cursor.isdigit()) or int(cursor) > MAX_ID:
        raise HTTPException(status_code=422, detail="cursor must be a next_cursor value")
    return int(cursor)


def like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere; control characters (which no stored value holds
    and Postgres refuses outright) are a 422."""
    if any(not character.isprintable() for character in text):
        raise HTTPException(status_code=422, detail="search text must be printable")
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def next_cursor(ids: list[int], limit: int) -> str | None:
    return str(ids[-1]) if len(ids) == limit else None


async def subscriber_or_404(session: Session, subscriber_id: Id) -> Subscriber:
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise HTTPException(status_code=404, detail=f"no subscriber {subscriber_id}")
    return subscriber


def bad_request(error: Exception) -> HTTPException:
    return HTTPException(status_code=422, detail=str(error))


@router.get("/subscribers", response_model=SubscriberPage)
async def list_subscribers(
    session: Session,
    status: SubscriberStatus | None = None,
    topic: Annotated[str | None, Query(max_length=100, description="Has this topic.")] = None,
    q: Annotated[str | None, Query(max_length=320, description="Address contains.")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> SubscriberPage:
    query = select(Subscriber).where(Subscriber.id > after(cursor))
    if status is not None:
        query = query.where(Subscriber.status == status)
    if q:
        query = query.where(func.lower(Subscriber.email).like(like_pattern(q), escape="\\"))
    rows: list[Subscriber] = []
    # Topics live in a JSON list (JSONB on Postgres, JSON on SQLite): filter them here, page by
    # page, so both databases answer the same.
    batch_after = after(cursor)
    while len(rows) < limit:
        batch = (
            await session.scalars(
                query.where(Subscriber.id > batch_after).order_by(Subscriber.id).limit(limit * 4)
            )
        ).all()
        if not batch:
            break
        for subscriber in batch:
            if topic is None or topic.lower() in (t.lower() for t in subscriber.topics):
                rows.append(subscriber)
                if len(rows) == limit:
                    break
        batch_after = batch[-1].id
    items = [SubscriberOut.model_validate(s) for s in rows]
    return SubscriberPage(items=items, next_cursor=next_cursor([s.id for s in rows], limit))


@router.get("/subscribers/export", response_class=StreamingResponse)
async def export_csv(state: State) -> StreamingResponse:
    async def rows() -> AsyncIterator[str]:
        async with state.sessions() as session:
            async for line in export_subscribers(session=session):
                yield line

    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="subscribers.csv"'},
    )


@router.post("/subscribers/import", response_model=ImportReport)
async def import_csv(
    session: Session,
    file: Annotated[UploadFile, File(description="CSV with a header row.")],
    dry_run: Annotated[bool, Query(description="Report only; change nothing.")] = False,
) -> ImportReport:
    raw = await file.read(UPLOAD_LIMIT + 1)
    if len(raw) > UPLOAD_LIMIT:
        raise HTTPException(status_code=413, detail="the file is too large")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise HTTPException(status_code=422, detail="the file is not UTF-8 text") from error
    try:
        report = await import_subscribers(text, session=session)
    except SubscriberError as error:
        raise bad_request(error) from error
    if dry_run:
        await session.rollback()
    else:
        await session.commit()
    return ImportReport(
        dry_run=dry_run,
        rows=report.rows,
        created=report.created,
        updated=report.updated,
        rejected=[ImportRejection(line=n, email=e, reason=r) for n, e, r in report.rejected],
    )


@router.get("/subscribers/{subscriber_id}", response_model=SubscriberOut)
async def get_subscriber(session: Session, subscriber_id: Id) -> SubscriberOut:
    return SubscriberOut.model_validate(await subscriber_or_404(session, subscriber_id))


@router.post("/subscribers", response_model=SubscriberOut, status_code=201)
async def create_subscriber(session: Session, body: SubscriberCreate) -> SubscriberOut:
    try:
        address = normalise_email(body.email)
        preferences = validate_preferences(
            Preferences(
                body.topics, body.timezone, body.send_hour, body.digest_size, body.trending_weight
            )
        )
    except SubscriberError as error:
        raise bad_request(error) from error
    if await find_by_email(address, session=session) is not None:
        raise HTTPException(status_code=409, detail="a subscriber with this address exists")
    subscriber = Subscriber(
        email=address,
        status=SubscriberStatus(body.status),
        topics=preferences.topics,
        timezone=preferences.timezone,
        send_hour=preferences.send_hour,
        digest_size=preferences.digest_size,
        trending_weight=preferences.trending_weight,
        confirmed_at=utcnow() if body.status == "active" else None,
    )
    session.add(subscriber)
    await session.commit()
    return SubscriberOut.model_validate(subscriber)


@router.patch("/subscribers/{subscriber_id}", response_model=SubscriberOut)
async def update_subscriber(
    session: Session, subscriber_id: Id, body: SubscriberUpdate
) -> SubscriberOut:
    subscriber = await subscriber_or_404(session, subscriber_id)
    try:
        preferences = validate_preferences(
            Preferences(
                body.topics if body.topics is not None else subscriber.topics,
                body.timezone or subscriber.timezone,
                body.send_hour if body.send_hour is not None else subscriber.send_hour,
                body.digest_size if body.digest_size is not None else subscriber.digest_size,
                body.trending_weight
                if body.trending_weight is not None
                else subscriber.trending_weight,
            )
        )
    except SubscriberError as error:
        raise bad_request(error) from error
    subscriber.topics = preferences.topics
    subscriber.timezone = preferences.timezone
    subscriber.send_hour = preferences.send_hour
    subscriber.digest_size = preferences.digest_size
    subscriber.trending_weight = preferences.trending_weight
    if body.status is not None and body.status is not subscriber.status:
        subscriber.status = body.status
        if body.status is SubscriberStatus.ACTIVE:
            subscriber.bounce_count = 0  # an operator lifting a suppression starts afresh
            subscriber.confirmed_at = subscriber.confirmed_at or utcnow()
        if body.status is SubscriberStatus.UNSUBSCRIBED:
            subscriber.unsubscribed_at = utcnow()
    if body.revoke_links:
        subscriber.token_version += 1
    await session.commit()
    return SubscriberOut.model_validate(subscriber)


@router.delete("/subscribers/{subscriber_id}", status_code=204)
async def erase_subscriber(session: Session, subscriber_id: Id) -> Response:
    """GDPR erase: the subscriber and every digest made for them, at once."""
    subscriber = await subscriber_or_404(session, subscriber_id)
    await session.execute(delete(Digest).where(Digest.subscriber_id == subscriber.id))
    await session.delete(subscriber)
    await session.commit()
    return Response(status_code=204)


@router.get("/subscribers/{subscriber_id}/preview", response_model=None)
async def preview_subscriber_digest(
    session: Session,
    state: State,
    subscriber_id: Id,
    on_date: Annotated[date | None, Query(alias="date")] = None,
    output: Annotated[Literal["html", "text"], Query(alias="format")] = "html",
) -> Response:
    subscriber = await subscriber_or_404(session, subscriber_id)
    try:
        view = await preview_digest_view(
            subscriber.email,
            session=session,
            settings=state.settings,
            now=datetime.now(UTC),
            on_date=on_date,
        )
    except PreviewError as error:
        raise HTTPException(status_code=404, detail=str(error)) from error
    rendered = state.mailer.render(view)
    if output == "text":
        return PlainTextResponse(rendered.text)
    return HTMLResponse(rendered.html)


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
    sources = source or list(state.settings.sources)
    if not sources:
        raise HTTPException(status_code=422, detail="no source given and PAPERBOY_SOURCES is empty")
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
