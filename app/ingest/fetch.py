"""Opening a source location as a byte stream: a file path, `-` for standard input, or an http(s)
URL. URLs are downloaded with httpx into a spooled temporary file (memory up to a few MB, then
disk), retrying network errors, 5xx and 429 with backoff and honouring Retry-After; other HTTP
errors fail at once with the status. A download is bounded in time as a whole (`deadline`, not
only each read: a server dripping a byte a second never times out a read) and in size
(`max_bytes`, checked against Content-Length first and then as bytes arrive). Gzip-compressed
input is decompressed transparently; corrupt gzip data is a `SourceError`. Also here: which
locations are http(s) URLs, the only sources the admin API accepts besides configured ones."""

from __future__ import annotations

import asyncio
import gzip
import random
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, BinaryIO, cast
from urllib.parse import urlsplit

import httpx

from app.ingest.sources import READ_ERRORS, SourceError

SPOOL_BYTES = 8 * 1024 * 1024
HEAD_BYTES = 64 * 1024
USER_AGENT = "Paperboy/0.1 (+https://github.com/paperboy; trending papers digest)"
MAX_URL_CHARS = 2000


def http_url_problem(location: str) -> str | None:
    """Why `location` is not a well-formed http(s) URL, or None when it is one."""
    if len(location) > MAX_URL_CHARS:
        return f"a URL is at most {MAX_URL_CHARS} characters"
    if any(not character.isprintable() or character.isspace() for character in location):
        return "a URL holds no spaces or control characters"
    try:
        parts = urlsplit(location)
    except ValueError as error:
        return f"not a URL: {error}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "only http(s) URLs are accepted"
    return None


def is_remote(location: str) -> bool:
    return location.startswith(("http://", "https://"))


@dataclass(slots=True)
class OpenedSource:
    """`stream` yields the (decompressed) bytes; `raw` is the underlying file, whose position
    against `size` measures progress."""

    location: str
    stream: BinaryIO
    raw: IO[bytes]
    size: int | None
    local_path: str | None = None  # set for plain files, which another process may re-open

    def head(self) -> bytes:
        peek = getattr(self.stream, "peek", None)
        if peek is not None:
            return cast(bytes, peek(HEAD_BYTES))[:HEAD_BYTES]
        start = self.stream.tell()
        data = self.stream.read(HEAD_BYTES)
        self.stream.seek(start)
        return data

    def position(self) -> int:
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0


def _retry_after(response: httpx.Response, default: float, cap: float) -> float:
    value = response.headers.get("retry-after")
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return default
    return min(max(seconds, 0.0), cap)


async def download(
    url: str,
    *,
    read_timeout: float,
    retries: int,
    max_retry_after: float,
    deadline: float = 300.0,
    max_bytes: int = 200 * 1024 * 1024,
) -> IO[bytes]:
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (returned open)
    try:
        async with asyncio.timeout(deadline):
            return await _download_into(
                spool,
                url,
                read_timeout=read_timeout,
                retries=retries,
                max_retry_after=max_retry_after,
                max_bytes=max_bytes,
            )
    except TimeoutError as error:
        spool.close()
        raise SourceError(
            f"GET {url} did not finish within {deadline:g} s (PAPERBOY_HTTP_DEADLINE)"
        ) from error
    except BaseException:
        spool.close()  # a download that fails leaves no open file behind
        raise


def _too_large(url: str, max_bytes: int) -> SourceError:
    return SourceError(
        f"GET {url}: the body is larger than {max_bytes:,} bytes (PAPERBOY_HTTP_MAX_BYTES)"
    )


async def _download_into(
    spool: IO[bytes],
    url: str,
    *,
    read_timeout: float,
    retries: int,
    max_retry_after: float,
    max_bytes: int,
) -> IO[bytes]:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip"}
    async with httpx.AsyncClient(
        timeout=read_timeout, follow_redirects=True, headers=headers
    ) as client:
        for attempt in range(retries + 1):
            backoff = min(0.5 * 2**attempt, max_retry_after) * (0.5 + random.random() / 2)  # noqa: S311
            try:
                async with client.stream("GET", url) as response:
                    if response.status_code == 429 or response.status_code >= 500:
                        if attempt == retries:
                            raise SourceError(
                                f"GET {url} failed with HTTP {response.status_code} "
                                f"after {retries + 1} attempts"
                            )
                        await asyncio.sleep(_retry_after(response, backoff, max_retry_after))
                        continue
                    if response.status_code >= 400:
                        raise SourceError(
                            f"GET {url} failed with HTTP {response.status_code} "
                            f"{response.reason_phrase}"
                        )
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > max_bytes:
                        raise _too_large(url, max_bytes)
                    spool.seek(0)
                    spool.truncate()
                    received = 0
                    # Decoded bytes (Content-Encoding undone): a small gzip body cannot smuggle
                    # a huge one past the cap.
                    async for chunk in response.aiter_bytes():
                        received += len(chunk)
                        if received > max_bytes:
                            raise _too_large(url, max_bytes)
                        spool.write(chunk)
                    spool.seek(0)
                    return spool
            except httpx.TransportError as error:
                if attempt == retries:
                    raise SourceError(
                        f"GET {url} failed after {retries + 1} attempts: "
                        f"{type(error).__name__}: {error}"
                    ) from error
                await asyncio.sleep(backoff)
    raise AssertionError("unreachable: the loop either returns or raises")


def _open_file(location: str) -> tuple[IO[bytes], int]:
    if "\x00" in location:
        raise SourceError("a file path holds no NUL characters")
    path = Path(location).expanduser()
    if not path.exists():
        raise SourceError(f"no such file: {location}")
    if not path.is_file():
        raise SourceError(f"not a regular file: {location}")
    try:
        return path.open("rb"), path.stat().st_size
    except OSError as error:
        raise SourceError(f"cannot open {location}: {error.strerror}") from error


async def open_source(
    location: str,
    *,
    read_timeout: float = 30.0,
    retries: int = 3,
    max_retry_after: float = 60.0,
    deadline: float = 300.0,
    max_bytes: int = 200 * 1024 * 1024,
    exit_stack: AsyncExitStack,
) -> OpenedSource:
    """Open `location`; every file it opens is closed by `exit_stack`."""
    raw: IO[bytes]
    size: int | None = None
    if location == "-":
        raw = sys.stdin.buffer
    elif is_remote(location):
        raw = exit_stack.enter_context(
            await download(
                location,
                read_timeout=read_timeout,
                retries=retries,
                max_retry_after=max_retry_after,
                deadline=deadline,
                max_bytes=max_bytes,
            )
        )
        raw.seek(0, 2)
        size = raw.tell()
        raw.seek(0)
    else:
        raw, size = _open_file(location)
        exit_stack.push(raw)
    source = OpenedSource(location=location, stream=cast(BinaryIO, raw), raw=raw, size=size)
    if location != "-" and not is_remote(location):
        source.local_path = raw.name if isinstance(raw.name, str) else None
    if source.head().startswith(b"\x1f\x8b"):
        source.stream = cast(BinaryIO, exit_stack.enter_context(gzip.GzipFile(fileobj=raw)))
        try:
            source.head()
        except READ_ERRORS as error:
            raise SourceError(
                f"the gzip data is corrupt: {error or type(error).__name__}"
            ) from error
    return source
