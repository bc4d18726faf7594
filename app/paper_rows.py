"""Paper rows rendered and encoded once. A digest's row for a paper depends on the paper alone
(its rank, its card, why it was chosen), and the same rows recur in thousands of digests of a
send run. `PaperRows` keeps each distinct row as rendered (HTML and text) and as encoded
quoted-printable, both bounded; `encode` writes a whole part, taking each row's encoding from
the cache. That is byte for byte what encoding the part at once gives, because
quoted-printable starts afresh at every line break and every cached row is whole lines."""

from __future__ import annotations

import binascii
from collections.abc import Callable, Sequence
from typing import Any

from app.digest_views import PaperView

CACHE_ENTRIES = 4096  # distinct rows kept (a few kB each); the cache restarts when full


def quoted_printable(text: str) -> bytes:
    """UTF-8 text as quoted-printable with CRLF line ends. A lone CR becomes a line end too:
    `b2a_qp` would pass it through, and the SMTP transport sends lines as they are."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n")
    body = binascii.b2a_qp(lines.encode("utf-8"), istext=True)
    return body.replace(b"\n", b"\r\n")


class PaperRows:
    def __init__(self) -> None:
        self._rendered: dict[tuple[Any, ...], str] = {}
        self._encoded: dict[str, bytes] = {}

    def row_once(self, kind: str, rows: list[str]) -> Callable[[PaperView, Any], str]:
        """The template callable `row_once(paper, macro)`: the row from the cache, or from
        `macro`; each row served is appended to `rows`, in order."""

        def row_once(paper: PaperView, macro: Callable[[PaperView], str]) -> str:
            key = (kind, paper.rank, paper.card, paper.matched_topic, tuple(paper.matched_terms))
            row = self._rendered.get(key)
            if row is None:
                if len(self._rendered) >= CACHE_ENTRIES:
                    self._rendered.clear()
                row = self._rendered[key] = macro(paper)
            rows.append(row)
            return row

        return row_once

    def encode(self, content: str, rows: Sequence[str]) -> bytes:
        """`quoted_printable(content)`, reusing the encoding of each of `rows` that appears in
        `content` (in order) as whole lines."""
        pieces: list[bytes] = []
        position = 0
        for row in rows:
            start = content.find(row, position)
            whole_lines = row.endswith("\n") and (start == 0 or content[start - 1 : start] == "\n")
            if start < 0 or not whole_lines:
                continue  # encoded with the text around it
            pieces.append(quoted_printable(content[position:start]))
            encoded = self._encoded.get(row)
            if encoded is None:
                if len(self._encoded) >= CACHE_ENTRIES:
                    self._encoded.clear()
                encoded = self._encoded[row] = quoted_printable(row)
            pieces.append(encoded)
            position = start + len(row)
        pieces.append(quoted_printable(content[position:]))
        return b"".join(pieces)
