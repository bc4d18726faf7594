"""The processes as operators start them: `paperboy up` on a fresh directory (the newcomer's
journey: the page, a signup, the confirmation and the first digest in ./var/mail, a clean stop),
refusal to start in production with an unsafe configuration, JSON logs, and /metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import mailbox
import os
import re
import signal
import socket
import sys
import time
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from app.cli.allinone import PublicAddress, public_address
from app.config import Settings
from app.logs import JsonLines, configure_logging
from tests.conftest import isolated_settings
from tests.support.smtp_sink import free_port
from tests.support.web_app import ADMIN_TOKEN, serve_app

PAPERBOY = str(Path(sys.executable).parent / "paperboy")
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PAPERBOY_")}


def mails(maildir: Path) -> list[tuple[str, str]]:
    if not (maildir / "new").exists():
        return []
    found = []
    for path in sorted((maildir / "new").iterdir()):
        message = message_from_bytes(path.read_bytes(), policy=default_policy)
        body = message.get_body(("plain",))
        found.append((str(message["Subject"]), body.get_content() if body else ""))
    return found


async def wait_for(condition: object, seconds: float, what: str) -> None:
    """Wait for a file to land in the Maildir: no event announces one, so look every 20 ms."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def lines_until(stream: asyncio.StreamReader, announcement: bytes) -> bytes:
    """What the process printed up to and including the line that holds `announcement`."""
    printed = b""
    while announcement not in printed:
        line = await stream.readline()
        if not line:
            raise AssertionError(f"the process ended before printing {announcement!r}")
        printed += line
    return printed


