"""Parsing a large local file in a separate process. Parsing and normalising are pure Python and
would otherwise share one interpreter lock with the event loop that feeds Postgres; in their own
process they use the second core while this one drives the database. The worker
(`python -m app.parsing_worker PATH FORMAT BATCH_SIZE`) re-opens the file itself and writes
length-prefixed pickled `PreparedBatch`es to its standard output, whose pipe buffer bounds how far
it runs ahead. Only this module's own worker output is unpickled."""

from __future__ import annotations

import asyncio
import gzip
import pickle
import struct
import sys
from collections.abc import AsyncIterator
from typing import BinaryIO, cast

from app.ingest import PreparedBatch, prepare_batches
from app.sources import SourceError, parse_source

HEADER = struct.Struct("!cQQ")  # kind, payload length, bytes of the file read so far
BATCH, DONE, SOURCE_ERROR, READ_ERROR = b"B", b"D", b"S", b"R"


def _send(out: BinaryIO, kind: bytes, payload: bytes, position: int = 0) -> None:
    out.write(HEADER.pack(kind, len(payload), position))
    out.write(payload)
    out.flush()


def produce(path: str, source_format: str, batch_size: int, out: BinaryIO) -> None:
    try:
        with open(path, "rb") as raw:
            stream: BinaryIO = raw
            if raw.peek(2)[:2] == b"\x1f\x8b":
                stream = cast(BinaryIO, gzip.GzipFile(fileobj=raw))
            for batch in prepare_batches(
                parse_source(stream, source_format), source=source_format, batch_size=batch_size
            ):
                _send(out, BATCH, pickle.dumps(batch, pickle.HIGHEST_PROTOCOL), raw.tell())
    except SourceError as error:
        _send(out, SOURCE_ERROR, str(error).encode())
        return
    except (OSError, EOFError) as error:
        _send(out, READ_ERROR, str(error).encode())
        return
    _send(out, DONE, b"")


async def batches_from_worker(
    path: str, source_format: str, batch_size: int
) -> AsyncIterator[tuple[PreparedBatch, int]]:
    """Yield (batch, bytes of the file read so far) from a worker process parsing `path`."""
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.parsing_worker",
        path,
        source_format,
        str(batch_size),
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
                yield pickle.loads(payload), position  # noqa: S301 (our own worker's output)
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
    produce(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.stdout.buffer)
