"""The ingest job against a real database: the sample page loads exactly once, sources merge into
one row per paper under the upsert rules, bad records are rejected while good ones load, unreadable
sources write nothing, and every run is recorded."""

from __future__ import annotations

import asyncio
import gzip
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import create_engine, create_session_factory, is_postgres
from app.ingest.upsert import IngestReport
from app.jobs import ingest_job
from app.models import IngestRun, IngestStatus, Paper
from tests.conftest import requires_postgres
from tests.support.http_server import Route, serve

Sessions = async_sessionmaker[AsyncSession]


async def ingest(
    path: Path | str, sessions: Sessions, settings: Settings, source_format: str = "auto"
) -> IngestReport:
    return await ingest_job(
        str(path), session_factory=sessions, settings=settings, source_format=source_format
    )


async def paper_count(sessions: Sessions) -> int:
    async with sessions() as session:
        return (await session.execute(select(func.count()).select_from(Paper))).scalar_one()


async def paper_by_arxiv_id(sessions: Sessions, arxiv_id: str) -> Paper:
    async with sessions() as session:
        return (await session.execute(select(Paper).where(Paper.arxiv_id == arxiv_id))).scalar_one()


async def test_sample_page_loads_185_papers_once(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    first = await ingest(sample_page, session_factory, settings)
    assert (first.format, first.records, first.inserted, first.rejected) == ("page", 185, 185, 0)
    assert first.ok
    assert await paper_count(session_factory) == 185
    again = await ingest(sample_page, session_factory, settings)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 185)
    assert await paper_count(session_factory) == 185


async def test_every_run_is_recorded(
    session_factory: Sessions, settings: Settings, sample_page: Path, data: Path
) -> None:
    await ingest(sample_page, session_factory, settings)
    await ingest(data / "arxiv-snapshot-bad.jsonl", session_factory, settings)
    async with session_factory() as session:
        runs = (await session.execute(select(IngestRun).order_by(IngestRun.id))).scalars().all()
    assert [(r.format, r.status, r.inserted + r.updated, r.rejected) for r in runs] == [
        ("page", IngestStatus.SUCCEEDED, 185, 0),
        ("arxiv-jsonl", IngestStatus.SUCCEEDED, 6, 8),
    ]
    assert runs[1].source.endswith("arxiv-snapshot-bad.jsonl")
    assert runs[1].finished_at is not None and runs[1].finished_at >= runs[1].started_at
    assert {"position": 10, "reason": "abstract contains control characters"} in runs[1].rejections


async def test_bad_records_are_rejected_and_good_ones_load(
    session_factory: Sessions, settings: Settings, data: Path
) -> None:
    report = await ingest(data / "arxiv-snapshot-bad.jsonl", session_factory, settings)
    assert report.ok
    assert (report.records, report.inserted, report.rejected) == (14, 6, 8)
    assert {r["position"]: r["reason"] for r in report.rejections} == {
        2: "line is not valid JSON",
        4: "line is a JSON list, not an object",
        5: "no title",
        7: "no abstract",
        8: "title must be a string, not int",
        10: "abstract contains control characters",
        12: "title is too long (2000 characters, limit 500)",
        13: "invalid arXiv id 'not-an-id'",
    }


async def test_sources_merge_into_one_row_per_paper(
    session_factory: Sessions, settings: Settings, sample_page: Path, data: Path
) -> None:
    await ingest(sample_page, session_factory, settings)
    async with session_factory() as session:
        page_mamba = (
            await session.execute(select(Paper).where(Paper.title.like("Mamba: Linear-Time%")))
        ).scalar_one()
    assert page_mamba.arxiv_id is None and page_mamba.authors is None

    atom = await ingest(data / "arxiv-atom.xml", session_factory, settings)
    assert atom.inserted + atom.updated == 5
    mamba = await paper_by_arxiv_id(session_factory, "2312.00752")
    assert mamba.id == page_mamba.id  # matched by title, then given its arXiv id
    assert mamba.first_seen_at == page_mamba.first_seen_at
    assert mamba.authors and mamba.authors[0] == "Albert Gu"
    assert mamba.url == "https://arxiv.org/abs/2312.00752v2"
    assert mamba.source == "page"
    assert mamba.upvotes is None

    hf = await ingest(data / "hf-daily.json", session_factory, settings)
    assert hf.ok and hf.rejected == 0
    mamba = await paper_by_arxiv_id(session_factory, "2312.00752")
    assert mamba.upvotes is not None and mamba.comments is not None
    assert mamba.ai_summary and mamba.keywords
    assert mamba.url == "https://arxiv.org/abs/2312.00752v2"  # filled once, never replaced
    upvotes = mamba.upvotes

    snapshot = await ingest(data / "arxiv-snapshot.jsonl", session_factory, settings)
    assert snapshot.ok
    mamba = await paper_by_arxiv_id(session_factory, "2312.00752")
    assert mamba.upvotes == upvotes  # a source without engagement never blanks it
    assert mamba.ai_summary and mamba.authors and mamba.authors[0] == "Albert Gu"
    assert (
        await paper_count(session_factory) == 185 + 1 + hf.inserted + snapshot.inserted - 1 + 1 - 1
    )


