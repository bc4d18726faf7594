"""The papers-page text format: what a trending-papers web page looks like when copied as text.
Page chrome ("Get trending papers in your email inbox ...") comes first, then one line per title
followed by one line per abstract; the first title is glued to the "Subscribe" button label. The
page carries no ids, dates or votes, so these papers are deduplicated by normalised title. The page
is read line by line: a line over `MAX_LINE_BYTES` costs its paper (rejected with the reason), not
the page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from app.ingest.sources import (
    MAX_LINE_BYTES,
    PaperRecord,
    ParseResult,
    Rejection,
    SourceError,
    bounded_lines,
)

CHROME_PREFIXES = ("Get trending papers in your email inbox",)
BUTTON_LABEL = "Subscribe"
TOO_LONG = f"line is longer than {MAX_LINE_BYTES // (1024 * 1024)} MB"


def _content_lines(stream: BinaryIO) -> Iterator[tuple[int, str | None]]:
    """(line number, text) of each line that is neither blank nor page chrome, the button label
    taken off the first; text is None for a line too long to read."""
    first = True
    # Lines end at newlines only: str.splitlines() would also split on form feeds and other
    # controls, hiding them from the validation that rejects them.
    for number, raw in enumerate(bounded_lines(stream), start=1):
        if raw is None:
            first = False
            yield number, None
            continue
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            raise SourceError(
                f"the page is not UTF-8 text (line {number}, byte {error.start})"
            ) from error
        line = text.strip(" \t\r\n")
        if not line or line.startswith(CHROME_PREFIXES):
            continue
        if first:
            first = False
            if line.startswith(BUTTON_LABEL):
                line = line.removeprefix(BUTTON_LABEL).lstrip()
                if not line:
                    continue
        yield number, line


def parse(stream: BinaryIO) -> Iterator[ParseResult]:
    lines = _content_lines(stream)
    found = False
    for number, title in lines:
        found = True
        following = next(lines, None)
        if following is None:
            yield Rejection(number, "title line without an abstract line after it")
            return
        abstract = following[1]
        if title is None or abstract is None:
            yield Rejection(number, TOO_LONG)
            continue
        yield PaperRecord(position=number, title=title, abstract=abstract)
    if not found:
        raise SourceError("the page holds no papers (only page chrome or blank lines)")
