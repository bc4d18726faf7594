"""The digest as a mail: loads frozen digests (or a preview's plan) into views, renders them with
Jinja (autoescaped HTML with inlined CSS, and plain text), and builds the RFC 5322 message with
every header a mailbox provider expects (List-Unsubscribe one-click, List-Id, Message-ID on our own
domain), optionally DKIM-signed. Nothing from a paper reaches a header; subscriber topics do, and
only after control characters are stripped and the text is RFC 2047-encoded by the email package."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import textwrap
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from functools import cached_property, lru_cache
from pathlib import Path
from urllib.parse import quote, quote_plus

import css_inline
import dkim
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.localtime import zone
from app.models import Digest, DigestItem, Paper, Subscriber, SubscriberStatus
from app.tokens import Purpose, make_token

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
ARXIV_TITLE_SEARCH = "https://arxiv.org/search/?searchtype=title&query="
SUMMARY_CHARS = 320
MAX_AUTHORS = 3
SUBJECT_TOPICS = 2
SUBJECT_CHARS = 140
ENCODED_WORD_BYTES = 45
TEXT_WIDTH = 72
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\\$(])")
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
class PaperView:
    """One paper in one digest: the paper's card, its rank and why it was chosen."""

    rank: int
    card: PaperCard
    matched_topic: str | None
    matched_terms: list[str]


@dataclass(slots=True)
class DigestView:
    digest_id: int | None
    digest_date: date
    subscriber_id: int
    email: str
    timezone: str
    public_id: uuid.UUID
    token_version: int
    topics: list[str]
    papers: list[PaperView] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RenderedDigest:
    subject: str
    html: str
    text: str
    links: Links | None


def shorten_authors(authors: Sequence[str] | None) -> str:
    names = [name for name in (authors or []) if name]
    if len(names) <= MAX_AUTHORS + 1:
        return ", ".join(names)
    return ", ".join(names[:MAX_AUTHORS]) + " et al."


@lru_cache(maxsize=8192)
def summary_of(ai_summary: str | None, abstract: str) -> tuple[str, str]:
    """A paper's summary, and the same wrapped for the text part (papers repeat across digests,
    so each is worked out once)."""
    summary = summarise(ai_summary, abstract)
    wrapped = textwrap.fill(summary, TEXT_WIDTH, initial_indent="   ", subsequent_indent="   ")
    return summary, wrapped


