"""The admin API's JSON shapes: what it accepts (validated, with the failing field named in a 422)
and what it returns. Built from the ORM rows with `from_attributes`."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.models import (
    DEFAULT_TIMEZONE,
    DIGEST_SIZE,
    SEND_HOUR,
    TRENDING_WEIGHT,
    WEEKDAY,
    DeliveryEventKind,
    DigestFrequency,
    DigestStatus,
    IngestStatus,
    SubscriberStatus,
)
from app.subscribers.rules import MAX_TOPICS


class Row(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class SubscriberOut(Row):
    id: int
    public_id: uuid.UUID
    email: str
    status: SubscriberStatus
    topics: list[str]
    muted_topics: list[str]
    timezone: str
    send_hour: int
    digest_size: int
    trending_weight: float
    frequency: DigestFrequency
    weekday: int
    bounce_count: int
    token_version: int
    created_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None
    consent_ip: str | None


class SubscriberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320)
    topics: list[str] = Field(default_factory=list, max_length=MAX_TOPICS)
    timezone: str = DEFAULT_TIMEZONE
    send_hour: int = Field(default=SEND_HOUR.default, ge=SEND_HOUR.least, le=SEND_HOUR.most)
    digest_size: int = Field(default=DIGEST_SIZE.default, ge=DIGEST_SIZE.least, le=DIGEST_SIZE.most)
    trending_weight: float = Field(
        default=TRENDING_WEIGHT.default, ge=TRENDING_WEIGHT.least, le=TRENDING_WEIGHT.most
    )
    frequency: DigestFrequency = DigestFrequency.DAILY
    weekday: int = Field(
        default=WEEKDAY.default,
        ge=WEEKDAY.least,
        le=WEEKDAY.most,
        description="A weekly digest's day, Monday 0 to Sunday 6.",
    )
    status: Literal["active", "pending"] = "active"


class SubscriberUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topics: list[str] | None = Field(default=None, max_length=MAX_TOPICS)
    timezone: str | None = None
    send_hour: int | None = Field(default=None, ge=SEND_HOUR.least, le=SEND_HOUR.most)
    digest_size: int | None = Field(default=None, ge=DIGEST_SIZE.least, le=DIGEST_SIZE.most)
    trending_weight: float | None = Field(
        default=None, ge=TRENDING_WEIGHT.least, le=TRENDING_WEIGHT.most
    )
    frequency: DigestFrequency | None = None
    weekday: int | None = Field(
        default=None,
        ge=WEEKDAY.least,
        le=WEEKDAY.most,
        description="A weekly digest's day, Monday 0 to Sunday 6.",
    )
    status: SubscriberStatus | None = None
    revoke_links: bool = Field(
        default=False, description="Invalidate every link already mailed to this subscriber."
    )


class SubscriberPage(BaseModel):
    items: list[SubscriberOut]
    next_cursor: str | None


class ImportRejection(BaseModel):
    line: int
    email: str
    reason: str


class ImportReport(BaseModel):
    dry_run: bool
    rows: int
    created: int
    updated: int
    rejected: list[ImportRejection]


class PaperOut(Row):
    id: int
    arxiv_id: str | None
    title: str
    abstract: str
    authors: list[str] | None
    categories: list[str] | None
    url: str | None
    pdf_url: str | None
    github_repo: str | None
    published_at: datetime | None
    source: str
    upvotes: int | None
    comments: int | None
    first_seen_at: datetime


class PaperPage(BaseModel):
    items: list[PaperOut]
    next_cursor: str | None


class IngestRunOut(Row):
    id: int
    source: str
    format: str | None
    status: IngestStatus
    started_at: datetime
    finished_at: datetime | None
    records: int
    inserted: int
    updated: int
    unchanged: int
    rejected: int
    rejections: list[dict[str, Any]]
    error: str | None


class JobRunOut(Row):
    id: int
    job: str
    parameters: dict[str, Any]
    status: IngestStatus
    started_at: datetime
    finished_at: datetime | None
    report: dict[str, Any] | None
    error: str | None


class IngestResult(BaseModel):
    """An ingest's report as an admin job run carries it: the stored run's counts (as
    `IngestRunOut`, which also has the run's id and times) plus the seconds it took."""

    source: str
    format: str | None
    records: int
    inserted: int
    updated: int
    unchanged: int
    rejected: int
    rejections: list[dict[str, Any]]
    error: str | None
    seconds: float


class DigestOut(Row):
    id: int
    subscriber_id: int
    digest_date: date
    status: DigestStatus
    attempts: int
    next_attempt_at: datetime | None
    message_id: str | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


class DigestPage(BaseModel):
    items: list[DigestOut]
    next_cursor: str | None


class DigestItemOut(BaseModel):
    rank: int
    paper_id: int
    title: str
    score: float
    relevance: float
    trend: float
    matched_topic: str | None
    matched_terms: list[str]
    liked_title: str | None


class DigestDetail(DigestOut):
    items: list[DigestItemOut]


class DeliveryEventOut(Row):
    id: int
    kind: DeliveryEventKind
    source: str
    subscriber_id: int | None
    digest_id: int | None
    recipient: str | None
    detail: str
    action: str
    occurred_at: datetime | None
    recorded_at: datetime


class DeliveryEventPage(BaseModel):
    items: list[DeliveryEventOut]
    next_cursor: str | None


class JobResult(BaseModel):
    job: Literal["compose", "send", "ingest"]
    dry_run: bool
    report: dict[str, Any]


class DeliveryOut(BaseModel):
    """Delivery across every worker. `refusal`: the mail server's refusal about us (relay,
    login, policy) that stopped the latest send run, for as long as nothing has been accepted
    since; no subscriber was marked bounced for it. `held_by_stopped_workers`: digests leased
    to workers that died, until `held_by_stopped_workers_until` (a send with reclaim takes them
    at once)."""

    refusal: str | None
    refused_at: datetime | None
    workers_alive: int
    held_by_stopped_workers: int
    held_by_stopped_workers_until: datetime | None
    held_by_other_workers: int


class Stats(BaseModel):
    subscribers: dict[str, int]
    digests_by_day: dict[str, dict[str, int]]
    bounced_subscribers: int
    bounced_digests: int
    last_ingest: IngestRunOut | None
    delivery: DeliveryOut
