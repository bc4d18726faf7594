"""The tests' own isolation from a developer's configuration: a `.env` in the working directory,
or their own PAPERBOY_* variables, never change the settings a test runs with, nor those of the
`paperboy` processes tests start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.config import INSECURE_SECRET, Settings
from tests.conftest import TEST_VARIABLES, WORDS_ONLY, isolated_settings

DOTENV = (
    "PAPERBOY_SECRET_KEY=a-developers-own-secret-key-000\n"
    "PAPERBOY_MAIL_URL=smtp://mail.example.org:2525\n"
    "PAPERBOY_LOG_LEVEL=ERROR\n"
    "PAPERBOY_COMPOSE_WINDOW_DAYS=30\n"
)


def test_a_dotenv_in_the_working_directory_changes_no_test_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(DOTENV)
    monkeypatch.chdir(tmp_path)
    # Paperboy itself reads the file (so what follows shows something) ...
    assert Settings().secret_key == "a-developers-own-secret-key-000"
    # ... and the settings the tests build do not.
    settings = isolated_settings(database_url="sqlite+aiosqlite:///./test.db")
    defaults = Settings.model_fields
    assert settings.secret_key == INSECURE_SECRET
    assert settings.mail_url == defaults["mail_url"].default
    assert settings.log_level == defaults["log_level"].default
    assert settings.compose_window_days == defaults["compose_window_days"].default


def test_the_developers_paperboy_variables_are_not_in_the_test_process() -> None:
    present = {name for name in os.environ if name.startswith("PAPERBOY_")} - TEST_VARIABLES
    assert present == {"PAPERBOY_EMBEDDING_MODEL"}  # set by conftest itself
    assert os.environ["PAPERBOY_EMBEDDING_MODEL"] == WORDS_ONLY


def test_tests_run_in_an_empty_directory_of_their_own(
    request: pytest.FixtureRequest, neutral_working_directory: Path
) -> None:
    # What `paperboy` processes started by tests find where they start: no .env, no ./var.
    assert Path.cwd() == neutral_working_directory != request.config.invocation_params.dir
    assert not (Path.cwd() / ".env").exists()
