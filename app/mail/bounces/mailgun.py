"""Mailgun's webhooks, at /webhooks/mailgun: a JSON body whose `signature` object holds a
timestamp, a random token and their HMAC-SHA256 under the webhook signing key
(`PAPERBOY_MAILGUN_WEBHOOK_SIGNING_KEY`), compared in constant time. A replayed request is
harmless: its event id is recorded once.

`failed` with severity permanent is read from its delivery status like a bounce message
(5.1.x and 5.2.x are hard, 5.7.x is a refusal about us; `suppress-bounce` means Mailgun already
knows the address bounces, `suppress-complaint` that its owner complained); severity temporary
is a delay; `complained` is a complaint. Other events are ignored."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from app.mail.bounces.reports import ReportedEvent, clipped, event_key
from app.mail.bounces.status_codes import failure_kind
from app.mail.bounces.webhook import (
    WebhookMalformed,
    WebhookRefused,
    json_body,
    mapping,
    moment,
    text_of,
)
from app.models import DeliveryEventKind

SUPPRESSED = {
    "suppress-bounce": DeliveryEventKind.HARD_BOUNCE,
    "suppress-complaint": DeliveryEventKind.COMPLAINT,
}


def mailgun_events(body: bytes, *, signing_key: str) -> list[ReportedEvent]:
    """The events of a request whose signature verifies; WebhookRefused otherwise."""
    payload = json_body(body)
    if not isinstance(payload, dict):
        raise WebhookRefused("not a signed Mailgun webhook")
    _check_signature(payload.get("signature"), signing_key)
    data = payload.get("event-data")
    if not isinstance(data, dict):
        raise WebhookMalformed("a Mailgun webhook without event-data")
    event = _event(data)
    return [event] if event is not None else []


def _check_signature(signature: object, signing_key: str) -> None:
    if not isinstance(signature, dict):
        raise WebhookRefused("a Mailgun webhook without its signature")
    timestamp, token = text_of(signature.get("timestamp")), text_of(signature.get("token"))
    given = text_of(signature.get("signature"))
    expected = hmac.new(
        signing_key.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    if not timestamp or not token or not hmac.compare_digest(given.lower(), expected):
        raise WebhookRefused("the Mailgun signature does not verify")


def _event(data: Mapping[str, Any]) -> ReportedEvent | None:
    name = text_of(data.get("event"))
    status = mapping(data.get("delivery-status"))
    undelivered = True
    if name == "failed" and data.get("severity") == "permanent":
        reason = text_of(data.get("reason"))
        code = text_of(status.get("enhanced-code")) or text_of(status.get("code"))
        message = text_of(status.get("message")) or text_of(status.get("description"))
        kind = SUPPRESSED.get(reason) or failure_kind(code, f"{code} {message}")
        kind = kind or DeliveryEventKind.HARD_BOUNCE
        if kind is DeliveryEventKind.SOFT_BOUNCE:  # Mailgun gave up: not a delay any more
            kind = DeliveryEventKind.BLOCKED
        detail = f"failed ({reason or 'permanent'}) {code}: {message}"
    elif name == "failed":
        kind, undelivered = DeliveryEventKind.SOFT_BOUNCE, False
        detail = (
            f"failed (temporary) {text_of(status.get('code'))}: {text_of(status.get('message'))}"
        )
    elif name == "complained":
        kind, undelivered, detail = DeliveryEventKind.COMPLAINT, False, "complaint via Mailgun"
    else:
        return None
    event_id, address = text_of(data.get("id")), text_of(data.get("recipient"))
    if not event_id or "@" not in address:
        raise WebhookMalformed(f"a Mailgun {name} event without id or recipient")
    headers = mapping(mapping(data.get("message")).get("headers"))
    message_id = text_of(headers.get("message-id"))
    return ReportedEvent(
        source="mailgun",
        key=event_key("mailgun", event_id),
        kind=kind,
        recipient=address,
        detail=clipped(detail),
        undelivered=undelivered and kind is not DeliveryEventKind.COMPLAINT,
        message_ids=(message_id,) if message_id else (),
        occurred_at=moment(data.get("timestamp")),
        address_is_trusted=True,
    )
