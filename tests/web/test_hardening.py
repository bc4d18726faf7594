"""What the web app's answers promise a browser, a cache and a scraper, over real HTTP: HSTS when
the site is https, nothing that carries a link token (or an operator's data) kept by any cache,
and /metrics, /docs and /openapi.json as closed as the admin API unless opened."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.jobs import compose_job, ingest_job
from app.models import Subscriber
from app.subscribers.rules import Preferences, add_active_subscriber
from app.subscribers.tokens import Purpose, make_token
from tests.support.web_app import ADMIN_TOKEN, RunningApp, serve_app

Sessions = async_sessionmaker[AsyncSession]
METRICS_TOKEN = "metrics-scraper-token-0123456789"


async def reader(sessions: Sessions) -> Subscriber:
    async with sessions() as session:
        added = await add_active_subscriber("ada@example.org", Preferences(["x"]), session=session)
        await session.commit()
        return added


async def test_hsts_only_when_the_site_is_https(settings: Settings, engine: AsyncEngine) -> None:
    with serve_app(settings, base_url="https://papers.example.org") as web:
        async with httpx.AsyncClient(base_url=web.base_url) as client:
            secure = await client.get("/")
    assert secure.headers["strict-transport-security"] == "max-age=31536000"
    with serve_app(settings) as web:  # http://127.0.0.1:port, e.g. a laptop
        async with httpx.AsyncClient(base_url=web.base_url) as client:
            plain = await client.get("/")
    assert "strict-transport-security" not in plain.headers


async def test_no_cache_keeps_a_page_that_carries_a_link_token(
    client: httpx.AsyncClient,
    web: RunningApp,
    session_factory: Sessions,
    settings: Settings,
    sample_page: object,
) -> None:
    await ingest_job(str(sample_page), session_factory=session_factory, settings=settings)
    ada = await reader(session_factory)
    await compose_job(session_factory=session_factory, settings=settings, on_date=None)

    def token(purpose: Purpose) -> str:
        return make_token(web.settings.secret_key, purpose, ada.public_id, ada.token_version)

    today = datetime.now(UTC).date()
    answers = {
        "confirm": await client.get(f"/confirm/{token(Purpose.CONFIRM)}"),
        "preferences": await client.get(f"/preferences/{token(Purpose.PREFERENCES)}"),
        "saved": await client.post(
            f"/preferences/{token(Purpose.PREFERENCES)}", data={"topics": "LLM"}
        ),
        "unsubscribe page": await client.get(f"/unsubscribe/{token(Purpose.UNSUBSCRIBE)}"),
        "unsubscribed": await client.post(f"/unsubscribe/{token(Purpose.UNSUBSCRIBE)}"),
        "resubscribed": await client.post(f"/resubscribe/{token(Purpose.UNSUBSCRIBE)}"),
        "digest": await client.get(f"/digests/{token(Purpose.DIGEST)}/{today}"),
        "forged link": await client.get(f"/preferences/{token(Purpose.PREFERENCES)}x"),
        "admin": await client.get(
            "/admin/api/subscribers", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
        ),
    }
    for what, answer in answers.items():
        assert answer.status_code < 500, what
        assert answer.headers.get("cache-control") == "no-store", what
    # Public pages stay cacheable.
    assert "cache-control" not in (await client.get("/")).headers
    assert "cache-control" not in (await client.get("/static/paperboy.css")).headers


async def test_metrics_open_to_the_metrics_or_admin_token_only(
    settings: Settings, engine: AsyncEngine
) -> None:
    with serve_app(settings, metrics_token=METRICS_TOKEN) as web:
        async with httpx.AsyncClient(base_url=web.base_url) as client:
            anonymous = await client.get("/metrics")
            wrong = await client.get("/metrics", headers={"authorization": "Bearer nope"})
            scraper = await client.get(
                "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}
            )
            operator = await client.get(
                "/metrics", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
            )
            # The metrics token reads metrics, and nothing else.
            admin_with_it = await client.get(
                "/admin/api/stats", headers={"authorization": f"Bearer {METRICS_TOKEN}"}
            )
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert scraper.status_code == 200 and "paperboy_subscribers" in scraper.text
    assert operator.status_code == 200
    assert admin_with_it.status_code == 401
    with serve_app(settings, admin_token=None) as web:
        async with httpx.AsyncClient(base_url=web.base_url) as client:
            closed = await client.get("/metrics")
    assert closed.status_code == 404  # no token configured: closed, like the admin API


async def test_api_description_follows_the_admin_api_unless_opened(
    settings: Settings, engine: AsyncEngine
) -> None:
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with serve_app(settings) as web:
        async with httpx.AsyncClient(base_url=web.base_url) as client:
            for path in ("/docs", "/openapi.json"):
                assert (await client.get(path)).status_code == 401, path
                assert (await client.get(path, headers=auth)).status_code == 200, path
    with serve_app(settings, admin_token=None) as web:
        async with httpx.AsyncClient(base_url=web.base_url) as client:
            for path in ("/docs", "/openapi.json"):
                assert (await client.get(path)).status_code == 404, path
    with serve_app(settings, admin_token=None, api_docs_public=True) as web:
        async with httpx.AsyncClient(base_url=web.base_url) as client:
            schema = (await client.get("/openapi.json")).json()
            docs = await client.get("/docs")
            api = await client.get("/admin/api/stats")
    assert "/admin/api/subscribers" in schema["paths"] and docs.status_code == 200
    # Request bodies are documented field by field, not only named.
    creating = docs.text.split("<code>/admin/api/subscribers</code>")[2].split("</section>")[0]
    assert "<code>email</code></td><td>string (up to 320 characters)</td><td>yes</td>" in creating
    assert "<code>send_hour</code></td><td>integer (≥ 0, ≤ 23)</td><td>no</td>" in creating
    assert "<td><code>7</code></td>" in creating and "list of string (at most 20)" in creating
    assert api.status_code == 404  # reading about the API never opens it
