"""SendGrid's Event Webhook, at /webhooks/sendgrid, signed (Signed Event Webhook): ECDSA with
SHA-256 over the X-Twilio-Email-Event-Webhook-Timestamp header followed by the raw body,
base64 in X-Twilio-Email-Event-Webhook-Signature, verified with the verification key SendGrid
shows (`PAPERBOY_SENDGRID_WEBHOOK_PUBLIC_KEY`).

A request is a batch of events. `bounce` is a hard bounce (SendGrid's own reading: the address
refused for good) unless its bounce_classification or a 5.7.x status says the refusal was about
us; type `blocked` is such a refusal; `deferred` is a delay; `spamreport` a complaint; `dropped`
for a Bounced Address or Invalid one is a hard bounce and for a Spam Reporting Address a
complaint (SendGrid will not send there). Opens, clicks, deliveries and the like are ignored."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from app.config import read_ec_public_key
from app.mail.bounces.reports import ReportedEvent, clipped, event_key
from app.mail.bounces.webhook import (
    WebhookMalformed,
    WebhookRefused,
    json_body,
    moment,
    text_of,
)
from app.mail.replies import ENHANCED_CODE
from app.models import DeliveryEventKind

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
ABOUT_THE_ADDRESS = ("Invalid Address", "Mailbox Unavailable")
ABOUT_US = ("Technical", "Content", "Reputation", "Frequency or Volume Too High")
DROPPED_KINDS = {
    "Bounced Address": DeliveryEventKind.HARD_BOUNCE,
    "Invalid": DeliveryEventKind.HARD_BOUNCE,
    "Spam Reporting Address": DeliveryEventKind.COMPLAINT,
}


def check_signature(body: bytes, signature: str | None, timestamp: str | None, key: str) -> None:
    """WebhookRefused (403) unless the signature over timestamp + body verifies."""
    if not signature or not timestamp:
        raise WebhookRefused(f"no {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header")
    try:
        decoded = base64.b64decode(signature, validate=True)
    except binascii.Error:
        raise WebhookRefused("the SendGrid signature is not base64") from None
    public_key = read_ec_public_key(key)  # checked when the settings were read
    try:
        public_key.verify(decoded, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise WebhookRefused("the SendGrid signature does not verify") from None


def sendgrid_events(body: bytes) -> list[ReportedEvent]:
    batch = json_body(body)
    if not isinstance(batch, list):
        raise WebhookMalformed("a SendGrid Event Webhook request is a JSON array of events")
    events = []
    for item in batch:
        if not isinstance(item, dict):
            raise WebhookMalformed("a SendGrid event is a JSON object")
        event = _event(item)
        if event is not None:
            events.append(event)
    return events


def _event(item: Mapping[str, Any]) -> ReportedEvent | None:
    name = text_of(item.get("event"))
    undelivered = True
    if name == "bounce":
        kind = _bounce_kind(item)
    elif name == "dropped":
        found = DROPPED_KINDS.get(text_of(item.get("reason")))
        if found is None:
            return None
        kind = found
    elif name == "deferred":
        kind, undelivered = DeliveryEventKind.SOFT_BOUNCE, False
    elif name == "spamreport":
        kind, undelivered = DeliveryEventKind.COMPLAINT, False
    else:
        return None
    address = text_of(item.get("email"))
    if "@" not in address:
        raise WebhookMalformed(f"a SendGrid {name} event without an email")
    # sg_event_id is unique per event; without one, the event itself is its identity.
    identity = (
        text_of(item.get("sg_event_id"))
        or hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).hexdigest()
    )
    explained = " ".join(
        part
        for part in (
            text_of(item.get("type")),
            text_of(item.get("status")),
            text_of(item.get("reason") or item.get("response")),
            text_of(item.get("bounce_classification")),
        )
        if part
    )
    message_id = text_of(item.get("smtp-id"))
    return ReportedEvent(
        source="sendgrid",
        key=event_key("sendgrid", identity),
        kind=kind,
        recipient=address,
        detail=clipped(f"{name}: {explained}" if explained else name),
        undelivered=undelivered and kind is not DeliveryEventKind.COMPLAINT,
        message_ids=(message_id,) if message_id else (),
        occurred_at=moment(item.get("timestamp")),
        address_is_trusted=True,
    )


def _bounce_kind(item: Mapping[str, Any]) -> DeliveryEventKind:
    classification = text_of(item.get("bounce_classification"))
    if classification in ABOUT_THE_ADDRESS:
        return DeliveryEventKind.HARD_BOUNCE
    if classification in ABOUT_US or text_of(item.get("type")) == "blocked":
        return DeliveryEventKind.BLOCKED
    codes = f"{text_of(item.get('status'))} {text_of(item.get('reason'))}"
    if any(match.group(1, 2) == ("5", "7") for match in ENHANCED_CODE.finditer(codes)):
        return DeliveryEventKind.BLOCKED
    return DeliveryEventKind.HARD_BOUNCE
