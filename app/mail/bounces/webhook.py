"""What the provider webhooks share: the two ways a request is turned away (not signed by the
provider: refused, nothing recorded; signed but unreadable: malformed) and reading the JSON
body and the providers' time stamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

MAX_BODY_BYTES = 5 * 1024 * 1024  # SendGrid batches events; a batch is well under this


class WebhookRefused(Exception):
    """The request does not come from the provider (a missing or bad signature, credentials or
    origin): answered 401/403, nothing recorded. The message says why, never a secret."""

    def __init__(self, reason: str, *, status_code: int = 403) -> None:
        super().__init__(reason)
        self.status_code = status_code


class WebhookMalformed(ValueError):
    """A payload that is not what the provider documents: answered 400, nothing recorded."""


def json_body(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise WebhookMalformed(f"the body is not JSON: {error}") from None


def mapping(value: object) -> dict[str, Any]:
    """A field that should be a JSON object, as one ({} when absent or not an object)."""
    return value if isinstance(value, dict) else {}


def items(value: object) -> list[Any]:
    """A field that should be a JSON array, as one ([] when absent or not an array)."""
    return value if isinstance(value, list) else []


def text_of(value: object) -> str:
    """A field that should be text, as text ('' when absent)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def moment(value: object) -> datetime | None:
    """A provider's time stamp, in UTC: ISO 8601 text (SES, Postmark) or Unix seconds
    (SendGrid, Mailgun); None when absent or unreadable."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str) and value:
            if value.replace(".", "", 1).isdigit():
                return datetime.fromtimestamp(float(value), UTC)
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None
