"""The Prometheus metrics Paperboy exposes at /metrics: what this process did (papers ingested,
messages by outcome, SMTP errors by class, send latency, web requests refused as busy) and, read
from the database at each scrape, the state every process shares (digests by status, subscribers
by status, papers)."""

from __future__ import annotations

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
REQUESTS_REFUSED = Counter(
    "paperboy_requests_refused",
    "Web requests answered 503 busy by this process, by why: more in flight than "
    "PAPERBOY_WEB_MAX_IN_FLIGHT, no database connection in time, signup mails at their bound.",
    ["reason"],
)
DIGESTS = Gauge("paperboy_digests", "Digests in the database by status.", ["status"])
SUBSCRIBERS = Gauge("paperboy_subscribers", "Subscribers in the database by status.", ["status"])
PAPERS = Gauge("paperboy_papers", "Papers in the database.")


def error_class(detail: str) -> str:
    code = detail[:3]
    if code.isdigit():
        return f"{code[0]}xx"
    return "connection"


async def render_metrics(*, session: AsyncSession) -> tuple[bytes, str]:
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
    return generate_latest(), CONTENT_TYPE_LATEST
