"""Subscribers for the benchmarks, written straight into a migrated Postgres database with COPY:
active, confirmed, with the given topics and Paperboy's default schedule."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import orjson

COLUMNS = [
    "public_id",
    "email",
    "status",
    "topics",
    "timezone",
    "send_hour",
    "digest_size",
    "trending_weight",
    "token_version",
    "bounce_count",
    "created_at",
    "updated_at",
]


async def copy_subscribers(
    url: str, topics: Sequence[list[str]], *, first: int = 0
) -> list[uuid.UUID]:
    """One active subscriber per entry of `topics` (readerN@example.org, N counting from
    `first`); their public ids."""
    now = datetime.now(UTC)
    ids = [uuid.uuid4() for _ in topics]
    rest = ("UTC", 7, 10, 0.3, 1, 0, now, now)  # zone, hour, size, weight, token version, bounces
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await connection.copy_records_to_table(
            "subscriber",
            records=[
                (
                    public_id,
                    f"reader{first + i}@example.org",
                    "active",
                    orjson.dumps(chosen).decode(),
                    *rest,
                )
                for i, (public_id, chosen) in enumerate(zip(ids, topics, strict=True))
            ],
            columns=COLUMNS,
        )
    finally:
        await connection.close()
    return ids
