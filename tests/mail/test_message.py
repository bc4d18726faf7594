"""The digest mail as a subscriber's mail client sees it: multipart with both parts, the exact
headers providers require, signed links that open the right subscriber, summaries cut at a
sentence, and hostile paper or topic text that never escapes into markup or headers."""

from __future__ import annotations

import base64
import email
import email.header
import re
import time
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import css_inline
import dkim
import lxml.html
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from itsdangerous import URLSafeTimedSerializer
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.digests.views import (
    DigestView,
    PreviewError,
    load_digest_views,
    preview_digest_view,
    shorten_authors,
    summarise,
)
from app.jobs import compose_job, ingest_job
from app.mail import paper_rows
from app.mail.message import TEMPLATES_DIR, Mailer, encoded_header, subject_for
from app.mail.paper_rows import quoted_printable
from app.mail.templates import TemplateInliningError, inline_template_source
from app.models import Digest, DigestFrequency, DigestItem, Paper, Subscriber
from app.subscribers.rules import Preferences, add_active_subscriber
from app.subscribers.tokens import LinkSerializer, Purpose, TokenError, make_token, read_token

Sessions = async_sessionmaker[AsyncSession]
DAY = date(2026, 11, 26)
HOSTILE_TITLE = (
    '<script>alert("x")</script> Mixture of Experts\r\nBcc: victim@example.org\rX-Evil: 1\n.'
)
HOSTILE_TOPIC = "mixture of experts\r\nBcc: victim@example.org"


@pytest.fixture
def mail_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "base_url": "https://papers.example.org",
            "mail_from": "Paperboy <digest@papers.example.org>",
            "secret_key": "test-secret-key-0123456789",
        }
    )


async def compose_for(sessions: Sessions, settings: Settings, sample_page: Path) -> int:
    await ingest_job(str(sample_page), session_factory=sessions, settings=settings)
    async with sessions() as session:
        subscriber = await add_active_subscriber(
            "ann@example.org",
            Preferences(["mixture of experts", "FPGA accelerators"], timezone="Europe/Berlin"),
            session=session,
        )
        await session.commit()
    await compose_job(session_factory=sessions, settings=settings, on_date=DAY)
    async with sessions() as session:
        return int(
            await session.scalar(select(Digest.id).where(Digest.subscriber_id == subscriber.id))
            or 0
        )


async def view_of(sessions: Sessions, digest_id: int) -> DigestView:
    async with sessions() as session:
        return (await load_digest_views([digest_id], session=session))[0]


def parse(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=default_policy)


def assert_crlf_lines(data: bytes) -> None:
    """The SMTP transport sends a message as it is, only dot-stuffed: every line ends in CRLF and
    no CR or LF stands alone."""
    assert data.endswith(b"\r\n")
    assert not re.search(rb"\r(?!\n)|(?<!\r)\n", data)


def links_in(html: str) -> list[str]:
    return re.findall(r'href="([^"]+)"', html)


