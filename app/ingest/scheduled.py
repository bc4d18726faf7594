"""The sources one scheduled ingest reads (the scheduler's and the admin API's "run ingest now"):
`PAPERBOY_SOURCES`, with `{date}` filled in, then an arXiv API query per category of
`PAPERBOY_ARXIV_CATEGORIES`."""

from __future__ import annotations

from datetime import UTC, datetime

from app.config import Settings

ARXIV_QUERY = (
    "http://export.arxiv.org/api/query?search_query=cat:{category}"
    "&sortBy=submittedDate&sortOrder=descending&max_results={count}"
)


def scheduled_sources(settings: Settings, now: datetime) -> list[str]:
    """What one scheduled ingest reads: the configured sources (with `{date}` filled in), then
    an arXiv API query per configured category."""
    return [expand_source(location, now) for location in settings.sources] + [
        ARXIV_QUERY.format(category=category, count=settings.arxiv_max_results)
        for category in settings.arxiv_categories
    ]


def expand_source(location: str, now: datetime) -> str:
    """`{date}` becomes `now`'s UTC date (e.g. the daily-papers API's `?date={date}`)."""
    return location.replace("{date}", now.astimezone(UTC).date().isoformat())
