"""The public pages before a subscription: the trending front page with its subscribe box,
signup with double opt-in, a fresh link for whoever lost theirs, confirmation, and the probes.
Every answer to a signup is the same page whatever the address's state; mail goes out after the
response, so timing tells nothing either."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from sqlalchemy import text

from app.digests.front_page import MAX_SEARCH_CHARS, SearchError, search_words, trending_papers
from app.mail.replies import Verdict
from app.models import (
    DEFAULT_TIMEZONE,
    DIGEST_SIZE,
    SEND_HOUR,
    TRENDING_WEIGHT,
    WEEKDAY,
    DigestFrequency,
    SubscriberStatus,
)
from app.subscribers.rules import (
    SignupMail,
    SignupOutcome,
    SubscriberError,
    confirm,
    frequency_phrase,
    normalise_email,
    request_links,
    request_signup,
)
from app.subscribers.tokens import Purpose, TokenError
from app.web.admission import ServiceBusy
from app.web.deps import ClientIp, Session, State, WebState, after_commit
from app.web.rendering import (
    TIMEZONES,
    DigestSizeField,
    FrequencyField,
    SendHourField,
    TimezoneField,
    TopicsField,
    WeekdayField,
    check_inbox,
    confirmed_page,
    form_preferences,
    link,
    link_problem,
    linked_subscriber,
    page,
)

logger = logging.getLogger("paperboy.web")
router = APIRouter(include_in_schema=False)
PER_PAGE = 20
MAX_PAGE = 10_000


async def send_signup_mail(state: WebState, outcome: SignupOutcome) -> None:
    """Runs after the response: the confirmation link or the already-subscribed reminder."""
    subscriber = outcome.subscriber
    if subscriber is None or outcome.mail is SignupMail.NONE:
        return
    if outcome.mail is SignupMail.CONFIRM:
        how_often = frequency_phrase(subscriber.frequency, subscriber.weekday)
        mail = state.mailer.notice(
            subscriber.email,
            subject="Confirm your Paperboy subscription",
            heading="One click to start your digest",
            lines=[
                "Someone (we hope you) asked Paperboy to send this address a digest of "
                f"trending research papers ({how_often}) on: "
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
        state.mailer.envelope_sender(), subscriber.email, mail.data
    )
    if delivery.verdict is not Verdict.ACCEPTED:
        # The page already answered; the subscriber can ask again (POST /links).
        logger.warning(
            "signup mail to subscriber %s not delivered: %s", subscriber.id, delivery.detail
        )


def requested_page(text: str) -> int:
    """The page a reader's `?page=` asks for; one out of range (0, -3, 10**9, "abc") is the
    nearest page there is: a hand-edited address still shows papers."""
    try:
        number = int(text[:20])
    except ValueError:
        return 1
    return max(1, min(number, MAX_PAGE))


# Long enough for any search the page accepts, so that longer text gets the page's own answer.
SearchText = Annotated[str, Query(max_length=4 * MAX_SEARCH_CHARS)]


@router.get("/", response_class=HTMLResponse)
async def front_page(
    request: Request,
    state: State,
    session: Session,
    page_number: Annotated[str, Query(alias="page")] = "1",
    q: SearchText = "",
    topic: SearchText = "",
) -> HTMLResponse:
    """Trending papers, 20 a page; `q` searches their titles and abstracts, `topic` (a chip)
    narrows them to a topic's words. Unsearchable text gets the page with the reason (400)."""
    context = {
        "timezones": TIMEZONES,
        "q": q.strip(),
        "topic": topic.strip(),
        "topics": await state.suggestions(session),
    }
    try:
        words = search_words(q) + search_words(topic, what="topic")
    except SearchError as error:
        return page(request, "index.html", context | {"search_error": str(error)}, 400)
    trending = await trending_papers(
        session=session,
        now=datetime.now(UTC),
        window=timedelta(days=state.settings.compose_window_days),
        page=requested_page(page_number),
        per_page=PER_PAGE,
        containing=list(dict.fromkeys(words)),
    )
    return page(request, "index.html", context | {"trending": trending})


