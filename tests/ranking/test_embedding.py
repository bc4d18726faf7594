"""The embedding model as shipped: it loads offline, its checksum guards it, its vectors agree with
the reference sentence-transformers model (fp32, recorded by scripts/export_embedding_model.py in
tests/data/embedding-reference.json), and similarity follows meaning. The real model, no mocks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from app.ranking.embedding import (
    DEFAULT_MODEL,
    SHIPPED_MODELS,
    EmbeddingModel,
    EmbeddingModelError,
    load_embedding_model,
)
from tests.conftest import DATA

REFERENCE = DATA / "embedding-reference.json"

CHATBOTS = "making chatbots respond faster"
SPECULATIVE = (
    "Speculative decoding accelerates large language model inference: a small draft model "
    "proposes several tokens that the large target model verifies in a single forward pass, "
    "cutting latency by two to three times without changing the output distribution."
)
PROTEINS = (
    "We predict the three-dimensional structure of proteins from their amino acid sequence with "
    "a deep network trained on the Protein Data Bank, reaching atomic accuracy on most targets."
)


@pytest.fixture(scope="module")
def model() -> EmbeddingModel:
    loaded = load_embedding_model("")
    assert loaded is not None
    return loaded


def test_the_shipped_model_loads_by_default_and_by_name(model: EmbeddingModel) -> None:
    assert model.name == "all-MiniLM-L6-v2-int8"
    assert model.dimension == 384 and model.max_length == 256
    assert load_embedding_model(None) is model  # one session per process
    assert load_embedding_model(DEFAULT_MODEL) is model
    assert load_embedding_model(str(SHIPPED_MODELS / DEFAULT_MODEL)) is model


def test_none_turns_the_semantic_layer_off() -> None:
    assert load_embedding_model("none") is None
    assert load_embedding_model(" None ") is None


def test_vectors_agree_with_the_reference_model(model: EmbeddingModel) -> None:
    reference = orjson.loads(REFERENCE.read_bytes())
    expected = np.asarray(reference["vectors"], dtype=np.float32)
    vectors = model.encode(reference["sentences"], batch_size=4)
    assert vectors.dtype == np.float32 and vectors.shape == expected.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = (vectors * expected).sum(axis=1)
    # int8 (7-bit weights) against fp32: measured min 0.986, mean 0.992, max abs diff 0.032,
    # the same on CPUs with and without VNNI (full 8-bit weights overflowed without it).
    assert cosine.min() >= 0.98, cosine
    assert cosine.mean() >= 0.99, cosine
    assert np.abs(vectors - expected).max() <= 0.035


def test_encode_keeps_the_order_whatever_the_lengths_and_batches(model: EmbeddingModel) -> None:
    texts = [
        PROTEINS,
        "a",
        SPECULATIVE * 8,  # truncated to the model's 256 tokens
        CHATBOTS,
        "",
        "graph neural networks for molecules",
        SPECULATIVE,
    ]
    one_by_one = np.vstack([model.encode([text]) for text in texts])
    for batch_size in (1, 2, 3, 32):
        together = model.encode(texts, batch_size=batch_size)
        np.testing.assert_array_equal(together, model.encode(texts, batch_size=batch_size))
        # int8 activations are quantized with one scale per batch, so a vector moves a little
        # with its batch companions (measured: cosine >= 0.992 to the same sentence encoded
        # alone, 0.97 for the empty text and 'a'); each row is still its own text's and no other's.
        similarity = together @ one_by_one.T
        assert (similarity.argmax(axis=1) == np.arange(len(texts))).all()
        closeness = similarity.diagonal()
        assert closeness.min() >= 0.95, closeness
        assert closeness[[0, 2, 3, 5, 6]].min() >= 0.99, closeness
    np.testing.assert_allclose(model.encode(texts, batch_size=1), one_by_one, atol=1e-6)
    assert model.encode([]).shape == (0, 384)
    # what lies past the maximum length changes nothing
    np.testing.assert_allclose(
        model.encode([SPECULATIVE * 8 + " " + PROTEINS]), model.encode([SPECULATIVE * 8]), atol=1e-6
    )


def test_closeness_follows_meaning(model: EmbeddingModel) -> None:
    topic, speculative, proteins = model.encode([CHATBOTS, SPECULATIVE, PROTEINS])
    assert float(topic @ speculative) > float(topic @ proteins) + 0.1


def test_a_bad_setting_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingModelError, match="neither a shipped model"):
        load_embedding_model(str(tmp_path / "missing"))
    with pytest.raises(EmbeddingModelError, match="neither a shipped model"):
        load_embedding_model("no such model")
    with pytest.raises(EmbeddingModelError, match="not an embedding model directory"):
        load_embedding_model(str(tmp_path))


def test_a_changed_model_file_fails_its_checksum(tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(SHIPPED_MODELS / DEFAULT_MODEL, copy)
    loaded = load_embedding_model(str(copy))  # an intact copy loads
    assert loaded is not None and loaded.name == "all-MiniLM-L6-v2-int8"

    tampered = tmp_path / "tampered"
    shutil.copytree(copy, tampered)
    data = bytearray((tampered / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tampered / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(EmbeddingModelError, match=r"model\.onnx: SHA-256 .* does not match"):
        load_embedding_model(str(tampered))

    unlisted = tmp_path / "unlisted"
    shutil.copytree(copy, unlisted)
    manifest = orjson.loads((unlisted / "MANIFEST.json").read_bytes())
    del manifest["files"]["tokenizer.json"]
    (unlisted / "MANIFEST.json").write_bytes(orjson.dumps(manifest))
    with pytest.raises(EmbeddingModelError, match=r"does not list tokenizer\.json"):
        load_embedding_model(str(unlisted))


def test_the_inference_runtime_loads_only_when_something_is_encoded() -> None:
    """A compose whose topic vectors are all cached needs the model's name, never its session:
    that process does not pay onnxruntime's memory."""
    script = (
        "import sys\n"
        "from app.ranking.embedding import load_embedding_model\n"
        "model = load_embedding_model('')\n"
        "print(model.name, 'onnxruntime' in sys.modules)\n"
        "model.encode(['making chatbots respond faster'])\n"
        "print('onnxruntime' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.split() == ["all-MiniLM-L6-v2-int8", "False", "True"]
