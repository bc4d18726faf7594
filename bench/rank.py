"""Ranking and compose benchmark: 1,000 candidate papers and 100,000 active subscribers with 1-5
topics each, drawn from about 20,000 distinct topics (word n-grams of the bundled sample page, so
they read like what people type). Measures, in one run: ranking alone (index, topic x paper scores,
selection for every subscriber), compose end to end into a fresh Postgres database (digests and
items written) in a child process with its peak RSS, by words alone and by words and meaning (the
shipped embedding model, with paper and topic vectors embedded beforehand, as the embed job and
the topic cache leave them; that embedding is timed on its own), and the naive baseline that
scores each subscriber's topics separately, timed on a sample and extrapolated."""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from population import copy_subscribers
from rich.console import Console
from rich.table import Table

from app.config import Settings
from app.db import create_engine, create_session_factory, migrate
from app.ingest.normalise import title_key
from app.ingest.sources import PAGE, PaperRecord, parse_source
from app.jobs import compose_job, embed_job
from app.ranking.embedding import DEFAULT_MODEL
from app.ranking.relevance import PaperText, RelevanceIndex
from app.ranking.selection import Reader, select
from app.ranking.semantic import embedding_model, topic_vectors
from app.ranking.trend import trend_scores

SAMPLE = Path(__file__).resolve().parent.parent / "app" / "sample" / "trending-papers-page.txt"
NOW = datetime.now(UTC)


def sample_records() -> list[PaperRecord]:
    with SAMPLE.open("rb") as stream:
        return [r for r in parse_source(stream, PAGE) if isinstance(r, PaperRecord)]


def make_papers(count: int, rng: random.Random) -> list[tuple[str, str]]:
    """The sample's 185 papers, then recombinations of their sentences and title words."""
    records = sample_records()
    papers = [(r.title, r.abstract) for r in records]
    sentences = [s.strip() + "." for r in records for s in r.abstract.split(". ") if s.strip()]
    title_words = [w for r in records for w in r.title.split()]
    while len(papers) < count:
        title = " ".join(rng.sample(title_words, rng.randint(5, 11))) + f" ({len(papers)})"
        papers.append((title, " ".join(rng.sample(sentences, rng.randint(5, 9)))))
    return papers[:count]


def make_topics(count: int, rng: random.Random) -> list[str]:
    """Word n-grams of the sample's titles and abstracts (1-3 words, content words only)."""
    records = sample_records()
    texts = [r.title for r in records] + [r.abstract for r in records]
    words = [w.strip(":,.()").lower() for text in texts for w in text.split()]
    words = [w for w in words if len(w) > 3 and w.isalpha()]
    topics: dict[str, None] = {}
    while len(topics) < count:
        start = rng.randrange(len(words) - 3)
        topics[" ".join(words[start : start + rng.choice((1, 2, 2, 3))])] = None
    return list(topics)


def make_subscribers(count: int, topics: list[str], rng: random.Random) -> list[list[str]]:
    return [rng.sample(topics, rng.randint(1, 5)) for _ in range(count)]


def rank_in_memory(
    papers: list[tuple[str, str]], subscribers: list[list[str]]
) -> tuple[float, int]:
    started = time.perf_counter()
    index = RelevanceIndex([PaperText(t, a) for t, a in papers])
    distinct = list(dict.fromkeys(t for topics in subscribers for t in topics))
    row = {t: i for i, t in enumerate(distinct)}
    scores = index.score(distinct)
    trend = trend_scores([None] * len(papers), [None] * len(papers), [NOW] * len(papers), now=NOW)
    readers = [Reader([row[t] for t in topics], 10, 0.3) for topics in subscribers]
    picks = select(readers, scores, trend)
    return time.perf_counter() - started, len(picks)


def naive_per_subscriber(
    papers: list[tuple[str, str]], subscribers: list[list[str]], sample: int
) -> float:
    """Seconds per subscriber when each one's topics are scored on their own."""
    index = RelevanceIndex([PaperText(t, a) for t, a in papers])
    trend = trend_scores([None] * len(papers), [None] * len(papers), [NOW] * len(papers), now=NOW)
    started = time.perf_counter()
    for topics in subscribers[:sample]:
        scores = index.score(topics)
        reader = Reader(list(range(len(topics))), 10, 0.3)
        select([reader], scores, trend)
    return (time.perf_counter() - started) / sample


async def load_database(
    url: str, papers: list[tuple[str, str]], subscribers: list[list[str]]
) -> None:
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await connection.copy_records_to_table(
            "paper",
            records=[
                (t, title_key(t), a, "bench", NOW - timedelta(hours=1), NOW - timedelta(hours=1))
                for t, a in papers
            ],
            columns=["title", "title_key", "abstract", "source", "first_seen_at", "updated_at"],
        )
    finally:
        await connection.close()
    await copy_subscribers(url, subscribers)


