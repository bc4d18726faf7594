"""Sentence embeddings for semantic relevance, run on onnxruntime with a fast tokenizer (no torch
at run time). Owns the model directory layout, its checksum check, and the encoder: mean pooling
over the attention mask and L2 normalisation, as the sentence-transformers models it serves define
them, so a cosine similarity is a dot product. The default model (all-MiniLM-L6-v2, int8) ships in
the package so that ranking by meaning works offline; `scripts/export_embedding_model.py` makes it
and any other directory of the same layout. Pure: no database; storing vectors is for the caller.

A model directory holds `model.onnx` (a transformer whose first output is the last hidden state),
`tokenizer.json` (a Hugging Face fast tokenizer), `embedding.json` (name, dimension, max sequence
length, pooling, normalisation) and `MANIFEST.json` (the SHA-256 of every file, the source and the
export command). A file that does not match its checksum is an error at load, never a silent
different model."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from app.ranking.model_hub import ModelHub, ModelHubError, fetch_model, file_sha256, is_model_id

SHIPPED_MODELS = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = "all-MiniLM-L6-v2"
OFF = "none"
CONFIG_FILE = "embedding.json"
MANIFEST_FILE = "MANIFEST.json"
REQUIRED_FILES = ("model.onnx", "tokenizer.json", CONFIG_FILE)
DEFAULT_BATCH_SIZE = 64
# Padded tokens a batch may hold: memory grows with it (attention is rows x width^2 per head),
# speed hardly does past it. 2,048 is 8 abstracts at the 256-token maximum (peak RSS ~300 MB;
# 32 of them took 630 MB for no speed gain) or 64 short topics.
DEFAULT_BATCH_TOKENS = 2048

Vectors = NDArray[np.float32]


class EmbeddingModelError(RuntimeError):
    """The embedding model setting names nothing loadable, or the model's files are not the ones
    its manifest records."""


@dataclass(frozen=True)
class EmbeddingConfig:
    name: str
    dimension: int
    max_seq_length: int
    pooling: str
    normalize: bool
    inputs: tuple[str, ...]

    @classmethod
    def read(cls, path: Path) -> EmbeddingConfig:
        try:
            raw: dict[str, Any] = orjson.loads(path.read_bytes())
            config = cls(
                name=str(raw["name"]),
                dimension=int(raw["dimension"]),
                max_seq_length=int(raw["max_seq_length"]),
                pooling=str(raw["pooling"]),
                normalize=bool(raw["normalize"]),
                inputs=tuple(str(name) for name in raw["inputs"]),
            )
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise EmbeddingModelError(f"{path}: not a valid embedding config ({error})") from error
        if config.pooling != "mean":
            raise EmbeddingModelError(f"{path}: pooling {config.pooling!r} is not supported")
        return config


def verify_model_directory(directory: Path) -> dict[str, Any]:
    """Check every file the manifest lists against its SHA-256 and that the files an encoder needs
    are among them; returns the manifest."""
    manifest_path = directory / MANIFEST_FILE
    try:
        manifest: dict[str, Any] = orjson.loads(manifest_path.read_bytes())
        files: dict[str, str] = manifest["files"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as error:
        raise EmbeddingModelError(
            f"{directory}: no readable {MANIFEST_FILE} with the files' checksums ({error})"
        ) from error
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise EmbeddingModelError(f"{manifest_path}: does not list {', '.join(missing)}")
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            raise EmbeddingModelError(f"{path}: listed in {MANIFEST_FILE} but missing")
        actual = file_sha256(path)
        if actual != expected:
            raise EmbeddingModelError(
                f"{path}: SHA-256 {actual} does not match {expected} recorded in {MANIFEST_FILE};"
                " the model file is damaged or was changed: re-install or re-export it"
            )
    return manifest


def _core_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class EmbeddingModel:
    """A loaded model: one onnxruntime session (intra-op threads = the cores this process may use)
    and one tokenizer, shared by every caller in the process. `name` tags stored vectors, so that
    a model change means re-embedding."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        self.directory = directory
        self.manifest = verify_model_directory(directory)
        self.config = EmbeddingConfig.read(directory / CONFIG_FILE)
        self.name = self.config.name
        self.dimension = self.config.dimension
        self.max_length = self.config.max_seq_length

        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=self.max_length)
        tokenizer.no_padding()  # batches are padded here, to their own longest text
        self._tokenizer = tokenizer
        # The inference session is made at the first encode: a compose whose topic vectors are
        # all cached never encodes, and skips onnxruntime's ~100 MB and its start-up.
        self._session: Any = None
        self._inputs: tuple[str, ...] = ()
        self._lock = threading.Lock()  # a session is thread-safe; the tokenizer's state is not

    def _inference_session(self) -> Any:
        with self._lock:
            if self._session is None:
                self._session, self._inputs = self._open_session()
            return self._session

    def _open_session(self) -> tuple[Any, tuple[str, ...]]:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = _core_count()
        options.inter_op_num_threads = 1
        # Threads sleep between runs instead of spinning: the cores are shared with the web
        # server, workers and the database (measured: 20 % less CPU for the same papers).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = onnxruntime.InferenceSession(
            str(self.directory / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        session_inputs = {i.name for i in session.get_inputs()}
        unknown = session_inputs - set(self.config.inputs)
        if unknown:
            raise EmbeddingModelError(
                f"{self.directory}: model.onnx wants inputs {sorted(unknown)} that {CONFIG_FILE}"
                " does not declare"
            )
        return session, tuple(name for name in self.config.inputs if name in session_inputs)

    def __repr__(self) -> str:
        return f"EmbeddingModel({self.name!r}, {str(self.directory)!r})"

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text takes, after truncation to the model's maximum length."""
        with self._lock:
            return [len(encoding.ids) for encoding in self._tokenizer.encode_batch(list(texts))]

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
    ) -> Vectors:
        """One L2-normalised row per text, in the order given. Texts are truncated to the model's
        maximum length and encoded in batches of similar length (sorted by token count), so that
        short texts do not pay for padding to a long one; a batch holds at most `batch_size`
        texts and `batch_tokens` padded tokens (at least one text)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        session = self._inference_session()
        with self._lock:
            encodings = self._tokenizer.encode_batch(list(texts))
        lengths = [len(encoding.ids) for encoding in encodings]
        for rows in _length_batches(lengths, batch_size, batch_tokens):
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            types = np.zeros((len(rows), width), dtype=np.int64)
            for row, i in enumerate(rows):
                encoding = encodings[i]
                length = len(encoding.ids)
                ids[row, :length] = encoding.ids
                mask[row, :length] = encoding.attention_mask
                types[row, :length] = encoding.type_ids
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            hidden = session.run(None, {name: feeds[name] for name in self._inputs})[0]
            out[rows] = _mean_pool(np.asarray(hidden, dtype=np.float32), mask)
        if self.config.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)
        return out


def _length_batches(
    lengths: Sequence[int], batch_size: int, batch_tokens: int
) -> Iterator[list[int]]:
    """Indices in batches of similar token counts: sorted by length, and a batch is cut when it is
    full (rows or padded tokens) or the next text is over twice as long as its shortest (and 16
    tokens longer). Besides saving the padding, this keeps short texts apart from long ones: int8
    activations are quantized with one scale per batch, which a long text's activations would set
    for a short one."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batch: list[int] = []
    for index in order:
        if batch and (
            len(batch) == batch_size
            or (len(batch) + 1) * lengths[index] > batch_tokens
            or lengths[index] > max(2 * lengths[batch[0]], lengths[batch[0]] + 16)
        ):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def _mean_pool(hidden: NDArray[np.float32], mask: NDArray[np.int64]) -> Vectors:
    weights = mask.astype(np.float32)[:, :, None]
    summed = (hidden * weights).sum(axis=1)
    counts = np.maximum(weights.sum(axis=1), 1e-9)
    pooled: Vectors = (summed / counts).astype(np.float32)
    return pooled


