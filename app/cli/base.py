"""The `paperboy` command line's shared parts: the typer application every command module adds
itself to, the consoles, and the one way a command gets its settings (checked, with logging set up)
and an engine from them."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.core import TyperGroup

from app.config import ConfigurationError, Settings, get_settings
from app.db import create_engine
from app.logs import configure_logging
from app.ranking.embedding import EmbeddingModelError, check_embedding_setting
from app.ranking.model_hub import model_hub

T = TypeVar("T")

# The order `paperboy --help` lists commands in: the one-command start first, then the
# processes of a deployment, then the pipeline's steps in the order data flows through them.
COMMAND_ORDER = (
    "up",
    "web",
    "scheduler",
    "worker",
    "migrate",
    "ingest",
    "embed",
    "compose",
    "preview",
    "send",
    "bounces",
    "subscriber",
    "eval",
)


class CommandsInOrder(TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:  # typer's own (vendored) click Context
        known = [name for name in COMMAND_ORDER if name in self.commands]
        return known + sorted(set(self.commands) - set(known))


cli = typer.Typer(
    name="paperboy",
    cls=CommandsInOrder,
    rich_markup_mode="markdown",
    help="Paperboy: trending research papers on each subscriber's topics, by email, once a day.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
output = Console()


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's event loop: uvloop where it is installed (every platform but Windows),
    else asyncio's own. uvloop cuts the event loop's own share of a send by about a fifth
    (docs/delivery.md).

    What start-up loaded (modules, templates, settings) lives as long as the process, so it is
    moved out of the garbage collector's sight: full collections in a send run otherwise scanned
    it all: 1.1 s of pauses in a 20,000-digest send (up to 80 ms each, every connection's reply
    waiting), 0.8 s after."""
    gc.collect()
    gc.freeze()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(main)
    return uvloop.run(main)


def run_with_engine(work: Callable[[AsyncEngine, Settings], Awaitable[T]]) -> T:
    settings = checked_settings()

    async def main() -> T:
        engine = create_engine(settings.database_url, echo=settings.database_echo)
        try:
            return await work(engine, settings)
        finally:
            await engine.dispose()

    return run_async(main())


# The exit status of a command stopped by a signal, as a shell reports a process it killed.
STOPPED_BY_SIGTERM = 128 + signal.SIGTERM
STOPPED_BY_SIGINT = 128 + signal.SIGINT


def stop_on_sigterm() -> None:
    """From here on, SIGTERM cancels the running command (the current task) with the reason
    "SIGTERM": what it was doing records itself as interrupted (an ingest run, for one), and
    `run_async` raises CancelledError for the command to exit with `STOPPED_BY_SIGTERM`."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel, "SIGTERM")


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """ "1 paper", "2 papers", "1,200 digests": a count with its noun in the right number."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def fail(message: str) -> typer.Exit:
    """Print an error the way every command does; raise what it returns."""
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=1)


def checked_settings() -> Settings:
    """Every command's settings. Validation (`app.config`) refuses an unusable configuration, and
    an unsafe one in production, with one message; logging is set up from them."""
    try:
        settings = get_settings()
    except ConfigurationError as error:
        raise fail(error.message) from None
    try:
        check_embedding_setting(settings.embedding_model, model_hub(settings))
    except EmbeddingModelError as error:
        raise fail(f"PAPERBOY_EMBEDDING_MODEL: {error}") from None
    configure_logging(settings)
    return settings
