"""The Prometheus metrics Paperboy exposes at /metrics: what this process did (papers ingested,
messages by outcome, SMTP errors by class, send latency, bounce and complaint reports, web
requests refused as busy) and, read from the database at each scrape, the state every process
shares (digests by status, subscribers by status, papers, and delivery: stopped by a refusal about
us, workers alive, digests held by dead workers)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Digest, DigestStatus, Paper, Subscriber, SubscriberStatus

PAPERS_INGESTED = Counter(
    "paperboy_papers_ingested", "Papers handled by ingest in this process.", ["outcome"]
)
MESSAGES = Counter(
    "paperboy_messages", "Digest messages by the outcome recorded in this process.", ["outcome"]
)
SMTP_ERRORS = Counter(
    "paperboy_smtp_errors", "Failed deliveries by class (4xx, 5xx, connection).", ["error_class"]
)
SEND_LATENCY = Histogram(
    "paperboy_send_latency_seconds",
    "Time for the mail server to accept or refuse one message.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DELIVERY_EVENTS = Counter(
    "paperboy_delivery_events",
    "Bounce and complaint reports recorded in this process, by kind and source.",
    ["kind", "source"],
)
REQUESTS_REFUSED = Counter(
    "paperboy_requests_refused",
    "Web requests answered 503 busy by this process, by why: more in flight than "
    "PAPERBOY_WEB_MAX_IN_FLIGHT, no database connection in time, signup mails at their bound.",
    ["reason"],
)
DIGESTS = Gauge("paperboy_digests", "Digests in the database by status.", ["status"])
SUBSCRIBERS = Gauge("paperboy_subscribers", "Subscribers in the database by status.", ["status"])
PAPERS = Gauge("paperboy_papers", "Papers in the database.")
DELIVERY_REFUSED = Gauge(
    "paperboy_delivery_refused",
    "1 while delivery stands stopped by the mail server refusing us (relay, login, policy), "
    "nothing accepted since; 0 otherwise.",
)
DELIVERY_REFUSED_AT = Gauge(
    "paperboy_delivery_refused_timestamp_seconds",
    "When the refusal that stopped delivery came (0 when none is in force).",
)
SEND_WORKERS = Gauge("paperboy_send_workers_alive", "Send workers whose heartbeat is fresh.")
HELD_BY_STOPPED = Gauge(
    "paperboy_digests_held_by_stopped_workers",
    "Digests leased to workers that died: `paperboy send --reclaim` sends them now.",
)


@dataclass(frozen=True, slots=True)
class DeliveryGauges:
    """Delivery's shared state, as `app.mail.workers.delivery_state` reads it."""

    refused: bool
    refused_at: datetime | None
    workers_alive: int
    held_by_stopped_workers: int


def error_class(detail: str) -> str:
    code = detail[:3]
    if code.isdigit():
        return f"{code[0]}xx"
    return "connection"


async def render_metrics(
    *, session: AsyncSession, delivery: DeliveryGauges | None = None
) -> tuple[bytes, str]:
    digests = dict(
        (await session.execute(select(Digest.status, func.count()).group_by(Digest.status))).all()
    )
    for status in DigestStatus:
        DIGESTS.labels(status.value).set(digests.get(status, 0))
    subscribers = dict(
        (
            await session.execute(
                select(Subscriber.status, func.count()).group_by(Subscriber.status)
            )
        ).all()
    )
    for subscriber_status in SubscriberStatus:
        SUBSCRIBERS.labels(subscriber_status.value).set(subscribers.get(subscriber_status, 0))
    PAPERS.set(await session.scalar(select(func.count()).select_from(Paper)) or 0)
    if delivery is not None:
        DELIVERY_REFUSED.set(1 if delivery.refused else 0)
        DELIVERY_REFUSED_AT.set(delivery.refused_at.timestamp() if delivery.refused_at else 0)
        SEND_WORKERS.set(delivery.workers_alive)
        HELD_BY_STOPPED.set(delivery.held_by_stopped_workers)
    return generate_latest(), CONTENT_TYPE_LATEST
