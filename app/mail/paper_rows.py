"""Paper rows rendered and encoded once. A digest's row for a paper depends on the paper alone
(its rank, its card, why it was chosen) but for the reader's own "more / less like this" links:
each distinct row is rendered once with stand-ins for those two links, and each digest puts its
reader's links in their place. A digest part renders as a shell: the template's own text with a
marker line standing in for each row. `PaperRows` keeps each distinct row as rendered (HTML and
text, with the stand-ins) and as encoded quoted-printable (a row with its reader's links recurs
for that reader only, so that cache serves a digest rendered again), both bounded;
`RenderedPart.content` puts the rows into the shell and `encode` writes the part's
quoted-printable from the encoded shell and the rows. That is byte for byte what encoding the
whole part gives, because quoted-printable starts afresh at every line break and the rows and
markers are whole lines; a part where they are not is encoded whole."""

from __future__ import annotations

import binascii
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from markupsafe import escape

from app.digests.views import PaperView

CACHE_ENTRIES = 4096  # distinct rows kept (a few kB each); the cache restarts when full


def quoted_printable(text: str) -> bytes:
    """UTF-8 text as quoted-printable with CRLF line ends. A lone CR becomes a line end too:
    `b2a_qp` would pass it through, and the SMTP transport sends lines as they are."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n")
    body = binascii.b2a_qp(lines.encode("utf-8"), istext=True)
    return body.replace(b"\n", b"\r\n")


@dataclass(frozen=True, slots=True)
class RenderedPart:
    """One part of a digest as the template rendered it: the shell, the rows its marker lines
    stand for (in order), and the marker."""

    shell: str
    rows: tuple[str, ...]
    marker: str

    @property
    def content(self) -> str:
        """The part's text: the shell with each marker replaced by its row."""
        pieces = self.shell.split(self.marker)
        if len(pieces) != len(self.rows) + 1:
            raise ValueError("a rendered part lost or gained a row marker")
        return "".join(_interleave(pieces, self.rows))


class PaperRows:
    def __init__(self) -> None:
        # Random per process, so no paper or subscriber text can contain (or forge) a marker.
        self.marker = f"paperboy-row-{secrets.token_hex(12)}\n"
        # Stand-ins for a reader's links while a row is rendered: URL-safe, escaped as they are.
        self._more = f"paperboy-more-{secrets.token_hex(12)}"
        self._less = f"paperboy-less-{secrets.token_hex(12)}"
        self._encoded_marker = self.marker.encode().replace(b"\n", b"\r\n")
        self._rendered: dict[tuple[Any, ...], str] = {}
        self._encoded: dict[str, bytes] = {}

    def rows_once(self, kind: str, rows: list[str]) -> Callable[[list[PaperView], Any], str]:
        """The template callable `rows_once(papers, macro)`: appends each paper's row (from the
        cache, or rendered by `macro`) to `rows` and leaves a marker line in its place."""

        def rows_once(papers: list[PaperView], macro: Callable[[PaperView], str]) -> str:
            for paper in papers:
                key: tuple[Any, ...] = (
                    kind, paper.rank, paper.card, paper.matched_topic, paper.liked_title,
                    *paper.matched_terms,
                )  # fmt: skip
                row = self._rendered.get(key)
                if row is None:
                    if len(self._rendered) >= CACHE_ENTRIES:
                        self._rendered.clear()
                    row = self._rendered[key] = macro(
                        replace(paper, more_url=self._more, less_url=self._less)
                    )
                if paper.more_url or paper.less_url:
                    as_written = escape if kind == "html" else str
                    row = row.replace(self._more, str(as_written(paper.more_url)))
                    row = row.replace(self._less, str(as_written(paper.less_url)))
                rows.append(row)
            return self.marker * len(papers)

        return rows_once

    def part(self, shell: str, rows: Sequence[str]) -> RenderedPart:
        return RenderedPart(shell, tuple(rows), self.marker)

    def encode(self, part: RenderedPart) -> bytes:
        """`quoted_printable(part.content)`, reusing each row's cached encoding."""
        pieces = part.shell.split(part.marker)
        # Every marker starts a line: the text before it ends one, or is empty (the part's
        # start, or right after a row, and every row ends its line).
        whole_lines = all(row.endswith("\n") for row in part.rows) and all(
            not piece or piece.endswith("\n") for piece in pieces[:-1]
        )
        if part.marker == self.marker and len(pieces) == len(part.rows) + 1 and whole_lines:
            encoded_pieces = quoted_printable(part.shell).split(self._encoded_marker)
            if len(encoded_pieces) == len(pieces):
                rows = [self._encoding(row) for row in part.rows]
                return b"".join(_interleave(encoded_pieces, rows))
        return quoted_printable(part.content)

    def _encoding(self, row: str) -> bytes:
        encoded = self._encoded.get(row)
        if encoded is None:
            if len(self._encoded) >= CACHE_ENTRIES:
                self._encoded.clear()
            encoded = self._encoded[row] = quoted_printable(row)
        return encoded


T = TypeVar("T", str, bytes)


def _interleave(pieces: Sequence[T], rows: Sequence[T]) -> list[T]:
    joined = [pieces[0]]
    for row, piece in zip(rows, pieces[1:], strict=True):
        joined.append(row)
        joined.append(piece)
    return joined
