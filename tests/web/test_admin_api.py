"""The admin API over real HTTP: closed without a token, refusing wrong tokens, and every route
with the behaviour an operator relies on (filters and cursor pages, CSV import with bad rows and
a dry run, export, GDPR erase, ingest by upload and by URL, digests, previews, jobs, stats)."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.jobs import compose_job, ingest_job
from app.models import Digest, Subscriber
from app.subscribers.rules import Preferences, add_active_subscriber
from tests.support.http_server import Route, serve
from tests.support.web_app import ADMIN_TOKEN, RunningApp, serve_app

Sessions = async_sessionmaker[AsyncSession]
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
# A digest day relative to the run, so that the stats window (the last days) always holds it.
DAY = datetime.now(UTC).date()


@pytest.fixture
def web(engine: AsyncEngine, settings: Settings, tmp_path: Path) -> Iterator[RunningApp]:
    with serve_app(settings, mail_url=f"maildir://{tmp_path / 'mail'}") as running:
        yield running


@pytest.fixture
async def api(web: RunningApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web.base_url, headers=AUTH, timeout=60) as client:
        yield client


async def finished(api: httpx.AsyncClient, started: httpx.Response) -> dict[str, Any]:
    """A job's run record once the job is over: the start answered 202 with the record, whose
    address the test polls (the job runs in the server, apart from the request)."""
    assert started.status_code == 202, started.text
    location = started.headers["location"]
    for _ in range(3000):
        run: dict[str, Any] = (await api.get(location)).json()
        if run["status"] != "running":
            return run
        await asyncio.sleep(0.01)
    raise AssertionError(f"{location} still running after 30 s")


async def count(sessions: Sessions, model: type[Subscriber] | type[Digest]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_closed_without_a_configured_token(settings: Settings) -> None:
    with serve_app(settings, admin_token=None) as web:
        async with httpx.AsyncClient(base_url=web.base_url) as client:
            for path in ("/admin/api/subscribers", "/admin/api/stats"):
                assert (await client.get(path, headers=AUTH)).status_code == 404
                assert (await client.get(path)).status_code == 404
            assert (await client.post("/admin/api/jobs/send", headers=AUTH)).status_code == 404


async def test_wrong_or_missing_tokens_are_refused(web: RunningApp) -> None:
    async with httpx.AsyncClient(base_url=web.base_url) as client:
        for headers in (
            {},
            {"authorization": "Bearer wrong-token-0000000000"},
            {"authorization": f"Basic {ADMIN_TOKEN}"},
            {"authorization": f"Bearer {ADMIN_TOKEN}x"},
        ):
            answer = await client.get("/admin/api/subscribers", headers=headers)
            assert answer.status_code == 401
            assert answer.headers["www-authenticate"] == "Bearer"
            assert "admin token" in answer.json()["detail"]


async def test_subscriber_lifecycle_filters_and_cursor_pages(
    api: httpx.AsyncClient, session_factory: Sessions
) -> None:
    created = await api.post(
        "/admin/api/subscribers",
        json={
            "email": "Ann@Example.org",
            "topics": ["mixture of experts"],
            "timezone": "Asia/Tokyo",
        },
    )
    assert created.status_code == 201
    ann = created.json()
    assert (ann["email"], ann["status"], ann["timezone"]) == (
        "Ann@example.org",
        "active",
        "Asia/Tokyo",
    )
    duplicate = await api.post("/admin/api/subscribers", json={"email": "ann@example.org"})
    assert duplicate.status_code == 409
    invalid = await api.post(
        "/admin/api/subscribers", json={"email": "ann@example.org", "send_hour": 24}
    )
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["field"] == "send_hour"
    bad_zone = await api.post(
        "/admin/api/subscribers", json={"email": "x@example.org", "timezone": "Nope"}
    )
    assert bad_zone.status_code == 422 and "timezone" in bad_zone.json()["detail"]

    for n in range(7):
        topics = ["FPGA accelerators"] if n % 2 else ["LLM quantization"]
        await api.post(
            "/admin/api/subscribers", json={"email": f"r{n}@example.org", "topics": topics}
        )
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await api.get("/admin/api/subscribers", params=params)).json()
        seen += [item["email"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 8 == len(set(seen)) and pages == 3
    fpga = (await api.get("/admin/api/subscribers", params={"topic": "fpga accelerators"})).json()
    assert [s["email"] for s in fpga["items"]] == [
        "r1@example.org",
        "r3@example.org",
        "r5@example.org",
    ]
    searched = (await api.get("/admin/api/subscribers", params={"q": "ANN@"})).json()
    assert [s["email"] for s in searched["items"]] == ["Ann@example.org"]
    assert (await api.get("/admin/api/subscribers", params={"cursor": "abc"})).status_code == 422

    updated = await api.patch(
        f"/admin/api/subscribers/{ann['id']}",
        json={"send_hour": 9, "status": "paused", "revoke_links": True},
    )
    assert updated.status_code == 200
    assert (updated.json()["send_hour"], updated.json()["status"]) == (9, "paused")
    assert updated.json()["token_version"] == 2
    assert (updated.json()["frequency"], updated.json()["weekday"]) == ("daily", 0)
    weekly = await api.patch(
        f"/admin/api/subscribers/{ann['id']}", json={"frequency": "weekly", "weekday": 6}
    )
    assert (weekly.json()["frequency"], weekly.json()["weekday"], weekly.json()["send_hour"]) == (
        "weekly",
        6,
        9,
    )
    for bad in ({"weekday": 7}, {"frequency": "hourly"}):
        refused = await api.patch(f"/admin/api/subscribers/{ann['id']}", json=bad)
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] in bad
    assert (
        await api.patch(f"/admin/api/subscribers/{ann['id']}", json={"colour": "red"})
    ).status_code == 422
    assert (await api.get("/admin/api/subscribers/999999")).status_code == 404
    paused = (await api.get("/admin/api/subscribers", params={"status": "paused"})).json()
    assert [s["id"] for s in paused["items"]] == [ann["id"]]


async def test_erase_removes_the_subscriber_and_their_digests(
    api: httpx.AsyncClient, session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    async with session_factory() as session:
        reader = await add_active_subscriber(
            "del@example.org", Preferences(["mixture of experts"]), session=session
        )
        await session.commit()
    await compose_job(session_factory=session_factory, settings=settings, on_date=DAY)
    assert await count(session_factory, Digest) == 1
    assert (await api.delete(f"/admin/api/subscribers/{reader.id}")).status_code == 204
    assert await count(session_factory, Digest) == 0
    assert await count(session_factory, Subscriber) == 0
    assert (await api.delete(f"/admin/api/subscribers/{reader.id}")).status_code == 404


async def test_csv_import_reports_bad_rows_and_dry_run_changes_nothing(
    api: httpx.AsyncClient, session_factory: Sessions
) -> None:
    async with session_factory() as session:
        await add_active_subscriber("old@example.org", Preferences(["old topic"]), session=session)
        await session.commit()
    rows = (
        "email,status,topics,timezone,send_hour,digest_size,trending_weight,frequency,weekday\n"
        "new@example.org,active,mixture of experts;FPGA,Europe/Berlin,7,10,0.3,weekly,fri\n"
        "OLD@example.org,paused,new topic,UTC,9,5,0.5,,\n"
        "not-an-address,active,x,UTC,7,10,0.3,,\n"
        "bad-hour@example.org,active,x,UTC,31,10,0.3,,\n"
        "bad-zone@example.org,active,x,Mars/Base,7,10,0.3,,\n"
        "bad-status@example.org,sleeping,x,UTC,7,10,0.3,,\n"
        "new@example.org,active,dup,UTC,7,10,0.3,,\n"
        "bad-day@example.org,active,x,UTC,7,10,0.3,weekly,someday\n"
        "bad-often@example.org,active,x,UTC,7,10,0.3,hourly,0\n"
    )
    files = {"file": ("subscribers.csv", rows.encode(), "text/csv")}
    dry = await api.post("/admin/api/subscribers/import", params={"dry_run": "true"}, files=files)
    assert dry.status_code == 200
    report = dry.json()
    assert (report["dry_run"], report["rows"], report["created"], report["updated"]) == (
        True,
        9,
        1,
        1,
    )
    rejected = {r["line"]: r["reason"] for r in report["rejected"]}
    assert set(rejected) == {4, 5, 6, 7, 8, 9, 10}
    assert "weekday" in rejected[9] and "frequency must be daily or weekly" in rejected[10]
    assert "invalid email address" in rejected[4]
    assert "send hour" in rejected[5]
    assert "unknown timezone" in rejected[6]
    assert "status 'sleeping'" in rejected[7]
    assert "earlier in the file" in rejected[8]
    assert await count(session_factory, Subscriber) == 1

    real = await api.post("/admin/api/subscribers/import", files=files)
    assert real.json()["created"] == 1 and real.json()["updated"] == 1
    async with session_factory() as session:
        old = await session.scalar(select(Subscriber).where(Subscriber.email == "old@example.org"))
        assert old is not None and old.status.value == "paused" and old.topics == ["new topic"]
    no_header = await api.post(
        "/admin/api/subscribers/import", files={"file": ("x.csv", b"a,b\n1,2\n", "text/csv")}
    )
    assert no_header.status_code == 422 and "email" in no_header.json()["detail"]
    binary = await api.post(
        "/admin/api/subscribers/import", files={"file": ("x.csv", b"\xff\xfe\x00bad", "text/csv")}
    )
    assert binary.status_code == 422

    exported = await api.get("/admin/api/subscribers/export")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["email"] for r in table] == ["old@example.org", "new@example.org"]
    assert table[1]["topics"] == "mixture of experts;FPGA"
    assert [(r["frequency"], r["weekday"]) for r in table] == [("daily", "0"), ("weekly", "4")]


async def test_papers_and_ingest_by_upload_and_url(
    api: httpx.AsyncClient, sample_page: Path, data: Path
) -> None:
    upload = await finished(
        api,
        await api.post(
            "/admin/api/ingest",
            files={"file": ("page.txt", sample_page.read_bytes(), "text/plain")},
        ),
    )
    assert upload["status"] == "succeeded", upload
    assert (upload["report"]["inserted"], upload["report"]["format"]) == (185, "page")
    assert upload["report"]["source"] == "page.txt"
    with serve({"/daily.json": Route(body=(data / "hf-daily.json").read_bytes())}) as server:
        by_url = await finished(
            api, await api.post("/admin/api/ingest", data={"url": server.url("/daily.json")})
        )
    assert by_url["status"] == "succeeded" and by_url["report"]["format"] == "hf-daily"
    broken = await finished(
        api,
        await api.post(
            "/admin/api/ingest", files={"file": ("x.json", b"{not json", "application/json")}
        ),
    )
    assert broken["status"] == "failed" and broken["error"] and broken["report"]["error"]
    assert (await api.post("/admin/api/ingest")).status_code == 422
    assert (
        await api.post("/admin/api/ingest", data={"url": "file:///etc/passwd"})
    ).status_code == 422
    runs = (await api.get("/admin/api/ingest-runs")).json()
    assert [r["status"] for r in runs][:3] == ["failed", "succeeded", "succeeded"]

    found = (await api.get("/admin/api/papers", params={"q": "mamba"})).json()["items"]
    assert any(p["title"].startswith("Mamba") for p in found)
    paper = (await api.get(f"/admin/api/papers/{found[0]['id']}")).json()
    assert paper["id"] == found[0]["id"] and paper["abstract"]
    assert (await api.get("/admin/api/papers/999999")).status_code == 404
    assert (await api.get("/admin/api/papers/0")).status_code == 422
    page = (await api.get("/admin/api/papers", params={"limit": 100})).json()
    assert len(page["items"]) == 100 and page["next_cursor"] is not None


async def test_digests_preview_jobs_and_stats(
    api: httpx.AsyncClient,
    session_factory: Sessions,
    settings: Settings,
    sample_page: Path,
    web: RunningApp,
) -> None:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    async with session_factory() as session:
        reader = await add_active_subscriber(
            "ops@example.org", Preferences(["mixture of experts"]), session=session
        )
        await session.commit()
    preview = await api.get(
        f"/admin/api/subscribers/{reader.id}/preview", params={"date": DAY.isoformat()}
    )
    assert preview.status_code == 200 and "Mixture-of-Experts" in preview.text
    text = await api.get(f"/admin/api/subscribers/{reader.id}/preview", params={"format": "text"})
    assert text.headers["content-type"].startswith("text/plain")

    dry = (
        await api.post(
            "/admin/api/jobs/compose", params={"dry_run": "true", "date": DAY.isoformat()}
        )
    ).json()
    assert dry["report"]["due"] == 1 and dry["report"]["planned"] == 1
    assert await count(session_factory, Digest) == 0
    composed = await finished(
        api, await api.post("/admin/api/jobs/compose", params={"date": DAY.isoformat()})
    )
    assert composed["status"] == "succeeded" and composed["report"]["queued"] == 1
    assert composed["parameters"] == {"date": DAY.isoformat()}
    due = (await api.post("/admin/api/jobs/send", params={"dry_run": "true"})).json()
    assert due["report"] == {
        "due": 1,
        "held_by_stopped_workers": 0,
        "held_by_stopped_workers_until": None,
        "held_by_other_workers": 0,
    }
    sent = await finished(api, await api.post("/admin/api/jobs/send"))
    assert sent["report"]["sent"] == 1
    runs = (await api.get("/admin/api/job-runs")).json()
    assert [(r["job"], r["status"]) for r in runs] == [
        ("send", "succeeded"),
        ("compose", "succeeded"),
    ]
    assert (await api.get("/admin/api/job-runs/999999")).status_code == 404

    listed = (
        await api.get("/admin/api/digests", params={"date": DAY.isoformat(), "status": "sent"})
    ).json()
    assert len(listed["items"]) == 1
    detail = (await api.get(f"/admin/api/digests/{listed['items'][0]['id']}")).json()
    assert [i["rank"] for i in detail["items"]] == list(range(1, 11))
    assert detail["items"][0]["matched_topic"] == "mixture of experts"
    assert (await api.get("/admin/api/digests/999999")).status_code == 404

    stats = (await api.get("/admin/api/stats")).json()
    assert stats["subscribers"]["active"] == 1
    assert stats["digests_by_day"][DAY.isoformat()] == {"sent": 1}
    assert stats["last_ingest"]["inserted"] == 185
    assert stats["delivery"]["refusal"] is None and stats["delivery"]["workers_alive"] == 0
    assert (await api.post("/admin/api/jobs/ingest")).status_code == 422  # no sources configured
    assert (await api.post("/admin/api/jobs/rebuild")).status_code == 422


async def test_run_ingest_now_reads_urls_and_configured_sources_never_other_paths(
    engine: AsyncEngine, settings: Settings, sample_page: Path, data: Path, tmp_path: Path
) -> None:
    configured = tmp_path / "configured-page.txt"
    configured.write_bytes(sample_page.read_bytes())
    routes = {"/daily.json": Route(body=(data / "hf-daily.json").read_bytes())}
    with (
        serve(routes) as server,
        serve_app(
            settings, sources=[str(configured)], mail_url="maildir://" + str(tmp_path)
        ) as app,
    ):
        async with httpx.AsyncClient(base_url=app.base_url, headers=AUTH, timeout=60) as api:
            for refused in [
                "/etc/passwd",
                "file:///etc/passwd",
                "../../etc/passwd",
                "/etc/passwd\x00",
                "http://127.0.0.1/\x00.json",
                "http://exa mple.org/x",
                "https://",
            ]:
                answer = await api.post("/admin/api/jobs/ingest", params={"source": refused})
                assert answer.status_code == 422, (refused, answer.text)
                assert "http(s) URL or an entry of PAPERBOY_SOURCES" in answer.json()["detail"]
            upload_url = await api.post("/admin/api/ingest", data={"url": "http://x/\x00"})
            assert upload_url.status_code == 422
            assert (await api.get("/admin/api/ingest-runs")).json() == []

            dry = await api.post(
                "/admin/api/jobs/ingest", params={"source": str(configured), "dry_run": "true"}
            )
            assert dry.json()["report"] == {"sources": [str(configured)]}
            ran = await finished(
                api,
                await api.post(
                    "/admin/api/jobs/ingest",
                    params={"source": [str(configured), server.url("/daily.json")]},
                ),
            )
    assert ran["status"] == "succeeded", ran
    assert [(s["source"], s["error"]) for s in ran["report"]["sources"]] == [
        (str(configured), None),
        (server.url("/daily.json"), None),
    ]
    assert ran["report"]["sources"][0]["inserted"] == 185


async def test_hostile_uploads_get_a_clear_report_never_a_500(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    items = [
        {"paper": {"id": "2401.00001", "title": "Fine", "summary": "S.", "upvotes": 3}},
        {"paper": {"id": "2401.00002", "title": "Votes", "summary": "S.", "upvotes": 3 * 10**9}},
        {"paper": {"id": "2401.00003", "title": "Y1", "summary": "S.",
                   "publishedAt": "0001-01-01T00:00:00+05:00"}},
    ]  # fmt: skip
    upload = await finished(
        api,
        await api.post(
            "/admin/api/ingest",
            files={"file": ("daily.json", orjson.dumps(items), "application/json")},
        ),
    )
    assert upload["status"] == "succeeded", upload
    assert (upload["report"]["inserted"], upload["report"]["rejected"]) == (1, 2)
    corrupt = await finished(
        api,
        await api.post(
            "/admin/api/ingest",
            files={"file": ("x.jsonl.gz", b"\x1f\x8b\x08\x00" + bytes(range(256)) * 8, "")},
        ),
    )
    assert corrupt["status"] == "failed"
    assert corrupt["report"]["error"].startswith("the gzip data is corrupt: ")
