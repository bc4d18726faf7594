"""Shared fixtures. Every test that touches the database gets a database of its own, migrated with
the project's own migrations, so that no test sees another's rows, whatever the order or the
process it runs in:

- SQLite: a copy of a file migrated once per test process (a file copy, a few milliseconds);
- Postgres: `CREATE DATABASE ... TEMPLATE` of a database migrated once per test process, dropped
  when the test ends.

Which database a test gets:

- `PAPERBOY_TEST_DATABASE_URL=postgresql+asyncpg://...` runs every test on that Postgres server
  (CI's second run);
- otherwise tests run on SQLite, except those marked `requires_postgres`: they run on the
  Postgres server at `PAPERBOY_TEST_POSTGRES_URL` (default: `DEFAULT_POSTGRES_URL`, the local
  server) whenever it answers, and are skipped, with the reason, when it does not.

Settings built here ignore a `.env` in the working directory, tests run in an empty working
directory of their own, and the developer's own `PAPERBOY_*` variables are removed from the test
process: a developer's configuration never changes what a test, or a `paperboy` process it
starts, checks."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import create_engine, create_session_factory, migrate

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
SAMPLE_PAGE = ROOT / "app" / "sample" / "trending-papers-page.txt"

# Variables that steer the tests themselves; every other PAPERBOY_* variable is the developer's.
TEST_VARIABLES = {
    "PAPERBOY_TEST_DATABASE_URL",
    "PAPERBOY_TEST_POSTGRES_URL",
    "PAPERBOY_REQUIRE_BROWSER",
    "PAPERBOY_SCREENSHOTS",
}
for _name in [n for n in os.environ if n.startswith("PAPERBOY_") and n not in TEST_VARIABLES]:
    del os.environ[_name]

# The suite ranks by words unless a test asks for meaning (tests/ranking/test_semantic.py and the
# newcomer's journey): embedding the sample takes seconds that most tests have no use for.
# Set for the processes tests start, too.
WORDS_ONLY = "none"
os.environ["PAPERBOY_EMBEDDING_MODEL"] = WORDS_ONLY

TEST_DATABASE_URL = os.environ.get("PAPERBOY_TEST_DATABASE_URL", "")
ON_POSTGRES = TEST_DATABASE_URL.startswith("postgresql")
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
# The server of the Postgres-only tests: the whole suite's when it runs on Postgres.
POSTGRES_URL = (
    TEST_DATABASE_URL
    if ON_POSTGRES
    else os.environ.get("PAPERBOY_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
)

requires_postgres = pytest.mark.requires_postgres


def isolated_settings(**values: Any) -> Settings:
    """Settings from these values and the defaults only: `_env_file=None` keeps a `.env` in the
    working directory out (the environment is cleaned above)."""
    return Settings(_env_file=None, **values)


async def run_on_server(database_url: str, statement: str, *, connect_seconds: float = 60) -> None:
    """Run one statement on the `postgres` database of `database_url`'s server."""
    url = make_url(database_url)
    admin = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database="postgres",
        timeout=connect_seconds,
    )
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


def database_name(kind: str) -> str:
    return f"paperboy_{kind}_{uuid.uuid4().hex[:12]}"


def with_database(server_url: str, name: str) -> str:
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def create_postgres_database(server_url: str, *, template: str | None = None) -> str:
    """Create a database next to `server_url`'s (empty, or a copy of `template`); its URL."""
    name = database_name("test")
    if template is None:
        await run_on_server(server_url, f'CREATE DATABASE "{name}"')
    else:
        copy = f'CREATE DATABASE "{name}" TEMPLATE "{template}"'
        try:
            # Postgres 15+: a file copy of the template's few pages is several times faster
            # than its default of logging each page to the WAL.
            await run_on_server(server_url, f"{copy} STRATEGY FILE_COPY")
        except asyncpg.PostgresSyntaxError:
            await run_on_server(server_url, copy)  # an older server
    return with_database(server_url, name)


async def drop_postgres_database(database_url: str) -> None:
    name = make_url(database_url).database
    await run_on_server(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def fresh_database_url(tmp_path: Path) -> str:
    """An empty, unmigrated database of the suite's dialect (for tests of migrating itself)."""
    if ON_POSTGRES:
        return await create_postgres_database(TEST_DATABASE_URL)
    return f"sqlite+aiosqlite:///{tmp_path / 'paperboy.db'}"


def postgres_unavailable(server_url: str) -> str | None:
    """Why the Postgres server at `server_url` cannot take the tests, or None when it can. A
    closed port answers at once; a host that does not answer costs a second at most."""
    url = make_url(server_url)
    address = f"{url.host or '127.0.0.1'}:{url.port or 5432}"
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=1):
            pass
    except OSError as error:
        return f"no Postgres server answers at {address} ({error})"
    try:
        asyncio.run(run_on_server(server_url, "SELECT 1", connect_seconds=5))
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        return f"the Postgres server at {address} refused the tests ({error})"
    return None


