"""Where finished messages go, chosen by `PAPERBOY_MAIL_URL`: an SMTP server (aiosmtplib, a pool of
reused connections, STARTTLS or implicit TLS, login, an optional messages-per-second limit) or a
Maildir on disk (the embedded default, readable by any mail client). A transport only delivers and
names the answer's verdict by the rule in `app.mail.replies` (accepted, try again later, refused
by the recipient's mailbox, refused us); what that means for a digest is decided by the delivery
records."""

from __future__ import annotations

import asyncio
import mailbox
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
from aiosmtplib.typing import SMTPStatus

from app.mail.replies import Stage, Verdict, classify_reply

# Whitespace, angle brackets or control characters would let an address add parameters (or
# commands) to MAIL or RCPT; validated addresses never hold them.
UNSENDABLE_ADDRESS = re.compile(r"[\s<>\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Delivery:
    verdict: Verdict
    detail: str


class Transport(Protocol):
    concurrency: int
    description: str

    async def deliver(self, sender: str, recipient: str, data: bytes) -> Delivery: ...

    async def close(self) -> None: ...


class MailUrlError(ValueError):
    pass


class MaildirTransport:
    """Each message becomes a file in PATH/new, written atomically (tmp, then rename), with LF
    line ends as local mail readers expect."""

    concurrency = 4

    def __init__(self, path: Path) -> None:
        self.path = path
        # mailbox.Maildir creates tmp/new/cur only for a directory it creates itself.
        for folder in ("tmp", "new", "cur"):
            (path / folder).mkdir(parents=True, exist_ok=True)
        self.maildir = mailbox.Maildir(path, create=False)
        self.description = f"Maildir {path.resolve()}"
        self._lock = asyncio.Lock()

    def _add(self, data: bytes) -> str:
        # SMTP's CRLF line ends become the system's: local readers (mutt) show a CR as ^M.
        return self.maildir.add(data.replace(b"\r\n", b"\n"))

    async def deliver(self, sender: str, recipient: str, data: bytes) -> Delivery:
        try:
            # One writer at a time: Maildir names its files from a per-process counter.
            async with self._lock:
                key = await asyncio.to_thread(self._add, data)
        except OSError as error:
            return Delivery(Verdict.TRY_LATER, f"maildir: {error}")
        return Delivery(Verdict.ACCEPTED, f"stored as {key}")

    async def close(self) -> None:
        return None


class RateLimiter:
    """Spaces sends at least 1/rate seconds apart (no burst): smooth for the receiving server."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.next_slot = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        slot = max(now, self.next_slot)
        self.next_slot = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass(frozen=True, slots=True)
class SmtpEndpoint:
    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool


def parse_smtp_url(url: str) -> SmtpEndpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise MailUrlError(f"not an smtp:// or smtps:// URL with a host: {parts.scheme}://…")
    query = parse_qs(parts.query)
    start_tls = query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
    use_tls = parts.scheme == "smtps"
    try:
        port = parts.port or (465 if use_tls else 587 if start_tls else 25)
    except ValueError as error:
        raise MailUrlError(f"bad port in PAPERBOY_MAIL_URL: {error}") from error
    return SmtpEndpoint(
        hostname=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=use_tls,
        start_tls=start_tls and not use_tls,
    )


class SmtpTransport:
    """A pool of `concurrency` SMTP connections, each opened on first use and reused for every
    later message; a connection that fails is closed and reopened by its next message."""

    def __init__(
        self,
        endpoint: SmtpEndpoint,
        *,
        concurrency: int = 8,
        rate_limit: float = 0.0,
        timeout: float = 30.0,
    ) -> None:
        self.endpoint = endpoint
        self.concurrency = concurrency
        self.timeout = timeout
        self.description = f"SMTP {endpoint.hostname}:{endpoint.port}"
        self.limiter = RateLimiter(rate_limit)
        self.idle: asyncio.LifoQueue[aiosmtplib.SMTP] = asyncio.LifoQueue()
        for _ in range(concurrency):
            self.idle.put_nowait(self._client())

    def _client(self) -> aiosmtplib.SMTP:
        endpoint = self.endpoint
        return aiosmtplib.SMTP(
            hostname=endpoint.hostname,
            port=endpoint.port,
            username=endpoint.username,
            password=endpoint.password,
            use_tls=endpoint.use_tls,
            start_tls=endpoint.start_tls,
            # No timeout per command: aiosmtplib wraps each read in a task to time it (four or
            # more a message). `_send` bounds the whole exchange with one deadline instead.
            timeout=None,
        )

    async def deliver(self, sender: str, recipient: str, data: bytes) -> Delivery:
        await self.limiter.wait()
        client = await self.idle.get()
        try:
            reused = client.is_connected
            delivery = await self._send(client, sender, recipient, data)
            if reused and delivery.verdict is Verdict.TRY_LATER and not client.is_connected:
                # An idle connection the server had dropped: one fresh connection, at once.
                delivery = await self._send(client, sender, recipient, data)
            return delivery
        finally:
            self.idle.put_nowait(client)

    async def _send(
        self, client: aiosmtplib.SMTP, sender: str, recipient: str, data: bytes
    ) -> Delivery:
        try:
            async with asyncio.timeout(self.timeout):
                if not client.is_connected:
                    await client.connect()
                if client.is_ehlo_or_helo_needed:  # the extensions decide the MAIL options
                    try:
                        await client.ehlo()
                    except aiosmtplib.SMTPHeloError:
                        await client.helo()
                return await _transaction(client, sender, recipient, data)
        except TimeoutError:
            await _discard(client)
            return Delivery(Verdict.TRY_LATER, f"timed out after {self.timeout:g} s")
        except aiosmtplib.SMTPRecipientRefused as error:
            await _reset(client)
            return await _by_code(client, error.code, error.message, Stage.RECIPIENT)
        except aiosmtplib.SMTPDataError as error:
            await _reset(client)
            return await _by_code(client, error.code, error.message, Stage.MESSAGE)
        except aiosmtplib.SMTPSenderRefused as error:
            await _discard(client)
            return await _by_code(client, error.code, error.message, Stage.SENDER)
        except aiosmtplib.SMTPResponseException as error:  # the greeting, EHLO, STARTTLS, login
            await _discard(client)
            return await _by_code(client, error.code, error.message, Stage.SESSION)
        except (aiosmtplib.SMTPException, OSError) as error:
            await _discard(client)
            return Delivery(Verdict.TRY_LATER, f"connection: {error}")

    async def close(self) -> None:
        while not self.idle.empty():
            client = self.idle.get_nowait()
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()


async def _transaction(
    client: aiosmtplib.SMTP, sender: str, recipient: str, data: bytes
) -> Delivery:
    """MAIL, RCPT and DATA for one recipient. Not `sendmail`: it parses both addresses with the
    email package and runs two regular expressions over the whole message, together a third of
    the sender's time for a 30 kB digest. Our addresses are bare (validated at signup) and our
    messages are CRLF lines already, so SIZE is the length and the wire form is one replace.

    The data goes through aiosmtplib's protocol (`write`, `read_response`), not its public API
    (`SMTP.data` runs the same two regular expressions): pyproject.toml pins aiosmtplib to the
    minor version this was written against, and tests/test_library_pins.py checks those members
    and fails on any other version."""
    if UNSENDABLE_ADDRESS.search(sender) or UNSENDABLE_ADDRESS.search(recipient):
        return Delivery(Verdict.REFUSED, "553 the address cannot be written in an SMTP command")
    options = [b"SIZE=%d" % len(data)] if client.supports_extension("size") else []
    encoding = "ascii"
    if not (sender.isascii() and recipient.isascii()):
        if not client.supports_extension("smtputf8"):
            return Delivery(
                Verdict.REFUSED, "553 the address is not ASCII and the server lacks SMTPUTF8"
            )
        options.append(b"SMTPUTF8")
        encoding = "utf-8"
    reply = await client.execute_command(b"MAIL", f"FROM:<{sender}>".encode(encoding), *options)
    if reply.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
    reply = await client.execute_command(b"RCPT", f"TO:<{recipient}>".encode(encoding))
    if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
        raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
    reply = await client.execute_command(b"DATA")
    if reply.code != SMTPStatus.start_input:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    # Nothing awaits between the write and read_response, so the reply cannot slip past it.
    protocol.write(wire_form(data))
    reply = await protocol.read_response(timeout=None)
    if reply.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    return Delivery(Verdict.ACCEPTED, reply.message)


def wire_form(data: bytes) -> bytes:
    """A message as DATA carries it (RFC 5321 4.5.2): a leading dot doubled on every line, then a
    line holding a single dot. `data` must be CRLF lines, as every message the mailer builds is
    (checked by its tests); a bare CR or LF would reach the server as it is."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


async def _reset(client: aiosmtplib.SMTP) -> None:
    """End a refused transaction so the connection can carry the next message."""
    if client.is_connected:
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError):
            client.close()


async def _by_code(client: aiosmtplib.SMTP, code: int, message: str, stage: Stage) -> Delivery:
    if code == 421:  # the server is closing this connection
        await _discard(client)
    return Delivery(classify_reply(code, message, stage), f"{code} {message}")


async def _discard(client: aiosmtplib.SMTP) -> None:
    if client.is_connected:
        client.close()


def open_transport(
    mail_url: str, *, concurrency: int = 8, rate_limit: float = 0.0, timeout: float = 30.0
) -> Transport:
    if mail_url.startswith("maildir://"):
        path = mail_url.removeprefix("maildir://")
        if not path:
            raise MailUrlError("maildir:// needs a path, e.g. maildir://./var/mail")
        return MaildirTransport(Path(path))
    return SmtpTransport(
        parse_smtp_url(mail_url), concurrency=concurrency, rate_limit=rate_limit, timeout=timeout
    )
