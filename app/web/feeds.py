"""The reader's private Atom feed, `GET /feeds/{token}` (a link token of purpose `feed`, shown on
the preferences page and the archive): the entries of `app.digests.feed`, written as XML by an
autoescaped template of its own. Paper text is escaped once for the XML and, inside `content`,
once more as the HTML it carries; characters XML 1.0 forbids are dropped from every value, so a
paper's text can never make the feed unreadable. Feed readers poll: an answer carries an ETag
(a digest of its bytes), and a poll that sends it back gets 304 with no body."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from app.digests.feed import reader_feed
from app.mail.message import TEMPLATES_DIR
from app.subscribers.localtime import as_utc
from app.subscribers.rules import frequency_phrase
from app.subscribers.tokens import Purpose
from app.web.deps import Session, State
from app.web.rendering import link, linked_subscriber

router = APIRouter(include_in_schema=False)
ATOM = "application/atom+xml; charset=utf-8"
NOT_IN_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(value: Any) -> Any:
    """Every value the template writes, without the characters XML 1.0 does not allow."""
    if isinstance(value, Markup):
        # Already escaped: dropping control characters cannot make markup of it.
        return Markup(NOT_IN_XML.sub("", value))  # noqa: S704
    if isinstance(value, str):
        return NOT_IN_XML.sub("", value)
    return value


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


environment = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR / "web"),
    autoescape=True,
    auto_reload=False,
    finalize=xml_safe,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters["rfc3339"] = rfc3339


@router.get("/feeds/{token}", response_class=Response)
async def atom_feed(request: Request, token: str, state: State, session: Session) -> Response:
    subscriber = await linked_subscriber(state, session, Purpose.FEED, token)
    feed = await reader_feed(subscriber, session=session)
    xml = environment.get_template("feed.xml").render(
        feed=feed,
        self_url=f"{state.settings.base_url}/feeds/{token}",
        # Signed as of the reader's signup, so that the feed (and its ETag) stays the same
        # from one poll to the next until a digest changes it.
        archive_url=link(
            state,
            Purpose.DIGEST,
            subscriber,
            "digests",
            signed_at=int(as_utc(subscriber.created_at).timestamp()),
        ),
        topics=", ".join(subscriber.topics or []),
        how_often=frequency_phrase(subscriber.frequency, subscriber.weekday),
    )
    etag = f'"{hashlib.sha256(xml.encode()).hexdigest()[:32]}"'
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={"etag": etag})
    return Response(xml, media_type=ATOM, headers={"etag": etag})
