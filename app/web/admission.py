"""Admission control: how much work one web process takes on at once, so that past its capacity
it keeps serving at capacity and refuses the rest at once ("degrade, never collapse").

Without it every request past capacity queues for a database connection, each waits longer
than the one before, and at twice the capacity the process answers a third as many requests,
each after about the pool's timeout. With it, at most PAPERBOY_WEB_MAX_IN_FLIGHT requests run at
once (fewer than the pool has connections, so an admitted request never waits for one). A
request beyond that waits a few milliseconds for a place at most, or is answered with 503 and
Retry-After before anything of it runs (nothing half-done: no subscriber without their mail, no
mail without its subscriber): a page telling a person to try again in a minute, JSON for a
program. What the public sends is counted; probes, static files and the operator's routes are
not (`NOT_COUNTED` says why).

What else answers "busy" the same way, because it too means the process has more than it can
take: the database pool's own timeout (PAPERBOY_WEB_POOL_TIMEOUT, reached only when something
outside the admitted requests holds connections, or with admission control off), and a signup
while the mails waiting to go out are at their bound (`ServiceBusy`)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from app.metrics import REQUESTS_REFUSED

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RETRY_AFTER_SECONDS = 60  # what the busy page tells a person: "try again in a minute"
# How long a request may wait for a place when all are taken: a few requests' work, and well
# inside the 100 ms a refusal may take.
WAIT_SECONDS = 0.05
# Not counted: the probes and static files touch no database, and a load balancer must see the
# process alive while it sheds load; the operator's routes are few, behind a token, and may be
# long (a CSV export streams for minutes): they must neither crowd out the public pages nor be
# crowded out by them. The database pool and its timeout still bound them.
NOT_COUNTED = (
    "/healthz",
    "/readyz",
    "/static/",
    "/admin/api/",
    "/metrics",
    "/docs",
    "/openapi.json",
)
# Read by programs, not people: their answers, errors included, are JSON.
MACHINE_PATHS = ("/admin/api", "/metrics", "/openapi.json")
BUSY_JSON = orjson.dumps(
    {"detail": "Paperboy is busy: nothing was done. Try again after Retry-After seconds."}
)


class ServiceBusy(Exception):
    """Raised by a handler that finds the process without room for what it would start; the
    app answers it as admission control answers a refused request."""


class BusyAnswer:
    """The 503 a refused request gets: built once, sent as is."""

    def __init__(self, page: str) -> None:
        self.page = page.encode()

    def for_path(self, path: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        body, content_type = (
            (BUSY_JSON, b"application/json")
            if path.startswith(MACHINE_PATHS)
            else (self.page, b"text/html; charset=utf-8")
        )
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
            (b"cache-control", b"no-store"),
        ]
        return body, headers

    async def send(self, scope: Scope, send: Send) -> None:
        body, headers = self.for_path(scope["path"])
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class AdmissionControl:
    """ASGI middleware: at most `limit` counted requests in flight in this process (0: no
    limit). When all are taken, a request waits for one of them at most WAIT_SECONDS, behind at
    most `limit` others; past either bound it is refused with `answer`. The short wait lets a
    burst shorter than a few requests' work through instead of refusing it; under sustained
    overload the waiting line is full and a refusal is immediate."""

    def __init__(self, app: ASGIApp, *, limit: int, answer: BusyAnswer) -> None:
        self.app = app
        self.limit = limit
        self.answer = answer
        self.in_flight = 0
        # Futures of the requests waiting for a place, oldest first: set to True when one is
        # handed to them, to False when their wait runs out (they then leave the line).
        self.waiting: deque[asyncio.Future[bool]] = deque()
        self.refused = REQUESTS_REFUSED.labels("in_flight")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit == 0 or scope["path"].startswith(NOT_COUNTED):
            await self.app(scope, receive, send)
            return
        if self.in_flight < self.limit:
            self.in_flight += 1
        elif len(self.waiting) >= self.limit or not await self._place_within(WAIT_SECONDS):
            self.refused.inc()
            await self.answer.send(scope, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._release()

    def _release(self) -> None:
        """A place frees: it passes to the oldest request still waiting, or is given back."""
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.in_flight -= 1

    async def _place_within(self, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self.waiting.append(waiter)
        give_up = loop.call_later(seconds, _settle, waiter, False)
        try:
            return await waiter
        except asyncio.CancelledError:
            # The request went away (shutdown, a dropped connection) just as a place was handed
            # to it: pass the place on rather than lose it.
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._release()
            raise
        finally:
            give_up.cancel()
            if waiter in self.waiting:  # not handed a place: out of the line (at most `limit`)
                self.waiting.remove(waiter)


def _settle(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)
