"""Sources fetched over real HTTP from a local server: payloads load, transient failures (5xx,
429 with Retry-After, dropped connections) are retried, and permanent ones fail fast and clearly."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.jobs import ingest_job
from tests.support.http_server import Route, serve

Sessions = async_sessionmaker[AsyncSession]


async def test_each_format_loads_from_a_url(
    session_factory: Sessions, settings: Settings, data: Path, sample_page: Path
) -> None:
    routes = {
        "/page.txt": Route(sample_page.read_bytes(), gzip=True),
        "/api/query?id_list=2312.00752": Route((data / "arxiv-atom.xml").read_bytes()),
        "/api/daily_papers": Route((data / "hf-daily.json").read_bytes()),
        "/snapshot.jsonl": Route((data / "arxiv-snapshot.jsonl").read_bytes()),
    }
    with serve(routes) as server:
        reports = [
            await ingest_job(server.url(path), session_factory=session_factory, settings=settings)
            for path in routes
        ]
    assert [(r.format, r.ok, r.rejected) for r in reports] == [
        ("page", True, 0),
        ("arxiv-atom", True, 0),
        ("hf-daily", True, 0),
        ("arxiv-jsonl", True, 0),
    ]
    assert reports[0].inserted == 185


async def test_retries_5xx_and_honours_retry_after(
    session_factory: Sessions, settings: Settings, data: Path
) -> None:
    payload = (data / "hf-daily.json").read_bytes()
    routes = {
        "/flaky": Route(payload, failures=[503, 502]),
        "/limited": Route(payload, failures=[429], retry_after="1"),
    }
    with serve(routes) as server:
        flaky = await ingest_job(
            server.url("/flaky"), session_factory=session_factory, settings=settings
        )
        started = time.monotonic()
        limited = await ingest_job(
            server.url("/limited"), session_factory=session_factory, settings=settings
        )
        waited = time.monotonic() - started
        assert server.hits == {"/flaky": 3, "/limited": 2}
    assert flaky.ok and flaky.inserted == 4
    assert limited.ok and limited.unchanged == 4
    assert waited >= 1.0  # the server asked for one second


async def test_permanent_errors_fail_at_once_and_persistent_5xx_gives_up(
    session_factory: Sessions, settings: Settings
) -> None:
    routes = {"/gone": Route(always=404), "/down": Route(always=500)}
    fast = settings.model_copy(update={"http_retries": 1})
    with serve(routes) as server:
        gone = await ingest_job(server.url("/gone"), session_factory=session_factory, settings=fast)
        down = await ingest_job(server.url("/down"), session_factory=session_factory, settings=fast)
        assert server.hits == {"/gone": 1, "/down": 2}
    assert gone.error == f"GET {server.url('/gone')} failed with HTTP 404 Not Found"
    assert down.error == f"GET {server.url('/down')} failed with HTTP 500 after 2 attempts"


async def test_unreachable_host_is_a_clear_error(
    session_factory: Sessions, settings: Settings
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    fast = settings.model_copy(update={"http_retries": 1})
    report = await ingest_job(
        f"http://127.0.0.1:{port}/x.json", session_factory=session_factory, settings=fast
    )
    assert report.error and "failed after 2 attempts: ConnectError" in report.error
