"""Amazon SES bounce and complaint notifications, delivered by Amazon SNS to /webhooks/ses.

An SNS message is trusted only when (1) its topic is one of `PAPERBOY_SES_TOPIC_ARNS` (anyone
can sign genuine SNS messages from a topic of their own) and (2) its signature verifies:
SignatureVersion 1 (RSA with SHA1) or 2 (RSA with SHA256) over the documented fields, with the
certificate at SigningCertURL, which must be an https URL on sns.REGION.amazonaws.com ending in
.pem (checked before anything is fetched; fetched with TLS verified, kept in memory until it
expires). A SubscriptionConfirmation passing both checks is confirmed by fetching its
SubscribeURL, held to the same host rule. `PAPERBOY_SNS_TEST_ORIGIN` lets tests serve both from
a local server; production refuses it.

The notification (SES's JSON, `notificationType` or, from an event destination, `eventType`)
gives an event per recipient: a Permanent bounce is hard (unless its codes say the refusal was
about us, or its sub-type is ContentRejected / AttachmentRejected), Transient and Undetermined
are soft; a complaint is a complaint unless its feedback type is not-spam."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from app.config import Settings
from app.mail.bounces.reports import ReportedEvent, clipped, event_key
from app.mail.bounces.status_codes import failure_kind
from app.mail.bounces.webhook import (
    WebhookMalformed,
    WebhookRefused,
    items,
    json_body,
    mapping,
    moment,
    text_of,
)
from app.models import DeliveryEventKind

logger = logging.getLogger("paperboy.webhooks")
SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
# The fields each message type signs, in the order AWS documents them.
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
SIGNED_FIELDS["UnsubscribeConfirmation"] = SIGNED_FIELDS["SubscriptionConfirmation"]
SIGNATURE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_CERTIFICATE_BYTES = 64 * 1024
CACHED_CERTIFICATES = 32
NOT_ABOUT_THE_ADDRESS = ("ContentRejected", "AttachmentRejected")


@dataclass(frozen=True, slots=True)
class SnsMessage:
    type: str
    message_id: str
    topic_arn: str
    fields: Mapping[str, Any]


def amazon_url(url: str, *, test_origin: str | None, suffix: str = "") -> str:
    """`url` if SNS may send us there: https on sns.REGION.amazonaws.com (or the test origin);
    WebhookRefused otherwise, before anything is fetched."""
    if test_origin and url.startswith(test_origin + "/"):
        return url
    parts = urlsplit(url)
    if (
        parts.scheme != "https"
        or not SNS_HOST.fullmatch(parts.hostname or "")
        or parts.port not in (None, 443)
        or parts.username is not None
        or not parts.path.endswith(suffix)
    ):
        raise WebhookRefused(f"not an Amazon SNS URL: {url[:200]!r}")
    return url


class CertificateCache:
    """SNS signing certificates by URL, fetched once each and kept until they expire."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[rsa.RSAPublicKey, datetime]] = {}

    async def public_key(self, url: str, *, deadline: float) -> rsa.RSAPublicKey:
        cached = self.keys.get(url)
        if cached is not None and cached[1] > datetime.now(UTC):
            return cached[0]
        certificate = await _fetch_certificate(url, deadline=deadline)
        now = datetime.now(UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise WebhookRefused("the SNS signing certificate is not valid now")
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookRefused("the SNS signing certificate does not hold an RSA key")
        if len(self.keys) >= CACHED_CERTIFICATES:
            self.keys.pop(next(iter(self.keys)))
        self.keys[url] = (key, certificate.not_valid_after_utc)
        return key


CERTIFICATES = CertificateCache()


async def _fetch_certificate(url: str, *, deadline: float) -> x509.Certificate:
    """The certificate at `url`, fetched within `deadline` seconds in all."""
    try:
        async with (
            asyncio.timeout(deadline),
            httpx.AsyncClient(timeout=deadline, follow_redirects=False) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise WebhookRefused(f"the SNS signing certificate answered {response.status_code}")
            data = b""
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > MAX_CERTIFICATE_BYTES:
                    raise WebhookRefused("the SNS signing certificate is too large")
    except (httpx.HTTPError, TimeoutError) as error:
        # SNS retries a delivery that was not answered 2xx: a passing failure heals itself.
        raise WebhookRefused(
            f"the SNS signing certificate could not be fetched: {error!r}", status_code=502
        ) from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise WebhookRefused("the SNS signing certificate is not a PEM certificate") from None


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """What SNS signs: each signed field present, as its name and value on lines of their own."""
    fields = SIGNED_FIELDS.get(text_of(message.get("Type")))
    if fields is None:
        raise WebhookMalformed(f"unknown SNS message type {message.get('Type')!r}")
    lines = []
    for name in fields:
        value = message.get(name)
        if value is None:
            if name == "Subject":  # the one optional signed field
                continue
            raise WebhookMalformed(f"an SNS {message['Type']} without {name}")
        lines.append(f"{name}\n{text_of(value)}\n")
    return "".join(lines).encode()


async def read_sns_message(
    body: bytes, *, settings: Settings, certificates: CertificateCache = CERTIFICATES
) -> SnsMessage:
    """The SNS message in a request body, once its topic and its signature are checked."""
    message = json_body(body)
    if not isinstance(message, dict):
        raise WebhookMalformed("an SNS message is a JSON object")
    topic = text_of(message.get("TopicArn"))
    if topic not in settings.ses_topic_arns:
        raise WebhookRefused(f"SNS topic {topic[:300]!r} is not in PAPERBOY_SES_TOPIC_ARNS")
    data = string_to_sign(message)
    algorithm = SIGNATURE_HASHES.get(text_of(message.get("SignatureVersion")))
    if algorithm is None:
        raise WebhookRefused(f"unsupported SignatureVersion {message.get('SignatureVersion')!r}")
    url = amazon_url(
        text_of(message.get("SigningCertURL")),
        test_origin=settings.sns_test_origin,
        suffix=".pem",
    )
    try:
        signature = base64.b64decode(text_of(message.get("Signature")), validate=True)
    except binascii.Error:
        raise WebhookRefused("the SNS signature is not base64") from None
    key = await certificates.public_key(url, deadline=settings.http_timeout)
    try:
        key.verify(signature, data, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise WebhookRefused("the SNS signature does not verify") from None
    return SnsMessage(
        type=text_of(message["Type"]),
        message_id=text_of(message["MessageId"]),
        topic_arn=topic,
        fields=message,
    )


async def confirm_subscription(message: SnsMessage, *, settings: Settings) -> None:
    """Confirm a verified subscription to an allowed topic: fetch its SubscribeURL (an SNS
    host's, checked). WebhookRefused when SNS does not take the confirmation."""
    url = amazon_url(
        text_of(message.fields.get("SubscribeURL")), test_origin=settings.sns_test_origin
    )
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(timeout=settings.http_timeout) as client:
            response = await client.get(url)
    except httpx.HTTPError as error:
        raise WebhookRefused(
            f"confirming the SNS subscription failed: {error!r}", status_code=502
        ) from None
    if response.status_code != 200:
        raise WebhookRefused(
            f"SNS answered {response.status_code} to the subscription confirmation",
            status_code=502,
        )
    logger.info(
        "confirmed the SNS subscription to %s in %.2f s",
        message.topic_arn,
        time.perf_counter() - started,
    )


def ses_events(message: SnsMessage) -> list[ReportedEvent]:
    """The bounces and complaints in a verified SNS notification from SES."""
    notification = json_body(text_of(message.fields.get("Message")).encode())
    if not isinstance(notification, dict):
        raise WebhookMalformed("the SES notification is not a JSON object")
    kind = text_of(notification.get("notificationType") or notification.get("eventType"))
    mail = mapping(notification.get("mail"))
    message_ids = _message_ids(mail)
    if kind == "Bounce":
        return _bounces(mapping(notification.get("bounce")), message, message_ids)
    if kind == "Complaint":
        return _complaints(mapping(notification.get("complaint")), message, message_ids)
    return []  # Delivery, Send, Open, ...: nothing went wrong


def _message_ids(mail: Mapping[str, Any]) -> tuple[str, ...]:
    """The original Message-ID, when SES included the headers."""
    found = [
        text_of(header.get("value"))
        for header in items(mail.get("headers"))
        if isinstance(header, dict) and text_of(header.get("name")).lower() == "message-id"
    ]
    common = mapping(mail.get("commonHeaders")).get("messageId")
    if common:
        found.append(text_of(common))
    return tuple(dict.fromkeys(found))


def _bounces(
    bounce: Mapping[str, Any], message: SnsMessage, message_ids: tuple[str, ...]
) -> list[ReportedEvent]:
    bounce_type = text_of(bounce.get("bounceType"))
    sub_type = text_of(bounce.get("bounceSubType"))
    feedback_id = text_of(bounce.get("feedbackId")) or message.message_id
    events = []
    for recipient in items(bounce.get("bouncedRecipients")):
        if not isinstance(recipient, dict) or not recipient.get("emailAddress"):
            continue
        address = text_of(recipient["emailAddress"])
        status = text_of(recipient.get("status")) or None
        diagnostic = text_of(recipient.get("diagnosticCode")) or None
        if bounce_type != "Permanent":
            kind = DeliveryEventKind.SOFT_BOUNCE
        elif sub_type in NOT_ABOUT_THE_ADDRESS:
            kind = DeliveryEventKind.BLOCKED
        else:
            kind = failure_kind(status, diagnostic) or DeliveryEventKind.HARD_BOUNCE
            if kind is DeliveryEventKind.SOFT_BOUNCE:  # SES says permanent: it is not retried
                kind = DeliveryEventKind.BLOCKED
        detail = f"{bounce_type}/{sub_type} {status or ''}: {diagnostic or 'no diagnostic'}"
        events.append(
            ReportedEvent(
                source="ses",
                key=event_key("ses", feedback_id, address.lower()),
                kind=kind,
                recipient=address,
                detail=clipped(detail),
                undelivered=True,
                message_ids=message_ids,
                occurred_at=moment(bounce.get("timestamp")),
                address_is_trusted=True,
            )
        )
    return events


def _complaints(
    complaint: Mapping[str, Any], message: SnsMessage, message_ids: tuple[str, ...]
) -> list[ReportedEvent]:
    feedback_type = text_of(complaint.get("complaintFeedbackType")) or "abuse"
    if feedback_type == "not-spam":
        return []
    feedback_id = text_of(complaint.get("feedbackId")) or message.message_id
    agent = text_of(complaint.get("userAgent")) or "the mailbox provider"
    return [
        ReportedEvent(
            source="ses",
            key=event_key("ses", feedback_id, text_of(recipient["emailAddress"]).lower()),
            kind=DeliveryEventKind.COMPLAINT,
            recipient=text_of(recipient["emailAddress"]),
            detail=clipped(f"{feedback_type} complaint via Amazon SES from {agent}"),
            undelivered=False,
            message_ids=message_ids,
            occurred_at=moment(complaint.get("timestamp")),
            address_is_trusted=True,
        )
        for recipient in items(complaint.get("complainedRecipients"))
        if isinstance(recipient, dict) and recipient.get("emailAddress")
    ]
