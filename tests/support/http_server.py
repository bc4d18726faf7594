"""A real HTTP server on localhost for tests: serves recorded payloads and scripted failures
(status sequences, Retry-After, gzip), slow servers (a body dripped a few bytes at a time) and
endless bodies from a thread, and counts the requests it answered."""

from __future__ import annotations

import gzip
import threading
import time
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
    # A slow server: the body goes out `drip_bytes` at a time, `drip_seconds` apart (each read
    # is quick; the whole takes long), for at most `drip_for` seconds.
    drip_seconds: float = 0.0
    drip_bytes: int = 1
    drip_for: float = 60.0
    # Claimed in Content-Length instead of the body's length (a server announcing a huge body).
    declared_length: int | None = None
    # Bytes sent without Content-Length until the client hangs up (at most `endless_bytes`).
    endless_bytes: int = 0


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
            if not route.endless_bytes:
                length = route.declared_length if route.declared_length is not None else len(body)
                self.send_header("Content-Length", str(length))
            self.end_headers()
            try:
                if route.endless_bytes:
                    self._send_endless(route.endless_bytes)
                elif route.drip_seconds:
                    self._drip(body, route)
                else:
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client hung up, as a client that gave up does

        def _drip(self, body: bytes, route: Route) -> None:
            stop = time.monotonic() + route.drip_for
            for start in range(0, len(body), route.drip_bytes):
                if time.monotonic() > stop:
                    return
                self.wfile.write(body[start : start + route.drip_bytes])
                self.wfile.flush()
                time.sleep(route.drip_seconds)

        def _send_endless(self, most: int) -> None:
            chunk = b"x" * 65536
            for _ in range(0, most, len(chunk)):
                self.wfile.write(chunk)

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