@pytest.mark.slow
async def test_paperboy_up_newcomer_journey(tmp_path: Path) -> None:
    port = free_port()
    env = CLEAN_ENV | {"PAPERBOY_COMPOSE_INTERVAL_SECONDS": "10", "COLUMNS": "200"}
    process = await asyncio.create_subprocess_exec(
        PAPERBOY,
        "up",
        "--port",
        str(port),
        "--send-now",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    maildir = tmp_path / "var" / "mail"
    announced = b""
    try:
        assert process.stdout is not None
        # Printed once the server listens, after migrating and seeding.
        announced = await asyncio.wait_for(lines_until(process.stdout, b"Paperboy is up"), 60)
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            front = await client.get("/")
            assert front.status_code == 200 and front.text.count('<li class="paper">') == 20
            signup = await client.post(
                "/subscribe",
                data={"email": "newcomer@example.org", "topics": "making chatbots respond faster"},
            )
            assert signup.status_code == 200
            await wait_for(lambda: len(mails(maildir)) >= 1, 20, "the confirmation mail")
            subject, body = mails(maildir)[0]
            assert subject == "Confirm your Paperboy subscription"
            link = re.search(r"http\S+/confirm/\S+", body)
            assert link is not None and link.group(0).startswith(base)
            confirmed = await client.get(link.group(0))
            assert "You're subscribed" in confirmed.text
            assert "Your first digest arrives within a minute" in confirmed.text
            # Ranked by meaning with the shipped model, offline: words alone found one paper.
            await wait_for(lambda: len(mails(maildir)) >= 2, 120, "the first digest")
            digest_subject, digest_body = mails(maildir)[1]
            assert digest_subject.startswith("10 new papers on making chatbots respond faster")
            assert 'close in meaning to "making chatbots respond faster"' in digest_body
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()[-2000:]
    printed = (announced + stdout).decode()
    assert f"Paperboy is up: {base}" in printed
    assert f"links in mail: {base} (the address Paperboy listens on)" in printed
    assert "seeded 185 sample papers" in printed
    assert str(maildir.resolve()) in printed.replace("\n", "")
    assert (tmp_path / "var" / "paperboy.db").exists()
    assert len(list(mailbox.Maildir(maildir, create=False))) == 2


@pytest.mark.parametrize(
    "command", [["up"], ["web"], ["worker"], ["scheduler"], ["migrate"], ["send"]]
)
async def test_production_refuses_an_unsafe_configuration(
    tmp_path: Path, command: list[str]
) -> None:
    env = CLEAN_ENV | {"PAPERBOY_ENVIRONMENT": "production", "COLUMNS": "200"}
    process = await asyncio.create_subprocess_exec(
        PAPERBOY,
        *command,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    said = stderr.decode()
    assert "refusing to start in production" in said
    assert "PAPERBOY_SECRET_KEY is the development default" in said
    assert "PAPERBOY_BASE_URL points at this machine" in said
    assert not (tmp_path / "var").exists()  # nothing was started or written


def uvicorn_factory(port: int) -> list[str]:
    """The app served the way any ASGI deployment may serve it: uvicorn and the factory."""
    return [sys.executable, "-m", "uvicorn", "app.web:create_app", "--factory", f"--port={port}"]


async def test_the_app_factory_under_uvicorn_refuses_an_unsafe_configuration(
    tmp_path: Path,
) -> None:
    env = CLEAN_ENV | {"PAPERBOY_ENVIRONMENT": "production"}
    process = await asyncio.create_subprocess_exec(
        *uvicorn_factory(free_port()),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    said = stderr.decode()
    assert "paperboy: refusing to start in production:\n" in said
    assert "PAPERBOY_SECRET_KEY is the development default" in said
    assert "PAPERBOY_BASE_URL points at this machine" in said
    assert "Traceback" not in said and "Uvicorn running" not in said
    assert not (tmp_path / "var").exists()


async def test_the_app_factory_under_uvicorn_sets_up_logging(tmp_path: Path) -> None:
    port = free_port()
    env = CLEAN_ENV | {"PAPERBOY_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        *uvicorn_factory(port),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(150):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("uvicorn never answered")
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    lines = [json.loads(line) for line in stderr.decode().splitlines()]
    said = [(line["logger"], line["message"]) for line in lines]
    assert ("uvicorn.error", "Application startup complete.") in said
    assert any(logger == "uvicorn.access" and "/healthz" in what for logger, what in said)


def test_a_safe_production_configuration_passes() -> None:
    safe = isolated_settings(
        environment="production",
        secret_key="x" * 48,
        base_url="https://papers.example.net",
        mail_from="Paperboy <digest@papers.example.net>",
    )
    assert safe.unsafe_for_production() == []
    plain_http = safe.model_copy(update={"base_url": "http://papers.example.net"})
    assert plain_http.unsafe_for_production() == [
        "PAPERBOY_BASE_URL must be https:// in production"
    ]


def test_json_logs(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(isolated_settings(log_format="json"))
    try:
        logging.getLogger("paperboy.test").warning("sent %d digests", 3)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("paperboy.test").exception("it broke")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        logging.getLogger().handlers = []
    assert lines[0]["message"] == "sent 3 digests" and lines[0]["level"] == "warning"
    assert lines[0]["logger"] == "paperboy.test" and lines[0]["time"].endswith("+00:00")
    assert "RuntimeError: boom" in lines[1]["exception"]
    assert isinstance(JsonLines().format(logging.makeLogRecord({"msg": "x"})), str)


async def test_metrics(settings: Settings, engine: object) -> None:
    with serve_app(settings) as web:
        async with httpx.AsyncClient(base_url=web.base_url) as client:
            answer = await client.get(
                "/metrics", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
            )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    for name in (
        'paperboy_digests{status="queued"}',
        'paperboy_subscribers{status="active"}',
        "paperboy_papers ",
        "paperboy_send_latency_seconds_bucket",
        "paperboy_messages_total",
        "paperboy_smtp_errors_total",
        "paperboy_papers_ingested_total",
    ):
        assert name in text, name


async def test_paperboy_up_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            PAPERBOY,
            "up",
            "--port",
            str(port),
            cwd=tmp_path,
            env=CLEAN_ENV | {"COLUMNS": "200"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert stdout == b""
    assert stderr.decode().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: address already in use "
        "(choose another with --port, or stop what holds it)"
    ]
    assert not (tmp_path / "var").exists()  # nothing started, nothing migrated


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::", ""])
def test_links_in_mail_never_lead_to_a_wildcard_address(wildcard: str) -> None:
    address = public_address(isolated_settings(), host=wildcard, port=8000)
    host = urlsplit(address.url).hostname
    assert host in {socket.getfqdn(), socket.gethostname()} and host not in {"0.0.0.0", "::", ""}
    assert address.url.endswith(":8000") and "PAPERBOY_BASE_URL" in address.origin


def test_links_in_mail_follow_the_base_url_then_the_address_listened_on() -> None:
    configured = isolated_settings(base_url="https://papers.example.org")
    assert public_address(configured, host="0.0.0.0", port=8000) == PublicAddress(
        "https://papers.example.org", "PAPERBOY_BASE_URL"
    )
    listened = public_address(isolated_settings(), host="192.0.2.7", port=8123)
    assert listened.url == "http://192.0.2.7:8123"
    assert public_address(isolated_settings(), host="::1", port=80).url == "http://[::1]:80"


@pytest.mark.slow
async def test_paperboy_up_without_an_access_log(tmp_path: Path) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        PAPERBOY,
        "up",
        "--port",
        str(port),
        "--no-access-log",
        cwd=tmp_path,
        env=CLEAN_ENV | {"COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        await asyncio.wait_for(lines_until(process.stdout, b"Paperboy is up"), 60)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert (await client.get("/preferences/not-a-token")).status_code == 400
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    logged = stderr.decode()
    assert process.returncode == 0, logged[-2000:]
    assert "Application startup complete" in logged  # the log is on; requests are left out
    assert "/preferences/" not in logged and "HTTP/1.1" not in logged
