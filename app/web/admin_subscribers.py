"""The admin API's subscriber routes: search with cursor pages, get, create, update (revoking
links too), GDPR erase, CSV import with a dry run, CSV export, and digest previews."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, File, HTTPException, Query, UploadFile
from fastapi.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse

from app.digests.views import PreviewError, subscriber_preview
from app.models import Subscriber, SubscriberStatus
from app.subscribers import operator_actions
from app.subscribers.csv_io import export_subscribers, import_subscribers
from app.subscribers.operator_actions import SubscriberChanges, SubscriberExists
from app.subscribers.rules import Preferences, SubscriberError
from app.web.deps import Session, State
from app.web.paging import Cursor, Id, Limit, after, like_pattern, next_cursor
from app.web.schemas import (
    ImportRejection,
    ImportReport,
    SubscriberCreate,
    SubscriberOut,
    SubscriberPage,
    SubscriberUpdate,
)

router = APIRouter(tags=["subscribers"])
UPLOAD_LIMIT = 512 * 1024 * 1024


async def subscriber_or_404(session: Session, subscriber_id: Id) -> Subscriber:
    subscriber = await operator_actions.find_subscriber(subscriber_id, session=session)
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
    rows = await operator_actions.search_subscribers(
        session=session,
        after_id=after(cursor),
        limit=limit,
        status=status,
        topic=topic,
        address_like=like_pattern(q) if q else None,
    )
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
        await session.rollback()  # the request then commits nothing
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
    preferences = Preferences(
        body.topics,
        body.timezone,
        body.send_hour,
        body.digest_size,
        body.trending_weight,
        body.frequency,
        body.weekday,
    )
    try:
        subscriber = await operator_actions.create_subscriber(
            body.email,
            preferences,
            SubscriberStatus(body.status),
            session=session,
            now=datetime.now(UTC),
        )
    except SubscriberExists as error:
        raise HTTPException(status_code=409, detail=str(error)) from error
    except SubscriberError as error:
        raise bad_request(error) from error
    return SubscriberOut.model_validate(subscriber)


@router.patch("/subscribers/{subscriber_id}", response_model=SubscriberOut)
async def update_subscriber(
    session: Session, subscriber_id: Id, body: SubscriberUpdate
) -> SubscriberOut:
    subscriber = await subscriber_or_404(session, subscriber_id)
    try:
        operator_actions.change_subscriber(
            subscriber, SubscriberChanges(**body.model_dump()), now=datetime.now(UTC)
        )
    except SubscriberError as error:
        raise bad_request(error) from error
    return SubscriberOut.model_validate(subscriber)


@router.delete("/subscribers/{subscriber_id}", status_code=204)
async def erase_subscriber(session: Session, subscriber_id: Id) -> Response:
    """GDPR erase: the subscriber and every digest made for them, at once."""
    await operator_actions.erase_subscriber(
        await subscriber_or_404(session, subscriber_id), session=session
    )
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
        view = await subscriber_preview(
            subscriber,
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