async def test_digest_mail_has_both_parts_and_exact_headers(
    session_factory: Sessions, mail_settings: Settings, sample_page: Path
) -> None:
    digest_id = await compose_for(session_factory, mail_settings, sample_page)
    view = await view_of(session_factory, digest_id)
    mailer = Mailer(mail_settings)
    data = mailer.message(view).data
    assert_crlf_lines(data)
    message = parse(data)

    assert message["From"] == "Paperboy <digest@papers.example.org>"
    assert message["To"] == "ann@example.org"
    assert message["Subject"] == ("10 new papers on mixture of experts, FPGA accelerators — 26 Nov")
    weekly = replace(view, frequency=DigestFrequency.WEEKLY)
    assert subject_for(weekly) == (
        "10 new papers on mixture of experts, FPGA accelerators — week of 26 Nov"
    )
    assert (
        message["Message-ID"]
        == f"<digest.{digest_id}.{view.public_id.hex[:12]}@papers.example.org>"
    )
    assert message["List-Id"] == "Paperboy digest <digest.papers.example.org>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Precedence"] == "bulk"
    assert email.utils.parsedate_to_datetime(message["Date"]).tzinfo is not None
    https_link, mailto_link = re.fullmatch(
        r"<([^>]+)>, <([^>]+)>", message["List-Unsubscribe"]
    ).groups()  # type: ignore[union-attr]
    assert https_link.startswith("https://papers.example.org/unsubscribe/")
    assert mailto_link.startswith("mailto:digest@papers.example.org?subject=unsubscribe%20")

    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    text_body, html_body = text.get_content(), html.get_content()
    titles = [p.card.title for p in view.papers]
    assert len(titles) == 10
    for title in titles:
        assert title in text_body
    assert "Scattered Mixture-of-Experts Implementation" in html_body
    # The signature separator mail readers recognise (and hide or colour) is "-- " with its space.
    lines = text_body.splitlines()
    assert "-- " in lines and "--" not in lines
    # CSS is inlined for clients that drop <style>, and the dark-mode rules are kept.
    assert re.search(r'<a class="title" href="[^"]+" style="[^"]*font-weight:700', html_body)
    assert "prefers-color-scheme: dark" in html_body
    assert 'width="600"' in html_body
    assert "http://" not in " ".join(link for link in links_in(html_body) if "example.org" in link)


async def test_links_are_signed_for_this_subscriber_and_purpose(
    session_factory: Sessions, mail_settings: Settings, sample_page: Path
) -> None:
    digest_id = await compose_for(session_factory, mail_settings, sample_page)
    view = await view_of(session_factory, digest_id)
    mailer = Mailer(mail_settings)
    rendered = mailer.render(view)
    own = [link for link in links_in(rendered.html) if link.startswith(mail_settings.base_url)]
    by_purpose = {link.split("/")[3]: link.split("/")[4] for link in own}
    assert set(by_purpose) == {"preferences", "unsubscribe", "digests", "feedback", "mute"}
    # Each paper carries "more" and "less like this" after the reader's signed feedback token;
    # each topic that brought papers carries "mute this topic", in the HTML and the text part.
    for part in (rendered.html, rendered.text):
        found = re.findall(r"/feedback/([A-Za-z0-9_.-]+)/(\d+)/(more|less)\b", part)
        for token, _, _ in found:
            claims = read_token(mail_settings.secret_key, Purpose.FEEDBACK, token)
            assert claims.public_id == view.public_id and claims.subject == ()
        assert sorted((int(paper), signal) for _, paper, signal in found) == sorted(
            (paper.paper_id, signal) for paper in view.papers for signal in ("more", "less")
        )
        muted = [
            read_token(mail_settings.secret_key, Purpose.MUTE, token).subject
            for token in re.findall(r"/mute/([A-Za-z0-9_.-]+)", part)
        ]
        assert muted == [(topic,) for topic in view.topics] and muted
    for purpose_name, token in by_purpose.items():
        purpose = Purpose.DIGEST if purpose_name == "digests" else Purpose(purpose_name)
        claims = read_token(mail_settings.secret_key, purpose, token)
        assert claims.public_id == view.public_id and claims.token_version == 1
    assert f"/digests/{by_purpose['digests']}/2026-11-26" in rendered.html
    # An unsubscribe token does not open preferences, and another key's tokens are refused.
    with pytest.raises(TokenError):
        read_token(mail_settings.secret_key, Purpose.PREFERENCES, by_purpose["unsubscribe"])
    forged = make_token("another-secret-key-000000", Purpose.UNSUBSCRIBE, view.public_id, 1)
    with pytest.raises(TokenError):
        read_token(mail_settings.secret_key, Purpose.UNSUBSCRIBE, forged)
    with pytest.raises(TokenError):
        read_token(mail_settings.secret_key, Purpose.UNSUBSCRIBE, by_purpose["unsubscribe"][:-3])
    mailto = mailer.links(view).unsubscribe_mailto
    mailto_token = unquote(mailto.split("%20", 1)[1])
    assert mailto == "mailto:digest@papers.example.org?subject=" + quote(
        f"unsubscribe {mailto_token}"
    )
    assert read_token(mail_settings.secret_key, Purpose.UNSUBSCRIBE, mailto_token).public_id == (
        view.public_id
    )


