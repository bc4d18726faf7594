"""The admin API's view of bounce and complaint reports received after sending (the bounce
mailbox and the provider webhooks): each with the digest and subscriber it was matched to and
what it did, such as why a reader was unsubscribed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.mail.bounces.record import search_delivery_events
from app.models import DeliveryEventKind
from app.web.deps import Session
from app.web.paging import MAX_ID, Cursor, Limit, after, next_cursor
from app.web.schemas import DeliveryEventOut, DeliveryEventPage

router = APIRouter(tags=["delivery events"])


@router.get("/delivery-events", response_model=DeliveryEventPage)
async def list_delivery_events(
    session: Session,
    subscriber_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    kind: DeliveryEventKind | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> DeliveryEventPage:
    """Bounces and complaints in the order they were recorded, optionally for one subscriber
    or of one kind."""
    rows = await search_delivery_events(
        session=session, after_id=after(cursor), limit=limit, subscriber_id=subscriber_id, kind=kind
    )
    return DeliveryEventPage(
        items=[DeliveryEventOut.model_validate(row) for row in rows],
        next_cursor=next_cursor([row.id for row in rows], limit),
    )