# The `browser` fixture (Debian's Chromium) for every browser test.
pytest_plugins = ["tests.support.chromium"]

DRILL_FIGURES = "drill figures"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The drills' figures (lost, suppressed, duplicates), printed at the end of every run."""
    lines = [
        f"{report.nodeid.rpartition('::')[2]}: {value}"
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        for key, value in getattr(report, "user_properties", [])
        if key == DRILL_FIGURES
    ]
    if lines:
        terminalreporter.section("drill figures")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The slowest tests start first (in their shuffled order), so that a parallel run does not
    # end with one worker still busy with one of them while the other has nothing left to do.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    if ON_POSTGRES or not any(item.get_closest_marker("requires_postgres") for item in items):
        return
    problem = postgres_unavailable(POSTGRES_URL)
    if problem is None:
        return
    skip = pytest.mark.skip(
        reason=f"Postgres-only, and {problem}: start Postgres there, or name a server with "
        "PAPERBOY_TEST_POSTGRES_URL (these tests only) or PAPERBOY_TEST_DATABASE_URL (all tests)"
    )
    for item in items:
        if item.get_closest_marker("requires_postgres"):
            item.add_marker(skip)


class Templates:
    """The migrated databases this test process copies, each made on first use. On Postgres,
    creating and dropping a database each wait for a checkpoint: the next test's copy is made,
    and a finished test's copy dropped, in the background while a test runs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.sqlite_file: Path | None = None
        self.postgres: str | None = None  # the template database's URL
        self.next_copy: asyncio.Task[str] | None = None
        self.dropping: set[asyncio.Task[None]] = set()

    async def sqlite_copy(self, destination: Path) -> str:
        if self.sqlite_file is None:
            template = self.directory / "template.db"
            engine = create_engine(f"sqlite+aiosqlite:///{template}")
            await migrate(engine)
            async with engine.connect() as connection:
                # Everything into the main file, so that a copy of that file is the database.
                await connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            await engine.dispose()
            self.sqlite_file = template
        shutil.copyfile(self.sqlite_file, destination)
        return f"sqlite+aiosqlite:///{destination}"

    async def postgres_copy(self) -> str:
        if self.postgres is None:
            url = with_database(POSTGRES_URL, database_name("template"))
            await run_on_server(url, f'CREATE DATABASE "{make_url(url).database}"')
            engine = create_engine(url)
            try:
                await migrate(engine)
            finally:
                await engine.dispose()  # a template is copied only while nobody is connected
            self.postgres = url
        ready = self.next_copy or asyncio.create_task(self._copy_template())
        self.next_copy = asyncio.create_task(self._copy_template())
        return await ready

    async def _copy_template(self) -> str:
        assert self.postgres is not None
        return await create_postgres_database(
            POSTGRES_URL, template=make_url(self.postgres).database
        )

    def drop_later(self, database_url: str) -> None:
        task = asyncio.create_task(drop_postgres_database(database_url))
        self.dropping.add(task)
        task.add_done_callback(self.dropping.discard)

    async def close(self) -> None:
        if self.next_copy is not None:
            self.drop_later(await self.next_copy)
        await asyncio.gather(*self.dropping)
        if self.postgres is not None:
            await drop_postgres_database(self.postgres)


@pytest.fixture(scope="session", autouse=True)
def neutral_working_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests, and the `paperboy` processes they start, run in an empty directory: a `.env` (or
    ./var) where pytest was started is never read, nor written to."""
    started_in = Path.cwd()
    directory = tmp_path_factory.mktemp("cwd")
    os.chdir(directory)
    yield directory
    os.chdir(started_in)


@pytest.fixture(scope="session")
async def templates(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Templates]:
    made = Templates(tmp_path_factory.mktemp("templates"))
    yield made
    await made.close()


@pytest.fixture
async def database_url(
    request: pytest.FixtureRequest, templates: Templates, tmp_path: Path
) -> AsyncIterator[str]:
    """A migrated database of this test's own."""
    if ON_POSTGRES or request.node.get_closest_marker("requires_postgres"):
        url = await templates.postgres_copy()
        try:
            yield url
        finally:
            templates.drop_later(url)  # WITH (FORCE): whatever still holds it is cut off
    else:
        yield await templates.sqlite_copy(tmp_path / "paperboy.db")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def migrated_engine(engine: AsyncEngine) -> AsyncEngine:
    return engine


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
    return isolated_settings(
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
