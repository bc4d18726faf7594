"""The web app factory: public pages, the admin JSON API under /admin/api with its OpenAPI
description (/openapi.json, read as a page at /docs) and /metrics (both as closed as the API
unless opened), static files, security headers, an access log without link tokens, admission
control (a busy answer at once past the process's capacity), and error answers that suit the
caller (an HTML page for people, JSON for the API).

`create_app()` without settings is how a process serves the app (`paperboy web`, or any ASGI server
given the factory: `uvicorn app.web:create_app --factory`): it reads the settings, so an unusable or
(in production) unsafe configuration stops the server before it binds, with one message, and it
sets up logging. Given settings (`paperboy up`, tests), it leaves both to the caller."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.config import ConfigurationError, Settings, get_settings
from app.db import create_engine, create_session_factory
from app.jobs import close_interrupted_ingest_runs
from app.logs import configure_logging
from app.mail.message import Mailer
from app.mail.transports import open_transport
from app.mail.workers import delivery_state
from app.metrics import REQUESTS_REFUSED, render_metrics
from app.ranking.embedding import EmbeddingModelError, check_embedding_setting
from app.ranking.model_hub import model_hub
from app.subscribers.tokens import TokenError
from app.web import admin, feedback, feeds, pages, subscription, webhooks
from app.web.admission import MACHINE_PATHS, AdmissionControl, BusyAnswer, ServiceBusy
from app.web.api_docs import request_body_fields
from app.web.deps import ApiDocsGuard, MetricsGuard, WebState
from app.web.rendering import link_problem, page, templates
from app.web.security import SecurityHeaders, SlidingWindowLimiter, redact_access_log

logger = logging.getLogger("paperboy.web")
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAIL_DRAIN_SECONDS = 10.0  # at shutdown, how long signup mails still being sent may take


async def _close_interrupted_ingest_runs(state: WebState) -> None:
    """Ingest runs left "running" by a process that died (an admin ingest in a web worker that
    was killed) are closed as interrupted; a database not reachable yet only delays that."""
    try:
        await close_interrupted_ingest_runs(session_factory=state.sessions)
    except Exception:
        logger.warning("closing interrupted ingest runs failed at start-up", exc_info=True)


def create_app(settings: Settings | None = None, *, sends_today: bool = False) -> FastAPI:
    """The web app. `sends_today`: a scheduler beside it composes each confirmed reader's digest
    for today at once (`paperboy up --send-now`), so pages say so instead of naming the hour."""
    if settings is None:
        settings = get_settings()
        try:
            check_embedding_setting(settings.embedding_model, model_hub(settings))
        except EmbeddingModelError as error:
            raise ConfigurationError(f"PAPERBOY_EMBEDDING_MODEL: {error}") from None
        configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(
            settings.database_url,
            echo=settings.database_echo,
            pool_timeout=settings.web_pool_timeout,
        )
        transport = open_transport(
            settings.mail_url,
            concurrency=settings.smtp_concurrency,
            rate_limit=settings.smtp_rate_limit,
            timeout=settings.smtp_timeout,
        )
        app.state.paperboy = WebState(
            settings=settings,
            sessions=create_session_factory(engine),
            mailer=Mailer(settings),
            transport=transport,
            signup_limiter=SlidingWindowLimiter(
                settings.signup_ip_limit, settings.signup_ip_window_seconds
            ),
            address_limiter=SlidingWindowLimiter(1, max(1, settings.signup_mail_interval_seconds)),
            sends_today=sends_today,
        )
        await _close_interrupted_ingest_runs(app.state.paperboy)
        # Everything loaded so far (modules, mappers, templates) lives as long as the process:
        # keep the collector from walking it in every full collection, a pause of tens of ms
        # that requests in flight would wait out.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await app.state.paperboy.drain(MAIL_DRAIN_SECONDS)
            await transport.close()
            await engine.dispose()

    redact_access_log()
    app = FastAPI(
        title="Paperboy admin API",
        version="1.0",
        description="Operate a Paperboy instance: subscribers, papers, ingest, digests, jobs and "
        "stats. Every route needs `Authorization: Bearer <PAPERBOY_ADMIN_TOKEN>`; without a "
        "configured token the API is closed.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind the same closure as the API it describes
    )
    busy = BusyAnswer(templates.get_template("busy.html").render())
    # Added first, so it runs inside SecurityHeaders: a refusal carries the same headers.
    app.add_middleware(AdmissionControl, limit=settings.web_max_in_flight, answer=busy)
    app.add_middleware(SecurityHeaders, https=settings.base_url.startswith("https://"))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(pages.router)
    app.include_router(subscription.router)
    app.include_router(feeds.router)
    app.include_router(feedback.router)
    app.include_router(admin.router)
    app.include_router(webhooks.router)

    @app.get("/metrics", include_in_schema=False, dependencies=[MetricsGuard])
    async def metrics(request: Request) -> Response:
        state = request.app.state.paperboy
        async with state.sessions() as session:
            delivery = await delivery_state(
                session=session,
                now=datetime.now(UTC),
                heartbeat_seconds=state.settings.send_heartbeat_seconds,
            )
            body, content_type = await render_metrics(session=session, delivery=delivery.gauges())
        return Response(body, media_type=content_type)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[ApiDocsGuard])
    async def api_schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[ApiDocsGuard])
    async def api_docs(request: Request) -> HTMLResponse:
        schema = app.openapi()
        return page(
            request,
            "api_docs.html",
            {
                "schema": schema,
                "bodies": {
                    (path, method): request_body_fields(schema, operation)
                    for path, operations in schema["paths"].items()
                    for method, operation in operations.items()
                },
            },
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if request.url.path.startswith(MACHINE_PATHS):
            return JSONResponse(
                {"detail": error.detail}, status_code=error.status_code, headers=error.headers
            )
        what = "This page does not exist." if error.status_code == 404 else str(error.detail)
        answer = page(request, "not_found.html", {"what": what}, status_code=error.status_code)
        answer.headers.update(error.headers or {})
        return answer

    @app.exception_handler(ServiceBusy)
    async def busy_now(request: Request, _error: ServiceBusy) -> Response:
        return refuse(request, "mail_backlog")

    @app.exception_handler(PoolTimeout)
    async def no_connection_in_time(request: Request, _error: PoolTimeout) -> Response:
        # The request's session rolled back: nothing of it was stored, nothing was mailed.
        return refuse(request, "pool_timeout")

    def refuse(request: Request, reason: str) -> Response:
        REQUESTS_REFUSED.labels(reason).inc()
        body, headers = busy.for_path(request.url.path)
        return Response(body, status_code=503, headers={k.decode(): v.decode() for k, v in headers})

    @app.exception_handler(TokenError)
    async def bad_link(request: Request, error: TokenError) -> Response:
        return link_problem(request, error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        problems = [
            {
                "field": ".".join(str(part) for part in issue["loc"] if part != "body"),
                "message": issue["msg"],
            }
            for issue in error.errors()
        ]
        if request.url.path.startswith("/admin/api"):
            return JSONResponse({"detail": "invalid request", "errors": problems}, status_code=422)
        return page(request, "invalid.html", {"problems": problems}, status_code=422)

    return app
