"""Embedding benchmark: a day of papers (1,500 titles + abstracts: the bundled sample page's 185,
then recombinations of its sentences, so lengths read like arXiv abstracts) encoded with the
shipped int8 model, each model in a child process of its own so that its peak RSS is its own.
The baseline in the same run is the fp32 ONNX export of the same model (written outside the repo by
`scripts/export_embedding_model.py --fp32-out DIR`); `--model DIR` adds other model directories
(all-mpnet-base-v2, exported with `--model mpnet --out DIR`). Agreement is the cosine of each
paper's vector with the baseline's. Goal (issue 13): <= 30 s and <= 500 MB for 1,500 papers."""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

from app.ingest.sources import PAGE, PaperRecord, parse_source
from app.ranking.embedding import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MODEL,
    SHIPPED_MODELS,
    load_embedding_model,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "app" / "sample" / "trending-papers-page.txt"
FP32_BASELINE = Path(tempfile.gettempdir()) / "paperboy-models" / "all-MiniLM-L6-v2-fp32"


def make_papers(count: int, seed: int = 13) -> list[str]:
    """The sample's papers, then recombinations of their sentences and title words."""
    rng = random.Random(seed)
    with SAMPLE.open("rb") as stream:
        records = [r for r in parse_source(stream, PAGE) if isinstance(r, PaperRecord)]
    papers = [f"{r.title}. {r.abstract}" for r in records]
    sentences = [s.strip() + "." for r in records for s in r.abstract.split(". ") if s.strip()]
    title_words = [w for r in records for w in r.title.split()]
    while len(papers) < count:
        title = " ".join(rng.sample(title_words, rng.randint(5, 11)))
        papers.append(f"{title}. " + " ".join(rng.sample(sentences, rng.randint(5, 9))))
    return papers[:count]


def child(directory: str, count: int, batch_size: int, vectors_out: str) -> None:
    """Runs in its own process: load, encode, report (JSON on stdout)."""
    papers = make_papers(count)
    started = time.perf_counter()
    model = load_embedding_model(directory)
    assert model is not None
    model.encode(["the inference session opens at the first encode"])
    loaded = time.perf_counter() - started
    cpu = time.process_time()
    started = time.perf_counter()
    vectors = model.encode(papers, batch_size=batch_size)
    seconds = time.perf_counter() - started
    np.save(vectors_out, vectors)
    tokens = model.token_counts(papers)
    report = {
        "name": model.name,
        "file_mb": (model.directory / "model.onnx").stat().st_size / 1e6,
        "load_s": loaded,
        "encode_s": seconds,
        "cpu_s": time.process_time() - cpu,
        "papers_per_s": count / seconds,
        "mean_tokens": float(np.mean(tokens)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    sys.stdout.write(orjson.dumps(report).decode() + "\n")


def measure(
    directory: Path, count: int, batch_size: int, tmp: Path
) -> tuple[dict[str, float], Path]:
    vectors = tmp / f"{directory.name}.npy"
    result = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(directory),
            "--count",
            str(count),
            "--batch-size",
            str(batch_size),
            "--vectors",
            str(vectors),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    report: dict[str, float] = orjson.loads(result.stdout.strip().splitlines()[-1])
    return report, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--baseline", type=Path, default=FP32_BASELINE, help="fp32 model directory (baseline)"
    )
    parser.add_argument("--model", type=Path, action="append", default=[], help="another model")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--vectors", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.count, args.batch_size, args.vectors)
        return

    console = Console(width=150)
    models: list[tuple[str, Path]] = [("shipped", SHIPPED_MODELS / DEFAULT_MODEL)]
    if args.baseline.is_dir():
        models.insert(0, ("baseline", args.baseline))
    else:
        console.print(
            f"[yellow]no fp32 baseline at {args.baseline}: export it with "
            "scripts/export_embedding_model.py --fp32-out DIR, or pass --baseline DIR[/]"
        )
    models += [("option", path) for path in args.model]

    console.print(
        f"{args.count} papers, batch size {args.batch_size}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    reports = []
    with tempfile.TemporaryDirectory(prefix="paperboy-bench-embed-") as tmp:
        for role, path in models:
            report, vectors = measure(path, args.count, args.batch_size, Path(tmp))
            reports.append((role, report, np.load(vectors)))
        reference = reports[0][2] if reports[0][0] == "baseline" else None

        table = Table(title=f"Embedding {args.count} papers (title + abstract)")
        for column in (
            "model",
            "role",
            "model.onnx MB",
            "load s",
            "encode s",
            "papers/s",
            "CPU s",
            "peak RSS MB",
            "cosine to baseline (min / mean)",
        ):
            table.add_column(column, justify="left" if column in ("model", "role") else "right")
        for role, report, vectors in reports:
            agreement = "-"
            if reference is not None and vectors.shape == reference.shape and role != "baseline":
                cosine = (vectors * reference).sum(axis=1)
                agreement = f"{cosine.min():.4f} / {cosine.mean():.4f}"
            table.add_row(
                str(report["name"]),
                role,
                f"{report['file_mb']:.1f}",
                f"{report['load_s']:.2f}",
                f"{report['encode_s']:.1f}",
                f"{report['papers_per_s']:.1f}",
                f"{report['cpu_s']:.1f}",
                f"{report['peak_rss_mb']:.0f}",
                agreement,
            )
        console.print(table)
        shipped = next(report for role, report, _ in reports if role == "shipped")
        console.print(
            f"shipped model: {shipped['encode_s']:.1f} s (goal <= 30 s), peak RSS "
            f"{shipped['peak_rss_mb']:.0f} MB (goal <= 500 MB), "
            f"{shipped['mean_tokens']:.0f} tokens a paper on average; "
            f"load average {os.getloadavg()[0]:.1f} at the end"
        )


if __name__ == "__main__":
    main()