async def test_rows_shared_between_readers_carry_each_readers_own_feedback_links(
    session_factory: Sessions, mail_settings: Settings, sample_page: Path
) -> None:
    digest_id = await compose_for(session_factory, mail_settings, sample_page)
    view = await view_of(session_factory, digest_id)
    other = replace(view, public_id=uuid.uuid4(), email="bob@example.org")
    mailer = Mailer(mail_settings)  # one row cache for both, as in a send run
    for reader in (view, other, view):
        rendered = mailer.render(reader)
        for part in (rendered.html, rendered.text):
            tokens = re.findall(r"/feedback/([A-Za-z0-9_.-]+)", part)
            assert len(tokens) == 2 * len(view.papers)
            for token in tokens:
                claims = read_token(mail_settings.secret_key, Purpose.FEEDBACK, token)
                assert claims.public_id == reader.public_id


async def test_hostile_paper_and_topic_text_never_escapes(
    session_factory: Sessions, mail_settings: Settings, sample_page: Path
) -> None:
    digest_id = await compose_for(session_factory, mail_settings, sample_page)
    async with session_factory() as session:
        first = await session.scalar(
            select(DigestItem.paper_id).where(
                DigestItem.digest_id == digest_id, DigestItem.rank == 1
            )
        )
        await session.execute(update(Paper).where(Paper.id == first).values(title=HOSTILE_TITLE))
        await session.execute(
            update(DigestItem)
            .where(DigestItem.digest_id == digest_id)
            .values(matched_topic=HOSTILE_TOPIC)
        )
        await session.commit()
    view = await view_of(session_factory, digest_id)
    mailer = Mailer(mail_settings)
    data = mailer.message(view).data
    message = parse(data)

    headers = data.split(b"\r\n\r\n", 1)[0]
    assert_crlf_lines(data)
    assert message["Bcc"] is None
    assert not re.search(rb"^bcc:", headers, re.MULTILINE | re.IGNORECASE)
    # The topic's text survives only as harmless words inside the one Subject line.
    assert message["Subject"].startswith("10 new papers on mixture of experts Bcc: victim@")
    assert "\n" not in message["Subject"] and "\r" not in message["Subject"]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    # The preheader and title both show the text, escaped.
    assert html.count("&lt;script&gt;") >= 2


async def test_dkim_signature_covers_the_unsubscribe_headers(
    session_factory: Sessions, mail_settings: Settings, sample_page: Path, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest_id = await compose_for(session_factory, mail_settings, sample_page)
    signing = mail_settings.model_copy(
        update={"dkim_selector": "pb2026", "dkim_private_key_path": str(key_file)}
    )
    mailer = Mailer(signing)
    data = mailer.message(await view_of(session_factory, digest_id)).data
    assert_crlf_lines(data)
    signature = parse(data)["DKIM-Signature"]
    assert "d=papers.example.org" in signature and "s=pb2026" in signature
    signed = signature.replace(" ", "").split("h=")[1].split(";")[0].lower().split(":")
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject"} <= set(signed)

    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"pb2026._domainkey.papers.example.org."
        return record

    assert dkim.verify(data, dnsfunc=dns)
    tampered = data.replace(
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: x"
    )
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_summary_prefers_the_source_summary_and_cuts_at_a_sentence() -> None:
    abstract = (
        "We study sparse experts. The router picks two experts per token, e.g. for code. "
        + "Results improve on every benchmark we tried. " * 10
    )
    assert summarise("A short AI summary.", abstract) == "A short AI summary."
    summary = summarise(None, abstract, limit=120)
    assert (
        summary == "We study sparse experts. The router picks two experts per token, e.g. for code."
    )
    long_sentence = "word " * 200
    cut = summarise(None, long_sentence, limit=50)
    assert cut.endswith("…") and len(cut) <= 51 and "  " not in cut
    assert shorten_authors(["A", "B", "C", "D", "E"]) == "A, B, C et al."
    assert shorten_authors(["A", "B", "C", "D"]) == "A, B, C, D"
    assert shorten_authors(None) == ""


async def test_preview_renders_without_writing(
    session_factory: Sessions, mail_settings: Settings, sample_page: Path
) -> None:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=mail_settings)
    async with session_factory() as session:
        await add_active_subscriber(
            "bo@example.org", Preferences(["FPGA accelerators"]), session=session
        )
        await session.commit()
        view = await preview_digest_view(
            "Bo@Example.org",
            session=session,
            settings=mail_settings,
            now=datetime(2026, 11, 26, 9, tzinfo=UTC),
            on_date=None,
        )
        assert view.digest_id is None and view.digest_date == DAY
        assert all(p.matched_topic == "FPGA accelerators" for p in view.papers)
        assert await session.scalar(select(Digest.id)) is None
        with pytest.raises(PreviewError, match="no subscriber"):
            await preview_digest_view(
                "nobody@example.org",
                session=session,
                settings=mail_settings,
                now=datetime.now(UTC),
                on_date=None,
            )
        subscriber = await session.scalar(select(Subscriber))
        assert subscriber is not None
    rendered = Mailer(mail_settings).render(view)
    assert rendered.subject.startswith("10 new papers on FPGA accelerators")


