"""Database plumbing: the declarative `Base` with its constraint naming convention, the portable
column types, and the async engine and session factory for Postgres (asyncpg) or SQLite (aiosqlite).
Everything that differs between the two dialects at connection level lives here."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import JSON, BigInteger, Integer, MetaData, any_, bindparam, event, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")
# Binary JSON on Postgres (indexable, compact); JSON text on SQLite. Python None is SQL NULL (not
# the JSON text 'null') so that COALESCE can fill missing lists.
JsonValue = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def dialect_insert(session: AsyncSession) -> Any:
    """The session's dialect `insert` (Postgres or SQLite), for `on_conflict_do_nothing`."""
    return postgresql.insert if is_postgres(session) else sqlite.insert


def among(session: AsyncSession, column: Any, ids: Collection[int]) -> Any:
    """`column IN ids`. On Postgres the ids go as one array (`= ANY`): an IN list costs a bound
    parameter, and its coercion and rendering, per id, and a new statement per list length."""
    if is_postgres(session):
        return column == any_(bindparam(None, list(ids), type_=ARRAY(BigInteger)))
    return column.in_(ids)


def minus(session: AsyncSession, moment: Any, delta: timedelta) -> Any:
    """`moment - delta` in SQL. SQLite stores datetimes as ISO text, so the arithmetic is its
    datetime() function there (its output compares correctly with the stored text)."""
    if is_postgres(session):
        return moment - delta
    return func.datetime(moment, f"-{int(delta.total_seconds())} seconds")


def _prepare_sqlite_file(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the web process read while a worker writes; the busy timeout rides out short locks.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


# JSON columns (topics, authors, matched terms) are read by the hundred thousand in a compose:
# orjson decodes them several times faster than the standard library.
JSON_CODECS: dict[str, Any] = {"json_serializer": _json_text, "json_deserializer": orjson.loads}


POOL_SIZE = 5
POOL_OVERFLOW = 10  # connections opened past POOL_SIZE when busy, closed once idle again
POOL_TIMEOUT = 30.0


def create_engine(
    url: str, *, echo: bool = False, pool_timeout: float = POOL_TIMEOUT
) -> AsyncEngine:
    """An engine whose pool holds up to POOL_SIZE + POOL_OVERFLOW connections; a session that
    finds them all taken waits `pool_timeout` seconds for one, then raises
    `sqlalchemy.exc.TimeoutError`."""
    pool = {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW, "pool_timeout": pool_timeout}
    if url.startswith("sqlite"):
        _prepare_sqlite_file(url)
        engine = create_async_engine(url, echo=echo, **pool, **JSON_CODECS)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        return engine
    return create_async_engine(url, echo=echo, pool_pre_ping=True, **pool, **JSON_CODECS)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def engine_of(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    """The engine a session factory binds its sessions to."""
    engine = sessions.kw.get("bind")
    if not isinstance(engine, AsyncEngine):
        raise TypeError("the session factory is not bound to an AsyncEngine")
    return engine


MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def migrate(engine: AsyncEngine, *, revision: str = "head", downgrade: bool = False) -> None:
    """Apply (or roll back to) `revision` over the engine's own connection, so that callers that
    already run an event loop (the CLI, tests, `paperboy up`) need no second one."""
    from alembic import command

    config = alembic_config(engine.url.render_as_string(hide_password=False))

    def run(connection: Any) -> None:
        config.attributes["connection"] = connection
        if downgrade:
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def read(connection: Any) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)
