"""The digest as a mail: renders digest views (`app.digests.views`) with Jinja (autoescaped HTML
whose CSS `app.mail.templates` inlined into the templates, and plain text), and builds the
RFC 5322 message with every header a mailbox provider expects (List-Unsubscribe one-click,
List-Id, Message-ID on our own domain), optionally DKIM-signed. The message is written by hand,
not with the email package (see `Mailer.message`). Nothing from a paper reaches a header;
subscriber topics do, in the Subject, only after control characters are stripped, and
`encoded_header` below RFC 2047-encodes a non-ASCII Subject itself (base64 encoded-words of whole
characters). Only the From display name is encoded by the email package (`formataddr`)."""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass, replace
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from functools import cached_property
from pathlib import Path

import dkim

from app.config import Settings
from app.digests.views import DigestView
from app.mail.paper_rows import PaperRows, RenderedPart, quoted_printable
from app.mail.return_path import digest_message_id, tagged_return_path
from app.mail.templates import mail_environment
from app.models import DigestFrequency
from app.subscribers.tokens import Purpose, make_token

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
SUBJECT_TOPICS = 2
SUBJECT_CHARS = 140
ENCODED_WORD_BYTES = 45
HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
DKIM_HEADERS = [
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
]


@dataclass(frozen=True, slots=True)
class RenderedDigest:
    subject: str
    links: Links
    # Each part as a shell and its paper rows (whose encoding is cached, see app.mail.paper_rows).
    html_part: RenderedPart
    text_part: RenderedPart

    @property
    def html(self) -> str:
        return self.html_part.content

    @property
    def text(self) -> str:
        return self.text_part.content


def header_text(value: str) -> str:
    """Text safe for a header: no control characters (so no CRLF injection), spaces collapsed."""
    return " ".join(HEADER_UNSAFE.sub(" ", value).split())


def subject_for(view: DigestView) -> str:
    count = len(view.papers)
    day = f"{view.digest_date.day} {view.digest_date:%b}"
    if view.frequency is DigestFrequency.WEEKLY:
        day = f"week of {day}"
    noun = "paper" if count == 1 else "papers"
    matched: list[str] = []
    for paper in view.papers:
        if paper.matched_topic and paper.matched_topic not in matched:
            matched.append(paper.matched_topic)
    if not matched:
        return f"{count} trending {noun} — {day}"
    shown = ", ".join(header_text(topic) for topic in matched[:SUBJECT_TOPICS])
    if len(matched) > SUBJECT_TOPICS:
        shown += f" and {len(matched) - SUBJECT_TOPICS} more"
    if len(shown) > SUBJECT_CHARS:
        shown = shown[:SUBJECT_CHARS].rsplit(" ", 1)[0] + "…"
    return f"{count} new {noun} on {shown} — {day}"


@dataclass(frozen=True, slots=True)
class TopicLink:
    topic: str
    mute_url: str


@dataclass(frozen=True, slots=True)
class Links:
    preferences: str
    unsubscribe: str
    view_in_browser: str
    unsubscribe_mailto: str
    archive: str  # the reader's past digests
    # "Mute this topic", for each topic that brought papers into the digest.
    topics: tuple[TopicLink, ...] = ()


