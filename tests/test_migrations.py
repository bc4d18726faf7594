"""The migrations are the schema: upgrade and downgrade work on a fresh database of the configured
dialect, and the migrated schema matches the models exactly (no drift)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db import Base, create_engine, create_session_factory, current_revision, migrate
from app.models import Subscriber
from tests.conftest import ON_POSTGRES, drop_postgres_database, fresh_database_url

TABLES = {
    "paper",
    "subscriber",
    "digest",
    "digest_item",
    "ingest_run",
    "job_run",
    "send_worker",
    "paper_vector",
    "topic_vector",
    "delivery_event",
    "mailbox_message",
    "feedback",
}


def table_names(connection: Any) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


async def test_upgrade_downgrade_upgrade_on_a_fresh_database(tmp_path: Path) -> None:
    url = await fresh_database_url(tmp_path)
    engine = create_engine(url)
    try:
        await migrate(engine)
        assert await current_revision(engine) is not None
        async with engine.connect() as connection:
            assert await connection.run_sync(table_names) == TABLES
        await migrate(engine, revision="base", downgrade=True)
        assert await current_revision(engine) is None
        async with engine.connect() as connection:
            assert await connection.run_sync(table_names) == set()
        await migrate(engine)
        await migrate(engine)  # a second upgrade is a no-op
        async with engine.connect() as connection:
            assert await connection.run_sync(table_names) == TABLES
        # The case-insensitive unique address survives every migration, there and back.
        async with create_session_factory(engine)() as session:
            session.add(Subscriber(email="Ada@Example.org"))
            await session.commit()
            session.add(Subscriber(email="ada@example.ORG"))
            with pytest.raises(IntegrityError):
                await session.commit()
    finally:
        await engine.dispose()
        if ON_POSTGRES:
            await drop_postgres_database(url)


def schema_differences(connection: Any) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    with warnings.catch_warnings():
        # SQLite cannot reflect expression indexes (lower(email)); Postgres compares it.
        warnings.filterwarnings("ignore", message=".*expression-based index.*")
        return list(compare_metadata(context, Base.metadata))


async def test_migrated_schema_matches_the_models(migrated_engine: AsyncEngine) -> None:
    async with migrated_engine.connect() as connection:
        assert await connection.run_sync(schema_differences) == []


async def test_one_subscription_per_mailbox_whatever_the_case(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as session:
        session.add(Subscriber(email="Ada@Example.org"))
        await session.commit()
        session.add(Subscriber(email="ada@example.ORG"))
        with pytest.raises(IntegrityError):
            await session.commit()
