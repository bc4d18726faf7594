"""The `paperboy` command line: a thin typer layer over the job functions, for operators and for
the one-command start. Each command builds the engine from the settings, calls a job, prints what
happened, and exits non-zero when anything failed."""

from app.cli import bounces, digests, papers, processes, subscribers, web
from app.cli.base import cli

__all__ = ["bounces", "cli", "digests", "main", "papers", "processes", "subscribers", "web"]


def main() -> None:
    cli()
