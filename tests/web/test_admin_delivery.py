"""Delivery as an operator sees it over real HTTP: a send job stopped by a relay that denies us
fails with the reason, /admin/api/stats and /metrics show the refusal (and no subscriber
bounced) until mail goes through again; the jobs API's send with `reclaim=true` releases a
dead worker's leases and leaves a live worker's alone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.jobs import compose_job, ingest_job
from app.mail.queue import claim_digests
from app.mail.workers import register_worker
from app.models import Digest, DigestStatus
from app.subscribers.rules import Preferences, add_active_subscriber
from tests.support.queue import wait_until_retries_are_due
from tests.support.web_app import RunningApp, serve_app
from tests.web.test_admin_api import AUTH, finished

Sessions = async_sessionmaker[AsyncSession]
DAY = datetime.now(UTC).date() + timedelta(days=1)  # retries stay within the digest's day
RELAY_DENIED = "554 5.7.1 Relaying denied"


@pytest.fixture
def web(engine: AsyncEngine, settings: Settings) -> Iterator[RunningApp]:
    with serve_app(settings, retry_base_seconds=0.01, retry_max_seconds=0.02) as running:
        yield running


async def compose(sessions: Sessions, settings: Settings, sample_page: Path, count: int) -> None:
    await ingest_job(str(sample_page), session_factory=sessions, settings=settings)
    async with sessions() as session:
        for n in range(count):
            await add_active_subscriber(
                f"reader{n}@example.org", Preferences(["mixture of experts"]), session=session
            )
        await session.commit()
    await compose_job(session_factory=sessions, settings=settings, on_date=DAY)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


async def test_a_relay_refusing_us_shows_in_stats_and_metrics_until_mail_goes_through(
    web: RunningApp, session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    await compose(session_factory, settings, sample_page, 4)
    web.sink.every_rcpt = RELAY_DENIED
    async with httpx.AsyncClient(base_url=web.base_url, headers=AUTH, timeout=60) as api:
        run = await finished(api, await api.post("/admin/api/jobs/send"))
        assert run["status"] == "failed" and RELAY_DENIED in run["error"]
        assert run["report"]["bounced"] == 0 and run["report"]["refused_us"] >= 3
        stats = (await api.get("/admin/api/stats")).json()
        assert stats["delivery"]["refusal"] == RELAY_DENIED
        assert stats["delivery"]["refused_at"] is not None
        assert stats["subscribers"]["active"] == 4 and stats["bounced_subscribers"] == 0
        metrics = (await api.get("/metrics")).text
        assert metric(metrics, "paperboy_delivery_refused") == 1.0
        assert metric(metrics, "paperboy_delivery_refused_timestamp_seconds") > 0

        web.sink.every_rcpt = None
        await wait_until_retries_are_due(session_factory)
        run = await finished(api, await api.post("/admin/api/jobs/send"))
        assert run["status"] == "succeeded" and run["report"]["sent"] == 4
        assert (await api.get("/admin/api/stats")).json()["delivery"]["refusal"] is None
        metrics = (await api.get("/metrics")).text
        assert metric(metrics, "paperboy_delivery_refused") == 0.0
    assert web.sink.per_recipient() == {f"reader{n}@example.org": 1 for n in range(4)}


async def test_the_jobs_api_reclaims_only_dead_workers_digests(
    web: RunningApp, session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    await compose(session_factory, settings, sample_page, 4)
    now = datetime.now(UTC)
    async with session_factory() as session:
        dead = await register_worker(session=session, now=now - timedelta(hours=1))
        live = await register_worker(session=session, now=now)
        await session.commit()
        lease = timedelta(minutes=10)
        await claim_digests(session=session, now=now, limit=3, lease=lease, worker=dead)
        await claim_digests(session=session, now=now, limit=1, lease=lease, worker=live)
        await session.commit()
    async with httpx.AsyncClient(base_url=web.base_url, headers=AUTH, timeout=60) as api:
        dry = (await api.post("/admin/api/jobs/send", params={"dry_run": "true"})).json()
        assert dry["report"]["due"] == 0
        assert dry["report"]["held_by_stopped_workers"] == 3
        assert dry["report"]["held_by_other_workers"] == 1
        stats = (await api.get("/admin/api/stats")).json()["delivery"]
        assert (stats["held_by_stopped_workers"], stats["held_by_other_workers"]) == (3, 1)
        assert (
            metric((await api.get("/metrics")).text, "paperboy_digests_held_by_stopped_workers")
            == 3
        )

        run = await finished(
            api, await api.post("/admin/api/jobs/send", params={"reclaim": "true"})
        )
    assert run["status"] == "succeeded" and run["parameters"] == {"reclaim": True}
    assert (run["report"]["reclaimed"], run["report"]["sent"]) == (3, 3)
    assert run["report"]["held_by_other_workers"] == 1
    async with session_factory() as session:
        still = (await session.execute(select(Digest.status, Digest.claimed_by))).all()
    assert sorted(status for status, _ in still) == [DigestStatus.SENDING] + [DigestStatus.SENT] * 3
    assert [worker for status, worker in still if status is DigestStatus.SENDING] == [live]
