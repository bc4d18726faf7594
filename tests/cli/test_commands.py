"""The `paperboy` command as an operator runs it, in a subprocess against a fresh database:
migrate, ingest files, stdin and bad input, with the exit codes scripts rely on."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from app.cli.base import COMMAND_ORDER, counted
from app.db import alembic_config
from tests.conftest import ON_POSTGRES, drop_postgres_database, fresh_database_url

PAPERBOY = str(Path(sys.executable).parent / "paperboy")


@pytest.fixture
async def cli_database(tmp_path: Path) -> AsyncIterator[str]:
    url = await fresh_database_url(tmp_path)
    yield url
    if ON_POSTGRES:
        await drop_postgres_database(url)


def paperboy(
    database_url: str, *args: str, stdin: bytes | None = None, columns: int = 200
) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PAPERBOY_DATABASE_URL": database_url, "COLUMNS": str(columns)}
    return subprocess.run(
        [PAPERBOY, *args],
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_help_explains_each_command() -> None:
    result = subprocess.run([PAPERBOY, "--help"], capture_output=True, text=True, check=True)
    listed = [
        line.split()[1]
        for line in result.stdout.split("Commands")[1].splitlines()
        if line.startswith("│ ") and line[2] != " "
    ]
    assert listed == list(COMMAND_ORDER)  # the one-command start first, then the pipeline
    # Each command's help runs as one paragraph, not broken where its docstring's lines end.
    assert "│             a day" not in result.stdout
    ingest_help = subprocess.run(
        [PAPERBOY, "ingest", "--help"], capture_output=True, text=True, check=True
    )
    assert "--format" in ingest_help.stdout and "arxiv-jsonl" in ingest_help.stdout


@pytest.mark.slow
def test_migrate_then_ingest_the_sample_twice(cli_database: str, sample_page: Path) -> None:
    migrated = paperboy(cli_database, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "Warning" not in migrated.stderr  # e.g. SAWarning on reflecting an expression index
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert f"database at revision {head}" in migrated.stdout
    first = paperboy(cli_database, "ingest", str(sample_page))
    assert first.returncode == 0, first.stderr
    assert "│ inserted     │ 185" in first.stdout
    second = paperboy(cli_database, "ingest", str(sample_page))
    assert second.returncode == 0
    assert "│ inserted     │ 0 " in second.stdout and "│ unchanged    │ 185" in second.stdout


@pytest.mark.slow
def test_stdin_and_several_sources_and_failures(cli_database: str, data: Path) -> None:
    assert paperboy(cli_database, "migrate").returncode == 0
    from_stdin = paperboy(cli_database, "ingest", "-", stdin=(data / "hf-daily.json").read_bytes())
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert "hf-daily" in from_stdin.stdout and "│ inserted     │ 4" in from_stdin.stdout

    mixed = paperboy(
        cli_database,
        "ingest",
        str(data / "arxiv-snapshot-bad.jsonl"),
        str(data / "arxiv-atom-error.xml"),
    )
    assert mixed.returncode == 1
    assert "rejected at 13: invalid arXiv id 'not-an-id'" in mixed.stdout
    assert "error: the arXiv API answered with an error" in " ".join(mixed.stderr.split())


def test_bad_format_option_is_a_usage_error(cli_database: str, sample_page: Path) -> None:
    result = paperboy(cli_database, "ingest", "--format", "csv", str(sample_page))
    assert result.returncode == 2
    assert "'csv' is not one of auto, page" in " ".join(result.stderr.split())


def test_unsupported_database_url_fails_clearly(sample_page: Path) -> None:
    result = paperboy("mysql://root@localhost/x", "ingest", str(sample_page))
    assert result.returncode != 0
    assert "PAPERBOY_DATABASE_URL must start with" in result.stderr


def test_commands_that_never_rank_do_not_load_the_ranking_stack() -> None:
    # Workers and ingest stay small and start fast: scikit-learn and SciPy load only for
    # compose, preview, eval and the web app.
    probe = "import sys, app.cli, app.jobs; print(sorted({'sklearn', 'scipy'} & set(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]"


def test_a_bad_embedding_model_setting_fails_every_command_at_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPERBOY_")}
    env["PAPERBOY_EMBEDDING_MODEL"] = str(tmp_path / "missing-model")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "paperboy"), "migrate"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env | {"COLUMNS": "200"},
        timeout=60,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "PAPERBOY_EMBEDDING_MODEL" in result.stdout + result.stderr
    assert not (tmp_path / "var").exists()  # refused before touching anything


def test_counts_say_their_noun_in_the_right_number() -> None:
    assert counted(1, "paper") == "1 paper"
    assert counted(0, "paper") == "0 papers"
    assert counted(1200, "digest") == "1,200 digests"
    assert counted(2, "candidate paper") == "2 candidate papers"


@pytest.mark.slow
def test_subscriber_list_never_cuts_an_address(cli_database: str) -> None:
    assert paperboy(cli_database, "migrate").returncode == 0
    long = "averyveryverylongaddressname.with.parts@subdomain.example-university.edu"
    for address in (long, "b@example.org"):
        added = paperboy(cli_database, "subscriber", "add", address, "--topic", "LLM serving")
        assert added.returncode == 0, added.stderr
    wide = paperboy(cli_database, "subscriber", "list")  # 200 columns: a table
    assert long in wide.stdout and "┃ email" in wide.stdout
    narrow = paperboy(cli_database, "subscriber", "list", columns=80)
    lines = narrow.stdout.splitlines()
    assert lines[0].split("\t")[:7] == [
        "id",
        "email",
        "status",
        "topics",
        "timezone",
        "hour",
        "size",
    ]
    assert lines[1].split("\t")[1:4] == [long, "active", "LLM serving"]


@pytest.mark.slow
def test_subscriber_add_takes_a_weekly_digest_and_list_shows_it(cli_database: str) -> None:
    assert paperboy(cli_database, "migrate").returncode == 0
    added = paperboy(
        cli_database,
        "subscriber",
        "add",
        "ada@example.org",
        "--topic",
        "KV cache",
        "--frequency",
        "weekly",
        "--weekday",
        "fri",
    )
    assert added.returncode == 0, added.stderr
    listed = paperboy(cli_database, "subscriber", "list")
    assert "ada@example.org" in listed.stdout and "weekly, on Fridays" in listed.stdout
    refused = paperboy(cli_database, "subscriber", "add", "b@example.org", "--weekday", "8")
    assert refused.returncode == 1 and "weekday" in refused.stdout + refused.stderr
