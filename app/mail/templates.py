"""The Jinja environment of the mail templates, whose CSS is inlined once, when a template is
loaded, instead of in every rendered message: css-inline runs over the template source with each
Jinja tag held by a placeholder (expressions within a line as plain words, which may sit in text
or attribute values; statements, comments and expressions on a line of their own as HTML
comments, which may sit anywhere, between table rows too), and the tags are put back before
Jinja compiles it. The styles depend only on the markup,
never on the values Jinja fills in, so the result is what inlining each rendered message gave,
at none of its cost per message (half a millisecond for a 30 kB digest)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import css_inline
from jinja2 import BaseLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
PLACEHOLDER = re.compile(r"<!--JINJAS(\d+)X-->|JINJAE(\d+)X")
TAGS_ONLY = re.compile(r"(?:\s*<!--JINJAS\d+X-->)+")


class TemplateInliningError(ValueError):
    pass


def inline_template_source(source: str, inliner: css_inline.CSSInliner) -> str:
    """`source` with its CSS inlined and its Jinja tags untouched."""
    if "JINJA" in source:
        raise TemplateInliningError("the template contains the placeholder word JINJA")
    tags: list[str] = []

    def hold(match: re.Match[str]) -> str:
        tags.append(match.group(0))
        number = len(tags) - 1
        if match.group(0).startswith("{{") and not _alone_on_its_line(match):
            return f"JINJAE{number}X"
        return f"<!--JINJAS{number}X-->"

    inlined = inliner.inline(JINJA_TAG.sub(hold, source))
    restored: list[int] = []

    def put_back(match: re.Match[str]) -> str:
        number = int(match.group(1) or match.group(2))
        restored.append(number)
        return tags[number]

    result = PLACEHOLDER.sub(put_back, _join_markup_lines(inlined))
    if restored != list(range(len(tags))):
        # A tag was lost, doubled or moved out of order (a statement inside an attribute value,
        # an expression between table rows): refuse rather than send broken mail.
        raise TemplateInliningError("Jinja tags did not survive CSS inlining in order")
    return result


def _join_markup_lines(html: str) -> str:
    """Each run of markup lines as one line, its indentation gone. Whitespace between tags or
    words renders the same whatever it is (the templates have no `pre`), and the mail is smaller
    and has fewer lines: a third fewer quoted-printable lines, each of which every MTA on the way
    handles on its own. Lines holding only Jinja tags stay lines, so `trim_blocks` and
    `lstrip_blocks` work as written and a macro's output stays whole lines."""
    units: list[str] = []
    run: list[str] = []
    for line in html.split("\n"):
        stripped = line.strip()
        if TAGS_ONLY.fullmatch(stripped):
            if run:
                units.append(" ".join(run))
                run = []
            units.append(line)
        elif stripped:
            run.append(stripped)
    if run:
        units.append(" ".join(run))
    return "\n".join(units) + ("\n" if html.endswith("\n") else "")


def _alone_on_its_line(match: re.Match[str]) -> bool:
    """An expression on a line of its own inserts markup (table rows, say): it is held as a
    comment, which may sit anywhere, rather than as a word, which a table would move out."""
    source = match.string
    line_start = source.rfind("\n", 0, match.start()) + 1
    line_end = source.find("\n", match.end())
    after = source[match.end() : line_end if line_end >= 0 else len(source)]
    return not source[line_start : match.start()].strip() and not after.strip()


class InliningLoader(BaseLoader):
    """Loads templates from a folder; HTML ones come with their CSS inlined."""

    def __init__(self, folder: Path, inliner: css_inline.CSSInliner) -> None:
        self.files = FileSystemLoader(folder)
        self.inliner = inliner

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        source, filename, uptodate = self.files.get_source(environment, template)
        if template.endswith(".html"):
            source = inline_template_source(source, self.inliner)
        return source, filename, uptodate


def mail_environment(folder: Path) -> Environment:
    inliner = css_inline.CSSInliner(
        keep_at_rules=True, minify_css=True, load_remote_stylesheets=False
    )
    return Environment(
        loader=InliningLoader(folder, inliner),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
