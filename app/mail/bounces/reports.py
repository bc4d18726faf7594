"""Reading a message of the bounce mailbox: a delivery status notification (RFC 3464,
multipart/report; report-type=delivery-status) gives an event per recipient that failed or was
delayed; an abuse report (RFC 5965 ARF, report-type=feedback-report, Feedback-Type: abuse) gives
a complaint. Anything else (an auto-reply, a human's answer) is not a report and gives nothing.

Each event carries what may tie it to a digest (`app.mail.bounces.record` decides): the
addresses the report was delivered to (where our tagged return path comes back) and the returned
message's headers (its Message-ID and Return-Path). Standard library email package only; no
database. A message the parser cannot make sense of raises `UnreadableReport`."""

from __future__ import annotations

import email
import email.policy
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parsedate_to_datetime

from app.mail.bounces.status_codes import failure_kind
from app.models import DeliveryEventKind

DETAIL_CHARS = 500
KEY_CHARS = 255
# Headers where a receiving system records the address a message was delivered to: our tagged
# return path, for a bounce.
DELIVERY_ADDRESS_HEADERS = ("X-Original-To", "Delivered-To", "Envelope-To", "X-Envelope-To", "To")
STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
FEEDBACK_TYPE = "message/feedback-report"
RETURNED_MESSAGE_TYPES = ("message/rfc822", "message/global")
RETURNED_HEADER_TYPES = ("text/rfc822-headers", "message/global-headers")
COMPLAINT_FEEDBACK_TYPES = ("abuse",)


