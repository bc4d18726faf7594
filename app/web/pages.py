"""The public pages: the trending front page with its subscribe box, signup with double opt-in,
confirmation, preferences (with a preview of today's digest), unsubscribe (a button on GET, done on
POST, RFC 8058 one-click included) and resubscribe, the digest in the browser, and the probes.
Every answer to a signup is the same page whatever the address's state; mail goes out after the
response, so timing tells nothing either."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Form, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from sqlalchemy import select, text

from app.mailer import TEMPLATES_DIR, PreviewError, load_digest_views, preview_digest_view
from app.models import Digest, DigestStatus, Subscriber, SubscriberStatus
from app.subscribers import (
    Preferences,
    SignupMail,
    SignupOutcome,
    SubscriberError,
    confirm,
    known_timezones,
    normalise_email,
    request_links,
    request_signup,
    resubscribe,
    subscriber_for_token,
    unsubscribe,
    update_preferences,
)
from app.tokens import Purpose, TokenError, make_token
from app.transports import Verdict
from app.trending import topic_suggestions, trending_papers
from app.web.deps import ClientIp, Session, State, WebState
from app.web.security import MAIL_PAGE_CSP

logger = logging.getLogger("paperboy.web")
router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(
    env=Environment(
        loader=FileSystemLoader(TEMPLATES_DIR / "web"),
        autoescape=True,
        auto_reload=False,
    )
)
TIMEZONES = sorted(known_timezones())
PER_PAGE = 20
HONEYPOT_FIELD = "website"


def page(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context or {}, status_code=status_code)


def link(state: WebState, purpose: Purpose, subscriber: Subscriber, path: str) -> str:
    token = make_token(
        state.settings.secret_key, purpose, subscriber.public_id, subscriber.token_version
    )
    return f"{state.settings.base_url}/{path}/{token}"


async def send_signup_mail(state: WebState, outcome: SignupOutcome) -> None:
    """Runs after the response: the confirmation link or the already-subscribed reminder."""
    subscriber = outcome.subscriber
    if subscriber is None or outcome.mail is SignupMail.NONE:
        return
    if outcome.mail is SignupMail.CONFIRM:
        mail = state.mailer.notice(
            subscriber.email,
            subject="Confirm your Paperboy subscription",
            heading="One click to start your daily papers",
            lines=[
                "Someone (we hope you) asked Paperboy to send this address a daily digest of "
                "trending research papers on: "
                + (", ".join(subscriber.topics) or "trending papers")
                + ".",
                "Confirm to start; the link is valid for three days.",
            ],
            button_label="Confirm my subscription",
            button_url=link(state, Purpose.CONFIRM, subscriber, "confirm"),
            footnote="Not you? Ignore this mail: without a click nothing is sent to you.",
        )
    else:
        mail = state.mailer.notice(
            subscriber.email,
            subject="You are already subscribed to Paperboy",
            heading="You are already subscribed",
            lines=[
                "Someone asked to subscribe this address to Paperboy, and it already is. "
                "Your topics and delivery time are unchanged.",
                "To change them, or to pause or stop your digest, open your preferences.",
            ],
            button_label="Open my preferences",
            button_url=link(state, Purpose.PREFERENCES, subscriber, "preferences"),
            footnote="Not you? Ignore this mail; nothing has changed.",
        )
    delivery = await state.transport.deliver(
        state.mailer.sender_address, subscriber.email, mail.data
    )
    if delivery.verdict is not Verdict.ACCEPTED:
        # The page already answered; the subscriber can ask again (POST /links).
        logger.warning(
            "signup mail to subscriber %s not delivered: %s", subscriber.id, delivery.detail
        )


def form_preferences(
    topics: str, timezone: str, send_hour: int, digest_size: int, trending_weight: float
) -> Preferences:
    return Preferences(
        topics=[line for line in topics.replace("\r", "").split("\n") if line.strip()],
        timezone=timezone.strip() or "UTC",
        send_hour=send_hour,
        digest_size=digest_size,
        trending_weight=trending_weight,
    )


@router.get("/", response_class=HTMLResponse)
async def front_page(
    request: Request,
    state: State,
    session: Session,
    page_number: Annotated[int, Query(alias="page", ge=1, le=10_000)] = 1,
) -> HTMLResponse:
    trending = await trending_papers(
        session=session,
        now=datetime.now(UTC),
        window=timedelta(days=state.settings.compose_window_days),
        page=page_number,
        per_page=PER_PAGE,
    )
    return page(request, "index.html", {"trending": trending, "timezones": TIMEZONES})


@router.get("/subscribe", response_class=HTMLResponse)
async def subscribe_form(
    request: Request, session: Session, topic: Annotated[list[str] | None, Query()] = None
) -> HTMLResponse:
    return page(
        request,
        "subscribe.html",
        {
            "values": {
                "topics": "\n".join(topic or []),
                "timezone": "",
                "send_hour": 7,
                "digest_size": 10,
            },
            "suggestions": await topic_suggestions(session=session),
            "timezones": TIMEZONES,
        },
    )


@router.post("/subscribe", response_class=HTMLResponse)
async def subscribe(
    request: Request,
    state: State,
    session: Session,
    client_ip: ClientIp,
    background: BackgroundTasks,
    email: Annotated[str, Form(max_length=320)],
    topics: Annotated[str, Form(max_length=4000)] = "",
    timezone: Annotated[str, Form(max_length=64)] = "UTC",
    send_hour: Annotated[int, Form(ge=0, le=23)] = 7,
    digest_size: Annotated[int, Form(ge=1, le=50)] = 10,
    website: Annotated[str, Form(max_length=200)] = "",
) -> HTMLResponse:
    if not state.signup_limiter.allow(f"ip:{client_ip}"):
        return page(request, "limited.html", status_code=429)
    if website:  # only robots fill the hidden field: answer as usual, do nothing
        return page(request, "check_inbox.html")
    preferences = form_preferences(topics, timezone, send_hour, digest_size, 0.3)
    try:
        outcome = await request_signup(
            email,
            preferences,
            session=session,
            now=datetime.now(UTC),
            mail_interval=timedelta(seconds=state.settings.signup_mail_interval_seconds),
        )
    except SubscriberError as error:
        values = {
            "email": email,
            "topics": topics,
            "timezone": timezone,
            "send_hour": send_hour,
            "digest_size": digest_size,
        }
        return page(
            request,
            "subscribe.html",
            {
                "error": str(error),
                "values": values,
                "suggestions": await topic_suggestions(session=session),
                "timezones": TIMEZONES,
            },
            status_code=400,
        )
    if outcome.rate_limited:
        return page(request, "limited.html", status_code=429)
    await session.commit()
    background.add_task(send_signup_mail, state, outcome)
    return page(request, "check_inbox.html")


@router.post("/links", response_class=HTMLResponse)
async def resend_links(
    request: Request,
    state: State,
    session: Session,
    client_ip: ClientIp,
    background: BackgroundTasks,
    email: Annotated[str, Form(max_length=320)],
) -> HTMLResponse:
    """A fresh confirmation or preferences link by mail, for whoever lost theirs."""
    if not state.signup_limiter.allow(f"ip:{client_ip}"):
        return page(request, "limited.html", status_code=429)
    try:
        address = normalise_email(email)
    except SubscriberError as error:
        return page(request, "link_problem.html", {"error": str(error)}, status_code=400)
    if not state.address_limiter.allow(f"links:{address.lower()}"):
        return page(request, "limited.html", status_code=429)
    outcome = await request_links(
        address,
        session=session,
        now=datetime.now(UTC),
        mail_interval=timedelta(seconds=state.settings.signup_mail_interval_seconds),
    )
    await session.commit()
    background.add_task(send_signup_mail, state, outcome)
    return page(request, "check_inbox.html")


def link_problem(request: Request, error: TokenError) -> HTMLResponse:
    return page(
        request,
        "link_problem.html",
        {"problem": str(error), "expired": error.expired},
        status_code=400,
    )


@router.get("/confirm/{token}", response_class=HTMLResponse)
async def confirm_page(
    request: Request, token: str, state: State, session: Session, client_ip: ClientIp
) -> HTMLResponse:
    try:
        subscriber = await subscriber_for_token(
            state.settings.secret_key, Purpose.CONFIRM, token, session=session
        )
    except TokenError as error:
        return link_problem(request, error)
    if subscriber.status in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED):
        return link_problem(request, TokenError("This confirmation link is no longer valid."))
    confirm(subscriber, now=datetime.now(UTC), client_ip=client_ip)
    await session.commit()
    return page(
        request,
        "confirmed.html",
        {
            "subscriber": subscriber,
            "preferences_url": link(state, Purpose.PREFERENCES, subscriber, "preferences"),
        },
    )


async def preview_for(
    state: WebState, session: Session, subscriber: Subscriber
) -> tuple[list[Any], str | None]:
    if subscriber.status is not SubscriberStatus.ACTIVE:
        return [], None
    try:
        view = await preview_digest_view(
            subscriber.email,
            session=session,
            settings=state.settings,
            now=datetime.now(UTC),
            on_date=None,
        )
    except PreviewError as error:
        return [], str(error)
    return view.papers, None


@router.get("/preferences/{token}", response_class=HTMLResponse)
async def preferences_page(
    request: Request, token: str, state: State, session: Session, saved: bool = False
) -> HTMLResponse:
    try:
        subscriber = await subscriber_for_token(
            state.settings.secret_key, Purpose.PREFERENCES, token, session=session
        )
    except TokenError as error:
        return link_problem(request, error)
    preview, preview_note = await preview_for(state, session, subscriber)
    return page(
        request,
        "preferences.html",
        {
            "subscriber": subscriber,
            "token": token,
            "saved": saved,
            "preview": preview,
            "preview_note": preview_note,
            "timezones": TIMEZONES,
            "suggestions": await topic_suggestions(session=session),
            "unsubscribe_url": link(state, Purpose.UNSUBSCRIBE, subscriber, "unsubscribe"),
        },
    )


@router.post("/preferences/{token}", response_model=None)
async def save_preferences(
    request: Request,
    token: str,
    state: State,
    session: Session,
    topics: Annotated[str, Form(max_length=4000)] = "",
    timezone: Annotated[str, Form(max_length=64)] = "UTC",
    send_hour: Annotated[int, Form(ge=0, le=23)] = 7,
    digest_size: Annotated[int, Form(ge=1, le=50)] = 10,
    trending_weight: Annotated[float, Form(ge=0, le=1)] = 0.3,
    paused: Annotated[bool, Form()] = False,
) -> Response:
    try:
        subscriber = await subscriber_for_token(
            state.settings.secret_key, Purpose.PREFERENCES, token, session=session
        )
    except TokenError as error:
        return link_problem(request, error)
    try:
        update_preferences(
            subscriber,
            form_preferences(topics, timezone, send_hour, digest_size, trending_weight),
            paused=paused,
        )
    except SubscriberError as error:
        await session.rollback()
        subscriber = await subscriber_for_token(
            state.settings.secret_key, Purpose.PREFERENCES, token, session=session
        )
        return page(
            request,
            "preferences.html",
            {
                "subscriber": subscriber,
                "token": token,
                "error": str(error),
                "preview": [],
                "preview_note": None,
                "timezones": TIMEZONES,
                "suggestions": [],
                "unsubscribe_url": link(state, Purpose.UNSUBSCRIBE, subscriber, "unsubscribe"),
            },
            status_code=400,
        )
    await session.commit()
    return RedirectResponse(f"/preferences/{token}?saved=1", status_code=303)


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe_page(
    request: Request, token: str, state: State, session: Session
) -> HTMLResponse:
    # Only shows a button: mail scanners that follow links must not unsubscribe anyone.
    try:
        subscriber = await subscriber_for_token(
            state.settings.secret_key, Purpose.UNSUBSCRIBE, token, session=session
        )
    except TokenError as error:
        return link_problem(request, error)
    return page(request, "unsubscribe.html", {"subscriber": subscriber, "token": token})


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe_now(
    request: Request, token: str, state: State, session: Session
) -> HTMLResponse:
    """The page's button and RFC 8058 one-click (`List-Unsubscribe=One-Click` posted by the
    mailbox provider, no cookies): both unsubscribe at once and answer 200."""
    try:
        subscriber = await subscriber_for_token(
            state.settings.secret_key, Purpose.UNSUBSCRIBE, token, session=session
        )
    except TokenError as error:
        return link_problem(request, error)
    unsubscribe(subscriber, now=datetime.now(UTC))
    await session.commit()
    return page(request, "unsubscribed.html", {"subscriber": subscriber, "token": token})


@router.post("/resubscribe/{token}", response_class=HTMLResponse)
async def resubscribe_now(
    request: Request, token: str, state: State, session: Session
) -> HTMLResponse:
    try:
        subscriber = await subscriber_for_token(
            state.settings.secret_key, Purpose.UNSUBSCRIBE, token, session=session
        )
    except TokenError as error:
        return link_problem(request, error)
    resubscribe(subscriber, now=datetime.now(UTC))
    await session.commit()
    return page(
        request,
        "confirmed.html",
        {
            "subscriber": subscriber,
            "preferences_url": link(state, Purpose.PREFERENCES, subscriber, "preferences"),
            "welcome_back": True,
        },
    )


@router.get("/digests/{token}/{digest_date}", response_class=HTMLResponse)
async def digest_in_browser(
    request: Request, token: str, digest_date: date, state: State, session: Session
) -> HTMLResponse:
    try:
        subscriber = await subscriber_for_token(
            state.settings.secret_key, Purpose.DIGEST, token, session=session
        )
    except TokenError as error:
        return link_problem(request, error)
    digest_id = await session.scalar(
        select(Digest.id).where(
            Digest.subscriber_id == subscriber.id,
            Digest.digest_date == digest_date,
            Digest.status != DigestStatus.SKIPPED,
        )
    )
    if digest_id is None:
        return page(
            request, "not_found.html", {"what": f"No digest for {digest_date}."}, status_code=404
        )
    view = (await load_digest_views([digest_id], session=session))[0]
    html = state.mailer.render(view, for_browser=True).html
    return HTMLResponse(html, headers={"content-security-policy": MAIL_PAGE_CSP})


@router.get("/healthz", response_class=PlainTextResponse)
async def healthz() -> str:
    return "ok"


@router.get("/readyz", response_class=PlainTextResponse)
async def readyz(session: Session) -> Response:
    try:
        await session.execute(text("SELECT 1"))
    except Exception as error:
        return PlainTextResponse(f"database unreachable: {type(error).__name__}", status_code=503)
    return PlainTextResponse("ready")