async def test_reingest_refreshes_engagement_and_fills_but_never_blanks(
    session_factory: Sessions, settings: Settings, tmp_path: Path
) -> None:
    def item(upvotes: int | None, summary: str | None) -> str:
        fields = [
            '"id": "2401.00001"',
            '"title": "A Paper"',
            '"summary": "Its abstract."',
        ]
        if upvotes is not None:
            fields.append(f'"upvotes": {upvotes}')
        if summary is not None:
            fields.append(f'"ai_summary": "{summary}"')
        return '[{"paper": {' + ", ".join(fields) + '}, "numComments": 2}]'

    source = tmp_path / "daily.json"
    source.write_text(item(10, None))
    await ingest(source, session_factory, settings)
    before = await paper_by_arxiv_id(session_factory, "2401.00001")

    source.write_text(item(25, "Short summary."))
    report = await ingest(source, session_factory, settings)
    assert (report.inserted, report.updated) == (0, 1)
    after = await paper_by_arxiv_id(session_factory, "2401.00001")
    assert (after.upvotes, after.ai_summary) == (25, "Short summary.")
    assert after.first_seen_at == before.first_seen_at
    assert after.updated_at > before.updated_at

    source.write_text(item(None, "A different summary."))
    report = await ingest(source, session_factory, settings)
    assert (report.updated, report.unchanged) == (0, 1)
    after = await paper_by_arxiv_id(session_factory, "2401.00001")
    assert (after.upvotes, after.ai_summary) == (25, "Short summary.")


