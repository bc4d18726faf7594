"""The state of each digest's delivery, in the database: claiming a batch under a lease (Postgres
`FOR UPDATE SKIP LOCKED`, so any number of workers share the queue; an expired lease is claimed
again), releasing what a stopping worker did not start, and recording each message's outcome:
sent; retry with jittered exponential backoff until the subscriber's digest day is over, then
failed; bounced, counting towards the subscriber's suppression. Functions here never commit,
but for `apply_changes_at_once`, a single Postgres statement run outside a transaction."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db import among
from app.models import Digest, DigestStatus, Subscriber, SubscriberStatus

ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one message, as the worker saw it."""

    digest_id: int
    subscriber_id: int
    status: DigestStatus  # SENT, RETRY or BOUNCED (RETRY may become FAILED when recorded)
    detail: str
    attempts: int
    day_end: datetime
    message_id: str | None = None


# The tables, for Core statements run once per parameter set (executemany).
DIGESTS = cast(Table, Digest.__table__)
SUBSCRIBERS = cast(Table, Subscriber.__table__)


def retry_delay(attempts: int, *, base: float, ceiling: float, rng: random.Random) -> timedelta:
    """Exponential in the attempts made, jittered ±50% so retries never arrive in lockstep."""
    exponent = min(max(attempts - 1, 0), 20)
    seconds = min(ceiling, base * 2**exponent)
    return timedelta(seconds=seconds * rng.uniform(0.5, 1.5))


def _claimable(now: datetime) -> object:
    waiting = and_(
        Digest.status.in_([DigestStatus.QUEUED, DigestStatus.RETRY]),
        or_(Digest.next_attempt_at.is_(None), Digest.next_attempt_at <= now),
    )
    abandoned = and_(Digest.status == DigestStatus.SENDING, Digest.lease_until < now)
    return or_(waiting, abandoned)


