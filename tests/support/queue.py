"""Waiting on the delivery queue: tests that send round after round until everything is
delivered wait, between rounds, for the moment every retry waiting then falls due (as the queue
has it), rather than for a fixed pause."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models import Digest, DigestStatus

DUE_MARGIN_SECONDS = 0.001  # a timer may fire a hair early; the claim compares with <=


async def wait_until_retries_are_due(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Return when every digest now waiting to be retried may be claimed again (at once when
    none waits), so that the next round sends all of them."""
    async with sessions() as session:
        due = await session.scalar(
            select(func.max(Digest.next_attempt_at)).where(Digest.status == DigestStatus.RETRY)
        )
    if due is None:
        return
    if due.tzinfo is None:  # SQLite hands back naive UTC
        due = due.replace(tzinfo=UTC)
    seconds = (due - datetime.now(UTC)).total_seconds()
    if seconds > 0:
        await asyncio.sleep(seconds + DUE_MARGIN_SECONDS)