def dom(html: str) -> list[tuple[str, list[tuple[str, str]], str, str]]:
    """Every element with its attributes and the text around it, whitespace collapsed."""
    tree = lxml.html.document_fromstring(html)
    return [
        (
            str(element.tag),
            sorted((str(k), " ".join(str(v).split())) for k, v in element.attrib.items()),
            " ".join((element.text or "").split()),
            " ".join((element.tail or "").split()),
        )
        for element in tree.iter()
    ]


async def test_templates_inlined_once_render_what_inlining_each_message_gave(
    session_factory: Sessions, mail_settings: Settings, sample_page: Path
) -> None:
    digest_id = await compose_for(session_factory, mail_settings, sample_page)
    async with session_factory() as session:
        # Text that Jinja escapes differently from an HTML serializer.
        await session.execute(
            update(DigestItem)
            .where(DigestItem.digest_id == digest_id)
            .values(matched_topic='Tom\'s "quoted" <topic> & more')
        )
        await session.commit()
    view = await view_of(session_factory, digest_id)
    mailer = Mailer(mail_settings)
    plain = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    inliner = css_inline.CSSInliner(keep_at_rules=True, minify_css=True)
    for for_browser in (False, True):
        rendered = mailer.render(view, for_browser=for_browser)
        context = {
            "digest": mailer.with_feedback_links(view),
            "links": rendered.links,
            "subject": rendered.subject,
            "day": "Thursday, 26 November 2026",
            "for_browser": for_browser,
            "rows_once": lambda papers, macro: Markup("").join(map(macro, papers)),
        }
        expected = inliner.inline(plain.get_template("email/digest.html").render(context))
        assert dom(rendered.html) == dom(expected)
        assert 'style="' in rendered.html and "@media (prefers-color-scheme: dark)" in rendered.html
    notice_args: dict[str, Any] = {
        "subject": "Confirm",
        "heading": "One more step",
        "lines": ["Line <one>"],
        "button_label": "Confirm",
        "button_url": "https://papers.example.org/confirm/x?a=1&b=2",
        "footnote": "Ignore it otherwise.",
    }
    notice = mailer.notice("ann@example.org", **notice_args)
    notice_html = parse(notice.data).get_body(("html",)).get_content()  # type: ignore[union-attr]
    expected_notice = inliner.inline(plain.get_template("email/notice.html").render(notice_args))
    assert dom(notice_html) == dom(expected_notice)


@pytest.mark.parametrize(
    "source",
    [
        # A statement in the title, where an HTML comment is only text: it would be escaped.
        "<html><head><title>{% if a %}A{% endif %}</title></head><body></body></html>",
        "<html><body><p>JINJA0X</p></body></html>",  # the placeholder word itself
    ],
)
def test_templates_whose_tags_cannot_survive_inlining_are_refused(source: str) -> None:
    with pytest.raises(TemplateInliningError):
        inline_template_source(source, css_inline.CSSInliner(keep_at_rules=True))


