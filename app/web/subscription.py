"""The pages a subscriber reaches from the links in their mail: preferences (with a preview of
today's digest, and their recent feedback and muted topics, each undone by a POST), unsubscribe (a
button on GET, done on POST, RFC 8058 one-click included), resubscribe, the digest in the browser
and the archive of past digests."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.digests.history import latest_digest, reader_archive, sent_digest_id
from app.digests.views import PreviewError, load_digest_views, subscriber_preview
from app.models import (
    DEFAULT_TIMEZONE,
    DIGEST_SIZE,
    SEND_HOUR,
    TRENDING_WEIGHT,
    WEEKDAY,
    DigestFrequency,
    DigestStatus,
    Subscriber,
    SubscriberStatus,
)
from app.subscribers.feedback import recent_feedback, undo_feedback, unmute_topic
from app.subscribers.rules import (
    SubscriberError,
    resubscribe,
    unsubscribe,
    update_preferences,
)
from app.subscribers.tokens import Purpose
from app.web.deps import Session, State, WebState
from app.web.rendering import (
    TIMEZONES,
    DigestSizeField,
    FrequencyField,
    SendHourField,
    TimezoneField,
    TopicsField,
    TrendingWeightField,
    WeekdayField,
    confirmed_page,
    coverage_context,
    form_preferences,
    link,
    linked_subscriber,
    page,
)
from app.web.security import MAIL_PAGE_CSP

router = APIRouter(include_in_schema=False)
ARCHIVE_PER_PAGE = 20


async def preview_for(
    state: WebState, session: Session, subscriber: Subscriber
) -> tuple[list[Any], str | None]:
    if subscriber.status is not SubscriberStatus.ACTIVE:
        return [], None
    try:
        view = await subscriber_preview(
            subscriber,
            session=session,
            settings=state.settings,
            now=datetime.now(UTC),
            on_date=None,
        )
    except PreviewError as error:
        return [], str(error)
    return view.papers, None


def preferences_context(state: WebState, subscriber: Subscriber, token: str) -> dict[str, Any]:
    return {
        "subscriber": subscriber,
        "token": token,
        "timezones": TIMEZONES,
        "unsubscribe_url": link(state, Purpose.UNSUBSCRIBE, subscriber, "unsubscribe"),
        "resubscribe_url": link(state, Purpose.UNSUBSCRIBE, subscriber, "resubscribe"),
        "archive_url": link(state, Purpose.DIGEST, subscriber, "digests"),
        "feed_url": link(state, Purpose.FEED, subscriber, "feeds"),
    }


@router.get("/preferences/{token}", response_class=HTMLResponse)
async def preferences_page(
    request: Request, token: str, state: State, session: Session, saved: bool = False
) -> HTMLResponse:
    subscriber = await linked_subscriber(state, session, Purpose.PREFERENCES, token)
    preview, preview_note = await preview_for(state, session, subscriber)
    latest = await latest_digest(subscriber.id, session=session)
    return page(
        request,
        "preferences.html",
        preferences_context(state, subscriber, token)
        | await coverage_context(state, session, subscriber)
        | {
            "saved": saved,
            "preview": preview,
            "preview_note": preview_note,
            "suggestions": await state.suggestions(session),
            "feedback": await recent_feedback(subscriber, session=session),
            "skipped_day": (
                latest.digest_date
                if latest is not None and latest.status is DigestStatus.SKIPPED
                else None
            ),
        },
    )


@router.post("/preferences/{token}", response_model=None)
async def save_preferences(
    request: Request,
    token: str,
    state: State,
    session: Session,
    topics: TopicsField = "",
    timezone: TimezoneField = DEFAULT_TIMEZONE,
    send_hour: SendHourField = SEND_HOUR.default,
    digest_size: DigestSizeField = DIGEST_SIZE.default,
    trending_weight: TrendingWeightField = TRENDING_WEIGHT.default,
    frequency: FrequencyField = DigestFrequency.DAILY,
    weekday: WeekdayField = WEEKDAY.default,
    paused: Annotated[bool, Form()] = False,
) -> Response:
    subscriber = await linked_subscriber(state, session, Purpose.PREFERENCES, token)
    try:
        update_preferences(
            subscriber,
            form_preferences(
                topics, timezone, send_hour, digest_size, trending_weight, frequency, weekday
            ),
            paused=paused,
        )
    except SubscriberError as error:
        await session.rollback()
        subscriber = await linked_subscriber(state, session, Purpose.PREFERENCES, token)
        context = preferences_context(state, subscriber, token) | {"error": str(error)}
        return page(request, "preferences.html", context, status_code=400)
    return RedirectResponse(f"/preferences/{token}?saved=1", status_code=303)


@router.post("/preferences/{token}/feedback/{paper_id}/undo")
async def undo_paper_feedback(
    token: str, paper_id: int, state: State, session: Session
) -> RedirectResponse:
    subscriber = await linked_subscriber(state, session, Purpose.PREFERENCES, token)
    await undo_feedback(subscriber, paper_id, session=session)
    return RedirectResponse(f"/preferences/{token}?saved=1", status_code=303)


@router.post("/preferences/{token}/unmute")
async def unmute(
    token: str, state: State, session: Session, topic: Annotated[str, Form()]
) -> RedirectResponse:
    subscriber = await linked_subscriber(state, session, Purpose.PREFERENCES, token)
    unmute_topic(subscriber, topic)
    return RedirectResponse(f"/preferences/{token}?saved=1", status_code=303)


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe_page(
    request: Request, token: str, state: State, session: Session
) -> HTMLResponse:
    # Only shows a button: mail scanners that follow links must not unsubscribe anyone.
    subscriber = await linked_subscriber(state, session, Purpose.UNSUBSCRIBE, token)
    return page(request, "unsubscribe.html", {"subscriber": subscriber, "token": token})


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe_now(
    request: Request, token: str, state: State, session: Session
) -> HTMLResponse:
    """The page's button and RFC 8058 one-click (`List-Unsubscribe=One-Click` posted by the
    mailbox provider, no cookies): both unsubscribe at once and answer 200."""
    subscriber = await linked_subscriber(state, session, Purpose.UNSUBSCRIBE, token)
    unsubscribe(subscriber, now=datetime.now(UTC))
    return page(request, "unsubscribed.html", {"subscriber": subscriber, "token": token})


@router.post("/resubscribe/{token}", response_class=HTMLResponse)
async def resubscribe_now(
    request: Request, token: str, state: State, session: Session
) -> HTMLResponse:
    subscriber = await linked_subscriber(state, session, Purpose.UNSUBSCRIBE, token)
    resubscribe(subscriber, now=datetime.now(UTC))
    return await confirmed_page(request, state, session, subscriber, welcome_back=True)


@router.get("/digests/{token}/{digest_date}", response_class=HTMLResponse)
async def digest_in_browser(
    request: Request, token: str, digest_date: date, state: State, session: Session
) -> HTMLResponse:
    subscriber = await linked_subscriber(state, session, Purpose.DIGEST, token)
    digest_id = await sent_digest_id(subscriber.id, digest_date, session=session)
    if digest_id is None:
        return page(
            request, "not_found.html", {"what": f"No digest for {digest_date}."}, status_code=404
        )
    view = (await load_digest_views([digest_id], session=session))[0]
    html = state.mailer.render(view, for_browser=True).html
    return HTMLResponse(html, headers={"content-security-policy": MAIL_PAGE_CSP})


@router.get("/digests/{token}", response_class=HTMLResponse)
async def digest_archive(
    request: Request,
    token: str,
    state: State,
    session: Session,
    page_number: Annotated[int, Query(alias="page", ge=1, le=10_000)] = 1,
) -> HTMLResponse:
    """The reader's past digests, newest first, each linking to its page: the same token as
    "view in browser" opens it (that token already opens every one of their digests)."""
    subscriber = await linked_subscriber(state, session, Purpose.DIGEST, token)
    archive = await reader_archive(
        subscriber.id, session=session, page=page_number, per_page=ARCHIVE_PER_PAGE
    )
    return page(
        request,
        "archive.html",
        {
            "subscriber": subscriber,
            "token": token,
            "archive": archive,
            "feed_url": link(state, Purpose.FEED, subscriber, "feeds"),
            "preferences_url": link(state, Purpose.PREFERENCES, subscriber, "preferences"),
        },
    )
