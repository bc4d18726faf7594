"""The delivery engine's bookkeeping: `SendReport` (what one run did) and `OutcomeWriter`, which
records each message's outcome as the mail server answers. Replies of a few milliseconds form a
group written and committed at once, and a send's slot frees only once its outcome is committed,
so a crash can repeat only the messages in flight."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import engine_of
from app.mail.queue import (
    DigestChanges,
    Outcome,
    RecordedCounts,
    apply_changes,
    apply_changes_at_once,
    digest_changes,
)
from app.mail.workers import HeldDigests
from app.metrics import MESSAGES

OUTCOME_WRITER = "paperboy outcomes"  # the outcome writer's connection, as Postgres lists it
OUTCOME_GROUP_SECONDS = 0.003  # how long the outcome writer gathers a group before writing it


@dataclass(slots=True)
class SendReport:
    claimed: int = 0
    sent: int = 0
    retry: int = 0
    failed: int = 0
    bounced: int = 0
    suppressed: int = 0
    refused_us: int = 0  # refusals about us (counted in retry or failed too): no bounce
    halted: str | None = None  # the refusal about us that stopped the run
    reclaimed: int = 0  # digests released from dead workers' leases before sending
    held: HeldDigests = field(default_factory=HeldDigests)  # still leased when the run ended
    retries_waiting: int = 0  # digests whose next attempt was not yet due when the run ended
    next_retry: datetime | None = None
    seconds: float = 0.0
    destination: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return self.sent + self.retry + self.failed + self.bounced

    @property
    def rate(self) -> float:
        return self.attempted / self.seconds if self.seconds else 0.0

    @property
    def halted_message(self) -> str:
        """Why the run stopped sending, for the operator: what to fix, and that nothing is lost."""
        return (
            f"delivery stopped: the mail server refused to take mail from us ({self.halted}). "
            "The refusal is about our side (relay permission, login, sender address or policy), "
            "not the subscribers: none was marked bounced, and their digests wait to be sent "
            "once it is fixed. Check PAPERBOY_MAIL_URL and what the mail server allows us."
        )


class OutcomeWriter:
    """Records outcomes as they come: the replies of a few milliseconds form a group, written
    and committed at once (group commit: a busy worker pays one commit per group, not per
    message; see `OutcomeWriter._write` for the statements). A send
    waits for its outcome to be committed before its slot frees, so a crash can repeat only
    the messages in flight. The writer keeps one connection for the run: a pooled session per
    group (checkout, ping, ORM session) cost three times the statements themselves."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        settings: Settings,
        report: SendReport,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.report = report
        self.pending: list[tuple[Outcome, asyncio.Future[None]]] = []
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run())
        self.closing = False

    async def record(self, outcome: Outcome) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((outcome, done))
        self.wake.set()
        await done

    async def _run(self) -> None:
        connection: AsyncConnection | None = None
        try:
            while not (self.closing and not self.pending):
                await self.wake.wait()
                # Replies arriving within the window join this group: three outcomes a commit
                # instead of one at full speed, and Postgres spends a third as much per outcome.
                # Each connection has its next message in flight meanwhile, so none waits.
                await asyncio.sleep(OUTCOME_GROUP_SECONDS)
                self.wake.clear()
                group, self.pending = self.pending, []
                if not group:
                    continue
                now = datetime.now(UTC)
                changes = digest_changes(
                    [outcome for outcome, _ in group],
                    now=now,
                    retry_base=self.settings.retry_base_seconds,
                    retry_ceiling=self.settings.retry_max_seconds,
                )
                try:
                    if connection is None:
                        connection = await self._connect()
                    counts = await self._write(connection, changes, now)
                except Exception as error:  # the sends stay leased; the lease expiry retries them
                    if connection is not None:  # it may be broken: the next group takes a new one
                        with contextlib.suppress(Exception):
                            await self._release(connection)
                        connection = None
                    for _, done in group:
                        if not done.done():
                            done.set_exception(error)
                    continue
                for name in ("sent", "retry", "failed", "bounced", "suppressed"):
                    setattr(self.report, name, getattr(self.report, name) + getattr(counts, name))
                for name in ("sent", "retry", "failed", "bounced"):
                    MESSAGES.labels(name).inc(getattr(counts, name))
                for _, done in group:
                    if not done.done():
                        done.set_result(None)
        finally:
            if connection is not None:
                await self._release(connection)

    async def _write(
        self, connection: AsyncConnection, changes: DigestChanges, now: datetime
    ) -> RecordedCounts:
        """On Postgres a group without bounces is one statement, committing itself; bounces
        change subscribers too, so those groups (and every group on SQLite) are a transaction."""
        if connection.dialect.name == "postgresql" and not changes.bounced_subscribers:
            raw = await connection.get_raw_connection()
            return await apply_changes_at_once(changes, driver=raw.driver_connection)
        async with connection.begin():
            return await apply_changes(
                changes,
                session=connection,
                now=now,
                bounce_limit=self.settings.bounce_limit,
            )

    async def _connect(self) -> AsyncConnection:
        connection = await engine_of(self.session_factory).connect()
        if connection.dialect.name == "postgresql":  # named in pg_stat_activity
            await connection.exec_driver_sql(f"SET application_name = '{OUTCOME_WRITER}'")
            await connection.commit()
        return connection

    async def _release(self, connection: AsyncConnection) -> None:
        """Back to the pool, no longer named as the writer."""
        try:
            if connection.dialect.name == "postgresql":
                await connection.exec_driver_sql("RESET application_name")
                await connection.commit()
        finally:
            await connection.close()

    async def close(self) -> None:
        self.closing = True
        self.wake.set()
        await self.task
