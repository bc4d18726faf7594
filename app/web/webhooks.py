"""Provider webhooks: /webhooks/ses (Amazon SNS), /webhooks/postmark, /webhooks/sendgrid and
/webhooks/mailgun. Each is closed (404) until its secret is configured, checks the provider's
own signature or credentials before reading anything (401/403 and nothing recorded when they
fail), and records each event once (`app.mail.bounces.record`): a provider that retries or a
replayed request changes nothing. Answers are JSON: what was recorded, or why not."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.mail.bounces import mailgun, postmark, sendgrid, ses
from app.mail.bounces.record import RecordedEvents, record_events
from app.mail.bounces.reports import ReportedEvent
from app.mail.bounces.webhook import MAX_BODY_BYTES, WebhookMalformed, WebhookRefused
from app.web.deps import Session, State

logger = logging.getLogger("paperboy.webhooks")
router = APIRouter(prefix="/webhooks", include_in_schema=False)


def _closed() -> JSONResponse:
    """A provider whose secret is not configured has no webhook at all."""
    return JSONResponse({"detail": "Not Found"}, status_code=404)


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise WebhookMalformed(f"the body is larger than {MAX_BODY_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise WebhookMalformed(f"the body is larger than {MAX_BODY_BYTES} bytes")
    return body


def _refused(provider: str, error: WebhookRefused | WebhookMalformed) -> JSONResponse:
    if isinstance(error, WebhookRefused):
        logger.warning("%s webhook refused: %s", provider, error)
        headers = {"WWW-Authenticate": 'Basic realm="paperboy"'} if error.status_code == 401 else {}
        return JSONResponse({"detail": str(error)}, status_code=error.status_code, headers=headers)
    logger.warning("%s webhook malformed: %s", provider, error)
    return JSONResponse({"detail": str(error)}, status_code=400)


async def _recorded(events: list[ReportedEvent], session: Session, state: State) -> JSONResponse:
    result: RecordedEvents = await record_events(
        events, session=session, settings=state.settings, now=datetime.now(UTC)
    )
    return JSONResponse(
        {
            "recorded": result.recorded,
            "unmatched": result.unmatched,
            "duplicates": result.duplicates,
        }
    )


@router.post("/ses")
async def ses_webhook(request: Request, state: State, session: Session) -> JSONResponse:
    settings = state.settings
    if not settings.ses_topic_arns:
        return _closed()
    try:
        message = await ses.read_sns_message(await _body(request), settings=settings)
        if message.type == "SubscriptionConfirmation":
            await ses.confirm_subscription(message, settings=settings)
            return JSONResponse({"confirmed": message.topic_arn})
        if message.type == "UnsubscribeConfirmation":
            logger.warning("SNS says the subscription to %s was removed", message.topic_arn)
            return JSONResponse({"unsubscribed": message.topic_arn})
        events = ses.ses_events(message)
    except (WebhookRefused, WebhookMalformed) as error:
        return _refused("SES", error)
    return await _recorded(events, session, state)


@router.post("/postmark")
async def postmark_webhook(request: Request, state: State, session: Session) -> JSONResponse:
    credentials = state.settings.postmark_webhook_auth
    if credentials is None:
        return _closed()
    try:
        postmark.check_basic_auth(request.headers.get("authorization"), credentials)
        events = postmark.postmark_events(await _body(request))
    except (WebhookRefused, WebhookMalformed) as error:
        return _refused("Postmark", error)
    return await _recorded(events, session, state)


@router.post("/sendgrid")
async def sendgrid_webhook(request: Request, state: State, session: Session) -> JSONResponse:
    key = state.settings.sendgrid_webhook_public_key
    if key is None:
        return _closed()
    try:
        body = await _body(request)
        sendgrid.check_signature(
            body,
            request.headers.get(sendgrid.SIGNATURE_HEADER),
            request.headers.get(sendgrid.TIMESTAMP_HEADER),
            key,
        )
        events = sendgrid.sendgrid_events(body)
    except (WebhookRefused, WebhookMalformed) as error:
        return _refused("SendGrid", error)
    return await _recorded(events, session, state)


@router.post("/mailgun")
async def mailgun_webhook(request: Request, state: State, session: Session) -> JSONResponse:
    signing_key = state.settings.mailgun_webhook_signing_key
    if signing_key is None:
        return _closed()
    try:
        events = mailgun.mailgun_events(await _body(request), signing_key=signing_key)
    except (WebhookRefused, WebhookMalformed) as error:
        return _refused("Mailgun", error)
    return await _recorded(events, session, state)
