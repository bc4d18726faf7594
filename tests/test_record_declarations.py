"""Each record is declared once and everything else is derived from it: a paper's stored fields
(`PaperRow`, the `paper` table, the staging table, COPY records, the parsing workers' pickles)
and a digest item's columns (the `digest_item` table, the rows and the binary COPY payload).
These tests fail as soon as one of them drifts from the others."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime

import numpy as np
import orjson

from app.digests.freeze import ITEM_COLUMNS, Explanations, FrozenDigests
from app.ingest.normalise import PAPER_ROW_FIELDS, PaperRow, PreparedBatch
from app.ingest.parsing_worker import _pack, _unpack
from app.ingest.sources import PaperRecord
from app.ingest.upsert import ROW_COLUMNS, _copy_record, paper_staging
from app.models import DigestItem, Paper
from app.pgcopy import HEADER, jsonb_field, text_field

STORED_BY_THE_DATABASE = {"id", "first_seen_at", "updated_at"}


def distinct_row() -> PaperRow:
    """A row whose every field holds a value no other field has, so a swap shows."""
    return PaperRow(
        arxiv_id="2401.00001",
        title="A title",
        title_key="a title",
        abstract="An abstract",
        source="hf-daily",
        authors=["Ada Lovelace"],
        categories=["cs.LG"],
        keywords=["keyword"],
        ai_summary="A summary",
        url="https://arxiv.org/abs/2401.00001",
        pdf_url="https://arxiv.org/pdf/2401.00001",
        doi="10.1000/xyz",
        github_repo="https://github.com/a/b",
        published_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        upvotes=11,
        comments=7,
    )


def test_a_paper_row_holds_every_stored_paper_column() -> None:
    columns = {column.name for column in Paper.__table__.columns}
    assert set(PAPER_ROW_FIELDS) == columns - STORED_BY_THE_DATABASE
    assert all(getattr(distinct_row(), name) is not None for name in PAPER_ROW_FIELDS)


def test_every_parsed_field_reaches_the_row() -> None:
    parsed = {field.name for field in dataclasses.fields(PaperRecord)} - {"position"}
    assert parsed <= set(PAPER_ROW_FIELDS)


def test_staging_table_is_the_row_typed_as_the_paper_table() -> None:
    assert [column.name for column in paper_staging.columns] == list(PAPER_ROW_FIELDS)
    assert list(PAPER_ROW_FIELDS) == ROW_COLUMNS
    for column in paper_staging.columns:
        assert repr(column.type) == repr(Paper.__table__.c[column.name].type), column.name


def test_copy_records_follow_the_columns() -> None:
    row = distinct_row()
    record = dict(zip(ROW_COLUMNS, _copy_record(row), strict=True))
    for name in PAPER_ROW_FIELDS:
        value = getattr(row, name)
        assert record[name] == (orjson.dumps(value).decode() if isinstance(value, list) else value)
    empty = dataclasses.replace(row, authors=None, published_at=None)
    assert dict(zip(ROW_COLUMNS, _copy_record(empty), strict=True))["authors"] is None


def test_parsing_worker_batches_come_back_whole() -> None:
    rows = [distinct_row(), dataclasses.replace(distinct_row(), published_at=None, upvotes=None)]
    batch = _unpack(_pack(PreparedBatch(rows, 3, [(2, "bad")])))
    assert batch.rows == rows and batch.records == 3 and batch.rejections == [(2, "bad")]


def frozen_items() -> FrozenDigests:
    return FrozenDigests(
        subscriber_ids=[1, 2],
        digest_dates=[date(2026, 1, 1)] * 2,
        item_counts=np.array([2, 1]),
        paper_id=np.array([10, 11, 12]),
        rank=np.array([1, 2, 1]),
        score=np.array([0.9, 0.8, 0.7]),
        relevance=np.array([0.5, 0.4, 0.3]),
        trend=np.array([0.2, 0.1, 0.0]),
        explanation=np.array([0, 1, 0], np.int32),
        explanations=Explanations(
            of_pick=np.array([0, 1, 0], np.int32),
            topic=np.array(["moe", None], dtype=object),
            terms=np.array(['["moe"]', "[]"], dtype=object),
            liked_title=np.array(["Switch Transformers", None], dtype=object),
            copy_fields=np.array(
                [
                    text_field("moe") + jsonb_field('["moe"]') + text_field("Switch Transformers"),
                    text_field(None) + jsonb_field("[]") + text_field(None),
                ],
                dtype=object,
            ),
        ),
    )


def test_digest_item_columns_are_the_table_columns() -> None:
    assert list(ITEM_COLUMNS) == [column.name for column in DigestItem.__table__.columns]
    columns = frozen_items().item_columns(np.array([100, 0]))  # digest 2 was composed elsewhere
    assert list(columns) == list(ITEM_COLUMNS)
    assert columns["digest_id"] == [100, 100] and columns["paper_id"] == [10, 11]
    assert columns["matched_topic"] == ["moe", None]
    assert columns["matched_terms"] == ['["moe"]', "[]"]
    assert columns["liked_title"] == ["Switch Transformers", None]


def test_digest_item_copy_rows_carry_every_column() -> None:
    payload, count = frozen_items().copy_payload(np.array([100, 200]))
    assert count == 3 and payload.startswith(HEADER)
    first_row = payload[len(HEADER) :]
    assert int.from_bytes(first_row[:2], "big") == len(ITEM_COLUMNS)  # field count per row
