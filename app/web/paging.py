"""What the admin routes share: page sizes and cursors (the last id of a page), id bounds (a
path id beyond BIGINT is a 422, not a database error), and LIKE patterns from search text."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Query
from fastapi import Path as PathParam

Limit = Annotated[int, Query(ge=1, le=500, description="Items per page.")]
Cursor = Annotated[
    str | None, Query(max_length=20, description="next_cursor of the previous page.")
]
MAX_ID = 2**63 - 1  # the largest BIGINT
Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]


def after(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not (cursor.isascii() and cursor.isdigit()) or int(cursor) > MAX_ID:
        raise HTTPException(status_code=422, detail="cursor must be a next_cursor value")
    return int(cursor)


def like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere; control characters (which no stored value holds
    and Postgres refuses outright) are a 422."""
    if any(not character.isprintable() for character in text):
        raise HTTPException(status_code=422, detail="search text must be printable")
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def next_cursor(ids: list[int], limit: int) -> str | None:
    return str(ids[-1]) if len(ids) == limit else None
