"""The web app served for real in tests: uvicorn in a background thread on a free port, talking
to the test database and mailing through the in-process SMTP sink, plus helpers to read the
links Paperboy mails out."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage

import uvicorn

from app.config import Settings
from app.web import create_app
from tests.support.smtp_sink import SinkHandler, free_port, smtp_sink

ADMIN_TOKEN = "test-admin-token-0123456789"


@dataclass
class RunningApp:
    base_url: str
    sink: SinkHandler
    settings: Settings

    def wait_for_mail(self, recipient: str, count: int = 1, timeout: float = 10.0) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.sink.messages(recipient)
            if len(messages) >= count:
                return messages[count - 1]
            time.sleep(0.02)
        raise AssertionError(f"no mail #{count} for {recipient} within {timeout} s")


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
    with smtp_sink() as (sink, smtp_port):
        configured = app_settings(settings, smtp_port, **changes)
        port = free_port()
        configured = configured.model_copy(update={"base_url": f"http://127.0.0.1:{port}"})
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(configured),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="on",
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the web app did not start")
            time.sleep(0.01)
        try:
            yield RunningApp(f"http://127.0.0.1:{port}", sink, configured)
        finally:
            server.should_exit = True
            thread.join(15)
