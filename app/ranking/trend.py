"""The trend signal of a paper: its engagement (upvotes, comments) on a log scale, decayed by age.
Pure and without a database; the front page and each digest read it the same way."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from app.ranking.relevance import Matrix

TREND_HALF_LIFE_HOURS = 72.0
# Engagement that saturates the trend signal: a paper with this many upvotes (comments count
# three times) is as trending as it gets.
ENGAGEMENT_SCALE = 300.0
UNENGAGED_TREND = 0.3  # share of the trend signal a fresh paper gets with no engagement known


def trend_scores(
    upvotes: Sequence[int | None],
    comments: Sequence[int | None],
    seen_at: Sequence[datetime],
    *,
    now: datetime,
) -> Matrix:
    """Trend in [0, 1]: engagement on a log scale, decayed by age. Papers from sources without
    engagement still get a recency-only share, so they are not all tied at zero."""
    engagement = np.asarray(
        [(u or 0) + 3 * (c or 0) for u, c in zip(upvotes, comments, strict=True)], np.float32
    )
    known = np.asarray(
        [u is not None or c is not None for u, c in zip(upvotes, comments, strict=True)]
    )
    level = np.minimum(1.0, np.log1p(engagement) / math.log1p(ENGAGEMENT_SCALE))
    strength = np.where(known, UNENGAGED_TREND + (1 - UNENGAGED_TREND) * level, UNENGAGED_TREND)
    hours = np.asarray(
        [max(0.0, (now - when).total_seconds() / 3600) for when in seen_at], np.float32
    )
    decayed: Matrix = (strength * np.power(0.5, hours / TREND_HALF_LIFE_HOURS)).astype(np.float32)
    return decayed
