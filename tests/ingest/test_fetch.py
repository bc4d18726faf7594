"""Sources fetched over real HTTP from a local server: payloads load, transient failures (5xx,
429 with Retry-After, dropped connections) are retried, permanent ones fail fast and clearly, and a
slow or bottomless server is cut off by the download deadline and the size cap."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.jobs import ingest_job
from app.models import IngestRun, IngestStatus
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


async def run_of(sessions: Sessions, report_source: str) -> IngestRun:
    async with sessions() as session:
        return (
            await session.scalars(
                select(IngestRun).where(IngestRun.source == report_source).order_by(IngestRun.id)
            )
        ).all()[-1]


async def test_a_dripping_server_is_cut_off_at_the_download_deadline(
    session_factory: Sessions, settings: Settings, data: Path
) -> None:
    # Ten bytes every 50 ms: each read is quick, so only a deadline on the whole download ends
    # it (the payload would take about a minute).
    payload = (data / "hf-daily.json").read_bytes()
    routes = {"/slow.json": Route(payload, drip_seconds=0.05, drip_bytes=10)}
    bounded = settings.model_copy(update={"http_deadline": 1.0, "http_timeout": 5.0})
    with serve(routes) as server:
        started = time.monotonic()
        report = await ingest_job(
            server.url("/slow.json"), session_factory=session_factory, settings=bounded
        )
        took = time.monotonic() - started
    assert report.error == (
        f"GET {server.url('/slow.json')} did not finish within 1 s (PAPERBOY_HTTP_DEADLINE)"
    )
    assert took < 5
    run = await run_of(session_factory, server.url("/slow.json"))
    assert (run.status, run.error, run.inserted) == (IngestStatus.FAILED, report.error, 0)


async def test_a_body_larger_than_the_cap_is_refused_however_it_comes(
    session_factory: Sessions, settings: Settings, data: Path
) -> None:
    cap = 64 * 1024
    big = b"[" + b'{"paper": {"id": "2401.00001"}},' * 4000 + b"{}]"  # ~128 kB, 5 kB gzipped
    routes = {
        "/announced": Route(b"[]", declared_length=10 * 1024 * 1024 * 1024),
        "/endless": Route(endless_bytes=512 * 1024 * 1024),
        "/gzipped": Route(big, gzip=True),
        "/fits": Route((data / "hf-daily.json").read_bytes()),
    }
    capped = settings.model_copy(update={"http_max_bytes": cap})
    with serve(routes) as server:
        reports = {
            path: await ingest_job(
                server.url(path), session_factory=session_factory, settings=capped
            )
            for path in routes
        }
        assert server.hits["/announced"] == 1  # refused by its headers, never retried
    for path in ("/announced", "/endless", "/gzipped"):
        assert reports[path].error == (
            f"GET {server.url(path)}: the body is larger than 65,536 bytes "
            "(PAPERBOY_HTTP_MAX_BYTES)"
        )
    assert reports["/fits"].ok and reports["/fits"].inserted == 4
