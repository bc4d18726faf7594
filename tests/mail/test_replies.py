"""The reply rule on its own: only a permanent failure about the recipient's mailbox is a hard
bounce; a refusal about us (relay, authentication, policy, system, protocol, our sender) never
is, whatever its basic code; replies as real servers word them (Postfix, Exim, Exchange,
Gmail, Microsoft 365)."""

from __future__ import annotations

import pytest

from app.mail.replies import EnhancedCode, Stage, Verdict, classify_reply, enhanced_code

BOUNCE, US, LATER = Verdict.REFUSED, Verdict.REFUSED_US, Verdict.TRY_LATER
RCPT, DATA, MAIL, SESSION = Stage.RECIPIENT, Stage.MESSAGE, Stage.SENDER, Stage.SESSION


@pytest.mark.parametrize(
    ("code", "message", "stage", "verdict"),
    [
        # The recipient's mailbox: a bounce.
        (550, "5.1.1 <ann@example.org>: Recipient address rejected: User unknown", RCPT, BOUNCE),
        (550, "5.1.1 The email account that you tried to reach does not exist.", RCPT, BOUNCE),
        (550, "5.1.10 RESOLVER.ADR.RecipientNotFound; not found", RCPT, BOUNCE),
        (553, "5.1.3 Bad recipient address syntax", RCPT, BOUNCE),
        (552, "5.2.2 Mailbox full", RCPT, BOUNCE),
        (550, "5.2.1 Mailbox disabled", RCPT, BOUNCE),
        (550, "5.1.1 No such user", DATA, BOUNCE),  # a server that checks after DATA
        (550, "Requested action not taken: mailbox unavailable", RCPT, BOUNCE),
        (550, "5.0.0 Mailbox unavailable", RCPT, BOUNCE),  # undefined subject: the basic code
        (551, "User not local; please try <ann@elsewhere.example>", RCPT, BOUNCE),
        (553, "Requested action not taken: mailbox name not allowed", RCPT, BOUNCE),
        (556, "Domain does not accept mail", RCPT, BOUNCE),
        # About us: relay, authentication, policy, system, protocol, content. Never a bounce.
        (554, "5.7.1 <ann@example.org>: Relay access denied", RCPT, US),
        (554, "5.7.1 Relaying denied", RCPT, US),
        (550, "5.7.1 Unable to relay", RCPT, US),
        (550, "5.7.1 Message rejected by policy", RCPT, US),
        (550, "5.7.1 Service unavailable; client host blocked using zen.spamhaus.org", RCPT, US),
        (530, "5.7.0 Authentication required", RCPT, US),
        (530, "Authentication required", RCPT, US),
        (550, "relay not permitted", RCPT, US),  # Exim, without enhanced codes
        (550, "5.0.0 Relaying denied", RCPT, US),
        (550, "Authentication required for relay", RCPT, US),
        (550, "5.1.7 Invalid sender address syntax", RCPT, US),  # our address, not theirs
        (553, "5.1.8 Sender domain does not exist", RCPT, US),
        (552, "5.3.4 Message size exceeds fixed limit", DATA, US),
        (554, "5.4.6 Routing loop detected", RCPT, US),
        (501, "5.5.4 Syntax error in parameters", RCPT, US),
        (500, "Command unrecognized", RCPT, US),
        (554, "5.6.0 Message content rejected", DATA, US),
        (550, "Message rejected", DATA, US),  # after RCPT was accepted: about the message
        (554, "Transaction failed", RCPT, US),
        (552, "Requested mail action aborted: exceeded storage allocation", RCPT, US),
        # Before any recipient is named, a refusal can only be of us.
        (550, "5.1.1 Sender address rejected", MAIL, US),
        (553, "Sender address rejected: not owned by user", MAIL, US),
        (530, "5.7.0 Must issue a STARTTLS command first", MAIL, US),
        (535, "5.7.8 Authentication credentials invalid", SESSION, US),
        (554, "No SMTP service here", SESSION, US),
        # Transient, wherever it comes.
        (451, "4.7.1 Greylisted, please try again later", RCPT, LATER),
        (421, "4.3.2 Service shutting down", DATA, LATER),
        (450, "4.2.1 Mailbox busy", RCPT, LATER),
        (452, "4.5.3 Too many recipients", RCPT, LATER),
        (454, "4.7.0 TLS not available due to local problem", SESSION, LATER),
        (250, "2.0.0 OK queued", DATA, Verdict.ACCEPTED),
    ],
)
def test_each_reply_is_classified_by_its_enhanced_code_and_context(
    code: int, message: str, stage: Stage, verdict: Verdict
) -> None:
    assert classify_reply(code, message, stage) is verdict


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (550, "5.1.1 No such user", EnhancedCode(5, 1, 1)),
        (550, "  5.7.26 Unauthenticated email is not accepted", EnhancedCode(5, 7, 26)),
        (451, "4.7.1 Greylisted", EnhancedCode(4, 7, 1)),
        (550, "4.1.1 class disagrees with the basic code", None),  # RFC 2034: ignored
        (550, "5.1.1.1 not an enhanced code", None),
        (550, "No such user 5.1.1", None),  # it must open the text
        (550, "", None),
    ],
)
def test_enhanced_codes_are_read_only_where_rfc_3463_puts_them(
    code: int, message: str, expected: EnhancedCode | None
) -> None:
    assert enhanced_code(code, message) == expected
