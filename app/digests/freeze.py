"""Freezing planned digests: one `digest` row per subscriber and day (queued, or skipped when
nothing qualified) with its `digest_item` rows, written as columns (binary COPY on Postgres,
executemany on SQLite) without an object per item. UNIQUE(subscriber_id, digest_date) makes it
idempotent: digests another compose created first are left as they are, and their items with
them."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from sqlalchemy import BigInteger, Float, SmallInteger, insert
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import is_postgres
from app.models import Digest, DigestItem, DigestStatus
from app.pgcopy import copy_payload

# The digest_item columns in table order, all derived from the model: the numeric ones lead
# (binary COPY lays them out from numpy arrays) and the explanation's text, JSON and text follow.
ITEM_COLUMNS = tuple(column.name for column in DigestItem.__table__.columns)
EXPLANATION_COLUMNS = ("matched_topic", "matched_terms", "liked_title")
ITEM_NUMERIC_COLUMNS = ITEM_COLUMNS[: -len(EXPLANATION_COLUMNS)]
_COPY_TYPE_OF = {BigInteger: "int8", SmallInteger: "int2", Float: "float8"}
ITEM_COPY_TYPES = {
    name: _COPY_TYPE_OF[type(DigestItem.__table__.c[name].type)] for name in ITEM_NUMERIC_COLUMNS
}


@dataclass(slots=True)
class Explanations:
    """Why each pick was chosen, stored once per distinct (topic, paper, liked paper): many
    subscribers share a topic, so a million picks have a few hundred thousand explanations at
    most."""

    of_pick: NDArray[np.int32]  # explanation of each pick
    topic: NDArray[np.object_]  # matched topic, None for trend alone
    terms: NDArray[np.object_]  # matched terms as JSON text
    liked_title: NDArray[np.object_]  # the liked paper it is most like, None when none raised it
    copy_fields: NDArray[np.object_]  # all three, as binary COPY fields


@dataclass(slots=True)
class FrozenDigests:
    """Digests ready to store, as columns: one entry per digest in `subscriber_ids`,
    `digest_dates` and `item_counts`, then the items of every digest in turn."""

    subscriber_ids: list[int]
    digest_dates: list[date]
    item_counts: NDArray[np.int64]
    paper_id: NDArray[np.int64]
    rank: NDArray[np.int64]
    score: NDArray[np.float64]
    relevance: NDArray[np.float64]
    trend: NDArray[np.float64]
    explanation: NDArray[np.int32]
    explanations: Explanations

    def _numeric_columns(
        self, digest_ids: NDArray[np.int64]
    ) -> tuple[dict[str, NDArray[Any]], NDArray[np.int32]]:
        """The items' numeric columns (`ITEM_NUMERIC_COLUMNS`) given each digest's id, and each
        item's explanation; digests with id 0 (created by another compose) are left out."""
        owner = np.repeat(digest_ids, self.item_counts)
        kept = owner > 0
        values = {
            "digest_id": owner[kept],
            "paper_id": self.paper_id[kept],
            "rank": self.rank[kept],
            "score": self.score[kept],
            "relevance": self.relevance[kept],
            "trend": self.trend[kept],
        }
        return {name: values[name] for name in ITEM_NUMERIC_COLUMNS}, self.explanation[kept]

    def item_columns(self, digest_ids: NDArray[np.int64]) -> dict[str, list[Any]]:
        """Every item column (`ITEM_COLUMNS`), as lists."""
        numeric, explanation = self._numeric_columns(digest_ids)
        return {name: values.tolist() for name, values in numeric.items()} | {
            "matched_topic": self.explanations.topic[explanation].tolist(),
            "matched_terms": self.explanations.terms[explanation].tolist(),
            "liked_title": self.explanations.liked_title[explanation].tolist(),
        }

    def copy_payload(self, digest_ids: NDArray[np.int64]) -> tuple[bytes, int]:
        """The items as a binary COPY payload (`ITEM_COLUMNS`) and their number."""
        numeric, explanation = self._numeric_columns(digest_ids)
        payload = copy_payload(
            [(ITEM_COPY_TYPES[name], values) for name, values in numeric.items()],
            self.explanations.copy_fields[explanation],
            tail_fields=len(ITEM_COLUMNS) - len(numeric),
        )
        return payload, len(explanation)


async def freeze_digests(
    digests: FrozenDigests, *, session: AsyncSession, now: datetime
) -> tuple[int, int, int]:
    """Store digests: (queued, skipped, items) actually created. A digest that another compose
    created first is left as it is, with its items."""
    if not digests.subscriber_ids:
        return 0, 0, 0
    created = await _insert_digests(digests, session=session, now=now)
    digest_ids = np.asarray([created.get(s, 0) for s in digests.subscriber_ids], np.int64)
    items = await _insert_items(digests, digest_ids, session=session)
    queued = int(np.count_nonzero((digest_ids > 0) & (digests.item_counts > 0)))
    return queued, len(created) - queued, items


async def _insert_digests(
    digests: FrozenDigests, *, session: AsyncSession, now: datetime
) -> dict[int, int]:
    """Insert the digest rows that do not exist yet; subscriber id -> new digest id."""
    statuses = [
        (DigestStatus.QUEUED if count else DigestStatus.SKIPPED).value
        for count in digests.item_counts.tolist()
    ]
    if is_postgres(session):
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        rows = await raw.driver_connection.fetch(  # type: ignore[union-attr]
            "INSERT INTO digest (subscriber_id, digest_date, status, attempts, created_at) "
            "SELECT s, d, t, 0, $4 FROM unnest($1::bigint[], $2::date[], $3::text[]) AS u(s, d, t) "
            "ON CONFLICT (subscriber_id, digest_date) DO NOTHING RETURNING id, subscriber_id",
            digests.subscriber_ids,
            digests.digest_dates,
            statuses,
            now,
        )
        return {row["subscriber_id"]: row["id"] for row in rows}
    result = await session.execute(
        sqlite.insert(Digest)
        .on_conflict_do_nothing(index_elements=["subscriber_id", "digest_date"])
        .returning(Digest.id, Digest.subscriber_id),
        [
            {
                "subscriber_id": subscriber_id,
                "digest_date": digest_date,
                "status": status,
                "attempts": 0,
                "created_at": now,
            }
            for subscriber_id, digest_date, status in zip(
                digests.subscriber_ids, digests.digest_dates, statuses, strict=True
            )
        ],
    )
    return {subscriber_id: digest_id for digest_id, subscriber_id in result}


async def _insert_items(
    digests: FrozenDigests, digest_ids: NDArray[np.int64], *, session: AsyncSession
) -> int:
    """Insert the items of the digests that were created; returns how many."""
    if is_postgres(session):
        payload, count = digests.copy_payload(digest_ids)
        if count:
            connection = await session.connection()
            raw = await connection.get_raw_connection()
            await raw.driver_connection.copy_to_table(  # type: ignore[union-attr]
                DigestItem.__tablename__,
                source=io.BytesIO(payload),
                columns=list(ITEM_COLUMNS),
                format="binary",
            )
        return count
    columns = digests.item_columns(digest_ids)
    rows = [
        dict(zip(ITEM_COLUMNS, row, strict=True))
        for row in zip(*(columns[name] for name in ITEM_COLUMNS), strict=True)
    ]
    for row in rows:
        row["matched_terms"] = orjson.loads(row["matched_terms"])
    if rows:
        await session.execute(insert(DigestItem), rows)
    return len(rows)
