"""A model named by Hugging Face id is fetched once, over real HTTP, from a local server that
serves a repository in the Hub's layout (the shipped model's files, as the Hub publishes
sentence-transformers models), into the cache; afterwards it loads with the hub gone. A model the
encoder cannot run, a missing repository and an unreachable hub are clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from app.ranking.embedding import (
    DEFAULT_MODEL,
    SHIPPED_MODELS,
    EmbeddingModelError,
    check_embedding_setting,
    load_embedding_model,
)
from app.ranking.model_hub import ModelHub
from tests.support.http_server import PayloadServer, Route, serve

REPO = "sentence-transformers/all-MiniLM-L6-v2"
SHIPPED = SHIPPED_MODELS / DEFAULT_MODEL


def hub_repository(pooling: dict[str, object] | None = None) -> dict[str, bytes]:
    """The files of a sentence-transformers repository on the Hub, by path."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    return {
        "modules.json": orjson.dumps(modules),
        "1_Pooling/config.json": orjson.dumps(
            pooling
            or {
                "word_embedding_dimension": 384,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
            }
        ),
        "sentence_bert_config.json": orjson.dumps({"max_seq_length": 256, "do_lower_case": False}),
        "config.json": orjson.dumps({"hidden_size": 384, "max_position_embeddings": 512}),
        "tokenizer.json": (SHIPPED / "tokenizer.json").read_bytes(),
        "onnx/model.onnx": (SHIPPED / "model.onnx").read_bytes(),
    }


def routes(files: dict[str, bytes], repo: str = REPO) -> dict[str, Route]:
    return {f"/{repo}/resolve/main/{path}": Route(body=body) for path, body in files.items()}


@pytest.fixture
def hub_server() -> Iterator[PayloadServer]:
    with serve(routes(hub_repository())) as server:
        yield server


def test_a_model_id_is_fetched_once_and_then_loads_offline(
    hub_server: PayloadServer, tmp_path: Path
) -> None:
    hub = ModelHub(cache_dir=str(tmp_path / "models"), url=hub_server.base_url)
    check_embedding_setting(REPO, hub)  # start-up fetches it
    fetched = tmp_path / "models" / "sentence-transformers--all-MiniLM-L6-v2"
    assert sorted(p.name for p in fetched.iterdir()) == [
        "MANIFEST.json",
        "embedding.json",
        "model.onnx",
        "tokenizer.json",
    ]
    assert hub_server.hits[f"/{REPO}/resolve/main/onnx/model.onnx"] == 1
    config = orjson.loads((fetched / "embedding.json").read_bytes())
    assert (config["dimension"], config["max_seq_length"], config["normalize"]) == (384, 256, True)

    offline = ModelHub(cache_dir=str(tmp_path / "models"), url="http://127.0.0.1:9")
    model = load_embedding_model(REPO, offline)  # the cache answers; the hub is not asked
    shipped = load_embedding_model(DEFAULT_MODEL)
    assert model is not None and shipped is not None
    assert model.name == REPO
    texts = ["making chatbots respond faster", "protein structure prediction"]
    assert np.allclose(model.encode(texts), shipped.encode(texts), atol=1e-6)
    assert hub_server.hits[f"/{REPO}/resolve/main/onnx/model.onnx"] == 1
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]


def test_a_model_that_pools_otherwise_is_refused_and_nothing_is_cached(tmp_path: Path) -> None:
    cls_pooling: dict[str, object] = {
        "word_embedding_dimension": 384,
        "pooling_mode_cls_token": True,
        "pooling_mode_mean_tokens": False,
    }
    with serve(routes(hub_repository(pooling=cls_pooling))) as server:
        hub = ModelHub(cache_dir=str(tmp_path), url=server.base_url)
        with pytest.raises(EmbeddingModelError, match="not the mean of its tokens"):
            check_embedding_setting(REPO, hub)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_repository_or_an_unreachable_hub_is_a_clear_error(
    hub_server: PayloadServer, tmp_path: Path
) -> None:
    hub = ModelHub(cache_dir=str(tmp_path), url=hub_server.base_url)
    with pytest.raises(EmbeddingModelError, match=r"could not fetch modules\.json .*HTTP 404"):
        check_embedding_setting("someone/no-such-model", hub)
    unreachable = ModelHub(cache_dir=str(tmp_path), url="http://127.0.0.1:9")
    with pytest.raises(
        EmbeddingModelError, match="without network, export the model with scripts/export"
    ):
        check_embedding_setting(REPO, unreachable)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_download_leaves_no_model_behind(tmp_path: Path) -> None:
    files = hub_repository()
    broken = routes(files)
    broken[f"/{REPO}/resolve/main/onnx/model.onnx"] = Route(always=503)
    with serve(broken) as server:
        hub = ModelHub(cache_dir=str(tmp_path), url=server.base_url)
        with pytest.raises(EmbeddingModelError, match="HTTP 503"):
            check_embedding_setting(REPO, hub)
    assert list(tmp_path.iterdir()) == []
