"""Delivery benchmark: composes 20,000 digests of 10 papers in a fresh Postgres database, starts an
aiosmtpd sink in its own process, and runs `paperboy send` against it, timing digests/s and the
sender's peak RSS. In the same run, before and after it, the ceiling: a bare aiosmtplib loop
sending pre-rendered messages of the same size over the same number of connections to the same
sink, on the same event loop as `paperboy send` (uvloop); the mean of the two is the baseline."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg
import orjson
import psutil
from population import copy_subscribers
from rich.console import Console
from rich.table import Table

from app.cli.base import run_async
from app.config import Settings
from app.db import create_engine, create_session_factory, migrate
from app.jobs import compose_job, ingest_job

SAMPLE = Path(__file__).resolve().parent.parent / "app" / "sample" / "trending-papers-page.txt"
PAPERBOY = str(Path(sys.executable).parent / "paperboy")
DAY = datetime.now(UTC).date()  # the run's own day: retries and stats windows are relative to it
SENDER = "digest@papers.example.org"


def run_sink(port: int, received: Synchronized[int], ready: Any) -> None:
    """The SMTP sink (its own process): accepts and counts every message, keeps none. It runs
    on uvloop, like the sender, so that the sink's own event loop limits both rows less."""
    import uvloop
    from aiosmtpd.controller import Controller

    class Counting:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with received.get_lock():
                received.value += 1
            return "250 2.0.0 OK"

    controller = Controller(
        Counting(), hostname="127.0.0.1", port=port, loop=uvloop.new_event_loop()
    )
    controller.start()
    ready.set()
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


async def prepare(url: str, subscribers: int) -> tuple[float, int]:
    engine = create_engine(url)
    await migrate(engine)
    settings = Settings(database_url=url)
    sessions = create_session_factory(engine)
    await ingest_job(str(SAMPLE), session_factory=sessions, settings=settings)
    await copy_subscribers(url, [[] for _ in range(subscribers)])
    started = time.perf_counter()
    report = await compose_job(session_factory=sessions, settings=settings, on_date=DAY)
    await engine.dispose()
    return time.perf_counter() - started, report.items


async def sample_message(url: str) -> bytes:
    """One real digest message, as Paperboy renders it, for the ceiling loop."""
    from app.digests.views import load_digest_views
    from app.mail.message import Mailer

    engine = create_engine(url)
    async with create_session_factory(engine)() as session:
        view = (await load_digest_views([1], session=session))[0]
    await engine.dispose()
    mailer = Mailer(Settings(database_url=url, mail_from=f"Paperboy <{SENDER}>"))
    return mailer.message(view).data


async def ceiling(port: int, message: bytes, count: int, connections: int) -> float:
    remaining = iter(range(count))

    async def connection_loop() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        await client.connect()
        for n in remaining:
            await client.sendmail(SENDER, [f"reader{n}@example.org"], message)
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(connection_loop() for _ in range(connections)))
    return time.perf_counter() - started


async def run_paperboy(url: str, port: int, connections: int) -> tuple[float, float, str]:
    env = os.environ | {
        "PAPERBOY_DATABASE_URL": url,
        "PAPERBOY_MAIL_URL": f"smtp://127.0.0.1:{port}",
        "PAPERBOY_MAIL_FROM": f"Paperboy <{SENDER}>",
        "PAPERBOY_SMTP_CONCURRENCY": str(connections),
    }
    started = time.perf_counter()
    child = await asyncio.create_subprocess_exec(
        PAPERBOY, "send", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    process = psutil.Process(child.pid)
    peak = 0
    while child.returncode is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.wait(), 0.05)
    stdout, stderr = await child.communicate()
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"paperboy send failed: {stderr.decode()[-2000:]}")
    return seconds, peak / 2**20, " ".join(stdout.decode().split())


async def main(args: argparse.Namespace) -> None:
    console = Console()
    name = f"paperboy_send_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(
        args.server.replace("postgresql+asyncpg", "postgresql") + "/postgres"
    )
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{args.server}/{name}"
    received: Synchronized[int] = multiprocessing.Value("q", 0)
    ready = multiprocessing.Event()
    port = args.port
    sink = multiprocessing.Process(target=run_sink, args=(port, received, ready), daemon=True)
    sink.start()
    try:
        ready.wait(10)
        compose_seconds, items = await prepare(url, args.digests)
        console.print(
            f"composed {args.digests:,} digests ({items:,} items) in {compose_seconds:.1f} s"
        )
        message = await sample_message(url)
        # The ceiling is timed before and after Paperboy and their mean is the baseline: this
        # machine's speed drifts by a third within minutes, and bracketing cancels a drift.
        before_seconds = await ceiling(port, message, args.digests, args.connections)
        sent_before = received.value
        seconds, peak_mb, summary = await run_paperboy(url, port, args.connections)
        delivered = received.value - sent_before
        after_seconds = await ceiling(port, message, args.digests, args.connections)
    finally:
        sink.kill()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    table = Table(title=f"Sending {args.digests:,} digests over {args.connections} connections")
    for column in ("run", "seconds", "messages/s", "vs ceiling", "peak RSS MB"):
        table.add_column(column, justify="left" if column == "run" else "right")
    before_rate, after_rate = args.digests / before_seconds, args.digests / after_seconds
    ceiling_rate = (before_rate + after_rate) / 2
    rate = delivered / seconds
    for when, ceiling_seconds, ceiling_row_rate in (
        ("before", before_seconds, before_rate),
        ("after", after_seconds, after_rate),
    ):
        table.add_row(
            f"bare aiosmtplib loop, {when} ({len(message):,} B messages)",
            f"{ceiling_seconds:.1f}",
            f"{ceiling_row_rate:,.0f}",
            f"{ceiling_row_rate / ceiling_rate:.2f}x",
            "",
        )
    table.add_row(
        "paperboy send (render + sign + send + record)",
        f"{seconds:.1f}",
        f"{rate:,.0f}",
        f"{rate / ceiling_rate:.2f}x",
        f"{peak_mb:.0f}",
    )
    console.print(table)
    console.print(f"sink received {delivered:,} from paperboy; it said: {summary}")
    console.print("Targets: >= 0.7x the ceiling, >= 500 digests/s, peak RSS <= 250 MB.")
    figures = {"ceiling": ceiling_rate, "before": before_rate, "after": after_rate}
    figures |= {"paperboy": rate, "ratio": rate / ceiling_rate}
    print(orjson.dumps(figures | {"peak_mb": peak_mb}).decode())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--digests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--server", default="postgresql+asyncpg://postgres@127.0.0.1:5432")
    return parser.parse_args()


if __name__ == "__main__":
    # The ceiling runs on the event loop `paperboy send` runs on (uvloop), so the two rows
    # differ only in what Paperboy does per message.
    run_async(main(parse_args()))
