"""Sentence embeddings of papers and topics, stored per model: papers are embedded once, after
ingest, by a job of their own (only those that can still enter a digest: first seen within the
compose window); topics once per distinct normalised text, when first met. Compose reads both
and scores cosine similarity in numpy; a paper without a vector falls back to lexical relevance.
Functions take a session and never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import dialect_insert
from app.models import Paper, PaperVector, TopicVector
from app.ranking.fusion import fuse
from app.ranking.model_hub import ModelHub, model_hub
from app.ranking.relevance import SCORE_SLICE, Matrix

EMBED_CHUNK = 256  # papers encoded and stored at a time
ENCODE_SLICE = 32  # papers encoded per call: about a second of one core
TOPIC_KEY_CHARS = 200


class Encoder(Protocol):
    """A sentence-embedding model: L2-normalised float32 vectors, one row per text."""

    @property
    def name(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


@lru_cache(maxsize=4)
def _encoder(setting: str, hub: ModelHub) -> Encoder | None:
    # Imported here: onnxruntime loads only in processes that rank by meaning.
    from app.ranking.embedding import load_embedding_model

    return load_embedding_model(setting, hub)


def embedding_model(settings: Settings) -> Encoder | None:
    """The model `PAPERBOY_EMBEDDING_MODEL` names, loaded once per process; None when it is
    `none` (relevance by words only)."""
    return _encoder(settings.embedding_model, model_hub(settings))


def topic_key(topic: str) -> str:
    """The text a topic's vector is stored under: case and spacing do not make a new topic."""
    return " ".join(topic.lower().split())[:TOPIC_KEY_CHARS]


def paper_text(title: str, abstract: str) -> str:
    """What a paper's vector encodes (the model truncates what it cannot take)."""
    return f"{title}. {abstract}"


def _as_bytes(vector: NDArray[np.float32]) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


async def papers_to_embed(
    *, session: AsyncSession, model: str, since: datetime, limit: int
) -> list[tuple[int, str]]:
    """Papers first seen after `since` with no vector under `model`, newest first: (id, text)."""
    has_vector = exists().where(PaperVector.paper_id == Paper.id, PaperVector.model == model)
    rows = await session.execute(
        select(Paper.id, Paper.title, Paper.abstract)
        .where(Paper.first_seen_at > since, ~has_vector)
        .order_by(Paper.first_seen_at.desc(), Paper.id)
        .limit(limit)
    )
    return [(paper_id, paper_text(title, abstract)) for paper_id, title, abstract in rows]


async def store_paper_vectors(
    paper_ids: Sequence[int], vectors: NDArray[np.float32], *, session: AsyncSession, model: str
) -> None:
    if not paper_ids:
        return
    await session.execute(
        dialect_insert(session)(PaperVector).on_conflict_do_nothing(),
        [
            {"paper_id": paper_id, "model": model, "vector": _as_bytes(vector)}
            for paper_id, vector in zip(paper_ids, vectors, strict=True)
        ],
    )


@dataclass(slots=True)
class PaperVectors:
    """Vectors of a candidate set, one row per candidate (zeros where a paper has none)."""

    matrix: Matrix
    present: NDArray[np.bool_]


async def load_paper_vectors(
    paper_ids: Sequence[int], *, session: AsyncSession, model: str, dimension: int
) -> PaperVectors:
    matrix = np.zeros((len(paper_ids), dimension), np.float32)
    present = np.zeros(len(paper_ids), np.bool_)
    row_of = {paper_id: row for row, paper_id in enumerate(paper_ids)}
    for start in range(0, len(paper_ids), 5000):
        chunk = list(paper_ids[start : start + 5000])
        rows = await session.execute(
            select(PaperVector.paper_id, PaperVector.vector).where(
                PaperVector.model == model, PaperVector.paper_id.in_(chunk)
            )
        )
        for paper_id, raw in rows:
            vector = np.frombuffer(raw, np.float32)
            if vector.shape[0] == dimension:
                row = row_of[paper_id]
                matrix[row] = vector
                present[row] = True
    return PaperVectors(matrix, present)


async def topic_vectors(
    topics: Sequence[str], *, session: AsyncSession, encoder: Encoder
) -> Matrix:
    """A vector per topic, from the cache or encoded now (and cached) when first met."""
    keys = [topic_key(topic) for topic in topics]
    distinct = list(dict.fromkeys(keys))
    known: dict[str, NDArray[np.float32]] = {}
    for start in range(0, len(distinct), 5000):
        chunk = distinct[start : start + 5000]
        rows = await session.execute(
            select(TopicVector.topic, TopicVector.vector).where(
                TopicVector.model == encoder.name, TopicVector.topic.in_(chunk)
            )
        )
        known.update((topic, np.frombuffer(raw, np.float32)) for topic, raw in rows)
    missing = [key for key in distinct if key not in known]
    if missing:
        encoded = encoder.encode(missing)
        known.update(zip(missing, encoded, strict=True))
        await session.execute(
            dialect_insert(session)(TopicVector).on_conflict_do_nothing(),
            [
                {"topic": key, "model": encoder.name, "vector": _as_bytes(vector)}
                for key, vector in zip(missing, encoded, strict=True)
            ],
        )
    if not keys:
        return np.zeros((0, 0), np.float32)
    return np.stack([known[key] for key in keys]).astype(np.float32, copy=False)


async def semantic_relevance(
    topics: Sequence[str],
    paper_ids: Sequence[int],
    lexical: Matrix,
    *,
    session: AsyncSession,
    encoder: Encoder,
    threshold: float,
) -> Matrix:
    """Fuse meaning into `lexical` (topics x candidates, in place, a slice of topics at a time
    so that a hundred thousand readers' topics never need a second full matrix) and return it.
    Topic vectors come from the cache, paper vectors from the embed job."""
    if not len(topics) or not len(paper_ids):
        return lexical
    vectors = await topic_vectors(topics, session=session, encoder=encoder)
    papers = await load_paper_vectors(
        paper_ids, session=session, model=encoder.name, dimension=vectors.shape[1]
    )
    if not papers.present.any():
        return lexical
    for start in range(0, len(topics), SCORE_SLICE):
        stop = start + SCORE_SLICE
        cosine = vectors[start:stop] @ papers.matrix.T
        lexical[start:stop] = fuse(lexical[start:stop], cosine, papers.present, threshold=threshold)
    return lexical
