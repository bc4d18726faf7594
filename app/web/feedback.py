"""The reader's feedback pages, reached from the links of each paper and topic in a digest:
"more like this", "less like this" and "mute this topic". Mail scanners (Safe Links, corporate
gateways) fetch every link in a mail, so a GET only shows what the link would do and a button;
the button's POST, carrying the same signed token (the token is the authority, no session or
cookie, so there is nothing to forge across sites), records it. Undoing is the preferences
page's (`app.web.subscription`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse

from app.models import FeedbackSignal, Subscriber
from app.subscribers.feedback import mute_topic, record_feedback, sent_paper_title
from app.subscribers.rules import subscriber_for_token
from app.subscribers.tokens import Purpose, TokenClaims, TokenError, read_token
from app.web.deps import Session, State, WebState
from app.web.paging import MAX_ID
from app.web.rendering import link, linked_subscriber, page

router = APIRouter(include_in_schema=False)


async def _reader_and_claims(
    state: WebState, session: Session, purpose: Purpose, token: str
) -> tuple[Subscriber, TokenClaims]:
    """The reader a mute link names and the topic it is about; TokenError (the link-problem
    page) for a bad or revoked link."""
    claims = read_token(state.settings.secret_key, purpose, token)
    subscriber = await subscriber_for_token(
        state.settings.secret_key, purpose, token, session=session
    )
    return subscriber, claims


async def _paper_feedback(
    state: WebState, session: Session, token: str, paper_id: int, signal: str
) -> tuple[Subscriber, FeedbackSignal, str]:
    """The reader's token is signed; the paper and the signal beside it in the path are not
    (one token a reader, not two a paper, keeps a digest cheap to sign), so the paper must be
    one of the reader's own digests."""
    subscriber = await linked_subscriber(state, session, Purpose.FEEDBACK, token)
    try:
        chosen = FeedbackSignal(signal)
    except ValueError as error:
        raise TokenError("This link is not valid.") from error
    title = await sent_paper_title(subscriber, paper_id, session=session)
    if title is None:
        raise TokenError("This link names a paper that is not in your digests.")
    return subscriber, chosen, title


async def _muted_topic(state: WebState, session: Session, token: str) -> tuple[Subscriber, str]:
    subscriber, claims = await _reader_and_claims(state, session, Purpose.MUTE, token)
    if len(claims.subject) != 1 or not isinstance(claims.subject[0], str):
        raise TokenError("This link is not valid.")
    return subscriber, claims.subject[0]


PaperId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


@router.get("/feedback/{token}/{paper_id}/{signal}", response_class=HTMLResponse)
async def feedback_page(
    request: Request, token: str, paper_id: PaperId, signal: str, state: State, session: Session
) -> HTMLResponse:
    # Shows a button only: a link scanner's GET records nothing.
    subscriber, chosen, title = await _paper_feedback(state, session, token, paper_id, signal)
    return page(
        request,
        "feedback_confirm.html",
        {
            "subscriber": subscriber,
            "action": f"/feedback/{token}/{paper_id}/{chosen.value}",
            "signal": chosen.value,
            "title": title,
        },
    )


@router.post("/feedback/{token}/{paper_id}/{signal}", response_class=HTMLResponse)
async def feedback_now(
    request: Request, token: str, paper_id: PaperId, signal: str, state: State, session: Session
) -> HTMLResponse:
    subscriber, chosen, title = await _paper_feedback(state, session, token, paper_id, signal)
    await record_feedback(subscriber, paper_id, chosen, session=session, now=datetime.now(UTC))
    return page(
        request,
        "feedback_done.html",
        {
            "signal": chosen.value,
            "title": title,
            "preferences_url": link(state, Purpose.PREFERENCES, subscriber, "preferences"),
        },
    )


@router.get("/mute/{token}", response_class=HTMLResponse)
async def mute_page(request: Request, token: str, state: State, session: Session) -> HTMLResponse:
    subscriber, topic = await _muted_topic(state, session, token)
    return page(
        request,
        "mute_confirm.html",
        {"subscriber": subscriber, "token": token, "topic": topic},
    )


@router.post("/mute/{token}", response_class=HTMLResponse)
async def mute_now(request: Request, token: str, state: State, session: Session) -> HTMLResponse:
    subscriber, topic = await _muted_topic(state, session, token)
    muted = mute_topic(subscriber, topic)
    return page(
        request,
        "mute_done.html",
        {
            "topic": topic,
            "muted": muted,
            "preferences_url": link(state, Purpose.PREFERENCES, subscriber, "preferences"),
        },
    )
