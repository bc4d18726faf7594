"""A real HTTP server on localhost for tests: serves recorded payloads and scripted failures
(status sequences, Retry-After, gzip) from a thread, and counts the requests it answered."""

from __future__ import annotations

import gzip
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes = b""
    # Statuses answered before the body is served with 200; an empty list means 200 at once.
    failures: list[int] = field(default_factory=list)
    retry_after: str | None = None
    gzip: bool = False
    always: int | None = None  # answer this status forever


@dataclass
class PayloadServer:
    base_url: str
    routes: dict[str, Route]
    hits: Counter[str]

    def url(self, path: str) -> str:
        return self.base_url + path


@contextmanager
def serve(routes: dict[str, Route]) -> Iterator[PayloadServer]:
    hits: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                hits[self.path] += 1
                route = routes.get(self.path)
                status = 404 if route is None else route.always
                if route is not None and status is None and route.failures:
                    status = route.failures.pop(0)
            if status is not None:
                self.send_response(status)
                if route is not None and route.retry_after is not None:
                    self.send_header("Retry-After", route.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            assert route is not None
            body = gzip.compress(route.body) if route.gzip else route.body
            self.send_response(200)
            if route.gzip:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield PayloadServer(f"http://127.0.0.1:{server.server_address[1]}", routes, hits)
    finally:
        server.shutdown()
        server.server_close()
