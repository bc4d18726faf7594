"""`paperboy web` as an operator runs it, in a subprocess on a migrated database: its access log
never holds a link token, and `--proxy-headers` believes X-Forwarded-For only from the proxies
PAPERBOY_FORWARDED_ALLOW_IPS names, so a client cannot dodge the signup limit by naming a new
address in each request."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.subscribers.rules import Preferences, add_active_subscriber
from app.subscribers.tokens import Purpose, make_token
from tests.support.smtp_sink import free_port

PAPERBOY = str(Path(sys.executable).parent / "paperboy")
SECRET = "web-command-secret-key-0123456789"
START_SECONDS = 60


class Served:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.log = ""  # everything the process wrote to stderr, once it has stopped


@asynccontextmanager
async def paperboy_web(
    database_url: str, tmp_path: Path, *args: str, **settings: str
) -> AsyncIterator[Served]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPERBOY_")} | {
        "PAPERBOY_DATABASE_URL": database_url,
        "PAPERBOY_SECRET_KEY": SECRET,
        "PAPERBOY_MAIL_URL": f"maildir://{tmp_path / 'mail'}",
        "PAPERBOY_EMBEDDING_MODEL": "none",
        **{f"PAPERBOY_{name.upper()}": value for name, value in settings.items()},
    }
    process = await asyncio.create_subprocess_exec(
        PAPERBOY,
        "web",
        "--port",
        str(port),
        *args,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    served = Served(f"http://127.0.0.1:{port}")
    try:
        async with httpx.AsyncClient(base_url=served.base_url, timeout=10) as client:
            for _ in range(START_SECONDS * 10):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("paperboy web never answered")
        yield served
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        served.log = stderr.decode()


@pytest.mark.slow
async def test_the_access_log_holds_no_link_token(
    database_url: str, session_factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    async with session_factory() as session:
        ada = await add_active_subscriber("ada@example.org", Preferences(["x"]), session=session)
        await session.commit()
    subjects: dict[Purpose, tuple[str | int, ...]] = {Purpose.MUTE: ("x",)}
    tokens = {
        purpose: make_token(
            SECRET, purpose, ada.public_id, ada.token_version, *subjects.get(purpose, ())
        )
        for purpose in Purpose
    }
    async with (
        paperboy_web(database_url, tmp_path) as web,
        httpx.AsyncClient(base_url=web.base_url) as client,
    ):
        answers = [
            await client.get(f"/confirm/{tokens[Purpose.CONFIRM]}"),
            await client.get(f"/preferences/{tokens[Purpose.PREFERENCES]}?saved=1"),
            await client.get(f"/unsubscribe/{tokens[Purpose.UNSUBSCRIBE]}"),
            await client.post(f"/unsubscribe/{tokens[Purpose.UNSUBSCRIBE]}"),
            await client.get(f"/digests/{tokens[Purpose.DIGEST]}/{date.today()}"),
            await client.get(f"/digests/{tokens[Purpose.DIGEST]}?page=2"),
            await client.get(f"/feeds/{tokens[Purpose.FEED]}"),
            await client.get(f"/mute/{tokens[Purpose.MUTE]}"),
            await client.post(f"/mute/{tokens[Purpose.MUTE]}"),
            # Paper 1 was in none of ada's digests: refused.
            await client.get(f"/feedback/{tokens[Purpose.FEEDBACK]}/1/more"),
        ]
    assert [answer.status_code for answer in answers] == [
        200,
        200,
        200,
        200,
        404,
        200,
        200,
        200,
        200,
        400,
    ]
    assert '"GET /mute/[token] HTTP/1.1" 200' in web.log
    assert '"POST /mute/[token] HTTP/1.1" 200' in web.log
    assert '"GET /feedback/[token]/1/more HTTP/1.1" 400' in web.log
    assert '"GET /preferences/[token]?saved=1 HTTP/1.1" 200' in web.log
    assert '"POST /unsubscribe/[token] HTTP/1.1" 200' in web.log
    assert f'"GET /digests/[token]/{date.today()} HTTP/1.1" 404' in web.log
    assert '"GET /digests/[token]?page=2 HTTP/1.1" 200' in web.log
    assert '"GET /feeds/[token] HTTP/1.1" 200' in web.log
    for purpose, token in tokens.items():
        assert token not in web.log, purpose
        assert token.rpartition(".")[2] not in web.log, purpose  # not even its signature


@pytest.mark.slow
@pytest.mark.parametrize(
    ("proxies", "answers"),
    [
        # The request comes from 127.0.0.1, not a proxy: X-Forwarded-For is ignored and every
        # request counts against 127.0.0.1's limit of 2.
        ("10.9.8.7 192.168.0.0/16", [200, 200, 429, 429]),
        # From the configured proxy: each request is counted for the client it names.
        ("127.0.0.1", [200, 200, 200, 200]),
    ],
)
async def test_forwarded_addresses_are_believed_only_from_configured_proxies(
    database_url: str, tmp_path: Path, proxies: str, answers: list[int]
) -> None:
    async with (
        paperboy_web(
            database_url,
            tmp_path,
            "--proxy-headers",
            forwarded_allow_ips=proxies,
            signup_ip_limit="2",
        ) as web,
        httpx.AsyncClient(base_url=web.base_url) as client,
    ):
        statuses = [
            (
                await client.post(
                    "/subscribe",
                    data={"email": f"reader{n}@example.org", "topics": "LLM"},
                    headers={"x-forwarded-for": f"203.0.113.{n}"},
                )
            ).status_code
            for n in range(4)
        ]
    assert statuses == answers
