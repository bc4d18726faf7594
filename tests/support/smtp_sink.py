"""A real SMTP server for tests (aiosmtpd in a background thread): records every message it
accepts, and can be told to answer a recipient with given codes (421, 451, 550 ...) in turn, to
answer RCPT with given replies (one recipient's in turn, or every recipient's: a relay that
denies us), to drop a share of connections, or to take its time over each message. A test waits
for messages to arrive (`wait_for_received`, `wait_for_message`): woken by each arrival, never
polling."""

from __future__ import annotations

import asyncio
import email
import random
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class SinkHandler:
    scripted: dict[str, list[int]] = field(default_factory=dict)
    # Whole replies to RCPT ("554 5.7.1 Relaying denied"): a recipient's in turn, then
    # `every_rcpt` for every recipient when set.
    rcpt_scripted: dict[str, list[str]] = field(default_factory=dict)
    every_rcpt: str | None = None
    rcpt_refused: list[tuple[str, str]] = field(default_factory=list)  # (recipient, reply)
    transient_share: float = 0.0  # share of messages answered 451 or with a dropped connection
    delay: float = 0.0
    seed: int = 7
    received: list[tuple[str, bytes]] = field(default_factory=list)
    mail_options: list[list[str]] = field(default_factory=list)  # of each accepted message
    envelope_senders: dict[str, str] = field(default_factory=dict)  # MAIL FROM, by recipient
    answers: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        self.arrived = threading.Condition(self.lock)  # notified on every accepted message

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.lock:
            replies = self.rcpt_scripted.get(address)
            reply = replies.pop(0) if replies else self.every_rcpt
            if reply is not None:
                self.rcpt_refused.append((address, reply))
                return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        recipient = envelope.rcpt_tos[0]
        if self.delay:
            await asyncio.sleep(self.delay)  # a server that takes its time over each message
        with self.lock:
            codes = self.scripted.get(recipient)
            code = codes.pop(0) if codes else 250
            if code == 250 and self.transient_share and self.random.random() < self.transient_share:
                code = self.random.choice([421, 451, 0])
            self.answers[code] += 1
            if code == 250:
                self.received.append((recipient, envelope.original_content))
                self.mail_options.append(list(envelope.mail_options))
                self.envelope_senders[recipient] = envelope.mail_from
                self.arrived.notify_all()
        if code == 0:
            server.transport.abort()  # the connection is lost before any reply
            return "451 4.4.2 Connection lost"
        if code == 421:
            return "421 4.3.2 Service shutting down, try later"
        if code == 250:
            return "250 2.0.0 OK queued"
        return f"{code} {'5.1.1 No such user' if code >= 500 else '4.2.0 Try again later'}"

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Block until `condition` (called holding the lock) holds; False if `timeout` passed
        first."""
        with self.arrived:
            return self.arrived.wait_for(condition, timeout)

    async def wait_for_received(self, count: int, seconds: float) -> bool:
        """Wait, without blocking the event loop, until `count` messages have been accepted;
        False if `seconds` passed first."""
        return await asyncio.to_thread(
            self.wait_until, lambda: len(self.received) >= count, seconds
        )

    def wait_for_message(self, recipient: str, count: int, timeout: float) -> EmailMessage:
        """The `count`th message accepted for `recipient`, once it has arrived."""

        def arrived() -> bool:
            return sum(rcpt == recipient for rcpt, _ in self.received) >= count

        if not self.wait_until(arrived, timeout):
            raise AssertionError(f"no mail #{count} for {recipient} within {timeout} s")
        return self.messages(recipient)[count - 1]

    def messages(self, recipient: str | None = None) -> list[EmailMessage]:
        with self.lock:
            chosen = [data for rcpt, data in self.received if recipient in (None, rcpt)]
        return [email.message_from_bytes(data, policy=default_policy) for data in chosen]

    def per_recipient(self) -> Counter[str]:
        with self.lock:
            return Counter(rcpt for rcpt, _ in self.received)


@contextmanager
def smtp_sink(
    handler: SinkHandler | None = None, *, smtputf8: bool = False
) -> Iterator[tuple[SinkHandler, int]]:
    handler = handler or SinkHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()