@lru_cache(maxsize=4)
def _load_directory(directory: Path) -> EmbeddingModel:
    return EmbeddingModel(directory)


def resolve_model_directory(name_or_path: str, hub: ModelHub | None = None) -> Path:
    """The directory a setting value names: "" or a shipped model's name (the default is
    "all-MiniLM-L6-v2") for a model in the package, an existing directory of the same layout, or
    a Hugging Face model id ("owner/name[@revision]"), fetched into the cache the first time."""
    value = name_or_path.strip()
    shipped = SHIPPED_MODELS / (value or DEFAULT_MODEL)
    if "/" not in value and os.sep not in value and shipped.is_dir():
        return shipped
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / MANIFEST_FILE).is_file():
            raise EmbeddingModelError(
                f"{path}: not an embedding model directory (expected model.onnx, tokenizer.json,"
                f" {CONFIG_FILE} and {MANIFEST_FILE}, as scripts/export_embedding_model.py writes)"
            )
        return path.resolve()
    if is_model_id(value) and not value.startswith((".", "~")):
        try:
            return fetch_model(value, hub or ModelHub())
        except ModelHubError as error:
            raise EmbeddingModelError(str(error)) from None
    shipped_names = sorted(p.name for p in SHIPPED_MODELS.iterdir() if p.is_dir())
    raise EmbeddingModelError(
        f"embedding model {value!r} is neither a shipped model ({', '.join(shipped_names)}),"
        f" {OFF!r} (semantic ranking off), an existing model directory nor a Hugging Face model"
        " id (owner/name)"
    )


def load_embedding_model(
    name_or_path: str | None, hub: ModelHub | None = None
) -> EmbeddingModel | None:
    """The model a setting names (PAPERBOY_EMBEDDING_MODEL): None for "none" (the semantic layer
    is off), the shipped default for "" or None, a shipped model by name, a model directory, or a
    Hugging Face model id (fetched once into `hub`'s cache). Each directory is loaded, checked and
    given its session once per process."""
    value = (name_or_path or "").strip()
    if value.lower() == OFF:
        return None
    return _load_directory(resolve_model_directory(value, hub))


def check_embedding_setting(name_or_path: str | None, hub: ModelHub | None = None) -> None:
    """Fail fast on a model setting that names nothing loadable or files that do not match their
    manifest, before a process starts work (the model itself loads when first needed). A model id
    not yet in the cache is fetched here, once."""
    value = (name_or_path or "").strip()
    if value.lower() != OFF:
        verify_model_directory(resolve_model_directory(value, hub))
