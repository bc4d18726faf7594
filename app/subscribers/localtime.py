"""Subscriber-local time: which date a subscriber's digest carries, whether their send hour has
come, and when their digest day is over, all by their IANA zone's wall clock (so DST shifts move
the send time with the clock, not against it). An unknown zone reads as UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def as_utc(moment: datetime) -> datetime:
    """A stored moment as an aware UTC datetime: SQLite hands back naive ones, and everything
    Paperboy stores is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# ZoneInfo's own cache holds on to the 8 zones used last only: a compose over subscribers in more
# zones than that read a zone file from disk for nearly every subscriber (150 us a call).
@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_date(now: datetime, timezone: str) -> date:
    """The subscriber's local date at `now`."""
    return now.astimezone(zone(timezone)).date()


def local_digest_date(now: datetime, timezone: str, send_hour: int) -> date | None:
    """The subscriber's local date if their send hour has come today, else None (DST-correct:
    the wall clock in their zone decides)."""
    local = now.astimezone(zone(timezone))
    return local.date() if local.hour >= send_hour else None


def digest_day_end(digest_date: date, timezone: str) -> datetime:
    """The moment the subscriber's digest day is over (their local midnight)."""
    return datetime.combine(digest_date + timedelta(days=1), time(0), tzinfo=zone(timezone))