class Mailer:
    """Renders and builds digest messages for one configuration; cheap to share between tasks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.environment = mail_environment(TEMPLATES_DIR)
        self.paper_rows = PaperRows()
        self.domain = settings.sender_domain
        name, self.sender_address = parseaddr(settings.mail_from)
        self.from_header = formataddr((name, self.sender_address), charset="utf-8")

    @cached_property
    def dkim_key(self) -> bytes | None:
        if not (self.settings.dkim_selector and self.settings.dkim_private_key_path):
            return None
        return Path(self.settings.dkim_private_key_path).read_bytes()

    def links(self, view: DigestView) -> Links:
        secret, base = self.settings.secret_key, self.settings.base_url

        def token(purpose: Purpose, *subject: str) -> str:
            return make_token(secret, purpose, view.public_id, view.token_version, *subject)

        unsubscribe = token(Purpose.UNSUBSCRIBE)
        digests = f"{base}/digests/{token(Purpose.DIGEST)}"
        mailto = self.settings.unsubscribe_mailto or self.sender_address
        return Links(
            preferences=f"{base}/preferences/{token(Purpose.PREFERENCES)}",
            unsubscribe=f"{base}/unsubscribe/{unsubscribe}",
            view_in_browser=f"{digests}/{view.digest_date.isoformat()}",
            # A token is URL-safe already (base64url and dots): only the space needs quoting.
            unsubscribe_mailto=f"mailto:{mailto}?subject=unsubscribe%20{unsubscribe}",
            archive=digests,
            topics=tuple(
                TopicLink(topic, f"{base}/mute/{token(Purpose.MUTE, topic)}")
                for topic in view.topics
            ),
        )

    def with_feedback_links(self, view: DigestView) -> DigestView:
        """The view with each paper's "more / less like this" links for its reader (the paper
        views themselves are shared between digests, so they are copied)."""
        secret, base = self.settings.secret_key, self.settings.base_url

        # One signed token for the reader; the paper and the signal follow it in the path.
        token = make_token(secret, Purpose.FEEDBACK, view.public_id, view.token_version)

        def feedback_url(paper_id: int, signal: str) -> str:
            return f"{base}/feedback/{token}/{paper_id}/{signal}"

        papers = [
            replace(
                paper,
                more_url=feedback_url(paper.paper_id, "more"),
                less_url=feedback_url(paper.paper_id, "less"),
            )
            for paper in view.papers
        ]
        return replace(view, papers=papers)

    def render(self, view: DigestView, *, for_browser: bool = False) -> RenderedDigest:
        links = self.links(view)
        subject = subject_for(view)
        view = self.with_feedback_links(view)
        context = {
            "digest": view,
            "links": links,
            "subject": subject,
            "day": f"{view.digest_date:%A}, {view.digest_date.day} {view.digest_date:%B %Y}",
            "for_browser": for_browser,
        }
        html_rows: list[str] = []
        text_rows: list[str] = []
        html = self.environment.get_template("email/digest.html").render(
            context, rows_once=self.paper_rows.rows_once("html", html_rows)
        )
        text = self.environment.get_template("email/digest.txt").render(
            context, rows_once=self.paper_rows.rows_once("text", text_rows)
        )
        return RenderedDigest(
            subject,
            links,
            self.paper_rows.part(html, html_rows),
            self.paper_rows.part(text, text_rows),
        )

    def message_id(self, view: DigestView) -> str:
        if view.digest_id is None:
            return make_msgid(domain=self.domain)
        return digest_message_id(view.digest_id, view.public_id.hex, self.domain)

    def envelope_sender(self, digest_id: int | None = None) -> str:
        """MAIL FROM, where bounces go: `PAPERBOY_RETURN_PATH`, tagged with the digest for a
        digest (`app.mail.return_path`); the From address when no return path is set."""
        return_path = self.settings.return_path
        if return_path is None:
            return self.sender_address
        if digest_id is None:
            return return_path
        return tagged_return_path(return_path, self.settings.secret_key, digest_id)

    def message(self, view: DigestView, rendered: RenderedDigest | None = None) -> OutgoingMail:
        """The wire form of a digest: multipart/alternative (text, then HTML), both parts
        quoted-printable UTF-8, DKIM-signed when a key is configured.

        Written directly rather than through `email.message.EmailMessage`: the stdlib's header
        registry and pure-Python quoted-printable cost ~3 ms a message, more than rendering and
        sending together; `binascii` encodes in C and the headers here are few and fixed. The
        tests read every message back with the stdlib parser."""
        rendered = rendered or self.render(view)
        links = rendered.links
        list_headers = [
            ("List-Id", f"Paperboy digest <digest.{self.domain}>"),
            ("List-Unsubscribe", f"<{links.unsubscribe}>, <{links.unsubscribe_mailto}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("Precedence", "bulk"),
        ]
        return self._mime(
            view.email,
            rendered.subject,
            self.paper_rows.encode(rendered.text_part),
            self.paper_rows.encode(rendered.html_part),
            self.message_id(view),
            list_headers,
        )

    def notice(
        self,
        email: str,
        *,
        subject: str,
        heading: str,
        lines: list[str],
        button_label: str,
        button_url: str,
        footnote: str,
    ) -> OutgoingMail:
        """A one-off mail to one address (confirmation link, already-subscribed reminder)."""
        context = {
            "subject": subject,
            "heading": heading,
            "lines": lines,
            "button_label": button_label,
            "button_url": button_url,
            "footnote": footnote,
        }
        html = self.environment.get_template("email/notice.html").render(context)
        text = self.environment.get_template("email/notice.txt").render(context)
        return self._mime(
            email,
            subject,
            quoted_printable(text),
            quoted_printable(html),
            make_msgid(domain=self.domain),
            [],
        )

    def _mime(
        self,
        email: str,
        subject: str,
        text: bytes,
        html: bytes,
        message_id: str,
        extra_headers: list[tuple[str, str]],
    ) -> OutgoingMail:
        """The message around two bodies already encoded as quoted-printable."""
        boundary = f"=_paperboy_{secrets.token_hex(12)}"  # "=_" never occurs in QP output
        headers = [
            ("From", self.from_header),
            ("To", header_text(email)),
            ("Subject", encoded_header(header_text(subject))),
            ("Date", formatdate(usegmt=True)),
            ("Message-ID", message_id),
            *extra_headers,
            ("Auto-Submitted", "auto-generated"),
            ("MIME-Version", "1.0"),
            ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        ]
        head = "".join(f"{name}: {value}\r\n" for name, value in headers).encode()
        parts = [
            _text_part(text, "text/plain", boundary),
            _text_part(html, "text/html", boundary),
            f"--{boundary}--\r\n".encode(),
        ]
        data = head + b"\r\n" + b"".join(parts)
        return OutgoingMail(message_id, self._signed(data))

    def _signed(self, data: bytes) -> bytes:
        key = self.dkim_key
        if key is None:
            return data
        domain = self.settings.dkim_domain or self.domain
        signature = dkim.sign(
            data,
            str(self.settings.dkim_selector).encode(),
            domain.encode(),
            key,
            include_headers=DKIM_HEADERS,
        )
        return bytes(signature) + data


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    message_id: str
    data: bytes


def encoded_header(value: str) -> str:
    """RFC 2047 base64 encoded-words of at most 45 UTF-8 bytes each (a 75-character word), never
    splitting a character, folded onto continuation lines."""
    if value.isascii():
        return value
    data = value.encode()
    words: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + ENCODED_WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # inside a character: cut before it
            end -= 1
        words.append(f"=?utf-8?b?{base64.b64encode(data[start:end]).decode()}?=")
        start = end
    return "\r\n ".join(words)


def _text_part(body: bytes, content_type: str, boundary: str) -> bytes:
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    head = (
        f'--{boundary}\r\nContent-Type: {content_type}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    return head.encode() + body
