"""Web benchmark: `paperboy web` (uvicorn, 2 worker processes) on Postgres, driven from a separate
process at fixed open-loop rates. The requests are signups (POST /subscribe, each a new address:
a pending row and a confirmation mail into a Maildir) and one-click unsubscribes (RFC 8058 POSTs
with signed tokens of pre-made readers), half and half. Three parts, each with its baseline in
the same run:

1. Capacity: the offered rate climbs step by step until the p99 of the answers first exceeds
   50 ms; that rate is the capacity.
2. Overload ("degrade, never collapse"): twice the capacity, with admission control on (the
   defaults), and off as the baseline (PAPERBOY_WEB_MAX_IN_FLIGHT=0, with the 30 s pool timeout
   Paperboy had before, and with the new 5 s one): goodput (real answers per second) against
   the capacity, p99 of served and of refused (503) requests, and the check that nothing was
   half done (answered signups = new rows = confirmation mails; answered unsubscribes =
   readers unsubscribed; refused requests changed nothing).
3. Mixed load: 200 requests/s while `paperboy send` delivers 20,000 digests from the same
   Postgres to an SMTP sink (its own process), and again with the send at a lower CPU priority
   (nice 10); the baseline is the same load without a send.

The load generator speaks HTTP/1.1 over keep-alive connections itself (requests prepared before
the clock starts, uvloop, no garbage collector), so that at several hundred requests per second
its own CPU takes as little as possible from the two cores it shares with the server. A request's
latency runs from the moment it was due to leave to the end of its answer."""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import asyncpg
import uvloop
from population import copy_subscribers
from rich.console import Console
from rich.table import Table
from send import run_sink

from app.config import Settings
from app.db import create_engine, create_session_factory, migrate
from app.jobs import compose_job, ingest_job
from app.subscribers.tokens import Purpose, make_token

PAPERBOY = str(Path(sys.executable).parent / "paperboy")
SECRET = "bench-secret-key-0123456789abcdef"  # noqa: S105 - a throwaway database
SAMPLE = Path(__file__).resolve().parent.parent / "app" / "sample" / "trending-papers-page.txt"
SENDER = "digest@papers.example.org"
P99_TARGET_MS = 50.0
REQUEST_DEADLINE = 90.0  # a request not answered by then counts as an error
MAX_CONNECTIONS = 2000  # past this, requests wait in the generator (and that wait counts)
# Every digest back in the queue, as compose left it, so that a second send has the same work.
REQUEUE = (
    "UPDATE digest SET status = 'queued', attempts = 0, lease_until = NULL, "
    "next_attempt_at = NULL, sent_at = NULL, message_id = NULL, last_error = NULL"
)


# -- the load generator (runs in its own process)


