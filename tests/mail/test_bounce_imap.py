"""The bounce mailbox on a real IMAP and POP3 server (Dovecot, over TLS with a certificate of
its own): bounces for digests really sent are read once, applied, and marked (IMAP: \\Seen,
nothing deleted; POP3: reports deleted, anything else kept and remembered). Skipped where
Dovecot is not installed (`apt-get install dovecot-imapd dovecot-pop3d`)."""

from __future__ import annotations

import imaplib
import poplib
import ssl
from pathlib import Path

import pytest
from sqlalchemy import select

from app.config import Settings
from app.mail.bounces.mailbox_job import read_bounce_mailbox
from app.mail.bounces.mailboxes import MailboxError
from app.models import Subscriber, SubscriberStatus
from tests.support.bounces import Sessions, bounce_for, bounce_settings, send_digests
from tests.support.dovecot import DOVECOT, PASSWORD, USER, MailServer, deliver, dovecot

pytestmark = [
    pytest.mark.skipif(DOVECOT is None, reason="Dovecot is not installed"),
    pytest.mark.slow,
]


async def statuses(sessions: Sessions) -> dict[str, SubscriberStatus]:
    async with sessions() as session:
        rows = await session.execute(select(Subscriber.email, Subscriber.status))
        return dict(rows.all())


def tls(server: MailServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.ca_file))


async def test_imap_reports_are_applied_once_and_flagged_seen(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    with dovecot() as server:
        config = bounce_settings(
            settings,
            bounce_mailbox=server.url("imaps"),
            bounce_mailbox_ca_file=str(server.ca_file),
        )
        sent = await send_digests(
            session_factory, config, sample_page, ["gone@example.org", "annoyed@example.org"]
        )
        deliver(
            server,
            bounce_for("dsn-postfix-user-unknown.eml", sent["gone@example.org"]),
            bounce_for("arf-redacted-headers-only.eml", sent["annoyed@example.org"]),
            bounce_for("auto-reply.eml", sent["gone@example.org"]),
        )
        report = await read_bounce_mailbox(session_factory=session_factory, settings=config)
        assert report.mailbox == f"imaps://127.0.0.1:{server.imaps_port}/INBOX"
        assert (report.read, report.not_reports) == (3, 1)
        assert (report.events.hard_bounces, report.events.complaints) == (1, 1)
        assert await statuses(session_factory) == {
            "gone@example.org": SubscriberStatus.BOUNCED,
            "annoyed@example.org": SubscriberStatus.UNSUBSCRIBED,
        }
        again = await read_bounce_mailbox(session_factory=session_factory, settings=config)
        assert (again.read, again.already_read, again.events.recorded) == (0, 0, 0)

        client = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=tls(server))
        try:
            client.login(USER, PASSWORD)
            client.select("INBOX")
            assert client.uid("SEARCH", "ALL")[1][0].split() == [b"1", b"2", b"3"]  # kept
            assert client.uid("SEARCH", "UNSEEN")[1] == [b""]  # every one read
        finally:
            client.logout()


async def test_pop3_deletes_the_reports_and_keeps_the_rest(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    with dovecot() as server:
        config = bounce_settings(
            settings,
            bounce_mailbox=server.url("pop3s"),
            bounce_mailbox_ca_file=str(server.ca_file),
        )
        sent = await send_digests(session_factory, config, sample_page, ["gone@example.org"])
        deliver(
            server,
            bounce_for("dsn-postfix-user-unknown.eml", sent["gone@example.org"]),
            bounce_for("auto-reply.eml", sent["gone@example.org"]),
        )
        report = await read_bounce_mailbox(session_factory=session_factory, settings=config)
        assert (report.read, report.events.hard_bounces, report.not_reports) == (2, 1, 1)
        assert await statuses(session_factory) == {"gone@example.org": SubscriberStatus.BOUNCED}
        # The auto-reply stays on the server, and the next run knows it without reading it.
        again = await read_bounce_mailbox(session_factory=session_factory, settings=config)
        assert (again.read, again.already_read) == (0, 1)
        client = poplib.POP3_SSL("127.0.0.1", server.pop3s_port, context=tls(server))
        try:
            client.user(USER)
            client.pass_(PASSWORD)
            [listed] = client.list()[1]
            message = b"\n".join(client.retr(int(listed.split()[0]))[1])
        finally:
            client.quit()
        assert b"Out of office" in message


async def test_a_wrong_password_or_an_untrusted_certificate_is_a_clear_error(
    session_factory: Sessions, settings: Settings
) -> None:
    with dovecot() as server:
        for scheme in ("imaps", "pop3s"):
            wrong = bounce_settings(
                settings,
                bounce_mailbox=server.url(scheme, password="not-the-password-0123"),
                bounce_mailbox_ca_file=str(server.ca_file),
            )
            with pytest.raises(MailboxError) as failure:
                await read_bounce_mailbox(session_factory=session_factory, settings=wrong)
            assert "not-the-password" not in str(failure.value)
            # The server's certificate is its own: without the CA file it is not trusted.
            untrusted = bounce_settings(settings, bounce_mailbox=server.url(scheme))
            with pytest.raises(MailboxError, match="CERTIFICATE_VERIFY_FAILED"):
                await read_bounce_mailbox(session_factory=session_factory, settings=untrusted)
