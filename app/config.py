"""Runtime configuration: every setting Paperboy reads, from `PAPERBOY_*` environment variables or
an optional `.env` file. The defaults are the embedded ones (SQLite under ./var), so a newcomer runs
everything with no server installed; a `postgresql+asyncpg://` URL switches to Postgres."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAPERBOY_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = Field(
        default="sqlite+aiosqlite:///./var/paperboy.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///PATH or postgresql+asyncpg://...",
    )
    database_echo: bool = Field(default=False, description="Log every SQL statement.")
    ingest_batch_size: int = Field(
        default=5000, ge=100, le=100_000, description="Papers written per committed batch."
    )
    http_timeout: float = Field(
        default=30.0, gt=0, description="Seconds before an HTTP source fetch gives up."
    )
    http_retries: int = Field(
        default=3, ge=0, le=10, description="Retries of an HTTP fetch on 5xx, 429, network errors."
    )
    http_max_retry_after: float = Field(
        default=60.0, ge=0, description="Longest Retry-After (seconds) a fetch will honour."
    )

    compose_window_days: int = Field(
        default=7, ge=1, le=60, description="Longest look-back for a digest's new papers."
    )
    compose_max_candidates: int = Field(
        default=5000, ge=10, le=100_000, description="Most papers one compose ranks."
    )
    relevance_threshold: float = Field(
        default=0.2, ge=0, le=1, description="Least topic relevance (0-1) a paper needs."
    )

    @field_validator("database_url")
    @classmethod
    def _supported_driver(cls, url: str) -> str:
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "PAPERBOY_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
