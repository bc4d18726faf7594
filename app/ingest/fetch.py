"""Opening a source location as a byte stream: a file path, `-` for standard input, or an http(s)
URL. URLs are downloaded with httpx into a spooled temporary file (memory up to a few MB, then
disk), retrying network errors, 5xx and 429 with backoff and honouring Retry-After; other HTTP
errors fail at once with the status. Gzip-compressed input is decompressed transparently."""

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

import httpx

from app.ingest.sources import SourceError

SPOOL_BYTES = 8 * 1024 * 1024
HEAD_BYTES = 64 * 1024
USER_AGENT = "Paperboy/0.1 (+https://github.com/paperboy; trending papers digest)"


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
    url: str, *, read_timeout: float, retries: int, max_retry_after: float
) -> IO[bytes]:
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (returned open)
    try:
        return await _download_into(
            spool, url, read_timeout=read_timeout, retries=retries, max_retry_after=max_retry_after
        )
    except BaseException:
        spool.close()  # a download that fails leaves no open file behind
        raise


async def _download_into(
    spool: IO[bytes], url: str, *, read_timeout: float, retries: int, max_retry_after: float
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
                    spool.seek(0)
                    spool.truncate()
                    async for chunk in response.aiter_bytes():
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
    exit_stack: AsyncExitStack,
) -> OpenedSource:
    """Open `location`; every file it opens is closed by `exit_stack`."""
    raw: IO[bytes]
    size: int | None = None
    if location == "-":
        raw = sys.stdin.buffer
    elif location.startswith(("http://", "https://")):
        raw = exit_stack.enter_context(
            await download(
                location,
                read_timeout=read_timeout,
                retries=retries,
                max_retry_after=max_retry_after,
            )
        )
        raw.seek(0, 2)
        size = raw.tell()
        raw.seek(0)
    else:
        raw, size = _open_file(location)
        exit_stack.push(raw)
    source = OpenedSource(location=location, stream=cast(BinaryIO, raw), raw=raw, size=size)
    if location != "-" and not location.startswith(("http://", "https://")):
        source.local_path = raw.name if isinstance(raw.name, str) else None
    if source.head().startswith(b"\x1f\x8b"):
        source.stream = cast(BinaryIO, exit_stack.enter_context(gzip.GzipFile(fileobj=raw)))
    return source
