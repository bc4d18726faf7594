"""Operator commands over subscribers: `subscriber add` and `subscriber list`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Column, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cli.base import cli, console, output, run_with_engine
from app.config import Settings
from app.db import create_session_factory
from app.models import (
    DEFAULT_TIMEZONE,
    DIGEST_SIZE,
    SEND_HOUR,
    TRENDING_WEIGHT,
    DigestFrequency,
    Subscriber,
    SubscriberStatus,
)
from app.subscribers.rules import (
    Preferences,
    SubscriberError,
    add_active_subscriber,
    frequency_phrase,
    list_subscribers,
    parse_weekday,
)

subscriber_cli = typer.Typer(help="Operator tools for subscribers.", no_args_is_help=True)
cli.add_typer(subscriber_cli, name="subscriber")


@subscriber_cli.command("add")
def subscriber_add_command(
    email: Annotated[str, typer.Argument(help="The subscriber's address.")],
    topics: Annotated[
        list[str] | None, typer.Option("--topic", help="A topic (repeat for several).")
    ] = None,
    timezone: Annotated[
        str, typer.Option(help="IANA timezone, e.g. Europe/Berlin.")
    ] = DEFAULT_TIMEZONE,
    hour: Annotated[
        int,
        typer.Option(help=f"Local hour ({SEND_HOUR.least}-{SEND_HOUR.most}) the digest is sent."),
    ] = SEND_HOUR.default,
    size: Annotated[
        int, typer.Option(help=f"Papers per digest ({DIGEST_SIZE.least}-{DIGEST_SIZE.most}).")
    ] = DIGEST_SIZE.default,
    trending_weight: Annotated[
        float, typer.Option(help="0 = relevance only, 1 = trending only.")
    ] = TRENDING_WEIGHT.default,
    frequency: Annotated[
        DigestFrequency, typer.Option(help="A digest every day, or once a week.")
    ] = DigestFrequency.DAILY,
    weekday: Annotated[
        str, typer.Option(help="A weekly digest's day: 0-6 (Monday 0) or a name, e.g. fri.")
    ] = "0",
) -> None:
    """Add a subscriber who is active at once (no confirmation mail), or update one."""

    async def work(engine: AsyncEngine, _settings: Settings) -> tuple[int, str]:
        async with create_session_factory(engine)() as session:
            subscriber = await add_active_subscriber(
                email,
                Preferences(
                    topics=topics or [],
                    timezone=timezone,
                    send_hour=hour,
                    digest_size=size,
                    trending_weight=trending_weight,
                    frequency=frequency,
                    weekday=parse_weekday(weekday),
                ),
                session=session,
            )
            await session.commit()
            return subscriber.id, subscriber.email

    try:
        subscriber_id, address = run_with_engine(work)
    except SubscriberError as error:
        console.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(code=1) from error
    output.print(f"subscriber {subscriber_id} <{address}> is active")


LIST_COLUMNS = ("id", "email", "status", "topics", "timezone", "hour", "size", "frequency")
TOPICS_MIN_WIDTH = 20


@subscriber_cli.command("list")
def subscriber_list_command(
    status: Annotated[
        SubscriberStatus | None, typer.Option(help="Only subscribers with this status.")
    ] = None,
) -> None:
    """List subscribers with their status, topics and schedule."""

    async def work(engine: AsyncEngine, _settings: Settings) -> list[Subscriber]:
        async with create_session_factory(engine)() as session:
            return await list_subscribers(session=session, status=status)

    subscribers = run_with_engine(work)
    rows = [
        (
            str(s.id),
            s.email,
            s.status.value,
            "; ".join(s.topics),
            s.timezone,
            str(s.send_hour),
            str(s.digest_size),
            frequency_phrase(s.frequency, s.weekday),
        )
        for s in subscribers
    ]
    # Nothing is ever cut: the topics column wraps, the others keep their width, and where that
    # does not fit (a narrow terminal, a pipe) each subscriber is one tab-separated line.
    widths = [
        max(len(cell) for cell in column) for column in zip(LIST_COLUMNS, *rows, strict=False)
    ]
    topics_at = LIST_COLUMNS.index("topics")
    widths[topics_at] = min(widths[topics_at], TOPICS_MIN_WIDTH)
    if sum(widths) + 3 * len(widths) + 1 <= output.width:
        table = Table(
            *(
                Column(name, no_wrap=index != topics_at, min_width=width)
                for index, (name, width) in enumerate(zip(LIST_COLUMNS, widths, strict=True))
            )
        )
        for row in rows:
            table.add_row(*row)
        output.print(table)
        return
    for row in [LIST_COLUMNS, *rows]:
        typer.echo("\t".join(row))
