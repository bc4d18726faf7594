"""Reading what comes back after sending, with no database: real-world delivery status
notifications (RFC 3464) and abuse reports (RFC 5965) from tests/data/bounces, what each
status code means for the subscriber, and the tagged return path and Message-ID that tie a
report to its digest and cannot be forged."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.mail.bounces.reports import UnreadableReport, read_report
from app.mail.bounces.status_codes import failure_kind
from app.mail.return_path import (
    digest_id_from_return_path,
    digest_message_id,
    read_digest_message_id,
    tagged_return_path,
)
from app.models import DeliveryEventKind

BOUNCES = Path(__file__).resolve().parents[1] / "data" / "bounces"
OUR_MESSAGE_ID = "<digest.12.0123456789ab@papers.example.org>"
FIXTURE_RETURN_PATH = "bounces+12-abcdefghijklm@papers.example.org"
SECRET = "bounce-test-secret-0123456789"
HARD, SOFT = DeliveryEventKind.HARD_BOUNCE, DeliveryEventKind.SOFT_BOUNCE
BLOCKED, COMPLAINT = DeliveryEventKind.BLOCKED, DeliveryEventKind.COMPLAINT


def fixture(name: str) -> bytes:
    return (BOUNCES / name).read_bytes()


@pytest.mark.parametrize(
    ("name", "kind", "recipient", "undelivered"),
    [
        # Postfix: 5.1.1 user unknown, the original's headers returned as text/rfc822-headers.
        ("dsn-postfix-user-unknown.eml", HARD, "gone@example.net", True),
        # RFC 3464's own example: gave up after 5 days of 4xx (Action failed, Status 4.0.0).
        ("dsn-rfc3464-gave-up.eml", SOFT, "gone@example.net", True),
        # Exim's delay warning: still trying.
        ("dsn-delayed.eml", SOFT, "slow@example.com", False),
        # Gmail refusing for DMARC (5.7.26): about us, never the reader's fault.
        ("dsn-gmail-blocked.eml", BLOCKED, "reader@gmail.example", True),
    ],
)
def test_a_delivery_status_notification_gives_one_event_per_recipient(
    name: str, kind: DeliveryEventKind, recipient: str, undelivered: bool
) -> None:
    report = read_report(fixture(name))
    assert report.kind == "delivery-status"
    [event] = report.events
    assert (event.kind, event.recipient, event.undelivered) == (kind, recipient, undelivered)
    assert event.message_ids == (OUR_MESSAGE_ID,)
    assert FIXTURE_RETURN_PATH in event.envelope_addresses
    assert not event.address_is_trusted  # anyone can mail a bounce mailbox
    assert event.source == "mailbox" and event.detail
    # The same report read twice has the same key: recorded once.
    assert read_report(fixture(name)).events[0].key == event.key


def test_the_status_fields_are_kept_in_the_detail() -> None:
    [event] = read_report(fixture("dsn-postfix-user-unknown.eml")).events
    assert event.detail.startswith("failed 5.1.1: smtp; 550 5.1.1 <gone@example.net>")
    assert "User unknown in virtual mailbox table" in event.detail  # a folded field, unfolded
    assert event.occurred_at is not None and event.occurred_at.isoformat().startswith("2027-01-07")


def test_an_abuse_report_is_a_complaint_naming_the_original_message() -> None:
    report = read_report(fixture("arf-abuse.eml"))
    assert report.kind == "feedback-report"
    [event] = report.events
    assert event.kind is COMPLAINT and not event.undelivered
    assert event.recipient == "annoyed@example.com"
    assert event.message_ids == (OUR_MESSAGE_ID,)
    # Original-Mail-From is the envelope sender the receiving side saw: our tagged address.
    assert FIXTURE_RETURN_PATH in event.envelope_addresses
    assert "abuse report by SomeGenerator/1.0" in event.detail


def test_a_redacted_abuse_report_with_headers_only_still_names_the_digest() -> None:
    [event] = read_report(fixture("arf-redacted-headers-only.eml")).events
    assert event.kind is COMPLAINT and event.recipient is None
    assert event.message_ids == (OUR_MESSAGE_ID,)
    assert FIXTURE_RETURN_PATH in event.envelope_addresses


def test_other_feedback_types_are_no_complaint() -> None:
    not_spam = fixture("arf-abuse.eml").replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    report = read_report(not_spam)
    assert report.kind == "feedback-report" and report.events == []
    assert "not an abuse complaint" in report.reason


def test_a_message_that_is_no_report_gives_nothing() -> None:
    report = read_report(fixture("auto-reply.eml"))
    assert report.kind == "other" and report.events == []


def test_a_success_notification_gives_nothing() -> None:
    delivered = (
        fixture("dsn-postfix-user-unknown.eml")
        .replace(b"Action: failed", b"Action: delivered")
        .replace(b"Status: 5.1.1", b"Status: 2.0.0")
    )
    report = read_report(delivered)
    assert report.kind == "delivery-status" and report.events == []


def test_a_broken_report_is_unreadable_with_the_reason() -> None:
    with pytest.raises(UnreadableReport, match="delivery-status part without fields"):
        read_report(fixture("dsn-broken.eml"))
    no_type = fixture("arf-abuse.eml").replace(b"Feedback-Type: abuse\n", b"")
    with pytest.raises(UnreadableReport, match="without a Feedback-Type"):
        read_report(no_type)


def test_a_message_nested_past_any_depth_is_unreadable_not_a_crash() -> None:
    nested = fixture("dsn-postfix-user-unknown.eml")
    for _ in range(5000):
        nested = b"Content-Type: message/rfc822\n\n" + nested
    with pytest.raises(UnreadableReport):
        read_report(nested)


def test_several_recipients_in_one_notification() -> None:
    two = fixture("dsn-postfix-user-unknown.eml").replace(
        b"\n--4F1A2C0123.1799301792/mx.papers.example.org\nContent-Description: Undelivered",
        b"\nFinal-Recipient: rfc822; full@example.net\nAction: failed\nStatus: 5.2.2\n"
        b"Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\n\n"
        b"--4F1A2C0123.1799301792/mx.papers.example.org\nContent-Description: Undelivered",
    )
    events = read_report(two).events
    assert [(e.recipient, e.kind) for e in events] == [
        ("gone@example.net", HARD),
        ("full@example.net", HARD),
    ]
    assert len({event.key for event in events}) == 2


@pytest.mark.parametrize(
    ("status", "diagnostic", "kind"),
    [
        ("5.1.1", "smtp; 550 5.1.1 user unknown", HARD),
        ("5.2.1", "smtp; 550 5.2.1 mailbox disabled", HARD),
        ("5.0.0", "smtp; 550 5.1.1 <x@example.org>: Recipient address rejected", HARD),
        ("5.0.0", "smtp; 550 Requested action not taken: mailbox unavailable", HARD),
        ("5.0.0", "smtp; 553 sorry, that domain isn't in my list of allowed rcpthosts", HARD),
        ("5.7.1", "smtp; 554 5.7.1 <x@example.org>: Relay access denied", BLOCKED),
        ("5.0.0", "smtp; 550 5.7.1 Message rejected as spam", BLOCKED),
        ("5.7.0", "smtp; 530 5.7.0 Authentication required", BLOCKED),
        ("5.4.4", "dns; Host or domain name not found", BLOCKED),
        ("5.3.4", "smtp; 552 5.3.4 Message size exceeds fixed limit", BLOCKED),
        ("5.0.0", "X-Postfix; host [203.0.113.5] said: 554 go away", BLOCKED),
        ("4.4.7", "delivery time expired", SOFT),
        ("4.2.2", "smtp; 452 4.2.2 Mailbox full", SOFT),
        ("2.0.0", "smtp; 250 ok", None),
    ],
)
def test_only_a_permanent_failure_about_the_mailbox_is_a_hard_bounce(
    status: str, diagnostic: str, kind: DeliveryEventKind | None
) -> None:
    assert failure_kind(status, diagnostic) is kind


def test_a_tagged_return_path_names_its_digest_and_cannot_be_forged() -> None:
    tagged = tagged_return_path("bounces@papers.example.org", SECRET, 1234)
    assert tagged.startswith("bounces+1234-") and tagged.endswith("@papers.example.org")
    assert len(tagged.partition("@")[0]) <= 64

    def named(address: str, secret: str = SECRET) -> int | None:
        return digest_id_from_return_path(
            address, return_path="bounces@papers.example.org", secret_key=secret
        )

    assert named(tagged) == 1234
    assert named(f"<{tagged}>") == 1234
    assert named(f"Paperboy <{tagged.upper()}>") == 1234  # mail systems may fold the case
    assert named(tagged.replace("1234-", "1235-")) is None  # another digest, same MAC
    assert named(tagged, secret="another-secret-key-0123456789") is None
    assert named(tagged.replace("papers.example.org", "evil.example")) is None
    assert named("bounces@papers.example.org") is None
    assert named("bounces+garbage@papers.example.org") is None


def test_a_digest_message_id_names_its_digest_on_our_domain_only() -> None:
    value = digest_message_id(77, "0123456789abcdef0123456789abcdef", "papers.example.org")
    assert value == "<digest.77.0123456789ab@papers.example.org>"
    named = read_digest_message_id(value, domain="papers.example.org")
    assert named is not None and (named.digest_id, named.public_id_prefix) == (77, "0123456789ab")
    # Mailgun reports it without angle brackets.
    assert read_digest_message_id(value.strip("<>"), domain="PAPERS.example.org") == named
    assert read_digest_message_id(value, domain="other.example") is None
    assert read_digest_message_id("<1234@papers.example.org>", domain="papers.example.org") is None


def test_digests_go_out_from_a_tagged_return_path_and_other_mail_from_the_bare_one() -> None:
    from app.mail.message import Mailer
    from tests.conftest import isolated_settings

    plain = Mailer(isolated_settings(mail_from="Paperboy <digest@papers.example.org>"))
    assert plain.envelope_sender(5) == plain.envelope_sender() == "digest@papers.example.org"
    tagged = Mailer(
        isolated_settings(
            mail_from="Paperboy <digest@papers.example.org>",
            return_path="bounces@papers.example.org",
            secret_key=SECRET,
        )
    )
    assert tagged.envelope_sender() == "bounces@papers.example.org"  # signup mail
    assert tagged.envelope_sender(5) == tagged_return_path("bounces@papers.example.org", SECRET, 5)