async def claim_digests(
    *,
    session: AsyncSession,
    now: datetime,
    limit: int,
    lease: timedelta,
    worker: int | None = None,
) -> dict[int, int]:
    """Take up to `limit` digests that are due for an attempt (or whose worker's lease ran out)
    and mark them as being sent by `worker` (its `send_worker` id) until `now + lease`. Digests
    of subscribers who left or paused since compose are skipped instead of claimed. Returns
    {digest id: attempts, this one included}."""
    chosen = (
        select(Digest.id)
        .where(_claimable(now))  # type: ignore[arg-type]
        .order_by(Digest.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    claimed = await session.execute(
        update(Digest)
        .where(Digest.id.in_(chosen))
        .values(
            status=DigestStatus.SENDING,
            lease_until=now + lease,
            attempts=Digest.attempts + 1,
            claimed_by=worker,
        )
        .returning(Digest.id, Digest.attempts)
        .execution_options(synchronize_session=False)
    )
    attempts = {row.id: row.attempts for row in claimed}
    if not attempts:
        return attempts
    # Checked on the claimed batch only, so a claim costs the same however long the queue is.
    departed = await session.execute(
        update(Digest)
        .where(
            among(session, Digest.id, attempts),
            Digest.subscriber_id.in_(
                select(Subscriber.id).where(Subscriber.status != SubscriberStatus.ACTIVE)
            ),
        )
        .values(
            status=DigestStatus.SKIPPED,
            lease_until=None,
            last_error="subscriber is no longer active",
        )
        .returning(Digest.id)
        .execution_options(synchronize_session=False)
    )
    for digest_id in departed.scalars():
        del attempts[digest_id]
    return attempts


async def release_digests(digest_ids: Sequence[int], *, session: AsyncSession) -> None:
    """Give back claimed digests this worker will not attempt (it is stopping): they are due
    again at once for any worker, and the claim does not count as an attempt."""
    if not digest_ids:
        return
    await session.execute(
        update(Digest)
        .where(Digest.id.in_(digest_ids), Digest.status == DigestStatus.SENDING)
        .values(
            status=case((Digest.attempts <= 1, DigestStatus.QUEUED), else_=DigestStatus.RETRY),
            attempts=Digest.attempts - 1,
            lease_until=None,
        )
        .execution_options(synchronize_session=False)
    )


@dataclass(slots=True)
class RecordedCounts:
    sent: int = 0
    retry: int = 0
    failed: int = 0
    bounced: int = 0
    suppressed: int = 0


@dataclass(slots=True)
class DigestChanges:
    """What a group of outcomes writes to its digests, a column per field: the rows of one
    executemany, or the arrays of one Postgres statement. `sent_at` and `message_id` are None
    except for messages sent (the statements keep what a digest already has then)."""

    ids: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    sent_at: list[datetime | None] = field(default_factory=list)
    message_ids: list[str | None] = field(default_factory=list)
    next_attempt_at: list[datetime | None] = field(default_factory=list)
    last_errors: list[str | None] = field(default_factory=list)
    bounced_subscribers: list[int] = field(default_factory=list)
    counts: RecordedCounts = field(default_factory=RecordedCounts)

    def columns(self) -> tuple[list[Any], ...]:
        """id, status, sent_at, message_id, next_attempt_at, last_error: the order of both
        statements' parameters."""
        return (
            self.ids,
            self.statuses,
            self.sent_at,
            self.message_ids,
            self.next_attempt_at,
            self.last_errors,
        )

    def add(
        self,
        outcome: Outcome,
        status: DigestStatus,
        *,
        sent_at: datetime | None = None,
        next_attempt_at: datetime | None = None,
        last_error: str | None = None,
    ) -> None:
        self.ids.append(outcome.digest_id)
        self.statuses.append(status.value)
        self.sent_at.append(sent_at)
        self.message_ids.append(outcome.message_id if sent_at else None)
        self.next_attempt_at.append(next_attempt_at)
        self.last_errors.append(last_error)


def digest_changes(
    outcomes: Sequence[Outcome],
    *,
    now: datetime,
    retry_base: float,
    retry_ceiling: float,
    rng: random.Random | None = None,
) -> DigestChanges:
    """Sent; retry at a jittered backoff, or failed once that falls after the digest's day;
    bounced, to be counted against the subscriber."""
    rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
    changes = DigestChanges()
    counts = changes.counts
    for outcome in outcomes:
        if outcome.status is DigestStatus.SENT:
            counts.sent += 1
            changes.add(outcome, DigestStatus.SENT, sent_at=now)
        elif outcome.status is DigestStatus.RETRY:
            delay = retry_delay(outcome.attempts, base=retry_base, ceiling=retry_ceiling, rng=rng)
            due = now + delay
            error = outcome.detail[:ERROR_CHARS]
            if due >= outcome.day_end:
                counts.failed += 1
                changes.add(outcome, DigestStatus.FAILED, last_error=error)
            else:
                counts.retry += 1
                changes.add(outcome, DigestStatus.RETRY, next_attempt_at=due, last_error=error)
        else:
            counts.bounced += 1
            changes.add(outcome, DigestStatus.BOUNCED, last_error=outcome.detail[:ERROR_CHARS])
            changes.bounced_subscribers.append(outcome.subscriber_id)
    return changes


# Every change, by digest id, run once per row (executemany).
CHANGE_BY_ID = (
    update(DIGESTS)
    .where(DIGESTS.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        sent_at=func.coalesce(bindparam("b_sent_at"), DIGESTS.c.sent_at),
        message_id=func.coalesce(bindparam("b_message_id"), DIGESTS.c.message_id),
        next_attempt_at=bindparam("b_next_attempt_at"),
        last_error=bindparam("b_last_error"),
        lease_until=None,
    )
)
# The same change for a whole group in one statement (Postgres): rows from parallel arrays.
CHANGE_FROM_ARRAYS = """
UPDATE digest SET
    status = change.status,
    sent_at = coalesce(change.sent_at, digest.sent_at),
    message_id = coalesce(change.message_id, digest.message_id),
    next_attempt_at = change.next_attempt_at,
    last_error = change.last_error,
    lease_until = NULL
FROM unnest($1::bigint[], $2::varchar[], $3::timestamptz[], $4::varchar[], $5::timestamptz[],
            $6::text[]) AS change(id, status, sent_at, message_id, next_attempt_at, last_error)
WHERE digest.id = change.id
"""


async def apply_changes(
    changes: DigestChanges,
    *,
    session: AsyncSession | AsyncConnection,
    now: datetime,
    bounce_limit: int,
) -> RecordedCounts:
    """Write the changes, count the bounces and suppress subscribers who reached the limit."""
    if changes.ids:
        await session.execute(
            CHANGE_BY_ID,
            [
                {
                    "b_id": digest_id,
                    "b_status": status,
                    "b_sent_at": sent_at,
                    "b_message_id": message_id,
                    "b_next_attempt_at": next_attempt_at,
                    "b_last_error": last_error,
                }
                for digest_id, status, sent_at, message_id, next_attempt_at, last_error in zip(
                    *changes.columns(), strict=True
                )
            ],
        )
    if changes.bounced_subscribers:
        changes.counts.suppressed = await _count_bounces(
            changes.bounced_subscribers, session=session, limit=bounce_limit, now=now
        )
    return changes.counts


async def apply_changes_at_once(changes: DigestChanges, *, driver: Any) -> RecordedCounts:
    """Postgres, for changes without bounces: one UPDATE from arrays on an asyncpg connection
    outside any transaction. A single statement is atomic by itself, so the group commits whole
    in one round trip, for a seventh of the client CPU of an executemany in a transaction.
    Unlike the other functions here, this commits."""
    assert not changes.bounced_subscribers, "bounces are counted in a transaction"
    await driver.execute(CHANGE_FROM_ARRAYS, *changes.columns())
    return changes.counts


async def _count_bounces(
    subscriber_ids: list[int],
    *,
    session: AsyncSession | AsyncConnection,
    limit: int,
    now: datetime,
) -> int:
    await session.execute(
        update(SUBSCRIBERS)
        .where(SUBSCRIBERS.c.id == bindparam("b_id"))
        .values(bounce_count=SUBSCRIBERS.c.bounce_count + 1, updated_at=now),
        [{"b_id": subscriber_id} for subscriber_id in subscriber_ids],
    )
    suppressed = await session.execute(
        update(Subscriber)
        .where(
            Subscriber.id.in_(subscriber_ids),
            Subscriber.bounce_count >= limit,
            Subscriber.status != SubscriberStatus.BOUNCED,
        )
        .values(status=SubscriberStatus.BOUNCED, updated_at=now)
        .returning(Subscriber.id)
        .execution_options(synchronize_session=False)
    )
    return len(suppressed.all())


async def count_due_digests(*, session: AsyncSession, now: datetime) -> int:
    """Digests a worker could claim now (for progress bars)."""
    return int(
        await session.scalar(select(func.count()).select_from(Digest).where(_claimable(now)))  # type: ignore[arg-type]
        or 0
    )


async def waiting_retries(*, session: AsyncSession, now: datetime) -> tuple[int, datetime | None]:
    """Digests waiting for a retry not yet due: how many, and when the first falls due."""
    count, first = (
        await session.execute(
            select(func.count(), func.min(Digest.next_attempt_at)).where(
                Digest.status == DigestStatus.RETRY, Digest.next_attempt_at > now
            )
        )
    ).one()
    return int(count), first
