"""The mail transports on their own, against a real SMTP server (aiosmtpd) and a real Maildir:
how PAPERBOY_MAIL_URL is read, how each answer is classified (accepted, try again later, refused
for good) and that a refusal of the sender is never taken for the recipient's bounce, connection
reuse and recovery, addresses that could smuggle SMTP commands, the DATA wire form, the rate
limit, and Maildir files written whole."""

from __future__ import annotations

import asyncio
import mailbox
import time
from pathlib import Path
from typing import Any

import pytest

from app.mail.replies import Verdict
from app.mail.transports import (
    MaildirTransport,
    MailUrlError,
    RateLimiter,
    SmtpEndpoint,
    SmtpTransport,
    open_transport,
    parse_smtp_url,
    wire_form,
)
from tests.support.smtp_sink import SinkHandler, free_port, smtp_sink

MESSAGE = b"From: digest@example.org\r\nTo: ann@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


class CountingSink(SinkHandler):
    """The sink, also counting greetings (one per connection) and refusing chosen senders."""

    def __init__(self, refused_senders: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.greetings = 0
        self.refused_senders = refused_senders

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.greetings += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refused_senders:
            return "550 5.7.1 Sender rejected by policy"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.org", SmtpEndpoint("mail.example.org", 25, None, None, False, False)),
        (
            "smtp://mail.example.org?starttls=true",
            SmtpEndpoint("mail.example.org", 587, None, None, False, True),
        ),
        (
            "smtp://ann:secret@mail.example.org:2525?starttls=yes",
            SmtpEndpoint("mail.example.org", 2525, "ann", "secret", False, True),
        ),
        (
            # Reserved characters in the login arrive percent-encoded; STARTTLS means nothing
            # on a connection that is TLS from the start.
            "smtps://ann%40example.org:p%3Aw%2Fd@mail.example.org?starttls=true",
            SmtpEndpoint("mail.example.org", 465, "ann@example.org", "p:w/d", True, False),
        ),
    ],
)
def test_mail_urls_name_host_port_login_and_tls(url: str, expected: SmtpEndpoint) -> None:
    assert parse_smtp_url(url) == expected


@pytest.mark.parametrize(
    "url", ["http://mail.example.org", "smtp://", "smtp://mail.example.org:99999", "maildir://"]
)
def test_unusable_mail_urls_are_refused(url: str) -> None:
    with pytest.raises(MailUrlError):
        open_transport(url)


async def test_each_answer_is_classified(tmp_path: Path) -> None:
    handler = CountingSink(refused_senders=("blocked@example.org",))
    handler.scripted = {"busy@example.org": [451], "gone@example.org": [550]}
    with smtp_sink(handler) as (sink, port):
        transport = open_transport(f"smtp://127.0.0.1:{port}", concurrency=1)
        try:
            accepted = await transport.deliver("digest@example.org", "ann@example.org", MESSAGE)
            busy = await transport.deliver("digest@example.org", "busy@example.org", MESSAGE)
            gone = await transport.deliver("digest@example.org", "gone@example.org", MESSAGE)
            blocked = await transport.deliver("blocked@example.org", "bob@example.org", MESSAGE)
        finally:
            await transport.close()
    assert accepted.verdict is Verdict.ACCEPTED
    assert busy.verdict is Verdict.TRY_LATER and busy.detail.startswith("451")
    assert gone.verdict is Verdict.REFUSED and gone.detail.startswith("550")
    # The server refused us, not the address: not a bounce, whatever the code.
    assert blocked.verdict is Verdict.REFUSED_US and blocked.detail.startswith("550 5.7.1")
    assert [recipient for recipient, _ in sink.received] == ["ann@example.org"]


async def test_connections_are_reused_and_replaced_after_421() -> None:
    handler = CountingSink()
    handler.scripted = {"closing@example.org": [421], "first@example.org": [421]}
    with smtp_sink(handler) as (sink, port):
        endpoint = parse_smtp_url(f"smtp://127.0.0.1:{port}")
        transport = SmtpTransport(endpoint, concurrency=1)
        try:
            for n in range(3):
                delivery = await transport.deliver("d@example.org", f"r{n}@example.org", MESSAGE)
                assert delivery.verdict is Verdict.ACCEPTED
            assert handler.greetings == 1  # three messages, one connection
            # The server closes a connection that had served earlier messages: the message
            # goes again at once, on a new connection.
            closing = await transport.deliver("d@example.org", "closing@example.org", MESSAGE)
            assert closing.verdict is Verdict.ACCEPTED and handler.greetings == 2
        finally:
            await transport.close()
        fresh = SmtpTransport(endpoint, concurrency=1)
        try:
            # On a connection just opened, 421 is the server's answer: try later.
            first = await fresh.deliver("d@example.org", "first@example.org", MESSAGE)
            after = await fresh.deliver("d@example.org", "later@example.org", MESSAGE)
        finally:
            await fresh.close()
    assert first.verdict is Verdict.TRY_LATER and first.detail.startswith("421")
    assert after.verdict is Verdict.ACCEPTED and handler.greetings == 4
    assert sink.answers[421] == 2
    assert sink.per_recipient() == {
        "r0@example.org": 1,
        "r1@example.org": 1,
        "r2@example.org": 1,
        "closing@example.org": 1,
        "later@example.org": 1,
    }


