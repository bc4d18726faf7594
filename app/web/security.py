"""What every response of the web app carries, and what keeps abuse out: security headers
(a strict Content-Security-Policy with no inline script, no framing, no sniffing, no referrer
leaks), a per-client sliding-window rate limiter, and the admin API's bearer-token check
(closed when no token is configured, constant-time comparison when one is)."""

from __future__ import annotations

import hmac
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

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


class SecurityHeaders:
    """ASGI middleware adding the headers to every HTTP response that does not set its own CSP."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.extend(h for h in BASE_HEADERS if h[0] not in names)
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", STRICT_CSP.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


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
