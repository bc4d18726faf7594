"""How the public pages answer: the page templates (loaded once, autoescaped), signed links back
to the site and the subscriber a link names, the form's preferences, and the page for a link
that does not work."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from sqlalchemy.ext.asyncio import AsyncSession

from app.digests.topic_coverage import topic_coverage
from app.mail.message import TEMPLATES_DIR
from app.models import (
    DEFAULT_TIMEZONE,
    DIGEST_SIZE,
    SEND_HOUR,
    TRENDING_WEIGHT,
    WEEKDAY,
    DigestFrequency,
    Subscriber,
)
from app.subscribers.rules import (
    WEEKDAY_NAMES,
    Preferences,
    frequency_phrase,
    known_timezones,
    subscriber_for_token,
)
from app.subscribers.tokens import Purpose, TokenError, make_token
from app.web.deps import WebState

templates = Jinja2Templates(
    env=Environment(
        loader=FileSystemLoader(TEMPLATES_DIR / "web"),
        autoescape=True,
        auto_reload=False,
    )
)
# The preference form's fields, as both forms (signup, preferences) take them.
TopicsField = Annotated[str, Form(max_length=4000)]
TimezoneField = Annotated[str, Form(max_length=64)]
SendHourField = Annotated[int, Form(ge=SEND_HOUR.least, le=SEND_HOUR.most)]
DigestSizeField = Annotated[int, Form(ge=DIGEST_SIZE.least, le=DIGEST_SIZE.most)]
TrendingWeightField = Annotated[float, Form(ge=TRENDING_WEIGHT.least, le=TRENDING_WEIGHT.most)]
FrequencyField = Annotated[DigestFrequency, Form()]
WeekdayField = Annotated[int, Form(ge=WEEKDAY.least, le=WEEKDAY.most)]
templates.env.globals["bounds"] = {
    "send_hour": SEND_HOUR,
    "digest_size": DIGEST_SIZE,
    "trending_weight": TRENDING_WEIGHT,
    "weekday": WEEKDAY,
}
templates.env.globals["weekday_names"] = WEEKDAY_NAMES
templates.env.globals["frequency_phrase"] = frequency_phrase
TIMEZONES = sorted(known_timezones())


def page(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context or {}, status_code=status_code)


def link(
    state: WebState,
    purpose: Purpose,
    subscriber: Subscriber,
    path: str,
    *,
    signed_at: int | None = None,
) -> str:
    token = make_token(
        state.settings.secret_key,
        purpose,
        subscriber.public_id,
        subscriber.token_version,
        signed_at=signed_at,
    )
    return f"{state.settings.base_url}/{path}/{token}"


async def coverage_context(
    state: WebState, session: AsyncSession, subscriber: Subscriber
) -> dict[str, Any]:
    """What each of the reader's topics matched over the compose window (see
    `app.digests.topic_coverage`)."""
    coverage = await topic_coverage(
        list(subscriber.topics or []),
        session=session,
        settings=state.settings,
        now=datetime.now(UTC),
    )
    return {"coverage": coverage, "window_days": state.settings.compose_window_days}


def check_inbox(request: Request, address: str) -> HTMLResponse:
    """The one answer to every signup and link request: the same page for every address state
    (no enumeration), naming the address typed so that a typo shows, with a way to ask again."""
    return page(request, "check_inbox.html", {"address": address.strip()})


async def confirmed_page(
    request: Request,
    state: WebState,
    session: AsyncSession,
    subscriber: Subscriber,
    *,
    welcome_back: bool = False,
) -> HTMLResponse:
    """The page after confirming (or resubscribing): the subscription is on, what each topic
    matches, and where to change it."""
    return page(
        request,
        "confirmed.html",
        {
            "subscriber": subscriber,
            "preferences_url": link(state, Purpose.PREFERENCES, subscriber, "preferences"),
            "welcome_back": welcome_back,
            "sends_today": state.sends_today,
        }
        | await coverage_context(state, session, subscriber),
    )


def form_preferences(
    topics: str,
    timezone: str,
    send_hour: int,
    digest_size: int,
    trending_weight: float,
    frequency: DigestFrequency = DigestFrequency.DAILY,
    weekday: int = WEEKDAY.default,
) -> Preferences:
    return Preferences(
        topics=[line for line in topics.replace("\r", "").split("\n") if line.strip()],
        timezone=timezone.strip() or DEFAULT_TIMEZONE,
        send_hour=send_hour,
        digest_size=digest_size,
        trending_weight=trending_weight,
        frequency=frequency,
        weekday=weekday,
    )


async def linked_subscriber(
    state: WebState, session: AsyncSession, purpose: Purpose, token: str
) -> Subscriber:
    """The subscriber a link's token names; a bad token raises TokenError, which the app answers
    with the link-problem page."""
    return await subscriber_for_token(state.settings.secret_key, purpose, token, session=session)


def link_problem(request: Request, error: TokenError) -> HTMLResponse:
    return page(
        request,
        "link_problem.html",
        {"problem": str(error), "expired": error.expired},
        status_code=400,
    )