async def test_no_server_is_a_reason_to_try_later() -> None:
    transport = SmtpTransport(parse_smtp_url(f"smtp://127.0.0.1:{free_port()}"), timeout=5)
    try:
        delivery = await transport.deliver("d@example.org", "ann@example.org", MESSAGE)
    finally:
        await transport.close()
    assert delivery.verdict is Verdict.TRY_LATER and delivery.detail.startswith("connection")


@pytest.mark.parametrize(
    ("sender", "recipient"),
    [
        ("d@example.org", "ann@example.org> NOTIFY=NEVER"),
        ("d@example.org", "ann@example.org\r\nRCPT TO:<eve@example.org>"),
        ("d@example.org>", "ann@example.org"),
        ("d@example.org", "ann\x00@example.org"),
    ],
)
async def test_addresses_that_would_add_to_an_smtp_command_are_refused(
    sender: str, recipient: str
) -> None:
    with smtp_sink() as (sink, port):
        transport = SmtpTransport(parse_smtp_url(f"smtp://127.0.0.1:{port}"), concurrency=1)
        try:
            delivery = await transport.deliver(sender, recipient, MESSAGE)
            after = await transport.deliver("d@example.org", "ann@example.org", MESSAGE)
        finally:
            await transport.close()
    assert delivery.verdict is Verdict.REFUSED and delivery.detail.startswith("553")
    assert after.verdict is Verdict.ACCEPTED  # the connection is still good
    assert [recipient for recipient, _ in sink.received] == ["ann@example.org"]


def test_wire_form_stuffs_dots_and_ends_the_data() -> None:
    assert wire_form(b"a\r\n.b\r\n") == b"a\r\n..b\r\n.\r\n"
    assert wire_form(b".first\r\nlast") == b"..first\r\nlast\r\n.\r\n"
    # A line holding a single dot inside the message does not end it early.
    assert wire_form(b"x\r\n.\r\ny\r\n") == b"x\r\n..\r\ny\r\n.\r\n"


async def test_messages_with_dot_lines_arrive_unchanged() -> None:
    data = b"Subject: dots\r\n\r\n.\r\n..two\r\n.three\r\nend\r\n"
    with smtp_sink() as (sink, port):
        transport = SmtpTransport(parse_smtp_url(f"smtp://127.0.0.1:{port}"), concurrency=1)
        try:
            delivery = await transport.deliver("d@example.org", "ann@example.org", data)
        finally:
            await transport.close()
    assert delivery.verdict is Verdict.ACCEPTED
    assert sink.received == [("ann@example.org", data)]


async def test_the_rate_limit_spaces_messages_evenly() -> None:
    limiter = RateLimiter(20.0)  # one message every 50 ms
    started = time.monotonic()
    for _ in range(4):
        await limiter.wait()
    assert time.monotonic() - started >= 0.15  # three gaps after the first message
    unlimited = RateLimiter(0)
    started = time.monotonic()
    for _ in range(1000):
        await unlimited.wait()
    assert time.monotonic() - started < 0.1


async def test_maildir_files_each_message_whole_in_new(tmp_path: Path) -> None:
    transport = open_transport(f"maildir://{tmp_path / 'mail'}")
    assert isinstance(transport, MaildirTransport)
    messages = [MESSAGE.replace(b"hi", b"hi %d" % n) for n in range(12)]
    deliveries = await asyncio.gather(
        *(transport.deliver("d@example.org", "ann@example.org", data) for data in messages)
    )
    await transport.close()
    assert all(d.verdict is Verdict.ACCEPTED for d in deliveries)
    assert not any((tmp_path / "mail" / "tmp").iterdir())  # nothing half-written left behind
    stored = sorted(path.read_bytes() for path in (tmp_path / "mail" / "new").iterdir())
    assert stored == sorted(m.replace(b"\r\n", b"\n") for m in messages)  # local line ends
    assert len(mailbox.Maildir(tmp_path / "mail", create=False)) == 12


async def test_a_maildir_that_cannot_be_written_means_try_later(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path / "mail")
    (tmp_path / "mail" / "tmp").rmdir()  # the disk was cleaned up under the running worker
    delivery = await transport.deliver("d@example.org", "ann@example.org", MESSAGE)
    assert delivery.verdict is Verdict.TRY_LATER and delivery.detail.startswith("maildir:")
