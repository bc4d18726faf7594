"""Every table Paperboy stores, as typed SQLAlchemy 2 models: papers, subscribers, their frozen
daily digests and digest items, the record of each ingest run and of each job an operator ran,
the send workers (their heartbeats, and the refusal that stopped one), and each reader's
feedback on the papers they were sent.
The unique keys here are the idempotency guarantees the pipeline relies on (a paper once per
arXiv id or normalised title, a digest once per subscriber and day, a paper once per digest)."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, BigIntId, JsonValue

Number = TypeVar("Number", int, float)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Bounded(Generic[Number]):
    """A subscriber setting's default and its inclusive range: declared once here, and read by
    the table's defaults and checks, validation, the forms, the API schemas, CSV import and
    the CLI."""

    default: Number
    least: Number
    most: Number

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int | float) and self.least <= value <= self.most


SEND_HOUR = Bounded(7, 0, 23)  # local hour of delivery
DIGEST_SIZE = Bounded(10, 1, 50)  # papers per digest
TRENDING_WEIGHT = Bounded(0.3, 0.0, 1.0)  # share of the trend signal in a paper's score
WEEKDAY = Bounded(
    0, 0, 6
)  # a weekly reader's delivery day, Monday 0 to Sunday 6 (as `date.weekday`)
DEFAULT_TIMEZONE = "UTC"


class SubscriberStatus(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    PAUSED = "paused"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"


class DigestFrequency(enum.StrEnum):
    """How often a subscriber gets a digest: every day, or once a week on their weekday."""

    DAILY = "daily"
    WEEKLY = "weekly"


class DigestStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    RETRY = "retry"
    SENT = "sent"
    FAILED = "failed"
    BOUNCED = "bounced"
    SKIPPED = "skipped"


class FeedbackSignal(enum.StrEnum):
    """What a reader said of a paper they were sent."""

    MORE = "more"  # more like this
    LESS = "less"  # less like this


class DeliveryEventKind(enum.StrEnum):
    """What a report received after sending says about a digest (a bounce mailbox or a
    provider's webhook)."""

    HARD_BOUNCE = "hard_bounce"  # the address does not take mail: counts to the bounce limit
    SOFT_BOUNCE = "soft_bounce"  # delayed, or failed for a passing reason: recorded only
    BLOCKED = "blocked"  # refused for a reason about us (policy, content): the subscriber stays
    COMPLAINT = "complaint"  # the reader reported it as spam: unsubscribed at once


class IngestStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def _str_enum(enum_class: type[enum.StrEnum], name: str) -> Enum:
    # Stored as short strings with a CHECK, not a native Postgres ENUM: adding a state later is a
    # one-line migration on both dialects.
    return Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


class Paper(Base):
    __tablename__ = "paper"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    arxiv_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(Text)
    title_key: Mapped[str] = mapped_column(Text, unique=True)
    abstract: Mapped[str] = mapped_column(Text)
    authors: Mapped[list[str] | None] = mapped_column(JsonValue)
    categories: Mapped[list[str] | None] = mapped_column(JsonValue)
    keywords: Mapped[list[str] | None] = mapped_column(JsonValue)
    ai_summary: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    pdf_url: Mapped[str | None] = mapped_column(Text)
    doi: Mapped[str | None] = mapped_column(String(255))
    github_repo: Mapped[str | None] = mapped_column(Text)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(16))
    upvotes: Mapped[int | None] = mapped_column(Integer)
    comments: Mapped[int | None] = mapped_column(Integer)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    __table_args__ = (Index(None, "first_seen_at"),)


