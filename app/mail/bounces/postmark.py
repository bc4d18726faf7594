"""Postmark's bounce and spam-complaint webhooks, at /webhooks/postmark. Postmark does not sign
its webhooks; it sends the HTTP basic auth credentials written into the webhook URL
(https://user:password@your-host/webhooks/postmark), which must match
`PAPERBOY_POSTMARK_WEBHOOK_AUTH` (compared in constant time).

A Bounce record gives one event by its Type: HardBounce and BadEmailAddress are hard;
SoftBounce, Transient and DnsError soft; Blocked, DMARCPolicy and SpamNotification are refusals
about us; the other types (auto-responders, subscribe requests, ...) are not failures. A
SpamComplaint record is a complaint. Every other record type (Delivery, Open, Click, ...) is
answered and ignored."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any

from app.mail.bounces.reports import ReportedEvent, clipped, event_key
from app.mail.bounces.webhook import (
    WebhookMalformed,
    WebhookRefused,
    json_body,
    moment,
    text_of,
)
from app.models import DeliveryEventKind

BOUNCE_KINDS = {
    "HardBounce": DeliveryEventKind.HARD_BOUNCE,
    "BadEmailAddress": DeliveryEventKind.HARD_BOUNCE,
    "SoftBounce": DeliveryEventKind.SOFT_BOUNCE,
    "Transient": DeliveryEventKind.SOFT_BOUNCE,
    "DnsError": DeliveryEventKind.SOFT_BOUNCE,
    "Blocked": DeliveryEventKind.BLOCKED,
    "DMARCPolicy": DeliveryEventKind.BLOCKED,
    "SpamNotification": DeliveryEventKind.BLOCKED,
}
DELAYS = ("Transient",)  # "Message delayed": it may still arrive


def check_basic_auth(authorization: str | None, expected: str) -> None:
    """WebhookRefused (401) unless the request carries the configured user:password."""
    scheme, _, encoded = (authorization or "").partition(" ")
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        given = b""
    if scheme.lower() != "basic" or not hmac.compare_digest(given, expected.encode()):
        raise WebhookRefused("Postmark webhook credentials are missing or wrong", status_code=401)


def postmark_events(body: bytes) -> list[ReportedEvent]:
    record = json_body(body)
    if not isinstance(record, dict):
        raise WebhookMalformed("a Postmark webhook sends one JSON object")
    record_type = text_of(record.get("RecordType"))
    if record_type == "Bounce":
        kind = BOUNCE_KINDS.get(text_of(record.get("Type")))
        return [_event(record, kind, "bounce")] if kind is not None else []
    if record_type == "SpamComplaint":
        return [_event(record, DeliveryEventKind.COMPLAINT, "complaint")]
    return []


def _event(record: Mapping[str, Any], kind: DeliveryEventKind, what: str) -> ReportedEvent:
    record_id, address = text_of(record.get("ID")), text_of(record.get("Email"))
    if not record_id or "@" not in address:
        raise WebhookMalformed(f"a Postmark {record.get('RecordType')} record without ID or Email")
    bounce_type = text_of(record.get("Type"))
    explained = text_of(record.get("Details")) or text_of(record.get("Description"))
    return ReportedEvent(
        source="postmark",
        key=event_key("postmark", what, record_id),
        kind=kind,
        recipient=address,
        detail=clipped(f"{bounce_type} ({record.get('TypeCode')}): {explained}"),
        undelivered=kind is not DeliveryEventKind.COMPLAINT and bounce_type not in DELAYS,
        occurred_at=moment(record.get("BouncedAt")),
        address_is_trusted=True,
    )
