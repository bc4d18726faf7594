"""The web app's dependencies as `Annotated` aliases: settings, a database session per request
(committed by the dependency when the handler returns), the mailer and mail transport, the rate
limiters, the client's address, and the bearer-token guards of the admin API, /metrics and the
API's description. All are `async def`: FastAPI runs a plain `def` dependency in a thread pool,
a thread hop per dependency per request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.digests.topic_suggestions import topic_suggestions
from app.jobs import JobWork, finish_job_run, start_job_run
from app.mail.message import Mailer
from app.mail.transports import Transport
from app.models import JobRun
from app.web.security import SlidingWindowLimiter, bearer_matches

logger = logging.getLogger("paperboy.web")
MAX_PENDING_MAILS = 1000
SUGGESTIONS_SECONDS = 600.0
AFTER_COMMIT = "paperboy.after_commit"


@dataclass
class WebState:
    """Everything the app opens once at start-up and shares between requests."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    mailer: Mailer
    transport: Transport
    signup_limiter: SlidingWindowLimiter  # requests per client address
    address_limiter: SlidingWindowLimiter  # link requests per mail address, known or not
    sends_today: bool = False  # today's digest is composed at once, whatever the hour
    mail_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    job_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    cached_suggestions: tuple[float, list[str]] | None = None

    async def suggestions(self, session: AsyncSession) -> list[str]:
        """Topic suggestions for the forms, worked out at most once per SUGGESTIONS_SECONDS:
        they read the 2,000 newest titles, and change only when papers arrive."""
        now = time.monotonic()
        if (
            self.cached_suggestions is None
            or now - self.cached_suggestions[0] > SUGGESTIONS_SECONDS
        ):
            self.cached_suggestions = (now, await topic_suggestions(session=session))
        return self.cached_suggestions[1]

    def mail_backlog_full(self) -> bool:
        """Whether a request that would mail must be refused now: the mails waiting to go out
        are at their bound, less room for one from each request already admitted, so that a
        request let in always gets its mail sent (`send_later` never drops it)."""
        room_held = self.settings.web_max_in_flight
        return len(self.mail_tasks) >= max(1, MAX_PENDING_MAILS - room_held)

    def send_later(self, mail: Coroutine[Any, Any, None]) -> bool:
        """Send a mail after the answer, apart from the request: a slow mail server or disk
        never holds up the connection the request came on. Shutdown waits for these. While the
        mail server is down, at most MAX_PENDING_MAILS wait: requests that would mail are
        refused before they change anything (`mail_backlog_full`); only with admission control
        off can a mail past the bound be dropped (and logged; a subscriber can ask again)."""
        if len(self.mail_tasks) >= MAX_PENDING_MAILS:
            mail.close()
            logger.warning(
                "%d signup mails already waiting: this one is dropped", MAX_PENDING_MAILS
            )
            return False
        task = asyncio.create_task(mail)
        self.mail_tasks.add(task)
        task.add_done_callback(self.mail_tasks.discard)
        return True

    async def start_job(self, job: str, parameters: dict[str, Any], work: JobWork) -> JobRun:
        """Start an operator's job apart from the request and answer with its run record; the
        run records how the job ends (`GET /admin/api/job-runs/{id}`)."""
        run = await start_job_run(job, parameters, session_factory=self.sessions)
        task = asyncio.create_task(finish_job_run(run.id, work, session_factory=self.sessions))
        self.job_tasks.add(task)
        task.add_done_callback(self.job_tasks.discard)
        return run

    async def drain(self, seconds: float) -> None:
        """At shutdown: signup mails and jobs get `seconds` to finish; jobs still running then
        are cancelled and recorded as interrupted."""
        waiting = self.mail_tasks | self.job_tasks
        if waiting:
            await asyncio.wait(waiting, timeout=seconds)
        for task in list(self.job_tasks):
            task.cancel()
        await asyncio.gather(*self.job_tasks, return_exceptions=True)


async def _state(request: Request) -> WebState:
    state: WebState = request.app.state.paperboy
    return state


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session per request, committed when the handler returns and rolled back when it
    raises, before the answer goes out: handlers and the services they call never commit.
    What must only happen once the change is stored (a mail naming a new subscriber) is
    registered with `after_commit`."""
    async with (await _state(request)).sessions() as session:
        yield session
        await session.commit()
        for action in session.info.pop(AFTER_COMMIT, []):
            action()


def after_commit(session: AsyncSession, action: Callable[[], object]) -> None:
    """Run `action` once the request's changes are committed (never if they are not)."""
    session.info.setdefault(AFTER_COMMIT, []).append(action)


async def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _require_bearer(request: Request, tokens: list[str | None], what: str) -> None:
    configured = [token for token in tokens if token]
    if not configured:
        # Closed by default: without a configured token the route does not exist.
        raise HTTPException(status_code=404, detail="Not Found")
    presented = request.headers.get("authorization")
    if not any(bearer_matches(presented, token) for token in configured):
        raise HTTPException(
            status_code=401,
            detail=f"A valid {what} token is required (Authorization: Bearer <token>).",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def _admin(request: Request) -> None:
    _require_bearer(request, [(await _state(request)).settings.admin_token], "admin")


async def _metrics_reader(request: Request) -> None:
    settings = (await _state(request)).settings
    _require_bearer(request, [settings.metrics_token, settings.admin_token], "metrics")


async def _api_docs_reader(request: Request) -> None:
    settings = (await _state(request)).settings
    if not settings.api_docs_public:
        _require_bearer(request, [settings.admin_token], "admin")


State = Annotated[WebState, Depends(_state)]
# Function scope: the commit happens as soon as the handler returns, so a failed commit is the
# request's error rather than something that happens after a success was answered.
Session = Annotated[AsyncSession, Depends(_session, scope="function")]
ClientIp = Annotated[str, Depends(_client_ip)]
AdminGuard = Depends(_admin)
# /metrics: the metrics token (what a scraper is given) or the admin token.
MetricsGuard = Depends(_metrics_reader)
# /docs and /openapi.json: as closed as the admin API unless PAPERBOY_API_DOCS_PUBLIC.
ApiDocsGuard = Depends(_api_docs_reader)
