"""Binary COPY payloads (`app.pgcopy`): the bytes follow PostgreSQL's binary COPY format field for
field, and Postgres itself loads them into a table with every value intact (NULLs, non-ASCII
text, jsonb, the extremes of each fixed-width type)."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import asyncpg
import numpy as np
from sqlalchemy.engine import make_url

from app.pgcopy import HEADER, TRAILER, copy_payload, jsonb_field, text_field
from tests.conftest import requires_postgres

INT8 = np.array([1, -2, 2**63 - 1], dtype=np.int64)
INT2 = np.array([0, -32768, 32767], dtype=np.int16)
FLOAT8 = np.array([0.5, -1e300, 1 / 3], dtype=np.float64)
LABELS = ["plain", None, "Schrödinger's café: ∑ ≠ ∅"]
TERMS = [["moe", "experts"], [], {"nested": [1, 2.5, None]}]


def tails() -> np.ndarray[Any, np.dtype[np.object_]]:
    encoded = np.empty(len(LABELS), dtype=object)
    for row, (label, terms) in enumerate(zip(LABELS, TERMS, strict=True)):
        encoded[row] = text_field(label) + jsonb_field(json.dumps(terms))
    return encoded


def payload() -> bytes:
    return copy_payload([("int8", INT8), ("int2", INT2), ("float8", FLOAT8)], tails(), 2)


def read_rows(data: bytes) -> list[list[bytes | None]]:
    """A reader written from the format's description, independent of the writer."""
    assert data.startswith(b"PGCOPY\n\xff\r\n\x00")
    flags, extension = struct.unpack_from(">iI", data, 11)
    assert (flags, extension) == (0, 0)
    position = 19
    rows: list[list[bytes | None]] = []
    while True:
        (count,) = struct.unpack_from(">h", data, position)
        position += 2
        if count == -1:
            assert position == len(data), "bytes after the trailer"
            return rows
        fields: list[bytes | None] = []
        for _ in range(count):
            (length,) = struct.unpack_from(">i", data, position)
            position += 4
            if length == -1:
                fields.append(None)
            else:
                fields.append(data[position : position + length])
                position += length
        rows.append(fields)


def test_fields_are_length_prefixed_and_null_is_minus_one() -> None:
    assert text_field(None) == b"\xff\xff\xff\xff"
    assert text_field("é") == b"\x00\x00\x00\x02\xc3\xa9"  # the length counts bytes
    assert jsonb_field('{"a":1}') == b"\x00\x00\x00\x08\x01" + b'{"a":1}'  # version 1 first


def test_no_rows_is_the_header_and_the_trailer() -> None:
    empty = np.array([], dtype=np.int64)
    assert copy_payload([("int8", empty)]) == HEADER + TRAILER
    assert read_rows(HEADER + TRAILER) == []


def test_each_row_holds_its_values_in_column_order() -> None:
    rows = read_rows(payload())
    assert len(rows) == 3 and all(len(row) == 5 for row in rows)
    for row, fields in enumerate(rows):
        assert fields[0] == struct.pack(">q", INT8[row])
        assert fields[1] == struct.pack(">h", INT2[row])
        assert fields[2] == struct.pack(">d", FLOAT8[row])
        label = LABELS[row]
        assert fields[3] == (None if label is None else label.encode())
        assert fields[4] == b"\x01" + json.dumps(TERMS[row]).encode()


def test_fixed_columns_alone_need_no_tails() -> None:
    rows = read_rows(copy_payload([("int2", INT2)]))
    assert [row[0] for row in rows] == [struct.pack(">h", value) for value in INT2]


@requires_postgres
async def test_postgres_loads_the_payload_intact(database_url: str) -> None:
    url = make_url(database_url)
    connection = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=url.database
    )
    try:
        await connection.execute(
            "CREATE TABLE copied (big int8, small int2, score float8, label text, terms jsonb)"
        )
        await connection.copy_to_table(
            "copied",
            source=io.BytesIO(payload()),
            columns=["big", "small", "score", "label", "terms"],
            format="binary",
        )
        rows = await connection.fetch("SELECT * FROM copied ORDER BY big")
    finally:
        await connection.close()
    loaded = [
        (row["big"], row["small"], row["score"], row["label"], json.loads(row["terms"]))
        for row in rows
    ]
    expected = zip(INT8.tolist(), INT2.tolist(), FLOAT8.tolist(), LABELS, TERMS, strict=True)
    assert loaded == sorted(expected, key=lambda row: row[0])
