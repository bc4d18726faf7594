"""What a reported delivery failure means for the subscriber, read with the one reply rule of
`app.mail.replies`: a failure reported after sending (a DSN's Status and Diagnostic-Code, a
provider's code and message) is classified as the same reply at RCPT would have been. Only a
permanent failure about the recipient's mailbox is a hard bounce; a permanent refusal about us
is `BLOCKED` (the digest failed, the subscriber is not to blame); a 4.x.x failure is soft."""

from __future__ import annotations

import re

from app.mail.replies import ENHANCED_CODE, Stage, Verdict, classify_reply, enhanced_code
from app.models import DeliveryEventKind

# At the start of a diagnostic ("smtp; 550 ..."): later numbers may be addresses or sizes.
REPLY_CODE = re.compile(r"^\s*(?:[\w-]+;\s*)?(?P<code>[245]\d\d)\b")
# A report with a status and no reply code reads as the generic "transaction failed" of its
# class: 554 names no mailbox, so only the status's own subject can make it a bounce.
GENERIC_REPLY = 54
KIND_OF_VERDICT = {
    Verdict.ACCEPTED: None,
    Verdict.TRY_LATER: DeliveryEventKind.SOFT_BOUNCE,
    Verdict.REFUSED: DeliveryEventKind.HARD_BOUNCE,
    Verdict.REFUSED_US: DeliveryEventKind.BLOCKED,
}


def failure_kind(status: str | None, diagnostic: str | None = None) -> DeliveryEventKind | None:
    """The kind of a failure reported with `status` (an enhanced code, or a reply code) and the
    remote server's `diagnostic` text; None when neither says it failed (2.x.x)."""
    reply = REPLY_CODE.match(diagnostic or "") or REPLY_CODE.match(status or "")
    reported = ENHANCED_CODE.search(status or "")
    if reply is not None:
        code = int(reply["code"])
        text = (diagnostic or "")[reply.end() :].strip() if reply.string == diagnostic else ""
    elif reported is not None:
        code = int(reported[1]) * 100 + GENERIC_REPLY
        text = diagnostic or ""
    else:
        return None
    stated = enhanced_code(code, text)
    if (stated is None or stated.subject == 0) and reported is not None and reported[2] != "0":
        text = f"{reported[0]} {text}"  # the report's Status refines a reply that names no cause
    return KIND_OF_VERDICT[classify_reply(code, text, Stage.RECIPIENT)]
