"""Typed reading of fields out of decoded JSON objects, shared by the JSON-based source formats.
Each reader raises `RecordError` naming the field when a value has the wrong type, so a record
with a number for a title is rejected with a reason instead of crashing the run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.ingest.sources import RecordError


def text(obj: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise RecordError(f"missing {key}")
        return None
    if not isinstance(value, str):
        raise RecordError(f"{key} must be a string, not {type(value).__name__}")
    return value


def count(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"{key} must be an integer, not {type(value).__name__}")
    if value < 0:
        raise RecordError(f"{key} must not be negative")
    return value


def text_list(obj: dict[str, Any], key: str) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RecordError(f"{key} must be a list of strings")
    return value


def mapping(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise RecordError(f"{key} must be an object")
    return value


def iso_datetime(obj: dict[str, Any], key: str) -> datetime | None:
    value = text(obj, key)
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as error:
        raise RecordError(f"{key} is not an ISO 8601 date: {value[:40]!r}") from error