def signup_request(email: str) -> bytes:
    body = f"email={email}&topics=LLM".encode()
    return (
        b"POST /subscribe HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/x-www-form-urlencoded\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def unsubscribe_request(token: str) -> bytes:
    body = b"List-Unsubscribe=One-Click"
    return (
        f"POST /unsubscribe/{token} HTTP/1.1\r\nhost: 127.0.0.1\r\n".encode()
        + b"content-type: application/x-www-form-urlencoded\r\n"
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


@dataclass
class Load:
    """What one run offers: `rate` requests/s for `seconds`, signups (addresses tagged `tag`)
    and unsubscribes (with `tokens`, one each) taking turns."""

    rate: float
    seconds: float
    tag: str
    tokens: list[str]

    def requests(self) -> list[tuple[str, bytes]]:
        count = int(self.rate * self.seconds)
        made = []
        for n in range(count):
            if n % 2 == 0:
                made.append(("signup", signup_request(f"{self.tag}-{n}@example.org")))
            else:
                made.append(("unsubscribe", unsubscribe_request(self.tokens[n // 2])))
        return made


@dataclass
class Result:
    offered: float
    seconds: float
    sent: int = 0
    elapsed: float = 0.0  # from the first request due to the last answer
    served: list[float] = field(default_factory=list)  # latency (s) of real answers
    refused: list[float] = field(default_factory=list)  # latency (s) of 503 busy answers
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    served_by_kind: Counter[str] = field(default_factory=Counter)  # 2xx answers per kind
    # How late the generator itself sent each request (s): part of every latency above, and
    # not the server's doing.
    lag: list[float] = field(default_factory=list)

    @property
    def goodput(self) -> float:
        return len(self.served) / self.elapsed if self.elapsed else 0.0

    def p(self, which: list[float], share: float) -> float:
        if not which:
            return float("nan")
        ordered = sorted(which)
        return ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1000

    @property
    def p99_all(self) -> float:
        return self.p(self.served + self.refused, 0.99)


class Connections:
    """Keep-alive connections to the server, opened as needed, at most MAX_CONNECTIONS."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def exchange(self, request: bytes) -> int:
        async with self.slots:
            for attempt in range(2):
                fresh = attempt > 0 or not self.idle
                reader, writer = (
                    await asyncio.open_connection("127.0.0.1", self.port)
                    if fresh
                    else self.idle.pop()
                )
                try:
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                except (ConnectionError, asyncio.IncompleteReadError):
                    writer.close()
                    if fresh:
                        raise
                    continue  # the server closed an idle connection: once more on a new one
                try:
                    lower = head.lower()
                    start = lower.index(b"\r\ncontent-length:") + 17
                    await reader.readexactly(int(lower[start : lower.index(b"\r\n", start)]))
                except BaseException:
                    writer.close()
                    raise
                if b"\r\nconnection: close" in lower:
                    writer.close()
                else:
                    self.idle.append((reader, writer))
                return int(head[9:12])
        raise AssertionError("unreachable")


async def drive(port: int, load: Load) -> Result:
    prepared = load.requests()
    result = Result(load.rate, load.seconds, sent=len(prepared))
    connections = Connections(port)
    last_answer = 0.0

    async def one(due: float, kind: str, request: bytes) -> None:
        nonlocal last_answer
        result.lag.append(time.perf_counter() - due)
        try:
            status = await asyncio.wait_for(connections.exchange(request), REQUEST_DEADLINE)
        except TimeoutError:
            result.errors["timeout"] += 1
            return
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            result.errors[type(error).__name__] += 1
            return
        finished = time.perf_counter()
        last_answer = max(last_answer, finished)
        result.statuses[status] += 1
        if status == 503:
            result.refused.append(finished - due)
        elif status < 500:
            result.served.append(finished - due)
            if status < 300:
                result.served_by_kind[kind] += 1
        else:
            result.errors[f"HTTP {status}"] += 1

    begin = time.perf_counter()
    tasks = []
    for n, (kind, request) in enumerate(prepared):
        # Open loop: each request leaves when it is due, whether or not earlier ones are done.
        due = begin + n / load.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, kind, request)))
    await asyncio.gather(*tasks)
    result.elapsed = max(last_answer - begin, load.seconds)
    for _, writer in connections.idle:
        writer.close()
    return result


def load_process(port: int, load: Load, results: Queue[Result]) -> None:
    # The generator keeps every request of the run; its collector's pauses would count as
    # server latency. It exits after the run.
    gc.disable()
    results.put(uvloop.run(drive(port, load)))


def offer(port: int, load: Load) -> Result:
    results: Queue[Result] = multiprocessing.Queue()
    process = multiprocessing.Process(target=load_process, args=(port, load, results))
    process.start()
    result: Result = results.get(timeout=load.seconds + REQUEST_DEADLINE + 120)
    process.join(30)
    return result


# -- the server and the database


class Server:
    """`paperboy web` on one database with its own Maildir; `settings` are extra PAPERBOY_*."""

    def __init__(self, url: str, port: int, workers: int, settings: dict[str, str]) -> None:
        self.url, self.port, self.workers, self.settings = url, port, workers, settings
        self.directory = tempfile.TemporaryDirectory()
        self.maildir = Path(self.directory.name) / "mail"
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAPERBOY_")} | {
            "PAPERBOY_DATABASE_URL": self.url,
            "PAPERBOY_SECRET_KEY": SECRET,
            "PAPERBOY_MAIL_URL": f"maildir://{self.maildir}",
            "PAPERBOY_BASE_URL": f"http://127.0.0.1:{self.port}",
            "PAPERBOY_SIGNUP_IP_LIMIT": "1000000000",
            "PAPERBOY_EMBEDDING_MODEL": "none",
            **self.settings,
        }
        self.log = (Path(self.directory.name) / "web.log").open("wb")
        self.process = await asyncio.create_subprocess_exec(
            PAPERBOY,
            "web",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--no-access-log",
            env=env,
            stdout=self.log,
            stderr=self.log,
        )
        for _ in range(600):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise SystemExit("paperboy web did not come up")
        return self

    def mails(self) -> int:
        new = self.maildir / "new"
        return sum(1 for _ in new.iterdir()) if new.exists() else 0

    async def settled_mails(self, expected: int, seconds: float = 120) -> int:
        """The Maildir's count once it reaches `expected` or stops growing for 5 s."""
        deadline = time.monotonic() + seconds
        count, since = self.mails(), time.monotonic()
        while count < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            now = self.mails()
            if now != count:
                count, since = now, time.monotonic()
            elif time.monotonic() - since > 5:
                break
        return count

    def problems(self) -> list[str]:
        self.log.flush()
        text = (Path(self.directory.name) / "web.log").read_text(errors="replace")
        return [line for line in text.splitlines() if "Traceback" in line or "ERROR" in line]

    async def __aexit__(self, *_: object) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()
        self.log.close()
        self.directory.cleanup()


@dataclass
class Readers:
    """Pre-made active readers whose unsubscribe tokens the runs use, each token once."""

    ids: list[uuid.UUID]
    used: int = 0

    def take(self, count: int) -> tuple[list[str], list[uuid.UUID]]:
        chosen = self.ids[self.used : self.used + count]
        if len(chosen) < count:
            raise SystemExit("not enough pre-made readers for the runs; raise --readers")
        self.used += count
        tokens = [make_token(SECRET, Purpose.UNSUBSCRIBE, public_id, 1) for public_id in chosen]
        return tokens, chosen


@dataclass
class Ledger:
    """What one run left behind, against what it was told."""

    signups_answered: int
    rows: int
    mails: int
    unsubscribes_answered: int
    unsubscribed: int

    @property
    def whole(self) -> bool:
        return (
            self.signups_answered == self.rows == self.mails
            and self.unsubscribes_answered == self.unsubscribed
        )


async def ledger(
    connection: asyncpg.Connection,
    server: Server,
    tag: str,
    readers: list[uuid.UUID],
    result: Result,
    mails_before: int,
) -> Ledger:
    signups = result.served_by_kind["signup"]
    rows = await connection.fetchval(
        "SELECT count(*) FROM subscriber WHERE email LIKE $1", f"{tag}-%"
    )
    unsubscribed = await connection.fetchval(
        "SELECT count(*) FROM subscriber WHERE status = 'unsubscribed' AND public_id = ANY($1)",
        readers,
    )
    mails = await server.settled_mails(mails_before + signups) - mails_before
    return Ledger(signups, rows, mails, result.served_by_kind["unsubscribe"], unsubscribed)


async def run(
    server: Server, connection: asyncpg.Connection, readers: Readers, rate: float, seconds: float
) -> tuple[Result, Ledger]:
    """One load on a running server, and what it left behind (its own addresses and readers)."""
    tag = f"r{uuid.uuid4().hex[:8]}"
    tokens, chosen = readers.take(int(rate * seconds) // 2 + 1)
    mails_before = server.mails()
    result = await asyncio.to_thread(offer, server.port, Load(rate, seconds, tag, tokens))
    return result, await ledger(connection, server, tag, chosen, result, mails_before)


async def fresh_database(admin: asyncpg.Connection, server_url: str, label: str) -> str:
    name = f"paperboy_api_bench_{label}_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    return f"{server_url}/{name}"


async def prepare(url: str, readers: int, digests: int = 0) -> list[uuid.UUID]:
    """Migrate; with `digests`, that many readers with today's digest queued (the sample papers);
    then `readers` more readers, with no digest, for the unsubscribes. Their public ids."""
    engine = create_engine(url)
    await migrate(engine)
    if digests:
        sessions = create_session_factory(engine)
        settings = Settings(_env_file=None, database_url=url, embedding_model="none")
        await ingest_job(str(SAMPLE), session_factory=sessions, settings=settings)
        await copy_subscribers(url, [[] for _ in range(digests)])
        await compose_job(
            session_factory=sessions, settings=settings, on_date=datetime.now(UTC).date()
        )
    await engine.dispose()
    return await copy_subscribers(url, [[] for _ in range(readers)], first=digests)


# -- the three parts


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.1f}"


async def find_capacity(
    args: argparse.Namespace, server: Server, connection: asyncpg.Connection, readers: Readers
) -> tuple[float, list[Result]]:
    steps = []
    rate = args.sweep_from
    while rate <= args.sweep_to:
        result, _ = await run(server, connection, readers, rate, args.step_seconds)
        steps.append(result)
        if result.p99_all > P99_TARGET_MS or result.errors:
            return rate, steps
        rate += args.sweep_step
    raise SystemExit(f"p99 stayed under {P99_TARGET_MS} ms up to {args.sweep_to} requests/s")


async def mixed_load(
    args: argparse.Namespace, admin: asyncpg.Connection, console: Console
) -> list[tuple[str, Result, str]]:
    url = await fresh_database(admin, args.server, "mixed")
    rows: list[tuple[str, Result, str]] = []
    received: Synchronized[int] = multiprocessing.Value("q", 0)
    ready = multiprocessing.Event()
    sink = multiprocessing.Process(
        target=run_sink, args=(args.smtp_port, received, ready), daemon=True
    )
    sink.start()
    try:
        started = time.perf_counter()
        ids = await prepare(url, args.readers // 10, digests=args.digests)
        console.print(
            f"mixed load: {args.digests:,} digests composed in "
            f"{time.perf_counter() - started:.0f} s"
        )
        ready.wait(10)
        readers = Readers(ids)
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        async with Server(url, args.port, args.workers, {}) as server:
            await run(server, connection, readers, args.mixed_rate, args.warmup)
            alone, _ = await run(server, connection, readers, args.mixed_rate, args.mixed_seconds)
            rows.append(("without a send (baseline)", alone, ""))
            env = {k: v for k, v in os.environ.items() if not k.startswith("PAPERBOY_")} | {
                "PAPERBOY_DATABASE_URL": url,
                "PAPERBOY_MAIL_URL": f"smtp://127.0.0.1:{args.smtp_port}",
                "PAPERBOY_MAIL_FROM": f"Paperboy <{SENDER}>",
                "PAPERBOY_EMBEDDING_MODEL": "none",
            }
            for label, command in (
                (f"during a send of {args.digests:,} digests", [PAPERBOY, "send"]),
                # What an operator does on a host the web shares with the worker.
                ("during the same send at nice 10", ["nice", "-n", "10", PAPERBOY, "send"]),
            ):
                await connection.execute(REQUEUE)
                received.value = 0
                send_started = time.perf_counter()
                sender = await asyncio.create_subprocess_exec(
                    *command,
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                while received.value < 200 and sender.returncode is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # under way: connected, claiming, sending
                before = received.value
                during, _ = await run(
                    server, connection, readers, args.mixed_rate, args.mixed_seconds
                )
                overlap = received.value - before
                still_sending = sender.returncode is None
                await sender.communicate()
                send_seconds = time.perf_counter() - send_started
                rows.append(
                    (
                        label,
                        during,
                        f"{overlap:,} sent in the window"
                        + ("" if still_sending else " (the send ended before the window)")
                        + f"; {received.value:,} in {send_seconds:.0f} s",
                    ),
                )
        await connection.close()
    finally:
        sink.kill()
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rpartition("/")[2]}" WITH (FORCE)')
    return rows


async def main(args: argparse.Namespace) -> None:
    console = Console(width=200)
    admin = await asyncpg.connect(
        args.server.replace("postgresql+asyncpg", "postgresql") + "/postgres"
    )
    load_before = os.getloadavg()
    url = await fresh_database(admin, args.server, "overload")
    try:
        readers = Readers(await prepare(url, args.readers))
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        async with Server(url, args.port, args.workers, {}) as server:
            await run(server, connection, readers, args.sweep_from, args.warmup)  # not measured
            steps: list[Result] = []
            if args.capacity:
                capacity = args.capacity
            else:
                capacity, steps = await find_capacity(args, server, connection, readers)
            problems = server.problems()
        overloaded = []
        for label, settings in (
            (
                "admission control on"
                + (f", {args.max_in_flight} in flight" if args.max_in_flight else " (defaults)"),
                {"PAPERBOY_WEB_MAX_IN_FLIGHT": str(args.max_in_flight)}
                if args.max_in_flight
                else {},
            ),
            (
                "baseline: off, 30 s pool timeout (before)",
                {"PAPERBOY_WEB_MAX_IN_FLIGHT": "0", "PAPERBOY_WEB_POOL_TIMEOUT": "30"},
            ),
            ("baseline: off, 5 s pool timeout", {"PAPERBOY_WEB_MAX_IN_FLIGHT": "0"}),
        ):
            async with Server(url, args.port, args.workers, settings) as server:
                await run(server, connection, readers, args.sweep_from, args.warmup)
                result, left = await run(server, connection, readers, 2 * capacity, args.seconds)
                overloaded.append((label, result, left))
                problems += server.problems()
        await connection.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rpartition("/")[2]}" WITH (FORCE)')
    mixed = [] if args.skip_mixed else await mixed_load(args, admin, console)
    await admin.close()
    load_after = os.getloadavg()

    sweep = Table(
        title=f"1. Capacity: p99 first above {P99_TARGET_MS:.0f} ms (Postgres, "
        f"{args.workers} web processes, {args.step_seconds:.0f} s a step)"
    )
    for column in (
        "offered/s",
        "answered/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "generator lag p99 ms",
        "statuses",
    ):
        sweep.add_column(column, justify="left" if column == "statuses" else "right")
    for step in steps:
        everything = step.served + step.refused
        sweep.add_row(
            f"{step.offered:.0f}",
            f"{len(everything) / step.elapsed:.0f}",
            ms(step.p(everything, 0.5)),
            ms(step.p99_all),
            ms(step.p(everything, 1.0)),
            ms(step.p(step.lag, 0.99)),
            ", ".join(f"{code}: {n}" for code, n in sorted(step.statuses.items()))
            + "".join(f", {what}: {n}" for what, n in step.errors.items()),
        )
    console.print(sweep)
    console.print(f"capacity: {capacity:.0f} requests/s")

    table = Table(
        title=f"2. Overload: {2 * capacity:.0f} requests/s (2x capacity) for {args.seconds:.0f} s"
    )
    for column in (
        "server",
        "goodput/s",
        "of capacity",
        "served p50 ms",
        "served p99 ms",
        "refused",
        "refused p99 ms",
        "generator lag p99 ms",
        "errors",
        "half-done",
    ):
        table.add_column(column, justify="left" if column in ("server", "errors") else "right")
    for label, result, left in overloaded:
        table.add_row(
            label,
            f"{result.goodput:.0f}",
            f"{result.goodput / capacity:.0%}",
            ms(result.p(result.served, 0.5)),
            ms(result.p(result.served, 0.99)),
            f"{len(result.refused):,}",
            ms(result.p(result.refused, 0.99)),
            ms(result.p(result.lag, 0.99)),
            ", ".join(f"{what}: {n:,}" for what, n in result.errors.items()) or "0",
            "none" if left.whole else "YES",
        )
    console.print(table)
    for label, _, left in overloaded:
        console.print(
            f"  {label}: signups answered {left.signups_answered:,}, new rows {left.rows:,}, "
            f"confirmation mails {left.mails:,}; unsubscribes answered "
            f"{left.unsubscribes_answered:,}, readers unsubscribed {left.unsubscribed:,}",
            highlight=False,
        )
    console.print(
        "Goals: goodput >= 90% of capacity, served p99 <= 200 ms, refused p99 <= 100 ms, "
        "nothing half-done."
    )
    if mixed:
        table = Table(
            title=f"3. Mixed load: {args.mixed_rate:.0f} requests/s for "
            f"{args.mixed_seconds:.0f} s, same Postgres"
        )
        for column in ("while", "answered/s", "p50 ms", "p99 ms", "max ms", "statuses", "send"):
            table.add_column(
                column, justify="left" if column in ("while", "statuses", "send") else "right"
            )
        for label, result, note in mixed:
            everything = result.served + result.refused
            table.add_row(
                label,
                f"{len(everything) / result.elapsed:.0f}",
                ms(result.p(everything, 0.5)),
                ms(result.p99_all),
                ms(result.p(everything, 1.0)),
                ", ".join(f"{code}: {n}" for code, n in sorted(result.statuses.items()))
                + "".join(f", {what}: {n}" for what, n in result.errors.items()),
                note,
            )
        console.print(table)
        console.print(f"Goal: p99 <= {P99_TARGET_MS:.0f} ms during the send.")
    console.print(
        "load average (1, 5, 15 min): before "
        + " ".join(f"{v:.1f}" for v in load_before)
        + ", after "
        + " ".join(f"{v:.1f}" for v in load_after)
        + f" on {os.cpu_count()} cores"
    )
    for line in problems[:10]:
        console.print(f"server: {line}", highlight=False)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--sweep-from", type=float, default=100.0)
    parser.add_argument("--sweep-step", type=float, default=40.0)
    parser.add_argument("--sweep-to", type=float, default=2000.0)
    parser.add_argument("--step-seconds", type=float, default=8.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="each overload run")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured load first")
    parser.add_argument("--readers", type=int, default=100_000)
    parser.add_argument("--digests", type=int, default=20_000)
    parser.add_argument("--mixed-rate", type=float, default=200.0)
    parser.add_argument("--mixed-seconds", type=float, default=15.0)
    parser.add_argument("--skip-mixed", action="store_true")
    parser.add_argument(
        "--capacity", type=float, default=0.0, help="skip the sweep and take this capacity"
    )
    parser.add_argument(
        "--max-in-flight", type=int, default=0, help="admission control's bound (0: default)"
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--smtp-port", type=int, default=2526)
    parser.add_argument("--server", default="postgresql+asyncpg://postgres@127.0.0.1:5432")
    return parser.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse_args()))
