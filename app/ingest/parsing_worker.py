"""Parsing a large local file in a separate process. Parsing and normalising are pure Python and
would otherwise share one interpreter lock with the event loop that feeds Postgres; in their own
process they use the second core while this one drives the database. The worker
(`python -m app.ingest.parsing_worker PATH FORMAT BATCH_SIZE`) re-opens the file itself and writes
length-prefixed pickled `PreparedBatch`es to its standard output, whose pipe buffer bounds how far
it runs ahead. Only this module's own worker output is unpickled."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import pickle
import struct
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import BinaryIO, cast

from app.ingest.normalise import PaperRow, PreparedBatch, prepare_batches, row_tuple_builder
from app.ingest.sources import (
    ARXIV_JSONL,
    READ_ERRORS,
    ParseResult,
    SourceError,
    arxiv_jsonl,
    bounded_lines,
    parse_source,
)

HEADER = struct.Struct("!cQQ")  # kind, payload length, bytes of the file read so far
BATCH, DONE, SOURCE_ERROR, READ_ERROR = b"B", b"D", b"S", b"R"


# Plain tuples in `PAPER_ROW_FIELDS` order (dates as timestamps) pickle several times faster
# than dataclass instances.
_row_values = row_tuple_builder({"published_at": datetime.timestamp})


def _pack(batch: PreparedBatch) -> bytes:
    rows = [_row_values(row) for row in batch.rows]
    payload = (rows, batch.records, batch.rejections, batch.positions)
    return pickle.dumps(payload, pickle.HIGHEST_PROTOCOL)


def _unpack(payload: bytes) -> PreparedBatch:
    rows, records, rejections, positions = pickle.loads(payload)  # noqa: S301 (our worker's)
    unpacked = []
    for values in rows:
        row = PaperRow(*values)
        if row.published_at is not None:
            row.published_at = datetime.fromtimestamp(cast(float, row.published_at), UTC)
        unpacked.append(row)
    return PreparedBatch(unpacked, records, rejections, positions)


def _send(out: BinaryIO, kind: bytes, payload: bytes, position: int = 0) -> None:
    out.write(HEADER.pack(kind, len(payload), position))
    out.write(payload)
    out.flush()


def _line_number_at(raw: BinaryIO, offset: int) -> int:
    raw.seek(0)
    newlines, remaining = 0, offset
    while remaining > 0:
        chunk = raw.read(min(remaining, 1 << 22))
        if not chunk:
            break
        newlines += chunk.count(b"\n")
        remaining -= len(chunk)
    return newlines + 1


def produce(
    path: str,
    source_format: str,
    batch_size: int,
    out: BinaryIO,
    byte_range: tuple[int, int] | None = None,
) -> None:
    try:
        with open(path, "rb") as raw:
            if byte_range is not None:
                start, end = byte_range
                if start:
                    # The line running into `start` belongs to the range before.
                    raw.seek(start - 1)
                    raw.readline()
                begin = raw.tell()
                first_line = _line_number_at(raw, begin)
                raw.seek(begin)
                results: Iterator[ParseResult] = arxiv_jsonl.parse(
                    bounded_lines(raw, end=end), first_line=first_line, starts_file=start == 0
                )
            else:
                stream: BinaryIO = raw
                if raw.peek(2)[:2] == b"\x1f\x8b":
                    stream = cast(BinaryIO, gzip.GzipFile(fileobj=raw))
                results = parse_source(stream, source_format)
            for batch in prepare_batches(results, source=source_format, batch_size=batch_size):
                _send(out, BATCH, _pack(batch), raw.tell())
    except SourceError as error:
        _send(out, SOURCE_ERROR, str(error).encode())
        return
    except READ_ERRORS as error:
        _send(out, READ_ERROR, str(error).encode())
        return
    _send(out, DONE, b"")


def splittable(path: str, source_format: str) -> bool:
    """Plain (not gzipped) JSON Lines can be cut into byte ranges parsed side by side."""
    if source_format != ARXIV_JSONL:
        return False
    with open(path, "rb") as raw:
        return raw.read(2) != b"\x1f\x8b"


async def batches_from_workers(
    path: str, source_format: str, batch_size: int, *, size: int, workers: int
) -> AsyncIterator[tuple[PreparedBatch, int]]:
    """Yield (batch, bytes of the file read so far) from worker processes parsing `path`:
    one worker per byte range of a splittable file, else a single worker."""
    if workers < 2 or not splittable(path, source_format):
        ranges: list[tuple[int, int] | None] = [None]
    else:
        cuts = [size * i // workers for i in range(workers + 1)]
        ranges = list(itertools.pairwise(cuts))
    queue: asyncio.Queue[tuple[PreparedBatch, int] | BaseException | None] = asyncio.Queue(2)
    read = [0] * len(ranges)

    async def relay(index: int, byte_range: tuple[int, int] | None) -> None:
        start = byte_range[0] if byte_range else 0
        try:
            async for batch, position in _one_worker(path, source_format, batch_size, byte_range):
                read[index] = position - start
                await queue.put((batch, sum(read)))
            await queue.put(None)
        except BaseException as error:
            await queue.put(error)

    relays = [asyncio.create_task(relay(i, r)) for i, r in enumerate(ranges)]
    try:
        finished = 0
        while finished < len(relays):
            item = await queue.get()
            if item is None:
                finished += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)


async def _one_worker(
    path: str, source_format: str, batch_size: int, byte_range: tuple[int, int] | None
) -> AsyncIterator[tuple[PreparedBatch, int]]:
    arguments = [path, source_format, str(batch_size)]
    if byte_range is not None:
        arguments += [str(byte_range[0]), str(byte_range[1])]
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.ingest.parsing_worker",
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert worker.stdout is not None
    try:
        while True:
            try:
                kind, length, position = HEADER.unpack(await worker.stdout.readexactly(HEADER.size))
                payload = await worker.stdout.readexactly(length)
            except asyncio.IncompleteReadError as error:
                assert worker.stderr is not None
                detail = (await worker.stderr.read()).decode(errors="replace").strip()
                raise OSError(f"the parsing worker stopped: {detail[-500:]}") from error
            if kind == BATCH:
                yield _unpack(payload), position
            elif kind == DONE:
                return
            elif kind == SOURCE_ERROR:
                raise SourceError(payload.decode())
            else:
                raise OSError(payload.decode())
    finally:
        if worker.returncode is None:
            worker.kill()
        await worker.wait()


if __name__ == "__main__":
    produce(
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        sys.stdout.buffer,
        (int(sys.argv[4]), int(sys.argv[5])) if len(sys.argv) == 6 else None,
    )
