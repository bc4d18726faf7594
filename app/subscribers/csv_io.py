"""Subscribers as CSV, for operators moving lists in and out: the export format, and an import
that upserts by address, rejects each bad row with its line and reason, and can run as a dry run
(the caller rolls back). Columns: email, status, topics (separated by ";"), timezone, send_hour,
digest_size, trending_weight, frequency (daily or weekly), weekday (0–6, Monday 0, or a day's
name). An empty or missing cell takes the default (daily, Monday), as in every column."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import (
    DEFAULT_TIMEZONE,
    DIGEST_SIZE,
    SEND_HOUR,
    TRENDING_WEIGHT,
    WEEKDAY,
    DigestFrequency,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from app.subscribers.rules import (
    Preferences,
    SubscriberError,
    claim_address,
    normalise_email,
    parse_frequency,
    parse_weekday,
    set_status,
    update_preferences,
    validate_preferences,
)

COLUMNS = [
    "email",
    "status",
    "topics",
    "timezone",
    "send_hour",
    "digest_size",
    "trending_weight",
    "frequency",
    "weekday",
]
MAX_ROWS = 100_000


@dataclass(slots=True)
class CsvImport:
    rows: int = 0
    created: int = 0
    updated: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)


def _preferences(row: dict[str, str]) -> Preferences:
    try:
        return Preferences(
            topics=[t for t in (row.get("topics") or "").split(";") if t.strip()],
            timezone=(row.get("timezone") or DEFAULT_TIMEZONE).strip(),
            send_hour=int(row.get("send_hour") or SEND_HOUR.default),
            digest_size=int(row.get("digest_size") or DIGEST_SIZE.default),
            trending_weight=float(row.get("trending_weight") or TRENDING_WEIGHT.default),
            frequency=parse_frequency(row.get("frequency") or DigestFrequency.DAILY),
            weekday=parse_weekday(row.get("weekday") or WEEKDAY.default),
        )
    except ValueError as error:
        raise SubscriberError(f"not a number: {error}") from error


def _status(row: dict[str, str]) -> SubscriberStatus:
    value = (row.get("status") or "active").strip().lower()
    try:
        return SubscriberStatus(value)
    except ValueError as error:
        allowed = ", ".join(s.value for s in SubscriberStatus)
        raise SubscriberError(f"status {value!r} is not one of {allowed}") from error


async def import_subscribers(text: str, *, session: AsyncSession) -> CsvImport:
    if "\x00" in text:
        raise SubscriberError("the file contains NUL characters: it is not a CSV text file")
    report = CsvImport()
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames
    except csv.Error as error:
        raise SubscriberError(f"the header row is not CSV: {error}") from error
    if header is None or "email" not in [name.strip() for name in header]:
        raise SubscriberError("the CSV needs a header row with at least an 'email' column")
    seen: set[str] = set()
    try:
        async for _ in _rows(reader, report, seen, session=session, now=utcnow()):
            pass
    except csv.Error as error:
        raise SubscriberError(f"line {reader.line_num}: {error}") from error
    await session.flush()
    return report


async def _rows(
    reader: csv.DictReader[str],
    report: CsvImport,
    seen: set[str],
    *,
    session: AsyncSession,
    now: datetime,
) -> AsyncIterator[None]:
    for row in reader:
        report.rows += 1
        line = reader.line_num
        raw_email = (row.get("email") or "").strip()
        if report.rows > MAX_ROWS:
            raise SubscriberError(f"at most {MAX_ROWS:,} rows per import")
        try:
            if None in row:
                raise SubscriberError("more fields than the header names")
            address = normalise_email(raw_email)
            if address.lower() in seen:
                raise SubscriberError("this address appears earlier in the file")
            preferences = validate_preferences(_preferences(row))
            status = _status(row)
        except SubscriberError as error:
            report.rejected.append((line, raw_email[:320], str(error)))
            continue
        seen.add(address.lower())
        subscriber, created = await claim_address(address, session=session)
        if created:
            report.created += 1
        else:
            report.updated += 1
        update_preferences(subscriber, preferences)
        set_status(subscriber, status, now=now)
        yield


def _line(values: Iterable[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()


async def export_subscribers(*, session: AsyncSession, chunk: int = 1000) -> AsyncIterator[str]:
    """The CSV, a chunk of rows at a time (any number of subscribers in constant memory)."""
    yield _line(COLUMNS)
    last_id = 0
    while True:
        rows = (
            await session.scalars(
                select(Subscriber)
                .where(Subscriber.id > last_id)
                .order_by(Subscriber.id)
                .limit(chunk)
            )
        ).all()
        if not rows:
            return
        for s in rows:
            yield _line(
                [
                    s.email,
                    s.status.value,
                    ";".join(s.topics),
                    s.timezone,
                    s.send_hour,
                    s.digest_size,
                    s.trending_weight,
                    s.frequency.value,
                    s.weekday,
                ]
            )
        last_id = rows[-1].id