async def test_rows_encoded_once_give_the_bytes_of_encoding_each_part_whole(
    session_factory: Sessions,
    mail_settings: Settings,
    sample_page: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digest_id = await compose_for(session_factory, mail_settings, sample_page)
    view = await view_of(session_factory, digest_id)
    mailer = Mailer(mail_settings)
    cache = mailer.paper_rows
    encoded: list[str] = []  # what the row cache encodes itself

    def counted(text: str) -> bytes:
        encoded.append(text)
        return quoted_printable(text)

    monkeypatch.setattr(paper_rows, "quoted_printable", counted)
    for _ in range(2):  # the second time every row comes from the caches
        encoded.clear()
        rendered = mailer.render(view)
        # Markup lines were joined when the template loaded: each HTML row is one line.
        assert rendered.html.count("\n") < 40
        assert all(row.count("\n") == 1 for row in rendered.html_part.rows)
        for part in (rendered.html_part, rendered.text_part):
            assert len(part.rows) == len(view.papers)
            assert part.shell.count(cache.marker) == len(view.papers)
            assert cache.encode(part) == quoted_printable(part.content)
            assert part.content not in encoded  # never encoded whole
        assert cache.marker not in rendered.html and cache.marker not in rendered.text
        assert view.papers[0].card.title in rendered.text
        message = parse(mailer.message(view, rendered).data)
        html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert html.replace("\r\n", "\n") == rendered.html
        assert text.replace("\r\n", "\n") == rendered.text
    # Rows that are not whole lines of the part are encoded with the text around them.
    marker = cache.marker
    long_row = "x" * 90 + "\n"
    for shell, rows in (
        ("head ünïcode " + marker + "  tail trailing \n", [long_row]),  # marker mid-line
        ("head\n" + marker + "tail\n", ["no line end"]),  # row not ending its line
        (marker + "mid \n" + marker, ["  lead space \n", "é" * 50 + "\n"]),  # whole lines
    ):
        part = cache.part(shell, rows)
        assert cache.encode(part) == quoted_printable(part.content)
    with pytest.raises(ValueError, match="row marker"):
        _ = cache.part("no marker\n", [long_row]).content


@pytest.mark.parametrize(
    "subject",
    [
        "5 new papers on mixture of experts — 26 Nov",
        "10 new papers on 混合专家模型, ускорители FPGA and 3 more — 26 Nov",
        "🚀" * 30 + " émigré " * 12,
    ],
)
def test_non_ascii_subjects_become_whole_encoded_words(subject: str) -> None:
    encoded = encoded_header(subject)
    words = encoded.split("\r\n ")
    assert all(len(word) <= 75 and word.isascii() for word in words)
    # Each word holds whole characters: it decodes on its own.
    for word in words:
        ((raw, charset),) = email.header.decode_header(word)
        assert isinstance(raw, bytes) and charset == "utf-8"
        raw.decode("utf-8")
    assert str(email.header.make_header(email.header.decode_header(encoded))) == subject


def test_link_tokens_are_the_stock_serializers_tokens() -> None:
    secret, public_id = "test-secret-key-0123456789", uuid.uuid4()
    for purpose in Purpose:
        stock = URLSafeTimedSerializer(secret, salt=f"paperboy.{purpose.value}")
        before = int(time.time())
        token = make_token(secret, purpose, public_id, 3)
        if int(time.time()) == before:  # same second, same timestamp
            assert token == stock.dumps([public_id.hex, 3])
        assert stock.loads(token) == [public_id.hex, 3]
        # And stock tokens read back, a compressed payload included.
        assert read_token(secret, purpose, stock.dumps([public_id.hex, 7])).token_version == 7
        compressed = stock.dumps(["a" * 200, 1])
        assert compressed.startswith(".")
        ours = LinkSerializer(secret, salt=f"paperboy.{purpose.value}")
        assert ours.loads(compressed) == ["a" * 200, 1]