@router.get("/subscribe", response_class=HTMLResponse)
async def subscribe_form(
    request: Request,
    state: State,
    session: Session,
    topic: Annotated[list[str] | None, Query()] = None,
) -> HTMLResponse:
    return page(
        request,
        "subscribe.html",
        {
            "values": {
                "topics": "\n".join(topic or []),
                "timezone": "",
                "send_hour": SEND_HOUR.default,
                "digest_size": DIGEST_SIZE.default,
                "frequency": DigestFrequency.DAILY.value,
                "weekday": WEEKDAY.default,
            },
            "suggestions": await state.suggestions(session),
            "timezones": TIMEZONES,
        },
    )


@router.post("/subscribe", response_class=HTMLResponse)
async def subscribe(
    request: Request,
    state: State,
    session: Session,
    client_ip: ClientIp,
    email: Annotated[str, Form(max_length=320)],
    topics: TopicsField = "",
    timezone: TimezoneField = DEFAULT_TIMEZONE,
    send_hour: SendHourField = SEND_HOUR.default,
    digest_size: DigestSizeField = DIGEST_SIZE.default,
    frequency: FrequencyField = DigestFrequency.DAILY,
    weekday: WeekdayField = WEEKDAY.default,
    website: Annotated[str, Form(max_length=200)] = "",
) -> HTMLResponse:
    if state.mail_backlog_full():
        raise ServiceBusy
    if not state.signup_limiter.allow(f"ip:{client_ip}"):
        return page(request, "limited.html", status_code=429)
    if website:  # only robots fill the hidden field: answer as usual, do nothing
        return check_inbox(request, email)
    preferences = form_preferences(
        topics, timezone, send_hour, digest_size, TRENDING_WEIGHT.default, frequency, weekday
    )
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
            "frequency": frequency.value,
            "weekday": weekday,
        }
        return page(
            request,
            "subscribe.html",
            {
                "error": str(error),
                "values": values,
                "suggestions": await state.suggestions(session),
                "timezones": TIMEZONES,
            },
            status_code=400,
        )
    # Asking again soon (to fix a topic, say) gets the same page: the mail already sent stands,
    # and no address is told apart from another by its answer.
    if not outcome.rate_limited:
        after_commit(session, lambda: state.send_later(send_signup_mail(state, outcome)))
    return check_inbox(request, outcome.subscriber.email if outcome.subscriber else email)


@router.post("/links", response_class=HTMLResponse)
async def resend_links(
    request: Request,
    state: State,
    session: Session,
    client_ip: ClientIp,
    email: Annotated[str, Form(max_length=320)],
) -> HTMLResponse:
    """A fresh confirmation or preferences link by mail, for whoever lost theirs."""
    if state.mail_backlog_full():
        raise ServiceBusy
    if not state.signup_limiter.allow(f"ip:{client_ip}"):
        return page(request, "limited.html", status_code=429)
    try:
        address = normalise_email(email)
    except SubscriberError as error:
        return page(request, "link_problem.html", {"error": str(error)}, status_code=400)
    if not state.address_limiter.allow(f"links:{address.lower()}"):
        return check_inbox(request, address)  # quietly: the mail sent a moment ago stands
    outcome = await request_links(
        address,
        session=session,
        now=datetime.now(UTC),
        mail_interval=timedelta(seconds=state.settings.signup_mail_interval_seconds),
    )
    after_commit(session, lambda: state.send_later(send_signup_mail(state, outcome)))
    return check_inbox(request, address)


@router.get("/confirm/{token}", response_class=HTMLResponse)
async def confirm_page(
    request: Request, token: str, state: State, session: Session, client_ip: ClientIp
) -> HTMLResponse:
    subscriber = await linked_subscriber(state, session, Purpose.CONFIRM, token)
    if subscriber.status in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED):
        return link_problem(request, TokenError("This confirmation link is no longer valid."))
    confirm(subscriber, now=datetime.now(UTC), client_ip=client_ip)
    return await confirmed_page(request, state, session, subscriber)


@router.get("/favicon.ico")
async def favicon() -> RedirectResponse:
    """Browsers ask for it on pages that name no icon (the digest in the browser, a feed)."""
    return RedirectResponse("/static/favicon.svg", status_code=301)


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
