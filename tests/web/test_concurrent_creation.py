"""Creating the same address from several requests at once, over real HTTP (uvicorn) with truly
concurrent connections: a signup or an operator's create answers what it would answer had the
requests come one after another, never a 500, and leaves one subscriber and one mail."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.models import Subscriber, SubscriberStatus
from tests.support.web_app import ADMIN_TOKEN, RunningApp, serve_app

Sessions = async_sessionmaker[AsyncSession]
AT_ONCE = 8
SIGNUP = {"email": "Ada@Example.org", "topics": "mixture of experts", "send_hour": "8"}


@pytest.fixture
def web(engine: AsyncEngine, settings: Settings) -> Iterator[RunningApp]:
    # Room for every request at once: admission control (tests/web/test_admission.py) would
    # otherwise refuse some as busy while the others wait for one another.
    with serve_app(settings, web_max_in_flight=AT_ONCE) as running:
        yield running


async def all_at_once(
    base_url: str, method: str, path: str, requests: list[dict[str, Any]]
) -> list[int]:
    """The requests from as many clients, each on its own connection, sent together."""
    clients = [httpx.AsyncClient(base_url=base_url, timeout=30) for _ in requests]
    try:
        answers = await asyncio.gather(
            *(
                client.request(method, path, **request)
                for client, request in zip(clients, requests, strict=True)
            )
        )
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    return [answer.status_code for answer in answers]


async def race(base_url: str, method: str, path: str, request: dict[str, Any]) -> list[int]:
    """AT_ONCE copies of one request, sent together to a server that has already served the
    same kind of request (each connection's queries prepared): its answers."""
    body = "data" if "data" in request else "json"
    warm = [
        request | {body: request[body] | {"email": f"warm{n}@example.org"}} for n in range(AT_ONCE)
    ]
    await all_at_once(base_url, method, path, warm)
    return await all_at_once(base_url, method, path, [request] * AT_ONCE)


async def rows_for(sessions: Sessions, address: str) -> list[Subscriber]:
    async with sessions() as session:
        return list(
            (
                await session.scalars(
                    select(Subscriber).where(func.lower(Subscriber.email) == address.lower())
                )
            ).all()
        )


async def test_concurrent_signups_of_one_address_answer_as_if_one_after_another(
    web: RunningApp, session_factory: Sessions
) -> None:
    statuses = await race(web.base_url, "POST", "/subscribe", {"data": SIGNUP})
    # One signup mail per address per interval, and one answer for all: the same page.
    assert Counter(statuses) == {200: AT_ONCE}
    web.wait_for_queued_mail()
    assert len(web.sink.messages("Ada@example.org")) == 1
    (row,) = await rows_for(session_factory, "ada@example.org")
    assert row.status is SubscriberStatus.PENDING and row.topics == ["mixture of experts"]


async def test_concurrent_admin_creates_of_one_address_make_one_subscriber(
    web: RunningApp, session_factory: Sessions
) -> None:
    statuses = await race(
        web.base_url,
        "POST",
        "/admin/api/subscribers",
        {
            "json": {"email": "bo@example.org", "topics": ["LLM"], "status": "active"},
            "headers": {"authorization": f"Bearer {ADMIN_TOKEN}"},
        },
    )
    assert Counter(statuses) == {201: 1, 409: AT_ONCE - 1}
    (row,) = await rows_for(session_factory, "bo@example.org")
    assert row.status is SubscriberStatus.ACTIVE and row.confirmed_at is not None
