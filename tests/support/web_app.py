"""The web app served for real in tests: uvicorn in a background thread, talking to the test
database and mailing through the in-process SMTP sink, plus helpers to read the links Paperboy
mails out. The listening socket is bound before the server starts (no free-port race between
test processes), and a test waits on events: the app's start-up, a mail's arrival, the app
having sent every mail its requests queued."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import uvicorn
from fastapi import FastAPI

from app.config import Settings
from app.web import create_app
from app.web.deps import WebState
from tests.support.smtp_sink import SinkHandler, smtp_sink

ADMIN_TOKEN = "test-admin-token-0123456789"
START_SECONDS = 15.0


class ObservedApp:
    """The ASGI app as uvicorn runs it, seen from the test's thread: the event loop it runs on
    and the end of its start-up (the lifespan's answer)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = threading.Event()
        self.failure: str | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        self.loop = asyncio.get_running_loop()

        async def watched(message: Any) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.failed":
                self.failure = str(message.get("message", "start-up failed"))
            if message["type"] in ("lifespan.startup.complete", "lifespan.startup.failed"):
                self.started.set()

        await self.app(scope, receive, watched)


@dataclass
class RunningApp:
    base_url: str
    sink: SinkHandler
    settings: Settings
    observed: ObservedApp

    def wait_for_mail(self, recipient: str, count: int = 1, timeout: float = 10.0) -> EmailMessage:
        return self.sink.wait_for_message(recipient, count, timeout)

    def wait_for_queued_mail(self, timeout: float = 10.0) -> None:
        """Return once the app has sent every mail its requests so far queued (signup mail goes
        out after the answer): after this, a mail that has not arrived was never sent."""
        state: WebState = self.observed.app.state.paperboy

        async def settled() -> int:
            await state.drain(timeout)
            return len(state.mail_tasks)

        assert self.observed.loop is not None
        waiting = asyncio.run_coroutine_threadsafe(settled(), self.observed.loop)
        assert waiting.result(timeout + 5) == 0, "the app still had mail to send"


def link_in(message: EmailMessage, path: str) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    match = re.search(rf"https?://\S+/{path}/\S+", body.get_content())
    assert match is not None, f"no /{path}/ link in the mail"
    return match.group(0)


def app_settings(settings: Settings, smtp_port: int, **changes: object) -> Settings:
    return settings.model_copy(
        update={
            "mail_url": f"smtp://127.0.0.1:{smtp_port}",
            "mail_from": "Paperboy <digest@papers.example.org>",
            "secret_key": "web-test-secret-key-0123456789",
            "admin_token": ADMIN_TOKEN,
            **changes,
        }
    )


@contextmanager
def serve_app(settings: Settings, **changes: object) -> Iterator[RunningApp]:
    with smtp_sink() as (sink, smtp_port), socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(128)
        port = int(listening.getsockname()[1])
        # Links lead back to this server unless the test names the site's address itself.
        changes.setdefault("base_url", f"http://127.0.0.1:{port}")
        configured = app_settings(settings, smtp_port, **changes)
        observed = ObservedApp(create_app(configured))
        server = uvicorn.Server(
            uvicorn.Config(observed, log_level="warning", lifespan="on", interface="asgi3")
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
        thread.start()
        # Connections wait in the socket's backlog from here on; requests are answered once
        # start-up is over, which is what this waits for.
        if not observed.started.wait(START_SECONDS) or observed.failure is not None:
            server.should_exit = True
            thread.join(START_SECONDS)
            raise RuntimeError(f"the web app did not start: {observed.failure or 'timed out'}")
        try:
            yield RunningApp(f"http://127.0.0.1:{port}", sink, configured, observed)
        finally:
            server.should_exit = True
            thread.join(15)