class Subscriber(Base):
    __tablename__ = "subscriber"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    public_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320))
    status: Mapped[SubscriberStatus] = mapped_column(
        _str_enum(SubscriberStatus, "subscriber_status"), default=SubscriberStatus.PENDING
    )
    topics: Mapped[list[str]] = mapped_column(JsonValue, default=list)
    # Topics the reader muted from a mail: kept (to be unmuted on the preferences page) but
    # bringing no papers.
    muted_topics: Mapped[list[str]] = mapped_column(
        JsonValue, default=list, server_default=text("'[]'")
    )
    timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TIMEZONE)
    send_hour: Mapped[int] = mapped_column(SmallInteger, default=SEND_HOUR.default)
    digest_size: Mapped[int] = mapped_column(SmallInteger, default=DIGEST_SIZE.default)
    trending_weight: Mapped[float] = mapped_column(Float, default=TRENDING_WEIGHT.default)
    # Server defaults too: the migration gives every existing subscriber the daily digest.
    frequency: Mapped[DigestFrequency] = mapped_column(
        _str_enum(DigestFrequency, "digest_frequency"),
        default=DigestFrequency.DAILY,
        server_default=DigestFrequency.DAILY.value,
    )
    weekday: Mapped[int] = mapped_column(
        SmallInteger, default=WEEKDAY.default, server_default=str(WEEKDAY.default)
    )
    token_version: Mapped[int] = mapped_column(Integer, default=1)
    bounce_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    unsubscribed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Consent as given: the address that clicked the confirmation link (with confirmed_at).
    consent_ip: Mapped[str | None] = mapped_column(String(45))
    # The last signup mail to this address; at most one per address per rate-limit window.
    signup_mail_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    digests: Mapped[list[Digest]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan", passive_deletes=True
    )
    feedback: Mapped[list[Feedback]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        # One subscription per mailbox, whatever the case the address was typed in.
        Index("uq_subscriber_email_lower", func.lower(email), unique=True),
        Index(None, "status"),
        CheckConstraint(
            f"send_hour BETWEEN {SEND_HOUR.least} AND {SEND_HOUR.most}", name="send_hour_range"
        ),
        CheckConstraint(
            f"digest_size BETWEEN {DIGEST_SIZE.least} AND {DIGEST_SIZE.most}",
            name="digest_size_range",
        ),
        CheckConstraint(
            f"trending_weight BETWEEN {TRENDING_WEIGHT.least:g} AND {TRENDING_WEIGHT.most:g}",
            name="trending_weight_range",
        ),
        CheckConstraint(
            f"weekday BETWEEN {WEEKDAY.least} AND {WEEKDAY.most}", name="weekday_range"
        ),
    )


CLAIMABLE_PREDICATE = "status IN ('queued', 'retry', 'sending')"


class Digest(Base):
    __tablename__ = "digest"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("subscriber.id", ondelete="CASCADE")
    )
    digest_date: Mapped[date] = mapped_column(Date)
    status: Mapped[DigestStatus] = mapped_column(
        _str_enum(DigestStatus, "digest_status"), default=DigestStatus.QUEUED
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    message_id: Mapped[str | None] = mapped_column(String(255))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The send worker that claimed it last (`SendWorker.id`; no foreign key: worker rows are
    # pruned, digests stay): while it is `sending`, whose lease it is.
    claimed_by: Mapped[int | None] = mapped_column(BigInteger)

    subscriber: Mapped[Subscriber] = relationship(back_populates="digests")
    items: Mapped[list[DigestItem]] = relationship(
        back_populates="digest",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="DigestItem.rank",
    )

    __table_args__ = (
        # The idempotency key of compose: one digest per subscriber per local day.
        UniqueConstraint("subscriber_id", "digest_date"),
        Index(None, "status", "next_attempt_at"),
        Index(None, "digest_date"),
        # Workers claim in id order among the few digests still to send, not through every
        # digest ever sent.
        Index(
            "ix_digest_claimable",
            "id",
            postgresql_where=text(CLAIMABLE_PREDICATE),
            sqlite_where=text(CLAIMABLE_PREDICATE),
        ),
    )


class DigestItem(Base):
    __tablename__ = "digest_item"

    digest_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("digest.id", ondelete="CASCADE"), primary_key=True
    )
    # No foreign key to paper: an item is a frozen record, papers are never deleted, and the
    # per-row check was the largest cost of freezing a day's digests (see the migration).
    paper_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    rank: Mapped[int] = mapped_column(SmallInteger)
    score: Mapped[float] = mapped_column(Float)
    relevance: Mapped[float] = mapped_column(Float)
    trend: Mapped[float] = mapped_column(Float)
    matched_topic: Mapped[str | None] = mapped_column(Text)
    matched_terms: Mapped[list[str]] = mapped_column(JsonValue, default=list)
    # The title of the paper the reader liked that this one is most like, when that raised it.
    liked_title: Mapped[str | None] = mapped_column(Text)

    digest: Mapped[Digest] = relationship(back_populates="items")
    paper: Mapped[Paper] = relationship(
        primaryjoin="foreign(DigestItem.paper_id) == Paper.id", viewonly=True
    )


class Feedback(Base):
    """A reader's "more / less like this" on a paper they were sent: one row per reader and
    paper, the last click wins. Erased with its subscriber."""

    __tablename__ = "feedback"

    subscriber_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("subscriber.id", ondelete="CASCADE"), primary_key=True
    )
    paper_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("paper.id"), primary_key=True)
    signal: Mapped[FeedbackSignal] = mapped_column(_str_enum(FeedbackSignal, "feedback_signal"))
    clicked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    subscriber: Mapped[Subscriber] = relationship(back_populates="feedback")
    paper: Mapped[Paper] = relationship(viewonly=True)

    __table_args__ = (Index(None, "paper_id"),)