class UnreadableReport(ValueError):
    """A report whose structure is broken; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class ReportedEvent:
    """One bounce or complaint, as a report (a DSN, an ARF report, a provider's event) gives it."""

    source: str  # mailbox, ses, postmark, sendgrid, mailgun
    key: str  # unique per event: a replayed or re-read report has the same key
    kind: DeliveryEventKind
    recipient: str | None  # the address the report is about
    detail: str
    # The message did not arrive (a failure, not a delay or a complaint): the digest failed.
    undelivered: bool
    message_ids: tuple[str, ...] = ()  # the original message's Message-ID, as reported
    envelope_addresses: tuple[str, ...] = ()  # where our tagged return path may appear
    occurred_at: datetime | None = None
    # Signed by a provider we trust: the recipient's address alone may name the subscriber. A
    # mailbox report is not (anyone can mail the bounce address), so it must name a digest.
    address_is_trusted: bool = False


def event_key(*parts: str) -> str:
    """An idempotency key; hashed when too long for its column."""
    key = ":".join(parts)
    if len(key) <= KEY_CHARS:
        return key
    return f"{parts[0]}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def clipped(text: str) -> str:
    return " ".join(text.split())[:DETAIL_CHARS]


@dataclass(slots=True)
class MailboxReport:
    """What one mailbox message turned out to be."""

    kind: str  # "delivery-status", "feedback-report" or "other"
    events: list[ReportedEvent] = field(default_factory=list)
    reason: str = ""


def read_report(raw: bytes) -> MailboxReport:
    """Events in one message of the bounce mailbox (none for a message that is no report)."""
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception as error:  # the parser is lenient; a failure here is a broken message
        raise UnreadableReport(f"not a mail message: {error}") from error
    try:
        return _report_in(message, raw)
    except UnreadableReport:
        raise
    except (RecursionError, ValueError, LookupError, TypeError, AttributeError) as error:
        # Nesting past the interpreter's depth, an unknown charset, a header the parser
        # could not make into text: whatever the message is, it is no readable report.
        raise UnreadableReport(f"{type(error).__name__}: {error}") from error


def _report_in(message: Message, raw: bytes) -> MailboxReport:
    report_id = _header(message, "Message-ID") or hashlib.sha256(raw).hexdigest()
    delivered_to = _addresses(message, DELIVERY_ADDRESS_HEADERS)
    for part in _parts(message):
        content_type = part.get_content_type()
        if content_type in STATUS_TYPES:
            events = _delivery_status(part, message, report_id, delivered_to)
            return MailboxReport("delivery-status", events, _no_failure(events))
        if content_type == FEEDBACK_TYPE:
            event = _feedback_report(part, message, report_id, delivered_to)
            reason = "" if event else "a feedback report that is not an abuse complaint"
            return MailboxReport("feedback-report", [event] if event else [], reason)
    return MailboxReport("other", reason="not a delivery status notification or abuse report")


def _no_failure(events: list[ReportedEvent]) -> str:
    return "" if events else "a delivery status notification of no failure or delay"


def _parts(message: Message) -> Iterator[Message]:
    """The parts of the message, a report's own parts first; the field blocks the parser makes
    of a delivery-status part are not parts."""
    yield message
    payload = message.get_payload()
    if message.get_content_type() in STATUS_TYPES or not isinstance(payload, list):
        return
    for part in payload:
        if isinstance(part, Message):
            yield from _parts(part)


def _delivery_status(
    part: Message, message: Message, report_id: str, delivered_to: tuple[str, ...]
) -> list[ReportedEvent]:
    blocks = _field_blocks(part)
    if not blocks:
        raise UnreadableReport("a delivery-status part without fields")
    per_message, recipients = blocks[0], blocks[1:]
    returned = _returned_headers(message)
    message_ids, return_paths = _original_ids(returned)
    arrival = _date(_header(per_message, "Arrival-Date"))
    events = []
    for number, fields in enumerate(recipients, start=1):
        recipient = _typed_address(_header(fields, "Final-Recipient")) or _typed_address(
            _header(fields, "Original-Recipient")
        )
        action = (_header(fields, "Action") or "").lower()
        status = _header(fields, "Status")
        diagnostic = _header(fields, "Diagnostic-Code")
        if action == "failed":
            kind = failure_kind(status, diagnostic) or DeliveryEventKind.BLOCKED
            undelivered = True
        elif action == "delayed":
            kind, undelivered = DeliveryEventKind.SOFT_BOUNCE, False
        else:  # delivered, relayed, expanded: nothing went wrong
            continue
        detail = f"{action} {status or ''}: {diagnostic or 'no diagnostic'}"
        events.append(
            ReportedEvent(
                source="mailbox",
                key=event_key("mailbox", report_id, str(number), recipient or ""),
                kind=kind,
                recipient=recipient,
                detail=clipped(detail),
                undelivered=undelivered,
                message_ids=message_ids,
                envelope_addresses=_distinct(delivered_to + return_paths),
                occurred_at=_date(_header(fields, "Last-Attempt-Date")) or arrival,
            )
        )
    return events


def _feedback_report(
    part: Message, message: Message, report_id: str, delivered_to: tuple[str, ...]
) -> ReportedEvent | None:
    blocks = _field_blocks(part)
    if not blocks:
        raise UnreadableReport("a feedback-report part without fields")
    fields = blocks[0]
    feedback_type = (_header(fields, "Feedback-Type") or "").lower()
    if not feedback_type:
        raise UnreadableReport("a feedback report without a Feedback-Type")
    if feedback_type not in COMPLAINT_FEEDBACK_TYPES:
        return None
    returned = _returned_headers(message)
    message_ids, return_paths = _original_ids(returned)
    recipients = [
        address for address in _header_values(fields, "Original-Rcpt-To") if "@" in address
    ]
    if not recipients and returned is not None:
        recipients = list(_addresses(returned, ("To",)))
    mail_from = tuple(_header_values(fields, "Original-Mail-From"))
    agent = _header(fields, "User-Agent") or "unknown reporter"
    return ReportedEvent(
        source="mailbox",
        key=event_key("mailbox", report_id, "complaint"),
        kind=DeliveryEventKind.COMPLAINT,
        recipient=recipients[0].strip("<> ") if recipients else None,
        detail=clipped(f"{feedback_type} report by {agent}"),
        undelivered=False,
        message_ids=message_ids,
        envelope_addresses=_distinct(delivered_to + mail_from + return_paths),
        occurred_at=_date(_header(fields, "Arrival-Date") or _header(fields, "Received-Date")),
    )


def _field_blocks(part: Message) -> list[Message]:
    """The field blocks of a delivery-status or feedback-report part (the parser makes them
    messages; a global-delivery-status part, UTF-8 text, is parsed here)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message) and len(block)]
    blocks = _decoded(part).replace("\r\n", "\n").split("\n\n")
    parsed = [HeaderParser().parsestr(block.strip("\n") + "\n") for block in blocks]
    return [block for block in parsed if len(block)]


def _decoded(part: Message) -> str:
    data = part.get_payload(decode=True)
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else ""


def _returned_headers(message: Message) -> Message | None:
    """The headers of the message the report is about: a returned message/rfc822 part or a
    text/rfc822-headers part."""
    for part in _parts(message):
        content_type = part.get_content_type()
        if content_type in RETURNED_MESSAGE_TYPES:
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if content_type in RETURNED_HEADER_TYPES:
            return HeaderParser().parsestr(_decoded(part))
    return None


def _original_ids(returned: Message | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if returned is None:
        return (), ()
    message_ids = tuple(value.strip() for value in _header_values(returned, "Message-ID"))
    return message_ids, tuple(_header_values(returned, "Return-Path"))


def _header(message: Message, name: str) -> str | None:
    value = message.get(name)
    if value is None:
        return None
    return " ".join(str(value).split()) or None


def _header_values(message: Message, name: str) -> list[str]:
    return [" ".join(str(value).split()) for value in message.get_all(name) or []]


def _addresses(message: Message, names: Iterable[str]) -> tuple[str, ...]:
    values = [value for name in names for value in _header_values(message, name)]
    return tuple(address for _, address in getaddresses(values) if "@" in address)


def _distinct(addresses: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(address.strip().strip("<>").strip() for address in addresses))


def _typed_address(value: str | None) -> str | None:
    """The address of an `rfc822; someone@example.org` field."""
    if not value:
        return None
    address = value.partition(";")[2] if ";" in value else value
    return address.strip().strip("<>").strip() or None


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