def summarise(ai_summary: str | None, abstract: str, limit: int = SUMMARY_CHARS) -> str:
    """The source's own summary when it has one, else the abstract's first sentences, cut at a
    sentence boundary (or, for one over-long sentence, at a word, with an ellipsis)."""
    if ai_summary:
        return ai_summary
    summary = ""
    for sentence in SENTENCE_END.split(abstract.strip()):
        candidate = f"{summary} {sentence}".strip()
        if len(candidate) > limit:
            break
        summary = candidate
    if summary:
        return summary
    return abstract[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"


@dataclass(frozen=True, slots=True)
class PaperCard:
    """What a digest shows of a paper whoever reads it; worked out once per paper and batch."""

    title: str
    url: str | None
    abstract_url: str | None
    pdf_url: str | None
    code_url: str | None
    authors: str
    summary: str
    wrapped_summary: str
    upvotes: int | None
    comments: int | None


def paper_card(paper: Paper) -> PaperCard:
    abstract_url = f"https://arxiv.org/abs/{paper.arxiv_id}" if paper.arxiv_id else None
    summary, wrapped = summary_of(paper.ai_summary, paper.abstract)
    return PaperCard(
        title=paper.title,
        # Papers from the papers page carry no link: an arXiv title search still finds them.
        url=paper.url or abstract_url or f"{ARXIV_TITLE_SEARCH}{quote_plus(paper.title)}",
        abstract_url=abstract_url,
        pdf_url=paper.pdf_url,
        code_url=paper.github_repo,
        authors=shorten_authors(paper.authors),
        summary=summary,
        wrapped_summary=wrapped,
        upvotes=paper.upvotes,
        comments=paper.comments,
    )


def _digest_view(
    digest_id: int | None,
    digest_date: date,
    subscriber: Subscriber,
    items: Iterable[tuple[int, int, str | None, list[str]]],
    cards: dict[int, PaperCard],
) -> DigestView:
    return DigestView(
        digest_id=digest_id,
        digest_date=digest_date,
        subscriber_id=subscriber.id,
        email=subscriber.email,
        timezone=subscriber.timezone,
        public_id=subscriber.public_id,
        token_version=subscriber.token_version,
        topics=list(subscriber.topics or []),
        papers=[
            PaperView(rank, cards[paper_id], topic, list(terms or []))
            for paper_id, rank, topic, terms in sorted(items, key=lambda item: item[1])
            if paper_id in cards
        ],
    )


async def load_digest_views(
    digest_ids: Sequence[int], *, session: AsyncSession
) -> list[DigestView]:
    """Views of stored digests, in the order asked, with two queries whatever their number."""
    if not digest_ids:
        return []
    rows = (
        await session.execute(
            select(Digest.id, Digest.digest_date, Subscriber)
            .join(Subscriber, Subscriber.id == Digest.subscriber_id)
            .where(Digest.id.in_(digest_ids))
        )
    ).all()
    items = (
        await session.execute(
            select(
                DigestItem.digest_id,
                DigestItem.paper_id,
                DigestItem.rank,
                DigestItem.matched_topic,
                DigestItem.matched_terms,
            ).where(DigestItem.digest_id.in_(digest_ids))
        )
    ).all()
    cards = await _paper_cards({item.paper_id for item in items}, session=session)
    by_digest: dict[int, list[tuple[int, int, str | None, list[str]]]] = {}
    for item in items:
        by_digest.setdefault(item.digest_id, []).append(
            (item.paper_id, item.rank, item.matched_topic, item.matched_terms)
        )
    views = {
        digest_id: _digest_view(
            digest_id, digest_date, subscriber, by_digest.get(digest_id, []), cards
        )
        for digest_id, digest_date, subscriber in rows
    }
    return [views[digest_id] for digest_id in digest_ids if digest_id in views]


async def planned_digest_view(
    subscriber: Subscriber,
    digest_date: date,
    items: Iterable[tuple[int, int, str | None, list[str]]],
    *,
    session: AsyncSession,
) -> DigestView:
    """A view of a digest that was planned but not stored (previews)."""
    chosen = list(items)
    cards = await _paper_cards({paper_id for paper_id, *_ in chosen}, session=session)
    return _digest_view(None, digest_date, subscriber, chosen, cards)


async def _paper_cards(paper_ids: set[int], *, session: AsyncSession) -> dict[int, PaperCard]:
    papers = await session.scalars(select(Paper).where(Paper.id.in_(paper_ids)))
    return {paper.id: paper_card(paper) for paper in papers}


def header_text(value: str) -> str:
    """Text safe for a header: no control characters (so no CRLF injection), spaces collapsed."""
    return " ".join(HEADER_UNSAFE.sub(" ", value).split())


def subject_for(view: DigestView) -> str:
    count = len(view.papers)
    day = f"{view.digest_date.day} {view.digest_date:%b}"
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
class Links:
    preferences: str
    unsubscribe: str
    view_in_browser: str
    unsubscribe_mailto: str


class Mailer:
    """Renders and builds digest messages for one configuration; cheap to share between tasks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.environment = Environment(
            loader=FileSystemLoader(TEMPLATES_DIR),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self.inliner = css_inline.CSSInliner(
            keep_at_rules=True, minify_css=True, load_remote_stylesheets=False
        )
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

        def token(purpose: Purpose) -> str:
            return make_token(secret, purpose, view.public_id, view.token_version)

        unsubscribe = token(Purpose.UNSUBSCRIBE)
        mailto = self.settings.unsubscribe_mailto or self.sender_address
        return Links(
            preferences=f"{base}/preferences/{token(Purpose.PREFERENCES)}",
            unsubscribe=f"{base}/unsubscribe/{unsubscribe}",
            view_in_browser=f"{base}/digests/{token(Purpose.DIGEST)}/{view.digest_date.isoformat()}",
            unsubscribe_mailto=f"mailto:{mailto}?subject={quote('unsubscribe ' + unsubscribe)}",
        )

    def render(self, view: DigestView, *, for_browser: bool = False) -> RenderedDigest:
        links = self.links(view)
        subject = subject_for(view)
        context = {
            "digest": view,
            "links": links,
            "subject": subject,
            "day": f"{view.digest_date:%A}, {view.digest_date.day} {view.digest_date:%B %Y}",
            "for_browser": for_browser,
        }
        html = self.environment.get_template("email/digest.html").render(context)
        text = self.environment.get_template("email/digest.txt").render(context)
        return RenderedDigest(subject, self.inliner.inline(html), text, links)

    def message_id(self, view: DigestView) -> str:
        # The same digest always gets the same Message-ID, so a mail client folds the rare
        # duplicate (a resend after a crash) into one.
        if view.digest_id is None:
            return make_msgid(domain=self.domain)
        return f"<digest.{view.digest_id}.{view.public_id.hex[:12]}@{self.domain}>"

    def message(self, view: DigestView, rendered: RenderedDigest | None = None) -> OutgoingMail:
        """The wire form of a digest: multipart/alternative (text, then HTML), both parts
        quoted-printable UTF-8, DKIM-signed when a key is configured.

        Written directly rather than through `email.message.EmailMessage`: the stdlib's header
        registry and pure-Python quoted-printable cost ~3 ms a message, more than rendering and
        sending together; `binascii` encodes in C and the headers here are few and fixed. The
        tests read every message back with the stdlib parser."""
        rendered = rendered or self.render(view)
        links = rendered.links or self.links(view)
        list_headers = [
            ("List-Id", f"Paperboy digest <digest.{self.domain}>"),
            ("List-Unsubscribe", f"<{links.unsubscribe}>, <{links.unsubscribe_mailto}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("Precedence", "bulk"),
        ]
        return self._mime(view.email, rendered, self.message_id(view), list_headers)

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
        rendered = RenderedDigest(subject, self.inliner.inline(html), text, None)
        return self._mime(email, rendered, make_msgid(domain=self.domain), [])

    def _mime(
        self,
        email: str,
        rendered: RenderedDigest,
        message_id: str,
        extra_headers: list[tuple[str, str]],
    ) -> OutgoingMail:
        boundary = f"=_paperboy_{secrets.token_hex(12)}"  # "=_" never occurs in QP output
        headers = [
            ("From", self.from_header),
            ("To", header_text(email)),
            ("Subject", _encoded_header(header_text(rendered.subject))),
            ("Date", formatdate(usegmt=True)),
            ("Message-ID", message_id),
            *extra_headers,
            ("Auto-Submitted", "auto-generated"),
            ("MIME-Version", "1.0"),
            ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        ]
        head = "".join(f"{name}: {value}\r\n" for name, value in headers).encode()
        parts = [
            _text_part(rendered.text, "text/plain", boundary),
            _text_part(rendered.html, "text/html", boundary),
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


def _encoded_header(value: str) -> str:
    """RFC 2047 base64 encoded-words of at most 45 UTF-8 bytes each (a 75-character word), never
    splitting a character, folded onto continuation lines."""
    if value.isascii():
        return value
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for character in value:
        width = len(character.encode())
        if size + width > ENCODED_WORD_BYTES:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(character)
        size += width
    words.append("".join(chunk))
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(word.encode()).decode()}?=" for word in words)


def _text_part(content: str, content_type: str, boundary: str) -> bytes:
    normalised = content.replace("\r\n", "\n").encode("utf-8")
    body = binascii.b2a_qp(normalised, istext=True).replace(b"\n", b"\r\n")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    head = (
        f'--{boundary}\r\nContent-Type: {content_type}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    return head.encode() + body


class PreviewError(LookupError):
    pass


async def preview_digest_view(
    email: str, *, session: AsyncSession, settings: Settings, now: datetime, on_date: date | None
) -> DigestView:
    """The digest a subscriber got (or would get) on a date, writing nothing: the frozen one
    when it exists, else what compose would choose for them now."""
    address = email.strip().lower()
    subscriber = await session.scalar(
        select(Subscriber).where(func.lower(Subscriber.email) == address)
    )
    if subscriber is None:
        raise PreviewError(f"no subscriber with the address {email!r}")
    digest_date = on_date or now.astimezone(zone(subscriber.timezone)).date()
    digest_id = await session.scalar(
        select(Digest.id).where(
            Digest.subscriber_id == subscriber.id, Digest.digest_date == digest_date
        )
    )
    if digest_id is not None:
        return (await load_digest_views([digest_id], session=session))[0]
    # Imported here: ranking's numerical stack takes a second to load, and only previews and
    # compose need it, not every worker that sends mail.
    from app.digests import plan_digests

    if subscriber.status is not SubscriberStatus.ACTIVE:
        raise PreviewError(f"{email} is {subscriber.status.value}: no digest is composed for them")
    report = await plan_digests(
        session=session,
        now=now,
        on_date=digest_date,
        window=timedelta(days=settings.compose_window_days),
        max_candidates=settings.compose_max_candidates,
        threshold=settings.relevance_threshold,
        only_subscriber=subscriber.id,
    )
    plans = report.plans
    if not plans or not plans[0].items:
        raise PreviewError(f"no new paper qualifies for {email} on {digest_date}")
    items = [(i.paper_id, i.rank, i.matched_topic, i.matched_terms) for i in plans[0].items]
    return await planned_digest_view(subscriber, digest_date, items, session=session)