async def test_unreadable_source_fails_and_writes_nothing(
    session_factory: Sessions, settings: Settings, data: Path, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.xml"
    truncated.write_bytes((data / "arxiv-atom.xml").read_bytes()[:5000])
    for path, message in [
        (data / "arxiv-atom-error.xml", "incorrect id format"),
        (data / "arxiv-atom-empty.xml", "no entries"),
        (truncated, "not well-formed"),
        (tmp_path / "missing.txt", "no such file"),
        (tmp_path, "not a regular file"),
    ]:
        report = await ingest(path, session_factory, settings)
        assert not report.ok and message in (report.error or "")
        assert report.inserted == 0
    assert await paper_count(session_factory) == 0
    async with session_factory() as session:
        runs = (await session.execute(select(IngestRun))).scalars().all()
    assert len(runs) == 5 and all(run.status == IngestStatus.FAILED for run in runs)
    assert all(run.error for run in runs)


async def test_forced_format_wins_over_detection(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    report = await ingest(sample_page, session_factory, settings, source_format="arxiv-jsonl")
    assert not report.ok and "not JSON Lines" in (report.error or "")
    assert await paper_count(session_factory) == 0


async def test_batches_are_whole_when_a_stream_breaks_midway(
    session_factory: Sessions, settings: Settings, sample_page: Path, tmp_path: Path
) -> None:
    compressed = gzip.compress(sample_page.read_bytes())
    broken = tmp_path / "page.txt.gz"
    broken.write_bytes(compressed[: len(compressed) * 3 // 4])
    whole = tmp_path / "whole.txt.gz"
    whole.write_bytes(compressed)

    report = await ingest(broken, session_factory, settings)
    assert not report.ok and "reading" in (report.error or "")
    assert await paper_count(session_factory) == 0  # the page is read whole before writing

    lines = b"".join(
        b'{"id": "2401.%05d", "title": "Paper %d", "abstract": "Abstract %d."}\n' % (i, i, i)
        for i in range(1, 351)
    )
    jsonl = gzip.compress(lines)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(jsonl[: len(jsonl) - 40])
    report = await ingest(cut, session_factory, settings)
    assert not report.ok
    stored = await paper_count(session_factory)
    assert stored % settings.ingest_batch_size == 0 and stored == report.inserted > 0

    report = await ingest(whole, session_factory, settings)
    assert report.ok and report.inserted == 185


async def test_large_files_parse_in_a_worker_process_with_the_same_results(
    session_factory: Sessions,
    settings: Settings,
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("app.jobs.WORKER_MIN_BYTES", 1)
    report = await ingest(data / "arxiv-snapshot-bad.jsonl", session_factory, settings)
    assert report.ok and (report.records, report.inserted, report.rejected) == (14, 6, 8)
    assert {"position": 13, "reason": "invalid arXiv id 'not-an-id'"} in report.rejections
    again = await ingest(data / "arxiv-snapshot-bad.jsonl", session_factory, settings)
    assert (again.inserted, again.unchanged) == (0, 6)

    compressed = tmp_path / "snapshot.jsonl.gz"
    compressed.write_bytes(gzip.compress((data / "arxiv-snapshot.jsonl").read_bytes()))
    assert (await ingest(compressed, session_factory, settings)).inserted == 8
    mamba = await paper_by_arxiv_id(session_factory, "2312.00752")
    assert mamba.published_at is not None
    assert mamba.published_at.replace(tzinfo=UTC) == datetime(2023, 12, 1, 18, 1, 34, tzinfo=UTC)
    assert mamba.authors == ["Albert Gu", "Tri Dao"]

    failed = await ingest(data / "arxiv-atom-empty.xml", session_factory, settings)
    assert not failed.ok and "no entries" in (failed.error or "")
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(compressed.read_bytes()[:-30])
    broken = await ingest(cut, session_factory, settings)
    assert not broken.ok and "reading" in (broken.error or "")


@requires_postgres
async def test_concurrent_ingests_of_the_same_papers_store_each_once(
    session_factory: Sessions, settings: Settings, sample_page: Path, database_url: str
) -> None:
    other = create_engine(database_url)
    try:
        reports = await asyncio.gather(
            ingest(sample_page, session_factory, settings),
            ingest(sample_page, create_session_factory(other), settings),
        )
    finally:
        await other.dispose()
    assert all(r.ok for r in reports), [r.error for r in reports]
    assert sum(r.inserted for r in reports) == 185
    assert await paper_count(session_factory) == 185


async def test_split_parsing_loses_no_line_at_the_cut_and_numbers_lines_truly(
    session_factory: Sessions, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.jobs.WORKER_MIN_BYTES", 1)
    lines = [
        b'{"id": "2401.%05d", "title": "Paper number %d", "abstract": "Abstract %d."}' % (i, i, i)
        for i in range(1, 1001)
    ]
    lines[776] = b"{broken"  # line 777, in the second half
    source = tmp_path / "papers.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    report = await ingest(source, session_factory, settings)
    assert report.ok, report.error
    assert (report.records, report.inserted, report.rejected) == (1000, 999, 1)
    assert report.rejections == [{"position": 777, "reason": "line is not valid JSON"}]
    assert await paper_count(session_factory) == 999


def daily_item(arxiv_id: str, title: str, **paper: object) -> dict[str, object]:
    return {"paper": {"id": arxiv_id, "title": title, "summary": f"About {title}.", **paper}}


async def test_out_of_range_values_cost_only_their_records(
    session_factory: Sessions, settings: Settings, tmp_path: Path
) -> None:
    items = [
        daily_item("2401.00001", "Fine paper", upvotes=12, publishedAt="2024-01-02T03:04:05Z"),
        daily_item("2401.00002", "Too many votes", upvotes=3_000_000_000),
        daily_item("2401.00003", "Year one", publishedAt="0001-01-01T00:00:00+05:00"),
        daily_item("2401.00004", "Year 9999", publishedAt="9999-12-31T23:00:00-05:00"),
        daily_item("2401.00005", "Also fine", upvotes=2_147_483_647),
    ]
    source = tmp_path / "daily.json"
    source.write_bytes(orjson.dumps(items))
    report = await ingest(source, session_factory, settings)
    assert report.ok, report.error
    assert (report.inserted, report.rejected) == (2, 3)
    assert [r["position"] for r in report.rejections] == [2, 3, 4]
    assert all("is out of range" in r["reason"] for r in report.rejections)
    assert (await paper_by_arxiv_id(session_factory, "2401.00005")).upvotes == 2_147_483_647


async def refuse_titles_with_poison(session: AsyncSession) -> None:
    """A database that refuses some papers, as a constraint or a trigger of an operator's
    would: a trigger raising an error on insert of a title with "poison" in it."""
    if is_postgres(session):
        await session.execute(
            text(
                "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN "
                "IF NEW.title LIKE '%poison%' THEN RAISE EXCEPTION 'poisoned title refused'; "
                "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        await session.execute(
            text(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON paper "
                "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
            )
        )
    else:
        await session.execute(
            text(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON paper "
                "WHEN NEW.title LIKE '%poison%' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned title refused'); END"
            )
        )
    await session.commit()


async def test_a_paper_the_database_refuses_costs_only_that_paper(
    session_factory: Sessions, settings: Settings, tmp_path: Path
) -> None:
    async with session_factory() as session:
        await refuse_titles_with_poison(session)
    titles = [f"Paper number {i}" for i in range(1, 251)]
    titles[41] = "A poison paper"  # line 42, in the first batch of 100
    titles[230] = "Another poison paper"  # line 231, in the third
    source = tmp_path / "papers.jsonl"
    source.write_bytes(
        b"".join(
            orjson.dumps({"id": f"2401.{i:05d}", "title": title, "abstract": "A."}) + b"\n"
            for i, title in enumerate(titles, start=1)
        )
    )
    report = await ingest(source, session_factory, settings)
    assert report.ok, report.error
    assert (report.records, report.inserted, report.rejected) == (250, 248, 2)
    assert [r["position"] for r in report.rejections] == [42, 231]
    assert all(
        r["reason"].startswith("the database refused it:")
        and "poisoned title refused" in r["reason"]
        for r in report.rejections
    )
    assert await paper_count(session_factory) == 248
    again = await ingest(source, session_factory, settings)
    assert (again.inserted, again.unchanged, again.rejected) == (0, 248, 2)


async def test_a_stray_nul_in_a_page_costs_only_its_paper(
    session_factory: Sessions, settings: Settings, sample_page: Path, tmp_path: Path
) -> None:
    page = tmp_path / "page.txt"
    page.write_bytes(
        sample_page.read_bytes().replace(b"Linear-Time Sequence", b"Linear-Time\x00Sequence")
    )
    report = await ingest(page, session_factory, settings)
    assert report.ok, report.error
    assert (report.inserted, report.rejected) == (184, 1)
    assert report.rejections == [{"position": 3, "reason": "title contains control characters"}]


async def test_corrupt_gzip_is_a_clear_error(
    session_factory: Sessions, settings: Settings, sample_page: Path, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 40)
    report = await ingest(garbage, session_factory, settings)
    assert not report.ok and (report.error or "").startswith("the gzip data is corrupt: ")

    lines = b"".join(
        b'{"id": "2401.%05d", "title": "Paper %d", "abstract": "Abstract %d."}\n' % (i, i, i)
        for i in range(1, 20001)
    )
    # Two gzip members (as `cat a.gz b.gz` makes), the second with an invalid deflate block
    # type right after its header: the stream breaks half-way.
    second = bytearray(gzip.compress(lines[len(lines) // 2 :]))
    second[10] = 0xFF
    damaged = tmp_path / "damaged.jsonl.gz"
    damaged.write_bytes(gzip.compress(lines[: len(lines) // 2]) + bytes(second))
    report = await ingest(damaged, session_factory, settings)
    assert not report.ok and "failed after" in (report.error or "")
    assert "decompressing data" in (report.error or "")
    stored = await paper_count(session_factory)
    assert stored == report.inserted and stored % settings.ingest_batch_size == 0


async def test_an_over_long_line_costs_only_its_record_in_every_reading_path(
    session_factory: Sessions, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [
        b'{"id": "2401.%05d", "title": "Paper %d", "abstract": "Abstract %d."}' % (i, i, i)
        for i in range(1, 301)
    ]
    lines[149] = b'{"id": "2401.00150", "title": "Huge", "abstract": "' + b"a" * 5_000_000 + b'"}'
    plain = tmp_path / "papers.jsonl"
    plain.write_bytes(b"\n".join(lines) + b"\n")
    compressed = tmp_path / "papers.jsonl.gz"
    compressed.write_bytes(gzip.compress(plain.read_bytes()))
    expected = [{"position": 150, "reason": "line is longer than 4 MB"}]
    report = await ingest(compressed, session_factory, settings)  # read in this process
    assert report.ok and (report.inserted, report.rejections) == (299, expected)
    monkeypatch.setattr("app.jobs.WORKER_MIN_BYTES", 1)
    report = await ingest(plain, session_factory, settings)  # split between worker processes
    assert report.ok and (report.unchanged, report.rejections) == (299, expected)


async def test_a_json_error_body_from_an_api_fails_the_run(
    session_factory: Sessions, settings: Settings
) -> None:
    routes = {"/api/daily_papers": Route(b'{"error": "rate limited, retry in an hour"}')}
    with serve(routes) as server:
        report = await ingest(server.url("/api/daily_papers"), session_factory, settings)
    assert not report.ok and report.rejected == 0
    assert report.error == "the source is a JSON object, not papers: rate limited, retry in an hour"
