"""Shared fixtures: one real database per test session (SQLite by default, Postgres when
PAPERBOY_TEST_DATABASE_URL names one), migrated with the project's own migrations and emptied after
every test that touched it; the recorded source payloads under tests/data."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import Base, create_engine, create_session_factory, migrate

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
# The suite ranks by words unless a test asks for meaning (tests/test_semantic.py and the
# newcomer's journey): embedding the sample takes seconds that most tests have no use for.
# Set for the processes tests start, too.
WORDS_ONLY = "none"
os.environ["PAPERBOY_EMBEDDING_MODEL"] = WORDS_ONLY
SAMPLE_PAGE = ROOT / "app" / "sample" / "trending-papers-page.txt"
TEST_DATABASE_URL = os.environ.get("PAPERBOY_TEST_DATABASE_URL", "")
ON_POSTGRES = TEST_DATABASE_URL.startswith("postgresql")

requires_postgres = pytest.mark.skipif(
    not ON_POSTGRES,
    reason="Postgres-only: set PAPERBOY_TEST_DATABASE_URL=postgresql+asyncpg://user@host/db",
)


async def run_on_server(database_url: str, statement: str) -> None:
    """Run one statement on the `postgres` database of `database_url`'s server."""
    url = make_url(database_url)
    admin = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database="postgres",
    )
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


async def create_postgres_database(server_url: str) -> str:
    """Create an empty database next to `server_url`'s and return its URL."""
    name = f"paperboy_test_{uuid.uuid4().hex[:12]}"
    await run_on_server(server_url, f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(database_url: str) -> None:
    name = make_url(database_url).database
    await run_on_server(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def fresh_database_url(tmp_path: Path) -> str:
    if ON_POSTGRES:
        return await create_postgres_database(TEST_DATABASE_URL)
    return f"sqlite+aiosqlite:///{tmp_path / 'paperboy.db'}"


@pytest.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    url = await fresh_database_url(tmp_path_factory.mktemp("db"))
    yield url
    if ON_POSTGRES:
        await drop_postgres_database(url)


@pytest.fixture(scope="session")
async def migrated_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await migrate(engine)
    yield engine
    await engine.dispose()


async def empty_all_tables(engine: AsyncEngine) -> None:
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                await connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
async def engine(migrated_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    yield migrated_engine
    await empty_all_tables(migrated_engine)


@pytest.fixture
def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(engine)


@pytest.fixture
async def session(
    session_factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    async with session_factory() as session:
        yield session


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        ingest_batch_size=100,
        http_retries=2,
        embedding_model=WORDS_ONLY,
    )


@pytest.fixture
def data() -> Path:
    return DATA


@pytest.fixture
def sample_page() -> Iterator[Path]:
    yield SAMPLE_PAGE
