"""Past its capacity the web app degrades, never collapses, over real HTTP: with more requests in
flight than PAPERBOY_WEB_MAX_IN_FLIGHT, with no database connection free in time, or with the
signup mails at their bound, a request is answered 503 with Retry-After at once (a page for a
person, JSON for a program) and nothing of it is done: no subscriber without their mail, no mail
without its subscriber. Requests already admitted finish as usual.

To keep requests in flight, the test holds a subscriber's row in an open transaction, as a long
operator's change would: a signup for that address waits for it (Postgres: the row lock; SQLite:
the database's write lock). The middleware's short wait for a place is tested on its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import engine_of
from app.models import Subscriber
from app.subscribers.rules import Preferences, add_active_subscriber
from app.web.admission import WAIT_SECONDS, AdmissionControl, BusyAnswer
from tests.support.web_app import ADMIN_TOKEN, RunningApp, serve_app

Sessions = async_sessionmaker[AsyncSession]
HELD = "ada@example.org"
REFUSAL_SECONDS = 1.0  # "at once" on a shared test machine (the bench measures the real figure)


@asynccontextmanager
async def address_held(engine: AsyncEngine, sessions: Sessions) -> AsyncIterator[None]:
    """HELD exists and its row is held by an open transaction until the block ends."""
    async with sessions() as session:
        await add_active_subscriber(HELD, Preferences(["x"]), session=session)
        await session.commit()
    async with engine.connect() as holder:
        await holder.execute(
            update(Subscriber).where(Subscriber.email == HELD).values(bounce_count=0)
        )
        try:
            yield
        finally:
            await holder.rollback()


def admission(web: RunningApp) -> AdmissionControl:
    layer = web.observed.app.middleware_stack
    while not isinstance(layer, AdmissionControl):
        layer = layer.app  # type: ignore[union-attr]
    return layer


async def until(condition: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def timed(request: asyncio.Future[httpx.Response] | object) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    answer = await request  # type: ignore[misc]
    return answer, time.perf_counter() - started


def signup(client: httpx.AsyncClient, address: str) -> asyncio.Task[httpx.Response]:
    return asyncio.create_task(
        client.post("/subscribe", data={"email": address, "topics": "LLM"}, timeout=60)
    )


async def stored(sessions: Sessions, address: str) -> bool:
    async with sessions() as session:
        return (
            await session.scalar(select(Subscriber.id).where(Subscriber.email == address))
        ) is not None


def assert_busy_page(answer: httpx.Response, seconds: float) -> None:
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "60"
    assert answer.headers["cache-control"] == "no-store"
    assert seconds < REFUSAL_SECONDS
    assert "text/html" in answer.headers["content-type"]
    assert "Paperboy is busy right now" in answer.text
    assert "try again in a minute" in answer.text
    assert "content-security-policy" in answer.headers  # a page like any other


async def test_requests_past_the_in_flight_bound_are_refused_at_once(
    settings: Settings, engine: AsyncEngine, session_factory: Sessions
) -> None:
    with serve_app(settings, web_max_in_flight=2, signup_ip_limit=100) as web:
        async with httpx.AsyncClient(base_url=web.base_url, timeout=10) as client:
            async with address_held(engine, session_factory):
                waiting = [signup(client, HELD), signup(client, HELD)]
                await until(lambda: admission(web).in_flight == 2, "two requests in flight")
                page, page_seconds = await timed(client.get("/"))
                refused, refused_seconds = await timed(
                    client.post("/subscribe", data={"email": "bo@example.org", "topics": "x"})
                )
                # Not counted: the probes, and the operator (whose work may be long).
                probes = [(await client.get(path)).status_code for path in ("/healthz", "/readyz")]
                operator = await client.get(
                    "/admin/api/stats", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
                )
                assert not any(task.done() for task in waiting)
            served = sorted([(await task).status_code for task in waiting])
            after = await client.post("/subscribe", data={"email": "cy@example.org"})
        web.wait_for_queued_mail()
        mailed = [len(web.sink.messages(a)) for a in (HELD, "bo@example.org", "cy@example.org")]
    assert_busy_page(page, page_seconds)
    assert_busy_page(refused, refused_seconds)
    assert probes == [200, 200]  # a load balancer sees the process alive while it sheds
    assert operator.status_code == 200
    # The admitted ones finish as if nothing happened: the first mails a reminder, the second
    # gets the same page and no second mail.
    assert served == [200, 200] and after.status_code == 200
    assert mailed == [1, 0, 1]
    assert not await stored(session_factory, "bo@example.org")


async def test_no_database_connection_in_time_is_a_busy_answer(
    settings: Settings, engine: AsyncEngine, session_factory: Sessions
) -> None:
    # Admission control off: only the pool's timeout stands between a request and a long wait.
    with serve_app(settings, web_max_in_flight=0, web_pool_timeout=0.3, signup_ip_limit=100) as web:
        pool = engine_of(web.observed.app.state.paperboy.sessions).pool
        async with httpx.AsyncClient(base_url=web.base_url, timeout=60) as client:
            async with address_held(engine, session_factory):
                waiting = [signup(client, HELD) for _ in range(15)]  # every connection
                await until(lambda: pool.checkedout() == 15, "the pool taken")  # type: ignore[attr-defined]
                refused = await client.post(
                    "/subscribe", data={"email": "bo@example.org", "topics": "x"}
                )
                api = await client.get(
                    "/admin/api/stats", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
                )
            served = [(await task).status_code for task in waiting]
        web.wait_for_queued_mail()
        mailed = len(web.sink.messages("bo@example.org"))
    assert refused.status_code == 503 and refused.headers["retry-after"] == "60"
    assert "Paperboy is busy right now" in refused.text
    assert api.status_code == 503 and api.json()["detail"].startswith("Paperboy is busy")
    assert set(served) == {200}  # one mail for them all, the same page for each
    assert mailed == 0
    assert not await stored(session_factory, "bo@example.org")


async def test_signups_wait_for_room_among_the_mails_going_out(
    settings: Settings,
    engine: AsyncEngine,
    session_factory: Sessions,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.web import deps

    monkeypatch.setattr(deps, "MAX_PENDING_MAILS", 3)  # with 2 in flight: room for one waiting
    with serve_app(settings, web_max_in_flight=2) as web:
        web.sink.delay = 2.0  # a mail server that takes its time
        async with httpx.AsyncClient(base_url=web.base_url, timeout=10) as client:
            first = await client.post("/subscribe", data={"email": "ada@example.org"})
            refused = await client.post("/subscribe", data={"email": "bo@example.org"})
            web.wait_for_queued_mail()
            later = await client.post("/subscribe", data={"email": "bo@example.org"})
            web.wait_for_queued_mail()
    assert first.status_code == 200 and later.status_code == 200
    assert refused.status_code == 503 and "try again in a minute" in refused.text
    assert [len(web.sink.messages(a)) for a in ("ada@example.org", "bo@example.org")] == [1, 1]


async def test_a_short_burst_waits_for_a_place_and_a_long_one_is_refused() -> None:
    """The middleware alone, around an app whose work ends when the test says so."""
    finish = asyncio.Event()

    async def work(scope: Any, receive: Any, send: Any) -> None:
        await finish.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    control = AdmissionControl(work, limit=1, answer=BusyAnswer("<p>busy</p>"))

    async def status() -> int:
        answered: list[int] = []

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                answered.append(message["status"])

        await control({"type": "http", "path": "/subscribe"}, None, send)  # type: ignore[arg-type]
        return answered[0]

    working = asyncio.create_task(status())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(status())  # the place is taken: waits for it
    await asyncio.sleep(0)
    assert await status() == 503  # the line (one long, like the places) is full: at once
    asyncio.get_running_loop().call_later(WAIT_SECONDS / 5, finish.set)
    assert (await working, await waiting) == (200, 200)  # the place passed on within the wait

    finish.clear()
    working = asyncio.create_task(status())
    await asyncio.sleep(0)
    started = time.perf_counter()
    assert await status() == 503  # no place within the wait
    assert WAIT_SECONDS <= time.perf_counter() - started < REFUSAL_SECONDS
    finish.set()
    assert await working == 200
    assert control.in_flight == 0 and not control.waiting
