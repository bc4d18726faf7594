"""The papers-page text format: what a trending-papers web page looks like when copied as text.
Page chrome ("Get trending papers in your email inbox ...") comes first, then one line per title
followed by one line per abstract; the first title is glued to the "Subscribe" button label. The
page carries no ids, dates or votes, so these papers are deduplicated by normalised title."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from app.ingest.sources import PaperRecord, ParseResult, Rejection, SourceError

CHROME_PREFIXES = ("Get trending papers in your email inbox",)
BUTTON_LABEL = "Subscribe"


def _content_lines(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    # Split on newlines only: str.splitlines() would also split on form feeds and other controls,
    # hiding them from the validation that rejects them.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip(" \t\r")
        if not line or line.startswith(CHROME_PREFIXES):
            continue
        lines.append((number, line))
    if lines and lines[0][1].startswith(BUTTON_LABEL):
        number, first = lines[0]
        title = first.removeprefix(BUTTON_LABEL).lstrip()
        lines[0] = (number, title)
        if not title:
            del lines[0]
    return lines


def parse(stream: BinaryIO) -> Iterator[ParseResult]:
    try:
        text = stream.read().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SourceError(f"the page is not UTF-8 text (byte {error.start})") from error
    lines = _content_lines(text)
    if not lines:
        raise SourceError("the page holds no papers (only page chrome or blank lines)")
    for index in range(0, len(lines), 2):
        number, title = lines[index]
        if index + 1 == len(lines):
            yield Rejection(number, "title line without an abstract line after it")
            return
        yield PaperRecord(position=number, title=title, abstract=lines[index + 1][1])
