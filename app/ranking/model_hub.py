"""Fetching a sentence-transformers model from the Hugging Face Hub, once, into the model cache,
in the directory layout `app.ranking.embedding` loads. A model id ("owner/name", optionally
"@revision") is resolved to a cache directory; when that directory is complete the network is never
contacted again, so a host fetches while it has network and runs offline afterwards.

What is fetched is the repository's own ONNX export (`onnx/model.onnx`), its fast tokenizer, and
the sentence-transformers module configuration, which must describe mean pooling (with or without
L2 normalisation): anything else is refused with the reason rather than loaded as a different
model. The files land in a temporary directory beside the cache entry and are renamed into place
only when all of them arrived and their checksums are written, so an interrupted download leaves
no half model behind."""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.config import Settings

DEFAULT_HUB_URL = "https://huggingface.co"
DEFAULT_CACHE_DIR = "~/.cache/paperboy/models"
ONNX_FILE = "onnx/model.onnx"
MODULES_FILE = "modules.json"
MODEL_ID = re.compile(
    r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w.-]+))?$"
)
# Every input the Hub's sentence-transformers exports take; the loader passes those the model has.
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0


class ModelHubError(RuntimeError):
    """A model id that cannot be fetched, or whose files describe a model Paperboy cannot run."""


@dataclass(frozen=True)
class ModelHub:
    """Where model ids are fetched from and cached (`PAPERBOY_MODEL_HUB_URL`,
    `PAPERBOY_MODEL_CACHE`)."""

    cache_dir: str = DEFAULT_CACHE_DIR
    url: str = DEFAULT_HUB_URL

    def entry(self, model_id: str) -> Path:
        """The cache directory of a model id: owner--name[@revision], one per id."""
        return Path(self.cache_dir).expanduser() / model_id.replace("/", "--")


def model_hub(settings: Settings) -> ModelHub:
    """Where this deployment fetches and keeps models named by Hugging Face id."""
    return ModelHub(cache_dir=settings.model_cache, url=settings.model_hub_url)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_model_id(value: str) -> bool:
    return MODEL_ID.match(value) is not None


def fetch_model(model_id: str, hub: ModelHub) -> Path:
    """The cache directory of `model_id`, downloading it first if it is not complete there."""
    match = MODEL_ID.match(model_id)
    if match is None:
        raise ModelHubError(f"{model_id!r} is not a Hugging Face model id (owner/name[@revision])")
    target = hub.entry(model_id)
    if (target / "MANIFEST.json").is_file():
        return target
    repo, revision = match["repo"], match["revision"] or "main"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with httpx.Client(
            base_url=f"{hub.url.rstrip('/')}/{repo}/resolve/{revision}/",
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            follow_redirects=True,
            headers={"User-Agent": "Paperboy model fetch"},
        ) as client:
            commit = _fetch_files(client, staging, model_id=model_id, hub=hub)
        _write_manifest(staging, model_id=model_id, repo=repo, revision=revision, commit=commit)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "MANIFEST.json").is_file():  # not another process's complete fetch
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _fetch_files(client: httpx.Client, staging: Path, *, model_id: str, hub: ModelHub) -> str:
    modules = orjson.loads(_get(client, MODULES_FILE, model_id=model_id, hub=hub))
    pooling_dir, normalize = _pipeline(modules, model_id=model_id)
    pooling = orjson.loads(_get(client, f"{pooling_dir}/config.json", model_id=model_id, hub=hub))
    modes = {key for key, value in pooling.items() if key.startswith("pooling_mode_") and value}
    if modes != {"pooling_mode_mean_tokens"}:
        raise ModelHubError(f"{model_id}: pools by {sorted(modes)}, not the mean of its tokens")
    sentence_config = orjson.loads(
        _get(client, "sentence_bert_config.json", model_id=model_id, hub=hub)
    )
    transformer_config = orjson.loads(_get(client, "config.json", model_id=model_id, hub=hub))
    (staging / "tokenizer.json").write_bytes(
        _get(client, "tokenizer.json", model_id=model_id, hub=hub)
    )
    commit = _download(client, ONNX_FILE, staging / "model.onnx", model_id=model_id, hub=hub)
    try:
        config = {
            "name": model_id,
            "source_model": model_id,
            "precision": "as published",
            "dimension": int(pooling["word_embedding_dimension"]),
            "max_seq_length": int(
                sentence_config.get("max_seq_length")
                or transformer_config["max_position_embeddings"]
            ),
            "pooling": "mean",
            "normalize": normalize,
            "inputs": list(INPUTS),
            "output": "last_hidden_state",
        }
    except (KeyError, TypeError, ValueError) as error:
        raise ModelHubError(f"{model_id}: incomplete model configuration ({error})") from error
    (staging / "embedding.json").write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
    return commit


def _pipeline(modules: Any, *, model_id: str) -> tuple[str, bool]:
    """The pooling module's folder and whether vectors are L2-normalised, from modules.json."""
    kinds = [str(module.get("type", "")).rsplit(".", 1)[-1] for module in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(kind != "Normalize" for kind in kinds[2:]):
        raise ModelHubError(
            f"{model_id}: a pipeline of {' -> '.join(kinds)}; only Transformer -> Pooling"
            " [-> Normalize] models are supported"
        )
    return str(modules[1]["path"]), "Normalize" in kinds


def _failure(model_id: str, path: str, hub: ModelHub, error: Exception | str) -> ModelHubError:
    return ModelHubError(
        f"could not fetch {path} of {model_id} from {hub.url} ({error}). On a host without"
        " network, export the model with scripts/export_embedding_model.py and set"
        " PAPERBOY_EMBEDDING_MODEL to its directory"
    )


def _get(client: httpx.Client, path: str, *, model_id: str, hub: ModelHub) -> bytes:
    try:
        response = client.get(path)
    except httpx.HTTPError as error:
        raise _failure(model_id, path, hub, error) from error
    if response.status_code != 200:
        raise _failure(model_id, path, hub, f"HTTP {response.status_code}")
    return response.content


def _download(
    client: httpx.Client, path: str, destination: Path, *, model_id: str, hub: ModelHub
) -> str:
    """Stream a (large) file to disk; returns the repository commit the Hub says it came from."""
    try:
        with client.stream("GET", path) as response:
            if response.status_code != 200:
                raise _failure(model_id, path, hub, f"HTTP {response.status_code}")
            with destination.open("wb") as out:
                for block in response.iter_bytes(1 << 20):
                    out.write(block)
            return str(response.headers.get("x-repo-commit", ""))
    except httpx.HTTPError as error:
        raise _failure(model_id, path, hub, error) from error


def _write_manifest(
    directory: Path, *, model_id: str, repo: str, revision: str, commit: str
) -> None:
    files = {path.name: file_sha256(path) for path in sorted(directory.iterdir())}
    manifest = {
        "name": model_id,
        "source": {"hub": repo, "revision": revision, "commit": commit or None},
        "files": files,
    }
    (directory / "MANIFEST.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
