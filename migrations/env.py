"""Alembic environment for Paperboy: runs migrations over a connection handed in by
`app.db.migrate` (the CLI and tests), or over its own async engine when the `alembic` command is
used directly. SQLite gets batch mode so that ALTERs are rebuilt as table copies."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from app import models  # noqa: F401  (registers every table on Base.metadata)
from app.config import get_settings
from app.db import Base, create_engine

config = context.config
target_metadata = Base.metadata


def configure_options(connection: Connection) -> dict[str, Any]:
    return {
        "connection": connection,
        "target_metadata": target_metadata,
        "render_as_batch": connection.dialect.name == "sqlite",
        "compare_type": True,
    }


def configured_url() -> str:
    # `app.db.alembic_config` sets the URL; the bare `alembic` command falls back to the settings.
    if config.file_config.has_section(config.config_ini_section):
        url = config.get_main_option("sqlalchemy.url")
        if url:
            return url
    return get_settings().database_url


def run_on_connection(connection: Connection) -> None:
    context.configure(**configure_options(connection))
    with context.begin_transaction():
        context.run_migrations()


async def run_with_own_engine() -> None:
    url = configured_url()
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(run_on_connection)
    await engine.dispose()


def run_offline() -> None:
    url = configured_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif (shared := config.attributes.get("connection")) is not None:
    run_on_connection(shared)
else:
    asyncio.run(run_with_own_engine())
