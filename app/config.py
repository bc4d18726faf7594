"""Runtime configuration: every setting Paperboy reads, from `PAPERBOY_*` environment variables or
an optional `.env` file in the working directory. The defaults are the embedded ones (SQLite under
./var), so a newcomer runs everything with no server installed; a `postgresql+asyncpg://` URL
switches to Postgres.

Settings validate themselves, the production refusal included, so every entry point that reads them
(each CLI command, `app.web.create_app` under any ASGI server, the scheduler, workers, the bare
`alembic` command) stops on an unusable configuration before it starts anything. `get_settings`
turns the failure into one `ConfigurationError`: a message and exit status 1, not a traceback.
`Settings(_env_file=None)` ignores any `.env` (what tests want: a developer's file must not change
them)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from email.utils import parseaddr
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

ARXIV_CATEGORY = re.compile(r"[a-z-]+(\.[A-Za-z-]+)?")
SNS_TOPIC_ARN = re.compile(r"arn:aws(-[a-z]+)*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}")
RETURN_PATH = re.compile(r"[A-Za-z0-9._=-]+@[A-Za-z0-9.-]+")
# The tag (+ and up to 34 characters) must fit the local part's 64 (RFC 5321).
RETURN_PATH_LOCAL_CHARS = 28
WEBHOOK_PASSWORD_CHARS = 16
# The embedded default, good for a laptop; production mode refuses it.
INSECURE_SECRET = "paperboy-development-secret-change-me"  # noqa: S105


def read_ec_public_key(text: str) -> EllipticCurvePublicKey:
    """An elliptic-curve public key from PEM, or from base64 DER as SendGrid shows its
    verification key; ValueError saying what is wrong otherwise."""
    # Imported here: only a configured SendGrid webhook needs it, and every process reads settings.
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        load_der_public_key,
        load_pem_public_key,
    )

    try:
        if "-----BEGIN" in text:
            key = load_pem_public_key(text.encode())
        else:
            key = load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, TypeError) as error:
        raise ValueError(f"not a public key in PEM or base64 DER: {error}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic-curve (ECDSA) public key")
    return key


class ConfigurationError(SystemExit):
    """A configuration Paperboy cannot run with, said in one message. A SystemExit, so that
    whatever met it (a CLI command, uvicorn loading the app factory, alembic) ends with the
    message on stderr and status 1 instead of a traceback, before anything was started."""

    def __init__(self, message: str) -> None:
        super().__init__(f"paperboy: {message}")
        self.message = message


class UnsafeForProduction(ValueError):
    """The production refusal: every problem found, one a line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "refusing to start in production:\n  - "
            + "\n  - ".join(problems)
            + "\n(set PAPERBOY_ENVIRONMENT=development to try things out locally)"
        )
        self.problems = problems


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAPERBOY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # An empty variable is an unset one: docker-compose.yml passes `${PAPERBOY_X:-}` on.
        env_ignore_empty=True,
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
        default=30.0, gt=0, description="Seconds an HTTP source fetch waits for each read."
    )
    http_deadline: float = Field(
        default=300.0,
        gt=0,
        description="Seconds a whole HTTP source download may take, retries included.",
    )
    http_max_bytes: int = Field(
        default=200 * 1024 * 1024,
        ge=1024,
        description="Largest HTTP source body (bytes, after HTTP decompression) a fetch accepts.",
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
    embedding_model: str = Field(
        default="all-MiniLM-L6-v2",
        max_length=1000,
        description="Sentence-embedding model for relevance by meaning: the shipped "
        "all-MiniLM-L6-v2, a model directory, a Hugging Face model id (owner/name, fetched "
        "once into the model cache), or none (words only).",
    )
    model_cache: str = Field(
        default="~/.cache/paperboy/models",
        max_length=1000,
        description="Directory that keeps models fetched by Hugging Face id.",
    )
    model_hub_url: str = Field(
        default="https://huggingface.co",
        max_length=1000,
        description="Where Hugging Face model ids are fetched from (a mirror may stand in).",
    )

    base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Public address of the web app; every link in a mail starts with it.",
    )
    secret_key: str = Field(
        default=INSECURE_SECRET,
        min_length=16,
        description="Signs every link token (confirm, preferences, unsubscribe). Set your own.",
    )
    mail_url: str = Field(
        default="maildir://./var/mail",
        description="Where mail goes: maildir://PATH, smtp://user:pass@host:port?starttls=true, "
        "smtps://user:pass@host:port.",
    )
    mail_from: str = Field(
        default="Paperboy <paperboy@localhost>",
        description="From address of every mail (its domain names Message-IDs and the List-Id).",
    )
    unsubscribe_mailto: str | None = Field(
        default=None,
        description="Address for mailto: unsubscribe requests (default: the From address).",
    )
    smtp_concurrency: int = Field(
        default=8,
        ge=1,
        le=200,
        description="SMTP connections per worker (twice as many messages in flight).",
    )
    smtp_rate_limit: float = Field(
        default=0, ge=0, description="Most messages per second per worker (0: no limit)."
    )
    smtp_timeout: float = Field(
        default=30.0, gt=0, description="Seconds for one message: connecting and the exchange."
    )
    send_batch_size: int = Field(
        default=200, ge=1, le=10_000, description="Digests a worker claims at a time."
    )
    send_lease_seconds: int = Field(
        default=300, ge=10, description="How long a claimed digest stays with its worker."
    )
    send_heartbeat_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often a sending worker shows it is alive; one silent for three of "
        "these is taken for dead, and `paperboy send --reclaim` may release its digests.",
    )
    retry_base_seconds: float = Field(
        default=60.0, gt=0, description="First retry delay after a 4xx or lost connection."
    )
    retry_max_seconds: float = Field(
        default=3600.0, gt=0, description="Longest delay between two attempts."
    )
    bounce_limit: int = Field(
        default=1, ge=1, description="Hard bounces (5xx) after which a subscriber is suppressed."
    )
    return_path: str | None = Field(
        default=None,
        description="Envelope sender (Return-Path) of every mail, e.g. bounces@example.org: "
        "each digest's is tagged bounces+TOKEN@example.org, so that its bounce names it. "
        "Unset: the From address, untagged.",
    )
    bounce_mailbox: str | None = Field(
        default=None,
        description="Mailbox that receives bounces and complaint reports, read by the scheduler "
        "and `paperboy bounces`: maildir://PATH, imaps://user:pass@host/INBOX or "
        "pop3s://user:pass@host.",
    )
    bounce_mailbox_ca_file: str | None = Field(
        default=None,
        description="PEM file of the CA certificates to trust for an imaps:// or pop3s:// bounce "
        "mailbox (a self-signed server); default: the system's.",
    )
    bounce_poll_seconds: int = Field(
        default=300, ge=10, description="How often the scheduler reads the bounce mailbox."
    )
    ses_topic_arns: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Amazon SNS topic ARNs whose SES bounce and complaint notifications "
        "/webhooks/ses accepts (spaces or commas between). Unset: /webhooks/ses is closed.",
    )
    sns_test_origin: str | None = Field(
        default=None,
        description="Tests only (refused in production): an http(s) origin that SNS certificate "
        "and subscription URLs may name besides https://sns.REGION.amazonaws.com.",
    )
    postmark_webhook_auth: str | None = Field(
        default=None,
        description="user:password that Postmark's bounce and spam-complaint webhooks send as "
        "basic auth (put them in the webhook URL). Unset: /webhooks/postmark is closed.",
    )
    sendgrid_webhook_public_key: str | None = Field(
        default=None,
        description="SendGrid Event Webhook verification key (base64 DER or PEM, ECDSA). "
        "Unset: /webhooks/sendgrid is closed.",
    )
    mailgun_webhook_signing_key: str | None = Field(
        default=None,
        min_length=16,
        description="Mailgun HTTP webhook signing key. Unset: /webhooks/mailgun is closed.",
    )
    dkim_selector: str | None = Field(default=None, description="DKIM selector (enables signing).")
    dkim_private_key_path: str | None = Field(
        default=None, description="PEM file of the DKIM private key."
    )
    dkim_domain: str | None = Field(
        default=None, description="DKIM signing domain (default: the From domain)."
    )

    sources: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Sources the scheduled ingest reads: paths or http(s) URLs, separated by "
        "spaces or commas.",
    )
    arxiv_categories: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="arXiv categories (e.g. cs.LG cs.CL) the scheduled ingest queries the arXiv "
        "API for, newest first, separated by spaces or commas.",
    )
    arxiv_max_results: int = Field(
        default=200, ge=1, le=2000, description="Papers asked of the arXiv API per category."
    )
    admin_token: str | None = Field(
        default=None,
        min_length=16,
        description="Bearer token of the admin API (/admin/api). Unset: the admin API is closed.",
    )
    metrics_token: str | None = Field(
        default=None,
        min_length=16,
        description="Bearer token that opens /metrics to a scraper (the admin token opens it "
        "too). Neither set: /metrics is closed.",
    )
    api_docs_public: bool = Field(
        default=False,
        description="Serve /docs and /openapi.json to anyone. Off: they need the admin token, "
        "like the API they describe.",
    )
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Addresses or networks of the reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto `paperboy web --proxy-headers` believes (spaces or commas between).",
    )
    web_max_in_flight: int = Field(
        default=4,
        ge=0,
        le=15,  # the database pool's connections (app.db): an admitted request never waits
        description="Public requests one web process works on at once; more wait 50 ms at most, "
        "then are answered 503 with Retry-After (0: no limit). Raise it when the database is "
        "far away; bench/api.py measures it.",
    )
    web_pool_timeout: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Seconds a web request waits for a database connection before it is "
        "answered 503.",
    )
    signup_mail_interval_seconds: int = Field(
        default=600, ge=0, description="At most one signup mail per address in this many seconds."
    )
    signup_ip_limit: int = Field(
        default=20, ge=1, description="Signup requests one client address may make per window."
    )
    signup_ip_window_seconds: int = Field(
        default=600, ge=1, description="The window of PAPERBOY_SIGNUP_IP_LIMIT."
    )

    environment: Literal["development", "production"] = Field(
        default="development",
        description="production refuses to start with an unsafe configuration.",
    )
    ingest_cron: str = Field(
        default="15 * * * *",
        description="When the scheduler ingests PAPERBOY_SOURCES (crontab fields, UTC).",
    )
    compose_interval_seconds: int = Field(
        default=300, ge=10, description="How often the scheduler composes the digests now due."
    )
    send_interval_seconds: int = Field(
        default=60, ge=5, description="How often the scheduler's worker looks for mail to send."
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="text for people, json (one object a line) for collectors."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")

    def unsafe_for_production(self) -> list[str]:
        """What makes this configuration unfit to run in production (empty when it is fine)."""
        problems = []
        if self.secret_key == INSECURE_SECRET:
            problems.append("PAPERBOY_SECRET_KEY is the development default: set a long random one")
        elif len(self.secret_key) < 32:
            problems.append("PAPERBOY_SECRET_KEY is shorter than 32 characters")
        host = urlsplit(self.base_url).hostname or ""
        if host in ("127.0.0.1", "localhost", "0.0.0.0", "::1") or host.endswith(".localhost"):  # noqa: S104
            problems.append(
                "PAPERBOY_BASE_URL points at this machine: links in mail would not work"
            )
        elif not self.base_url.startswith("https://"):
            problems.append("PAPERBOY_BASE_URL must be https:// in production")
        if self.sender_domain in ("localhost", "example.org", "example.com"):
            problems.append("PAPERBOY_MAIL_FROM needs your own domain")
        if self.sns_test_origin:
            problems.append("PAPERBOY_SNS_TEST_ORIGIN is for tests: unset it")
        return problems

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production" and (problems := self.unsafe_for_production()):
            raise UnsafeForProduction(problems)
        return self

    @property
    def sender_domain(self) -> str:
        address = parseaddr(self.mail_from)[1]
        return address.rpartition("@")[2] or "localhost"

    @field_validator("sources", "arxiv_categories", mode="before")
    @classmethod
    def _split_sources(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.replace(",", " ").split() if part]
        return value

    @field_validator("ses_topic_arns", "forwarded_allow_ips", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.replace(",", " ").split() if part]
        return value

    @field_validator("ses_topic_arns")
    @classmethod
    def _valid_topic_arns(cls, arns: list[str]) -> list[str]:
        for arn in arns:
            if not SNS_TOPIC_ARN.fullmatch(arn):
                raise ValueError(f"{arn!r} is not an SNS topic ARN like arn:aws:sns:REGION:ID:NAME")
        return arns

    @field_validator("return_path")
    @classmethod
    def _valid_return_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        local, _, domain = value.partition("@")
        if not RETURN_PATH.fullmatch(value) or len(local) > RETURN_PATH_LOCAL_CHARS or not domain:
            raise ValueError(
                "PAPERBOY_RETURN_PATH must be a bare address like bounces@example.org "
                f"(a local part of at most {RETURN_PATH_LOCAL_CHARS} characters)"
            )
        return value

    @field_validator("bounce_mailbox")
    @classmethod
    def _supported_bounce_mailbox(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("maildir://", "imaps://", "pop3s://")):
            raise ValueError(
                "PAPERBOY_BOUNCE_MAILBOX must start with maildir://, imaps:// or pop3s://"
            )
        return url

    @field_validator("postmark_webhook_auth")
    @classmethod
    def _valid_postmark_auth(cls, value: str | None) -> str | None:
        if value is None:
            return None
        user, _, password = value.partition(":")
        if not user or len(password) < WEBHOOK_PASSWORD_CHARS:
            raise ValueError(
                "PAPERBOY_POSTMARK_WEBHOOK_AUTH must be user:password, the password at least "
                f"{WEBHOOK_PASSWORD_CHARS} characters"
            )
        return value

    @field_validator("sendgrid_webhook_public_key")
    @classmethod
    def _valid_sendgrid_key(cls, value: str | None) -> str | None:
        if value is not None:
            read_ec_public_key(value)
        return value

    @field_validator("sns_test_origin")
    @classmethod
    def _valid_test_origin(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("PAPERBOY_SNS_TEST_ORIGIN must be an http(s) origin")
        return value.rstrip("/") if value else value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxy_addresses(cls, addresses: list[str]) -> list[str]:
        for address in addresses:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ValueError(
                    f"PAPERBOY_FORWARDED_ALLOW_IPS: {address!r} is not an IP address or network "
                    "(e.g. 10.0.0.5 or 10.0.0.0/8); trusting every address ('*') would let any "
                    "client choose the address it is counted under"
                ) from None
        return addresses

    @field_validator("arxiv_categories")
    @classmethod
    def _valid_categories(cls, categories: list[str]) -> list[str]:
        for category in categories:
            if not ARXIV_CATEGORY.fullmatch(category):
                raise ValueError(f"{category!r} is not an arXiv category like cs.LG or hep-th")
        return categories

    @field_validator("ingest_cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as error:
            raise ValueError(f"PAPERBOY_INGEST_CRON is not a crontab line: {error}") from error
        return value

    @field_validator("mail_url")
    @classmethod
    def _supported_mail_url(cls, url: str) -> str:
        if not url.startswith(("maildir://", "smtp://", "smtps://")):
            raise ValueError("PAPERBOY_MAIL_URL must start with maildir://, smtp:// or smtps://")
        return url

    @field_validator("base_url")
    @classmethod
    def _absolute_base_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("PAPERBOY_BASE_URL must be an absolute http(s) URL")
        return url.rstrip("/")

    @field_validator("mail_from")
    @classmethod
    def _valid_sender(cls, value: str) -> str:
        if "\r" in value or "\n" in value or "@" not in parseaddr(value)[1]:
            raise ValueError("PAPERBOY_MAIL_FROM must look like 'Paperboy <me@example.org>'")
        return value

    @field_validator("database_url")
    @classmethod
    def _supported_driver(cls, url: str) -> str:
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "PAPERBOY_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        return url


def explain(error: ValidationError) -> str:
    """A failed validation as an operator reads it: the setting's variable name and what is
    wrong with it, one a line; never the value (it may be a secret)."""
    refusals = [
        cause
        for issue in error.errors()
        if isinstance(cause := issue.get("ctx", {}).get("error"), UnsafeForProduction)
    ]
    if refusals:
        return str(refusals[0])
    lines = []
    for issue in error.errors():
        cause = issue.get("ctx", {}).get("error")
        what = str(cause) if isinstance(cause, ValueError) else issue["msg"]
        name = "PAPERBOY_" + "_".join(str(part) for part in issue["loc"][:1]).upper()
        lines.append(what if name in what else f"{name}: {what}")
    return "invalid configuration:\n  - " + "\n  - ".join(lines)


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once; `ConfigurationError` when they cannot be used."""
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigurationError(explain(error)) from None
    except SettingsError as error:
        raise ConfigurationError(f"invalid configuration: {error}") from None
