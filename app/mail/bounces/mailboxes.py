"""The bounce mailbox, chosen by `PAPERBOY_BOUNCE_MAILBOX`: a Maildir on disk, an IMAP folder
(imaps://) or a POP3 mailbox (pop3s://), each offering the same four steps: list the messages
not yet read, read one, mark one as done, close. Done means: Maildir, moved from new/ to cur/
and flagged seen; IMAP, flagged \\Seen; POP3 (which has no flags), deleted when it was a report
and left in place otherwise (the database remembers it was read, `mailbox_message`). Nothing is
deleted from a Maildir or an IMAP folder.

The standard library's clients are blocking: the job calls these methods in a thread. TLS is
verified against the system's CAs, or those of `PAPERBOY_BOUNCE_MAILBOX_CA_FILE`. Errors never
carry the password."""

from __future__ import annotations

import contextlib
import imaplib
import os
import poplib
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

IMAPS_PORT = 993
MAX_MESSAGE_BYTES = 10 * 1024 * 1024  # larger messages are not reports: left unread
IMAP_UID = re.compile(rb"UID (\d+)")
IMAP_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class MailboxError(Exception):
    """The mailbox cannot be opened or read; the message says why (never a password)."""


# What a mailbox session may raise mid-way: the connection or the server giving up.
MAILBOX_FAILURES = (OSError, EOFError, imaplib.IMAP4.error, poplib.error_proto)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    key: str  # the mailbox's own id: Maildir name, IMAP UIDVALIDITY.UID, POP3 UIDL
    size: int | None


class BounceMailbox(Protocol):
    name: str  # the mailbox without credentials, as recorded in `mailbox_message`

    def unread(self) -> list[StoredMessage]: ...

    def read(self, key: str) -> bytes: ...

    def done(self, key: str, *, remove: bool) -> None: ...

    def close(self) -> None: ...


