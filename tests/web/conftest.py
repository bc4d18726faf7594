"""What the web tests share: the app served for real over HTTP (`web`) and a client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from tests.support.web_app import RunningApp, serve_app


@pytest.fixture
def web(engine: AsyncEngine, settings: Settings) -> Iterator[RunningApp]:
    with serve_app(settings) as running:
        yield running


@pytest.fixture
async def client(web: RunningApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web.base_url, timeout=20) as http:
        yield http
