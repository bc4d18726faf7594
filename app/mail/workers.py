"""The send workers' registry (`send_worker`): each delivery run registers itself and beats while
it runs (`WorkerHeartbeat`), and each digest it claims names it (`digest.claimed_by`). The rule
for a dead worker is declared here once: stopped, or silent for `DEAD_AFTER_BEATS` heartbeat
intervals. From it: releasing a dead worker's leases at once (`reclaim_dead_leases`, never a live
worker's), what holds the digests still `sending` (`held_digests`, so that a run that sends
nothing says why), and whether delivery stands stopped by a refusal about us
(`delivery_state`, read by the admin stats and /metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.metrics import DeliveryGauges
from app.models import Digest, DigestStatus, SendWorker

logger = logging.getLogger("paperboy.delivery")

DEAD_AFTER_BEATS = 3  # heartbeat intervals of silence after which a worker is taken for dead
WORKER_ROWS_KEPT = timedelta(days=7)  # finished workers' rows are pruned after this


def aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive (they are UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _is_dead(now: datetime, heartbeat_seconds: float) -> Any:
    """The rule, as SQL over `send_worker`: stopped, or silent for a few heartbeat intervals."""
    silent_since = now - timedelta(seconds=DEAD_AFTER_BEATS * heartbeat_seconds)
    return or_(SendWorker.stopped_at.is_not(None), SendWorker.heartbeat_at < silent_since)


async def register_worker(*, session: AsyncSession, now: datetime) -> int:
    """A new worker's row (this host and process), with long-finished workers' rows pruned."""
    await session.execute(
        delete(SendWorker).where(SendWorker.heartbeat_at < now - WORKER_ROWS_KEPT)
    )
    worker_id = await session.scalar(
        insert(SendWorker)
        .values(host=socket.gethostname()[:255], pid=os.getpid(), started_at=now, heartbeat_at=now)
        .returning(SendWorker.id)
    )
    assert worker_id is not None
    return int(worker_id)


async def beat(
    worker_id: int, *, session: AsyncSession, now: datetime, sent: bool, stopped: bool = False
) -> None:
    """The worker is alive at `now` (or stopped then); `sent`: it delivered since its last beat."""
    values: dict[str, Any] = {"heartbeat_at": now}
    if sent:
        values["last_sent_at"] = now
    if stopped:
        values["stopped_at"] = now
    await session.execute(update(SendWorker).where(SendWorker.id == worker_id).values(values))


async def record_refusal(
    worker_id: int, refusal: str, *, session: AsyncSession, now: datetime
) -> None:
    await session.execute(
        update(SendWorker)
        .where(SendWorker.id == worker_id)
        .values(refusal=refusal[:500], refused_at=now)
    )


async def reclaim_dead_leases(
    *, session: AsyncSession, now: datetime, heartbeat_seconds: float
) -> int:
    """End now the leases of digests claimed by dead workers, so that the next claim takes them
    (as it would once their lease ran out). A live worker's leases, and leases of a worker
    Paperboy cannot check (claimed before workers were recorded), are left to run out."""
    dead = select(SendWorker.id).where(_is_dead(now, heartbeat_seconds))
    released = await session.execute(
        update(Digest)
        .where(
            Digest.status == DigestStatus.SENDING,
            Digest.lease_until >= now,
            Digest.claimed_by.in_(dead),
        )
        .values(lease_until=now)
        .returning(Digest.id)
        .execution_options(synchronize_session=False)
    )
    return len(released.all())


@dataclass(slots=True)
class HeldDigests:
    """Digests being sent under a lease that has not run out: by dead workers (reclaimable) and
    by others (live, or unknown). `*_until`: when the last of those leases runs out."""

    by_stopped: int = 0
    stopped_until: datetime | None = None
    by_others: int = 0
    others_until: datetime | None = None
    dead_after: float = 0.0  # seconds without a heartbeat after which a worker counts as stopped


async def held_digests(
    *, session: AsyncSession, now: datetime, heartbeat_seconds: float
) -> HeldDigests:
    dead = case((and_(SendWorker.id.is_not(None), _is_dead(now, heartbeat_seconds)), 1), else_=0)
    rows = await session.execute(
        select(dead.label("dead"), func.count(), func.max(Digest.lease_until))
        .select_from(Digest)
        .outerjoin(SendWorker, SendWorker.id == Digest.claimed_by)
        .where(Digest.status == DigestStatus.SENDING, Digest.lease_until >= now)
        .group_by(dead)
    )
    held = HeldDigests(dead_after=DEAD_AFTER_BEATS * heartbeat_seconds)
    for is_dead, count, until in rows:
        if is_dead:
            held.by_stopped, held.stopped_until = count, aware(until)
        else:
            held.by_others, held.others_until = count, aware(until)
    return held


@dataclass(slots=True)
class DeliveryState:
    """What every process shares about delivery: the refusal about us that stopped the latest
    run, while nothing has been accepted since (None once mail goes through again), the workers
    alive, and the digests held by workers."""

    refusal: str | None
    refused_at: datetime | None
    workers_alive: int
    held: HeldDigests

    def gauges(self) -> DeliveryGauges:
        return DeliveryGauges(
            refused=self.refusal is not None,
            refused_at=self.refused_at,
            workers_alive=self.workers_alive,
            held_by_stopped_workers=self.held.by_stopped,
        )


async def delivery_state(
    *, session: AsyncSession, now: datetime, heartbeat_seconds: float
) -> DeliveryState:
    latest = (
        await session.execute(
            select(SendWorker.refusal, SendWorker.refused_at)
            .where(SendWorker.refused_at.is_not(None))
            .order_by(SendWorker.refused_at.desc())
            .limit(1)
        )
    ).first()
    last_sent = await session.scalar(select(func.max(SendWorker.last_sent_at)))
    refusal = refused_at = None
    if latest is not None and (last_sent is None or aware(last_sent) < aware(latest.refused_at)):
        refusal, refused_at = latest.refusal, aware(latest.refused_at)
    alive = await session.scalar(
        select(func.count()).select_from(SendWorker).where(~_is_dead(now, heartbeat_seconds))
    )
    held = await held_digests(session=session, now=now, heartbeat_seconds=heartbeat_seconds)
    return DeliveryState(refusal, refused_at, int(alive or 0), held)


class WorkerHeartbeat:
    """A delivery run's row in `send_worker`, kept fresh every `interval` seconds while the run
    lasts, on a session of its own per beat; `sent` says how many messages the run has sent, so
    the row records when mail last went through. A beat that fails (the database briefly gone)
    is logged and the next one tries again."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        interval: float,
        sent: Callable[[], int],
    ) -> None:
        self.session_factory = session_factory
        self.interval = interval
        self.sent = sent
        self.sent_at_last_beat = 0
        self.worker_id: int | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        async with self.session_factory() as session:
            self.worker_id = await register_worker(session=session, now=datetime.now(UTC))
            await session.commit()
        self.task = asyncio.create_task(self._run())
        return self.worker_id

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._beat(stopped=False)
            except Exception as error:  # the run goes on; a live worker's next beat will land
                logger.warning("send worker %s: heartbeat failed: %s", self.worker_id, error)

    async def _beat(self, *, stopped: bool) -> None:
        assert self.worker_id is not None
        sent = self.sent()
        async with self.session_factory() as session:
            await beat(
                self.worker_id,
                session=session,
                now=datetime.now(UTC),
                sent=sent > self.sent_at_last_beat,
                stopped=stopped,
            )
            await session.commit()
        self.sent_at_last_beat = sent

    async def refused(self, refusal: str) -> None:
        """Record the refusal about us that stopped the run, at once (with what was sent)."""
        assert self.worker_id is not None
        await self._beat(stopped=False)
        async with self.session_factory() as session:
            await record_refusal(self.worker_id, refusal, session=session, now=datetime.now(UTC))
            await session.commit()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.worker_id is not None:
            await self._beat(stopped=True)
