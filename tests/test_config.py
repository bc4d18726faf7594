"""Settings as every entry point reads them: an unusable configuration, or an unsafe one in
production, fails validation itself, and `get_settings` (what the CLI, the app factory and alembic
call) turns that into one message and exit status 1; a `.env` is read only when asked for."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import ConfigurationError, Settings, get_settings
from app.web import create_app


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No PAPERBOY_* variable from outside, a working directory of our own, and get_settings
    read afresh."""
    for name in os.environ:
        if name.startswith("PAPERBOY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_an_unsafe_production_configuration_fails_validation() -> None:
    with pytest.raises(ValidationError, match="refusing to start in production") as raised:
        Settings(_env_file=None, environment="production", base_url="https://papers.example.net")
    said = str(raised.value)
    assert "PAPERBOY_SECRET_KEY is the development default" in said
    assert "PAPERBOY_MAIL_FROM needs your own domain" in said
    assert "PAPERBOY_BASE_URL" not in said
    # The same values are fine for development.
    Settings(_env_file=None, base_url="https://papers.example.net")


def test_get_settings_refuses_with_one_message(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("PAPERBOY_ENVIRONMENT", "production")
    with pytest.raises(ConfigurationError) as raised:
        get_settings()
    assert isinstance(raised.value, SystemExit)
    assert raised.value.message == (
        "refusing to start in production:\n"
        "  - PAPERBOY_SECRET_KEY is the development default: set a long random one\n"
        "  - PAPERBOY_BASE_URL points at this machine: links in mail would not work\n"
        "  - PAPERBOY_MAIL_FROM needs your own domain\n"
        "(set PAPERBOY_ENVIRONMENT=development to try things out locally)"
    )
    assert raised.value.code == f"paperboy: {raised.value.message}"


def test_get_settings_names_each_invalid_setting_without_its_value(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("PAPERBOY_SECRET_KEY", "hunter2-short")
    environment.setenv("PAPERBOY_MAIL_URL", "http://mail.example.net")
    environment.setenv("PAPERBOY_SMTP_CONCURRENCY", "many")
    with pytest.raises(ConfigurationError) as raised:
        get_settings()
    said = raised.value.message
    assert said.startswith("invalid configuration:\n")
    assert "  - PAPERBOY_SECRET_KEY: String should have at least 16 characters" in said
    assert "  - PAPERBOY_MAIL_URL must start with maildir://, smtp:// or smtps://" in said
    assert "  - PAPERBOY_SMTP_CONCURRENCY: Input should be a valid integer" in said
    assert "hunter2" not in said


def test_the_app_factory_reads_and_checks_the_settings(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("PAPERBOY_ENVIRONMENT", "production")
    with pytest.raises(ConfigurationError, match="refusing to start in production"):
        create_app()


def test_a_dotenv_file_is_read_only_when_asked_for(environment: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("PAPERBOY_ENVIRONMENT=production\nPAPERBOY_COMPOSE_WINDOW_DAYS=3\n")
    isolated = Settings(_env_file=None)
    assert isolated.environment == "development" and isolated.compose_window_days == 7
    with pytest.raises(ValidationError, match="refusing to start in production"):
        Settings()
    with pytest.raises(ConfigurationError):
        get_settings()


def test_an_embedding_model_that_cannot_load_is_refused_at_start(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    environment.setenv("PAPERBOY_EMBEDDING_MODEL", str(tmp_path / "no-such-model"))
    with pytest.raises(ConfigurationError, match="PAPERBOY_EMBEDDING_MODEL: embedding model"):
        create_app()
    get_settings.cache_clear()
    environment.setenv("PAPERBOY_EMBEDDING_MODEL", "none")
    create_app()  # words only: nothing to check


def test_forwarded_addresses_are_trusted_only_from_named_proxies() -> None:
    named = Settings(_env_file=None, forwarded_allow_ips="10.0.0.5, 192.168.0.0/16 ::1")
    assert named.forwarded_allow_ips == ["10.0.0.5", "192.168.0.0/16", "::1"]
    assert Settings(_env_file=None).forwarded_allow_ips == ["127.0.0.1", "::1"]
    for anyone in ("*", "proxy.internal", "10.0.0.0/33"):
        with pytest.raises(ValidationError, match="not an IP address or network"):
            Settings(_env_file=None, forwarded_allow_ips=anyone)


def test_an_empty_variable_is_an_unset_setting(environment: pytest.MonkeyPatch) -> None:
    # What docker-compose.yml passes on for a token nobody set: `${PAPERBOY_ADMIN_TOKEN:-}`.
    environment.setenv("PAPERBOY_ADMIN_TOKEN", "")
    environment.setenv("PAPERBOY_METRICS_TOKEN", "")
    settings = get_settings()
    assert settings.admin_token is None and settings.metrics_token is None