class DeliveryEvent(Base):
    """A bounce or complaint report, once per report (`event_key`: the provider's event id, or
    the report message and recipient), with the digest and subscriber it was matched to (none
    when it named nothing of ours) and what it did. Erased with its subscriber."""

    __tablename__ = "delivery_event"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    event_key: Mapped[str] = mapped_column(String(255), unique=True)
    source: Mapped[str] = mapped_column(String(16))
    kind: Mapped[DeliveryEventKind] = mapped_column(
        _str_enum(DeliveryEventKind, "delivery_event_kind")
    )
    subscriber_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("subscriber.id", ondelete="CASCADE"), index=True
    )
    digest_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("digest.id", ondelete="CASCADE"), index=True
    )
    recipient: Mapped[str | None] = mapped_column(String(320))
    detail: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index(None, "recorded_at"),)


class MailboxMessage(Base):
    """A message of the bounce mailbox that has been read (by the mailbox's own key: Maildir
    name, IMAP UIDVALIDITY.UID, POP3 UIDL), so that each is processed once even when marking it
    in the mailbox failed or the mailbox (POP3) cannot mark it at all."""

    __tablename__ = "mailbox_message"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(255))
    message_key: Mapped[str] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("mailbox", "message_key"),)


class IngestRun(Base):
    __tablename__ = "ingest_run"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    format: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[IngestStatus] = mapped_column(
        _str_enum(IngestStatus, "ingest_status"), default=IngestStatus.RUNNING
    )
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    records: Mapped[int] = mapped_column(Integer, default=0)
    inserted: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    rejections: Mapped[list[dict[str, Any]]] = mapped_column(JsonValue, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    # The process running it ("host:pid:start ticks") and when it last said it was alive: a run
    # still "running" whose process is gone is closed as interrupted (app/ingest/runs.py).
    owner: Mapped[str | None] = mapped_column(String(300))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index(None, "started_at"),)


class JobRun(Base):
    """A job an operator started through the admin API (ingest, compose, send), run apart from
    the request that asked for it: its parameters, its state (as an ingest run's) and, once it
    is over, its report or error."""

    __tablename__ = "job_run"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    job: Mapped[str] = mapped_column(String(16))
    parameters: Mapped[dict[str, Any]] = mapped_column(JsonValue, default=dict)
    status: Mapped[IngestStatus] = mapped_column(
        _str_enum(IngestStatus, "job_run_status"), default=IngestStatus.RUNNING
    )
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    report: Mapped[dict[str, Any] | None] = mapped_column(JsonValue)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index(None, "started_at"),)


class SendWorker(Base):
    """One delivery run (`paperboy send`, `paperboy worker`, the scheduler's send): it beats
    while it runs, so that the leases of a worker that died can be told from a live one's and
    released at once; and it records the refusal about us that stopped it, if one did."""

    __tablename__ = "send_worker"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    refusal: Mapped[str | None] = mapped_column(Text)  # the server's answer that stopped it
    refused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index(None, "heartbeat_at"),)


class PaperVector(Base):
    """A paper's sentence embedding under one model: float32 bytes (pgvector is not assumed;
    scoring runs in numpy over the compose window's few thousand papers). A new model embeds
    again; vectors of other models stay until pruned."""

    __tablename__ = "paper_vector"

    paper_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TopicVector(Base):
    """A topic's sentence embedding under one model, once per distinct normalised topic text
    (many readers share a topic): computed at signup, a preference change or the first compose
    that meets it, never per reader per day."""

    __tablename__ = "topic_vector"

    topic: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
