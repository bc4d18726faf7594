"""What every response of the web app carries, and what keeps abuse out: security headers
(a strict Content-Security-Policy with no inline script, no framing, no sniffing, no referrer
leaks; HSTS when the site is served over https; no caching of anything that carries a link
token or an operator's data), link tokens kept out of the access log, a per-client
sliding-window rate limiter, and the bearer-token check of the admin API and /metrics (closed
when no token is configured, constant-time comparison when one is)."""

from __future__ import annotations

import hmac
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from app.subscribers.tokens import carries_link_token, redact_link_tokens

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The digest in the browser is the mail's own HTML: inline style attributes, never scripts.
MAIL_PAGE_CSP = STRICT_CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
BASE_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
# A year: browsers then refuse plain http for the site, the address a link in mail names.
HSTS = (b"strict-transport-security", b"max-age=31536000")
NO_STORE = (b"cache-control", b"no-store")
# Answers that hold an operator's data (subscribers, digest previews with their links, counts).
PRIVATE_PREFIXES = ("/admin/", "/metrics")


def private_path(path: str) -> bool:
    """Whether no cache (browser, proxy) may keep the answer: the path carries a link token (the
    page it opens shows the subscriber, and its forms and links carry the token on), or the
    answer is an operator's."""
    return path.startswith(PRIVATE_PREFIXES) or carries_link_token(path)


class SecurityHeaders:
    """ASGI middleware adding the headers to every HTTP response (a response's own CSP or
    Cache-Control wins)."""

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = private_path(scope["path"])

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.extend(h for h in BASE_HEADERS if h[0] not in names)
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", STRICT_CSP.encode()))
                if self.https:
                    headers.append(HSTS)
                if private and b"cache-control" not in names:
                    headers.append(NO_STORE)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class RedactLinkTokens(logging.Filter):
    """Keeps link tokens out of a logger's lines. uvicorn's access log writes each request's
    path, and a path such as /unsubscribe/<token> opens that subscriber's page for as long as
    the link lives (preferences and unsubscribe links never expire)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_link_tokens(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = redact_link_tokens(record.msg)
        return True


def redact_access_log() -> None:
    """Install `RedactLinkTokens` on uvicorn's access log (once per process, whoever runs the
    app: `paperboy web`, `paperboy up`, or uvicorn given the factory)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(known, RedactLinkTokens) for known in access.filters):
        access.addFilter(RedactLinkTokens())


class SlidingWindowLimiter:
    """At most `limit` events per key in any `window` seconds, counted in this process (one web
    process per host keeps it exact; several processes each allow `limit`)."""

    def __init__(self, limit: int, window: float, *, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.events: dict[str, deque[float]] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        moment = time.monotonic() if now is None else now
        events = self.events.get(key)
        if events is None:
            if len(self.events) >= self.max_keys:
                self._forget_idle(moment)
            events = self.events[key] = deque()
        while events and events[0] <= moment - self.window:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(moment)
        return True

    def _forget_idle(self, moment: float) -> None:
        for key in [k for k, e in self.events.items() if not e or e[-1] <= moment - self.window]:
            del self.events[key]
        if len(self.events) >= self.max_keys:  # under a flood of keys, start afresh
            self.events.clear()


def bearer_matches(authorization: str | None, expected: str) -> bool:
    if not authorization:
        return False
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode(), expected.encode())
