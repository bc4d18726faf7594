"""What a mail server's answer means, declared once: accepted, try again later, a hard bounce of
the recipient, or a refusal about us. Every transport and the delivery engine read it from here.

Only a permanent failure about the recipient's mailbox is a bounce, the one verdict that counts
against a subscriber. The enhanced status code (RFC 3463, `5.1.1`) says what a refusal is about;
where a server sends none (or the undefined `5.0.0`), the basic code and the reply's context do:
the command it answers, and words that name a cause on our side (relaying, authentication,
policy). Everything else that is permanent (relay denied, authentication required, our sender
refused, policy, a mail system or protocol failure, our message's content) is about us: the
digest waits and the subscriber is untouched, because fixing our configuration fixes it.

Imports nothing of Paperboy's."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Verdict(enum.StrEnum):
    ACCEPTED = "accepted"
    TRY_LATER = "try_later"  # 4xx, a lost connection, a timeout
    REFUSED = "refused"  # for good, by the recipient's mailbox: a hard bounce
    REFUSED_US = "refused_us"  # for good, but about us (relay, auth, policy, system): not a bounce


class Stage(enum.Enum):
    """The part of the exchange a reply answers: its context."""

    SESSION = "session"  # greeting, EHLO, STARTTLS, AUTH
    SENDER = "sender"  # MAIL FROM
    RECIPIENT = "recipient"  # RCPT TO
    MESSAGE = "message"  # DATA, and the reply to the message itself


@dataclass(frozen=True, slots=True)
class EnhancedCode:
    """class.subject.detail (RFC 3463), e.g. 5.7.1: permanent; security or policy; refused."""

    kind: int
    subject: int
    detail: int

    def __str__(self) -> str:
        return f"{self.kind}.{self.subject}.{self.detail}"


ENHANCED_CODE = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")

# The rule. Enhanced-code subjects about the recipient's mailbox (RFC 3463 §3.2, §3.3) ...
MAILBOX_SUBJECTS = {1: "addressing", 2: "mailbox status"}
# ... except the details of addressing that are about our own address.
OUR_ADDRESS_DETAILS = {(1, 7): "bad sender's address syntax", (1, 8): "bad sender's domain"}
# The other subjects are about us: 3 mail system, 4 network and routing, 5 protocol, 6 message
# content, 7 security or policy. Subject 0 (undefined) says nothing: the basic code decides.

# Basic codes about the recipient's mailbox when they answer RCPT (RFC 5321 §4.2.3; 556 is a
# domain that accepts no mail, RFC 7504) ...
MAILBOX_REPLIES = {
    550: "mailbox unavailable",
    551: "user not local",
    553: "mailbox name not allowed",
    556: "domain does not accept mail",
}
# ... unless the text names a cause on our side: servers without enhanced codes say
# "550 relay not permitted" or "550 authentication required".
ABOUT_US_WORDS = re.compile(
    r"relay|authenticat|\bauth\b|policy|spam|\bblock|blacklist|blocklist|\brbl\b|\bspf\b"
    r"|\bdkim\b|\bdmarc\b|reputation|not permitted|access denied",
    re.IGNORECASE,
)


def enhanced_code(code: int, message: str) -> EnhancedCode | None:
    """The enhanced status code at the start of a reply's text, when its class agrees with the
    basic code (RFC 2034: a 5xx reply carries a 5.x.x code); None otherwise."""
    found = ENHANCED_CODE.match(message.lstrip())
    if found is None or int(found[1]) != code // 100:
        return None
    return EnhancedCode(int(found[1]), int(found[2]), int(found[3]))


def classify_reply(code: int, message: str, stage: Stage) -> Verdict:
    """What a server's reply to one command means for the digest and its subscriber."""
    if 200 <= code < 400:
        return Verdict.ACCEPTED
    if code < 500:
        return Verdict.TRY_LATER
    if stage in (Stage.SESSION, Stage.SENDER):
        return Verdict.REFUSED_US  # before any recipient is named, a refusal can only be of us
    enhanced = enhanced_code(code, message)
    if enhanced is not None and enhanced.subject != 0:
        if (enhanced.subject, enhanced.detail) in OUR_ADDRESS_DETAILS:
            return Verdict.REFUSED_US
        return Verdict.REFUSED if enhanced.subject in MAILBOX_SUBJECTS else Verdict.REFUSED_US
    about_the_mailbox = (
        stage is Stage.RECIPIENT
        and code in MAILBOX_REPLIES
        and ABOUT_US_WORDS.search(message) is None
    )
    # Once RCPT has been accepted, a bare refusal of the message is about its content.
    return Verdict.REFUSED if about_the_mailbox else Verdict.REFUSED_US