async def warm_child(url: str, topics: list[str]) -> None:
    """Embed the papers and the distinct topics, as the embed job and earlier composes would."""
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    settings = Settings(database_url=url)
    started = time.perf_counter()
    embedded = await embed_job(session_factory=sessions, settings=settings)
    papers_seconds = time.perf_counter() - started
    encoder = embedding_model(settings)
    assert encoder is not None
    started = time.perf_counter()
    async with sessions() as session:
        await topic_vectors(topics, session=session, encoder=encoder)
        await session.commit()
    topics_seconds = time.perf_counter() - started
    await engine.dispose()
    print(
        orjson.dumps(
            {
                "papers": embedded.embedded,
                "papers_seconds": papers_seconds,
                "topics": len(topics),
                "topics_seconds": topics_seconds,
            }
        ).decode()
    )


async def compose_child(url: str, model: str) -> None:
    engine = create_engine(url)
    started = time.perf_counter()
    report = await compose_job(
        session_factory=create_session_factory(engine),
        settings=Settings(database_url=url, embedding_model=model),
        on_date=NOW.date(),
    )
    seconds = time.perf_counter() - started
    await engine.dispose()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        orjson.dumps(
            {"seconds": seconds, "queued": report.queued, "items": report.items, "peak_mb": peak_mb}
        ).decode()
    )


async def main(args: argparse.Namespace) -> None:
    console = Console()
    rng = random.Random(args.seed)
    papers = make_papers(args.papers, rng)
    topics = make_topics(args.topics, rng)
    subscribers = make_subscribers(args.subscribers, topics, rng)
    distinct = len(set(t for s in subscribers for t in s))
    console.print(
        f"{len(papers):,} papers, {len(subscribers):,} subscribers, {distinct:,} distinct topics"
    )

    ranking_seconds, picks = rank_in_memory(papers, subscribers)
    naive = naive_per_subscriber(papers, subscribers, args.naive_sample) * len(subscribers)

    name = f"paperboy_rank_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(
        args.server.replace("postgresql+asyncpg", "postgresql") + "/postgres"
    )
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{args.server}/{name}"
        await load_database(url, papers, subscribers)
        topics_file = Path(tempfile.mkdtemp()) / "topics.json"
        topics_file.write_bytes(
            orjson.dumps(list(dict.fromkeys(t for s in subscribers for t in s)))
        )
        warmed = await child_run("--child-warm", url, str(topics_file))
        words = await child_run("--child-compose", url, "none")
        await admin_connection_run(url, "TRUNCATE digest, digest_item")
        meaning = await child_run("--child-compose", url, DEFAULT_MODEL)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    table = Table(title="Ranking and compose, 100k subscribers")
    for column in ("run", "seconds", "subscribers/s", "vs naive", "peak RSS MB"):
        table.add_column(column, justify="right" if column != "run" else "left")
    n = len(subscribers)
    table.add_row("naive loop (extrapolated)", f"{naive:.1f}", f"{n / naive:,.0f}", "1.0x", "")
    table.add_row(
        "ranking alone (in memory)",
        f"{ranking_seconds:.1f}",
        f"{n / ranking_seconds:,.0f}",
        f"{naive / ranking_seconds:.0f}x",
        "",
    )
    for label, composed in (
        ("compose into Postgres, words", words),
        ("compose into Postgres, words + meaning", meaning),
    ):
        table.add_row(
            label,
            f"{composed['seconds']:.1f}",
            f"{n / composed['seconds']:,.0f}",
            f"{naive / composed['seconds']:.0f}x",
            f"{composed['peak_mb']:.0f}",
        )
    console.print(table)
    console.print(
        f"{meaning['queued']:,} digests and {meaning['items']:,} items written; "
        f"{picks:,} picks in memory. Targets: compose <= 10 s, peak RSS <= 500 MB.\n"
        f"Embedded beforehand: {warmed['papers']:,} papers in {warmed['papers_seconds']:.1f} s, "
        f"{warmed['topics']:,} topics in {warmed['topics_seconds']:.1f} s."
    )


async def child_run(*arguments: str) -> dict[str, Any]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, *arguments, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"{arguments[0]} child failed with exit code {child.returncode}")
    result: dict[str, Any] = orjson.loads(stdout.decode().strip().splitlines()[-1])
    return result


async def admin_connection_run(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--papers", type=int, default=1000)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--topics", type=int, default=20_000)
    parser.add_argument("--naive-sample", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--server", default="postgresql+asyncpg://postgres@127.0.0.1:5432")
    parser.add_argument(
        "--child-compose", nargs=2, metavar=("URL", "MODEL"), help=argparse.SUPPRESS
    )
    parser.add_argument("--child-warm", nargs=2, metavar=("URL", "TOPICS"), help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.child_compose:
        asyncio.run(compose_child(*arguments.child_compose))
    elif arguments.child_warm:
        url, topics_path = arguments.child_warm
        asyncio.run(warm_child(url, orjson.loads(Path(topics_path).read_bytes())))
    else:
        asyncio.run(main(arguments))
