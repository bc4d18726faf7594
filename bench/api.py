"""Web benchmark: `paperboy web` (uvicorn, one process) on a fresh Postgres database, driven from a
second process at a fixed open-loop rate (default 200 requests/s for 20 s). Measures throughput
and p50/p99 latency of signups (POST /subscribe, each a new address: a pending row and a
confirmation mail into a Maildir) and one-click unsubscribes (RFC 8058 POSTs with signed tokens),
half and half; the baseline in the same run is GET /healthz at the same rate (no database)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from population import copy_subscribers
from rich.console import Console
from rich.table import Table

from app.db import create_engine, migrate
from app.subscribers.tokens import Purpose, make_token

PAPERBOY = str(Path(sys.executable).parent / "paperboy")
SECRET = "bench-secret-key-0123456789abcdef"  # noqa: S105 - a throwaway database


async def prepare(url: str, subscribers: int) -> list[uuid.UUID]:
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    return await copy_subscribers(url, [[] for _ in range(subscribers)])


def request_for(scenario: str, n: int, tokens: list[str]) -> tuple[str, str, dict[str, Any]]:
    if scenario == "healthz":
        return "GET", "/healthz", {}
    if n % 2 == 0:
        return (
            "POST",
            "/subscribe",
            {"data": {"email": f"new{n}-{uuid.uuid4().hex[:6]}@example.org", "topics": "LLM"}},
        )
    return (
        "POST",
        f"/unsubscribe/{tokens[n // 2 % len(tokens)]}",
        {
            "content": b"List-Unsubscribe=One-Click",
            "headers": {"content-type": "application/x-www-form-urlencoded"},
        },
    )


async def drive(
    base_url: str, scenario: str, rate: float, seconds: float, tokens: list[str]
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    total = int(rate * seconds)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def one(n: int) -> None:
            nonlocal errors
            method, path, extra = request_for(scenario, n, tokens)
            started = time.perf_counter()
            try:
                response = await client.request(method, path, **extra)
            except httpx.HTTPError:
                errors += 1
                return
            latencies.append(time.perf_counter() - started)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        begin = time.perf_counter()
        tasks = []
        for n in range(total):
            # Open loop: each request leaves on schedule, whether or not earlier ones are done.
            delay = begin + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - begin
    latencies.sort()
    return {
        "scenario": scenario,
        "sent": total,
        "done": len(latencies),
        "errors": errors,
        "statuses": statuses,
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan"),
        "max": latencies[-1] * 1000 if latencies else float("nan"),
    }


def load_process(
    base_url: str,
    scenario: str,
    rate: float,
    seconds: float,
    tokens: list[str],
    results: Queue[Any],
) -> None:
    # The load generator keeps every request of the run; its own collection pauses (70 ms,
    # seen in the /healthz maximum) would be counted as server latency. It exits after.
    gc.disable()
    results.put(asyncio.run(drive(base_url, scenario, rate, seconds, tokens)))


def run_load(
    base_url: str, scenario: str, rate: float, seconds: float, tokens: list[str]
) -> dict[str, Any]:
    results: Queue[Any] = multiprocessing.Queue()
    process = multiprocessing.Process(
        target=load_process, args=(base_url, scenario, rate, seconds, tokens, results)
    )
    process.start()
    result: dict[str, Any] = results.get(timeout=seconds + 120)
    process.join(30)
    return result


async def wait_until_up(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        for _ in range(300):
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("paperboy web did not come up")


async def main(args: argparse.Namespace) -> None:
    console = Console()
    name = f"paperboy_api_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(
        args.server.replace("postgresql+asyncpg", "postgresql") + "/postgres"
    )
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{args.server}/{name}"
    base_url = f"http://127.0.0.1:{args.port}"
    server = None
    try:
        ids = await prepare(url, int(args.rate * (args.seconds + args.warmup)))
        tokens = [make_token(SECRET, Purpose.UNSUBSCRIBE, public_id, 1) for public_id in ids]
        with tempfile.TemporaryDirectory() as mail:
            env = os.environ | {
                "PAPERBOY_DATABASE_URL": url,
                "PAPERBOY_SECRET_KEY": SECRET,
                "PAPERBOY_MAIL_URL": f"maildir://{mail}",
                "PAPERBOY_BASE_URL": base_url,
                "PAPERBOY_SIGNUP_IP_LIMIT": "1000000000",
            }
            log = (Path(mail) / "web.log").open("wb")
            server = await asyncio.create_subprocess_exec(
                PAPERBOY,
                "web",
                "--port",
                str(args.port),
                "--workers",
                str(args.workers),
                "--no-access-log",
                env=env,
                stdout=log,
                stderr=log,
            )
            await wait_until_up(base_url)
            # Warm-up, not measured: each worker compiles its queries and templates once.
            run_load(base_url, "signup+unsubscribe", args.rate, args.warmup, tokens[::-1])
            baseline = run_load(base_url, "healthz", args.rate, args.seconds, tokens)
            measured = run_load(base_url, "signup+unsubscribe", args.rate, args.seconds, tokens)
            await asyncio.sleep(1)  # the last confirmation mails leave after their responses
            mails = sum(1 for _ in (Path(mail) / "new").glob("*"))
            log.close()
            errors = [
                line
                for line in (Path(mail) / "web.log").read_text(errors="replace").splitlines()
                if "Error" in line or "Traceback" in line
            ]
    finally:
        if server is not None and server.returncode is None:
            server.terminate()
            await server.wait()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    table = Table(
        title=f"paperboy web at {args.rate:.0f} requests/s for {args.seconds:.0f} s (Postgres)"
    )
    for column in (
        "scenario",
        "requests",
        "answered/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "statuses",
        "errors",
    ):
        table.add_column(column, justify="left" if column in ("scenario", "statuses") else "right")
    for result in (baseline, measured):
        table.add_row(
            result["scenario"] + (" (baseline)" if result is baseline else ""),
            f"{result['sent']:,}",
            f"{result['rps']:.0f}",
            f"{result['p50']:.1f}",
            f"{result['p99']:.1f}",
            f"{result['max']:.1f}",
            ", ".join(f"{code}: {count}" for code, count in sorted(result["statuses"].items())),
            str(result["errors"]),
        )
    console.print(table)
    console.print(f"confirmation mails written: {mails:,}. Target: p99 <= 50 ms at 200 requests/s.")
    for line in errors[:10]:
        console.print(f"server: {line}", highlight=False)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of unmeasured load first"
    )
    parser.add_argument("--server", default="postgresql+asyncpg://postgres@127.0.0.1:5432")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