class MaildirMailbox:
    """Messages in PATH/new are unread; done moves each to PATH/cur with the seen flag, the
    rename every Maildir reader makes (atomic on one file system)."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().resolve()
        if not (self.path / "new").is_dir() or not (self.path / "cur").is_dir():
            raise MailboxError(f"{self.path} is not a Maildir (no new/ and cur/ folders in it)")
        self.name = f"maildir://{self.path}"

    def unread(self) -> list[StoredMessage]:
        found = []
        with os.scandir(self.path / "new") as entries:
            for entry in entries:
                if entry.is_file() and not entry.name.startswith("."):
                    found.append(StoredMessage(entry.name, entry.stat().st_size))
        return sorted(found, key=lambda message: message.key)

    def read(self, key: str) -> bytes:
        return (self.path / "new" / _maildir_name(key)).read_bytes()

    def done(self, key: str, *, remove: bool) -> None:
        name = _maildir_name(key)
        # The Maildir info part: version 2, flag S (seen).
        with contextlib.suppress(FileNotFoundError):  # another process marked it meanwhile
            os.replace(self.path / "new" / name, self.path / "cur" / f"{name}:2,S")

    def close(self) -> None:
        return None


def _maildir_name(key: str) -> str:
    if "/" in key or key in (".", ".."):
        raise MailboxError(f"not a Maildir message name: {key!r}")
    return key


@dataclass(frozen=True, slots=True)
class MailboxLocation:
    scheme: str
    host: str
    port: int | None
    username: str
    password: str
    folder: str


def parse_mailbox_url(url: str) -> MailboxLocation:
    parts = urlsplit(url)
    if parts.scheme not in ("imaps", "pop3s") or not parts.hostname:
        raise MailboxError("the bounce mailbox must be imaps://user:pass@host/FOLDER or pop3s://…")
    if not parts.username or parts.password is None:
        raise MailboxError(
            f"{parts.scheme}:// needs a user and password: {parts.scheme}://user:pass@host"
        )
    try:
        port = parts.port
    except ValueError as error:
        raise MailboxError(f"bad port in PAPERBOY_BOUNCE_MAILBOX: {error}") from None
    return MailboxLocation(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port,
        username=unquote(parts.username),
        password=unquote(parts.password),
        folder=unquote(parts.path.lstrip("/")) or "INBOX",
    )


class ImapMailbox:
    """Unread is UNSEEN in the folder; done sets \\Seen. Keys pair UIDVALIDITY with the UID, so
    a folder that was recreated never passes for one already read."""

    def __init__(self, location: MailboxLocation, *, context: ssl.SSLContext, timeout: float):
        port = location.port or IMAPS_PORT
        self.name = f"imaps://{location.host}:{port}/{location.folder}"
        try:
            self.client = imaplib.IMAP4_SSL(
                location.host, port, ssl_context=context, timeout=timeout
            )
        except (OSError, imaplib.IMAP4.error) as error:
            raise MailboxError(f"cannot connect to {self.name}: {error}") from None
        try:
            self.client.login(location.username, location.password)
            status, data = self.client.select(_quoted(location.folder))
            if status != "OK":
                raise MailboxError(f"cannot open folder {location.folder!r}: {_text(data)}")
            validity = self.client.response("UIDVALIDITY")[1]
            self.validity = _text(validity) if validity and validity[0] else "0"
        except (OSError, imaplib.IMAP4.error) as error:
            self._abandon()
            raise MailboxError(f"{self.name}: {_without(error, location.password)}") from None
        except MailboxError:
            self._abandon()
            raise

    def unread(self) -> list[StoredMessage]:
        status, data = self.client.uid("SEARCH", "UNSEEN")
        if status != "OK":
            raise MailboxError(f"{self.name}: search failed: {_text(data)}")
        uids = _text(data).split()
        found = []
        for first in range(0, len(uids), 500):
            chunk = ",".join(uids[first : first + 500])
            status, sizes = self.client.uid("FETCH", chunk, "(RFC822.SIZE)")
            if status != "OK":
                raise MailboxError(f"{self.name}: fetch failed: {_text(sizes)}")
            for item in sizes:
                line = item[0] if isinstance(item, tuple) else item
                if not isinstance(line, bytes):
                    continue
                uid, size = IMAP_UID.search(line), IMAP_SIZE.search(line)
                if uid:
                    found.append(
                        StoredMessage(
                            f"{self.validity}.{uid.group(1).decode()}",
                            int(size.group(1)) if size else None,
                        )
                    )
        return found

    def read(self, key: str) -> bytes:
        status, data = self.client.uid("FETCH", self._uid(key), "(BODY.PEEK[])")
        for item in data if status == "OK" else []:
            if isinstance(item, tuple) and isinstance(item[1], bytes):
                return item[1]
        raise MailboxError(f"{self.name}: message {key} could not be read: {_text(data)}")

    def done(self, key: str, *, remove: bool) -> None:
        status, data = self.client.uid("STORE", self._uid(key), "+FLAGS.SILENT", "(\\Seen)")
        if status != "OK":
            raise MailboxError(f"{self.name}: message {key} could not be marked: {_text(data)}")

    def close(self) -> None:
        try:
            self.client.close()
            self.client.logout()
        except (OSError, imaplib.IMAP4.error):
            self._abandon()

    def _uid(self, key: str) -> str:
        validity, _, uid = key.partition(".")
        if validity != self.validity or not uid.isdigit():
            raise MailboxError(f"{self.name}: {key} is not a message of this folder")
        return uid

    def _abandon(self) -> None:
        with contextlib.suppress(OSError):
            self.client.shutdown()


class Pop3Mailbox:
    """Every message the server lists is unread until the database says otherwise (POP3 keeps
    no flags); done deletes a report, and the deletions take effect when the session closes."""

    def __init__(self, location: MailboxLocation, *, context: ssl.SSLContext, timeout: float):
        port = location.port or poplib.POP3_SSL_PORT
        self.name = f"pop3s://{location.host}:{port}"
        try:
            self.client = poplib.POP3_SSL(location.host, port, timeout=timeout, context=context)
        except (OSError, poplib.error_proto) as error:
            raise MailboxError(f"cannot connect to {self.name}: {error}") from None
        try:
            self.client.user(location.username)
            self.client.pass_(location.password)
        except (OSError, poplib.error_proto) as error:
            self.client.close()
            raise MailboxError(f"{self.name}: {_without(error, location.password)}") from None
        self.numbers: dict[str, int] = {}

    def unread(self) -> list[StoredMessage]:
        sizes = {}
        for line in self.client.list()[1]:
            number, _, size = line.decode().partition(" ")
            sizes[int(number)] = int(size)
        found = []
        for line in self.client.uidl()[1]:
            number, _, uid = line.decode().partition(" ")
            self.numbers[uid] = int(number)
            found.append(StoredMessage(uid, sizes.get(int(number))))
        return found

    def read(self, key: str) -> bytes:
        return b"\r\n".join(self.client.retr(self._number(key))[1]) + b"\r\n"

    def done(self, key: str, *, remove: bool) -> None:
        if remove:
            self.client.dele(self._number(key))

    def close(self) -> None:
        try:
            self.client.quit()  # the deletions happen here
        except (OSError, poplib.error_proto):
            self.client.close()

    def _number(self, key: str) -> int:
        if key not in self.numbers:
            raise MailboxError(f"{self.name}: no message {key}")
        return self.numbers[key]


def open_mailbox(url: str, *, ca_file: str | None, timeout: float) -> BounceMailbox:
    """Open the bounce mailbox `url` names (blocking: call it in a thread)."""
    if url.startswith("maildir://"):
        path = url.removeprefix("maildir://")
        if not path:
            raise MailboxError("maildir:// needs a path, e.g. maildir:///var/mail/bounces")
        return MaildirMailbox(Path(path))
    location = parse_mailbox_url(url)
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as error:
        raise MailboxError(f"PAPERBOY_BOUNCE_MAILBOX_CA_FILE: {error}") from None
    if location.scheme == "imaps":
        return ImapMailbox(location, context=context, timeout=timeout)
    return Pop3Mailbox(location, context=context, timeout=timeout)


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(data: object) -> str:
    if isinstance(data, list | tuple):
        return " ".join(_text(item) for item in data if item is not None)
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


def _without(error: Exception, secret: str) -> str:
    return str(error).replace(secret, "***") if secret else str(error)
