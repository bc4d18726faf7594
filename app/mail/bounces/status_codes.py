"""What a reported delivery failure means for the subscriber, from its status codes: the
enhanced status code (RFC 3463, `5.1.1`) where there is one, else the SMTP reply code (`550`).

Only a permanent failure about the recipient's mailbox is a hard bounce of that subscriber:
X.1.x (addressing: no such user, bad domain) and X.2.x (the mailbox: disabled, full), or a plain
550/551/552/553 that no 5.7 code qualifies. A permanent refusal about us (5.7.x policy, spam,
authentication, relay; 5.3.x, 5.4.x, 5.5.x, 5.6.x system, network, protocol, content) is
`BLOCKED`: the digest failed, and the subscriber is not to blame. A 4.x.x failure is soft."""

from __future__ import annotations

import re

from app.models import DeliveryEventKind

ENHANCED_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# At the start of a diagnostic ("smtp; 550 ..."): later numbers may be addresses or sizes.
REPLY_CODE = re.compile(r"^\s*(?:[\w-]+;\s*)?(?P<code>(?P<category>[245])\d\d)\b")
MAILBOX_REPLIES = ("550", "551", "552", "553")
MAILBOX_SUBJECTS = ("1", "2")  # X.1.x addressing, X.2.x mailbox


def failure_kind(status: str | None, diagnostic: str | None = None) -> DeliveryEventKind | None:
    """The kind of a failure reported with `status` (an enhanced code, or a reply code) and the
    remote server's `diagnostic` text; None when neither says it failed (2.x.x)."""
    text = " ".join(part for part in (status, diagnostic) if part)
    codes = [match.groups() for match in ENHANCED_CODE.finditer(text)]
    # A generic X.0.0 status is refined by a specific code in the diagnostic, if any.
    specific = [code for code in codes if code[1:] != ("0", "0")]
    enhanced = specific[0] if specific else codes[0] if codes else None
    reply = REPLY_CODE.match(diagnostic or "") or REPLY_CODE.match(status or "")
    category = enhanced[0] if enhanced else reply["category"] if reply else None
    if category == "4":
        return DeliveryEventKind.SOFT_BOUNCE
    if category != "5":
        return None
    if any(code[0] == "5" and code[1] == "7" for code in codes):
        return DeliveryEventKind.BLOCKED
    if enhanced is not None and enhanced[1:] != ("0", "0"):
        if enhanced[1] in MAILBOX_SUBJECTS:
            return DeliveryEventKind.HARD_BOUNCE
        return DeliveryEventKind.BLOCKED
    if reply is not None and reply["code"] in MAILBOX_REPLIES:
        return DeliveryEventKind.HARD_BOUNCE
    return DeliveryEventKind.BLOCKED
