"""Topic suggestions for the signup and preferences forms: the sources' own keywords, then the
phrases recent titles repeat most, each said once. "language model" and "language models" are
one suggestion (the same stemmed words, in their more frequent form), and a phrase that is
nearly always part of a longer one ("large language", inside "large language models") gives way
to it, so that no chip is a fragment or a near-copy of another. Read-only and cheap to cache."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Paper
from app.ranking.relevance import STOP_WORDS, terms

TITLE_WORD = re.compile(r"[A-Za-z][A-Za-z0-9+-]{2,}")
RECENT_TITLES = 2000
# A phrase seen inside one longer phrase at least this share of the times it occurs is a
# fragment of it.
FRAGMENT_SHARE = 0.6


@dataclass(slots=True)
class Phrase:
    """One suggestion's stemmed words, how often it occurs and the written forms it takes."""

    key: tuple[str, ...]
    count: int = 0
    forms: Counter[str] = field(default_factory=Counter)

    @property
    def text(self) -> str:
        return self.forms.most_common(1)[0][0]


def contains(longer: tuple[str, ...], shorter: tuple[str, ...]) -> bool:
    width = len(shorter)
    return any(longer[i : i + width] == shorter for i in range(len(longer) - width + 1))


def title_phrases(titles: list[str]) -> dict[tuple[str, ...], Phrase]:
    """Every run of two or three title words without a stop word, by its stemmed words."""
    found: dict[tuple[str, ...], Phrase] = {}
    for title in titles:
        words = TITLE_WORD.findall(title)
        for width in (2, 3):
            for start in range(len(words) - width + 1):
                run = words[start : start + width]
                if any(word.lower() in STOP_WORDS for word in run):
                    continue
                text = " ".join(run).lower()
                key = tuple(terms(text))
                if len(key) != width:
                    continue
                phrase = found.setdefault(key, Phrase(key))
                phrase.count += 1
                phrase.forms[text] += 1
    return found


def without_fragments(phrases: dict[tuple[str, ...], Phrase]) -> list[Phrase]:
    """The phrases that are not mostly a part of one longer phrase, most frequent first."""
    kept = []
    for phrase in phrases.values():
        if phrase.count < 2:
            continue
        longer = [
            other
            for other in phrases.values()
            if len(other.key) > len(phrase.key) and contains(other.key, phrase.key)
        ]
        if any(other.count >= FRAGMENT_SHARE * phrase.count for other in longer):
            continue
        kept.append(phrase)
    return sorted(kept, key=lambda p: (-p.count, p.text))


async def topic_suggestions(*, session: AsyncSession, limit: int = 16) -> list[str]:
    rows = (
        await session.execute(
            select(Paper.title, Paper.keywords)
            .order_by(Paper.first_seen_at.desc())
            .limit(RECENT_TITLES)
        )
    ).all()
    keywords: dict[tuple[str, ...], Phrase] = {}
    for _, paper_keywords in rows:
        for keyword in paper_keywords or []:
            text = " ".join(str(keyword).split()).lower()
            key = tuple(terms(text))
            if key:
                phrase = keywords.setdefault(key, Phrase(key))
                phrase.count += 1
                phrase.forms[text] += 1
    candidates = sorted(
        (p for p in keywords.values() if p.count > 1), key=lambda p: (-p.count, p.text)
    ) + without_fragments(title_phrases([title for title, _ in rows]))
    chosen: list[Phrase] = []
    for phrase in candidates:
        if len(chosen) >= limit:
            break
        # Never two chips where one says the other's words again.
        if any(contains(c.key, phrase.key) or contains(phrase.key, c.key) for c in chosen):
            continue
        chosen.append(phrase)
    return [phrase.text for phrase in chosen]
