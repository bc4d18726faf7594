"""Ingest benchmark: generates N synthetic but realistically shaped arXiv-snapshot JSON Lines
records (the Kaggle `arxiv-metadata-oai-snapshot` format, ~1 kB abstracts, unique new-style ids and
titles, from a seeded generator so every run sees the same bytes), loads them into a fresh, migrated
Postgres database with Paperboy's real `ingest_job` (a first load, then a re-ingest of the same file
that must insert nothing), and compares the throughput with a floor: the same rows parsed with plain
`orjson.loads` and written with asyncpg's binary COPY into an identically migrated `paper` table
(timed as parse + COPY and as COPY alone). Every load runs in its own child process that reports its
peak resident set size (VmHWM), so the generator's memory never pollutes the figure; `--check-flat`
repeats the first load at 2x N to show that memory does not grow with input size, and `--profile`
breaks one Paperboy ingest down into parse, normalise, merge, staging COPY and SQL time and lists
the cProfile hot spots. `--hostile` instead measures the peak RSS of inputs built to exhaust
memory (a 300 MB one-line JSON Lines file gzipped to 0.3 MB; a 56 MB daily-papers list fetched
from a local HTTP server), each loaded by Paperboy and by the code before the ingest hardening
(its app/ at `HOSTILE_BASELINE_REF`, taken from git) in the same harness and the same run.
Databases are created per run and dropped at the end, also on failure."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import os
import pstats
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any, TypeVar

import asyncpg
import orjson
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

import app.ingest.normalise
import app.ingest.upsert
import app.jobs
from app.config import Settings
from app.db import create_engine, create_session_factory, migrate
from app.jobs import ingest_job

DEFAULT_RECORDS = 200_000
DEFAULT_URL_BASE = "postgresql+asyncpg://postgres@127.0.0.1:5432"
DEFAULT_SEED = 20_240_101
TARGET_PAPERS_PER_SECOND = 50_000
TARGET_RATIO = 0.5
COPY_BATCH = 5_000
SOURCE = "arxiv-jsonl"
RESULT_MARKER = "@@BENCH-RESULT@@ "
SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
PARSE_LABEL = "parse (read + orjson + PaperRecord)"
T = TypeVar("T")
COPY_COLUMNS = (
    "arxiv_id",
    "title",
    "title_key",
    "abstract",
    "authors",
    "categories",
    "source",
    "first_seen_at",
    "updated_at",
)

# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------

ADJECTIVES = (
    "adaptive", "robust", "scalable", "efficient", "sparse", "hierarchical", "contrastive",
    "self-supervised", "federated", "differentiable", "probabilistic", "causal", "multimodal",
    "low-rank", "quantized", "distributed", "asynchronous", "stochastic", "variational",
    "Bayesian", "equivariant", "lightweight", "interpretable", "generalizable", "adversarial",
    "unsupervised", "semi-supervised", "zero-shot", "few-shot", "long-context", "memory-efficient",
    "energy-based", "graph-based", "physics-informed", "data-driven", "end-to-end",
    "nonparametric", "kernel-based", "recurrent", "convolutional", "attention-based", "geometric",
    "topological", "spectral", "latent", "implicit", "online", "offline", "continual",
    "incremental", "decentralized", "privacy-preserving", "fair", "calibrated",
    "uncertainty-aware", "parameter-efficient", "retrieval-augmented", "instruction-tuned",
    "compositional", "modular", "neural", "symbolic", "neuro-symbolic", "hybrid", "streaming",
    "randomized", "approximate", "near-optimal", "sublinear", "linear-time", "high-dimensional",
    "low-resource", "cross-lingual", "multilingual", "temporal", "spatio-temporal", "dynamic",
    "sequential", "parallel", "heterogeneous", "anisotropic", "nonlinear", "convex", "nonconvex",
    "discrete", "continuous", "invariant", "conditional", "autoregressive", "masked",
)  # fmt: skip
NOUNS = (
    "transformer", "network", "encoder", "decoder", "representation", "embedding", "estimator",
    "policy", "optimizer", "sampler", "kernel", "operator", "graph", "manifold", "model",
    "framework", "architecture", "benchmark", "objective", "regularizer", "algorithm", "solver",
    "attention mechanism", "diffusion model", "language model", "autoencoder", "agent", "planner",
    "retriever", "tokenizer", "classifier", "detector", "generator", "discriminator", "critic",
    "simulator", "protocol", "scheduler", "compiler", "index", "sketch", "codebook", "prior",
    "posterior", "gradient estimator", "normalizing flow", "neural field", "lattice", "tensor",
    "spectrum", "bound", "metric", "loss", "reward model", "value function", "world model",
    "knowledge graph", "point cloud", "mesh", "signal", "channel", "cache", "memory", "circuit",
    "qubit", "Hamiltonian", "wavefunction", "black hole", "galaxy", "neutrino", "phase transition",
    "spin chain", "superconductor", "random walk", "Markov chain", "game", "mechanism", "auction",
    "hypergraph", "state space model", "vision transformer", "adapter", "prompt", "ensemble",
)  # fmt: skip
TASKS = (
    "image classification", "machine translation", "question answering", "code generation",
    "molecular property prediction", "protein structure prediction", "speech recognition",
    "semantic segmentation", "object detection", "time series forecasting", "anomaly detection",
    "recommendation", "link prediction", "program synthesis", "theorem proving",
    "reinforcement learning", "domain adaptation", "text summarization", "visual grounding",
    "motion planning", "weather forecasting", "drug discovery", "graph partitioning",
    "matrix completion", "causal discovery", "density estimation", "neural rendering",
    "video understanding", "dialogue generation", "information retrieval", "few-shot learning",
    "continual learning", "federated learning", "model compression", "hyperparameter optimization",
    "sparse regression", "community detection", "trajectory prediction", "medical image analysis",
    "legal document analysis", "climate modelling", "quantum error correction",
    "portfolio optimization", "traffic prediction", "3D reconstruction", "pose estimation",
    "named entity recognition", "sentiment analysis", "entity linking", "fact verification",
    "image generation", "speech synthesis", "robot manipulation", "tabular learning",
    "active learning", "label-noise learning", "out-of-distribution detection", "data selection",
)  # fmt: skip
PROPERTIES = (
    "robustness", "sample complexity", "expressivity", "generalization", "stability", "fairness",
    "calibration", "interpretability", "scalability", "convergence", "identifiability",
    "optimality", "efficiency", "privacy", "consistency", "transferability", "sparsity",
)  # fmt: skip
CONDITIONS = (
    "distribution shift", "label noise", "partial observability", "limited supervision",
    "adversarial perturbations", "heavy-tailed noise", "missing data", "class imbalance",
    "communication constraints", "privacy constraints", "non-stationarity",
    "model misspecification",
)  # fmt: skip
DATASETS = (
    "ImageNet", "CIFAR-10", "CIFAR-100", "COCO", "WMT'14", "SQuAD", "GLUE", "SuperGLUE", "MMLU",
    "HumanEval", "GSM8K", "LibriSpeech", "Cityscapes", "ADE20K", "KITTI", "nuScenes", "OGB", "QM9",
    "PDBbind", "MIMIC-III", "WikiText-103", "the Pile", "C4", "LAION-400M", "Kinetics-400",
    "Atari", "MuJoCo", "D4RL", "ScanNet", "ShapeNet", "ERA5", "BEIR", "MS MARCO",
    "Long Range Arena",
)  # fmt: skip
METRICS = ("accuracy", "F1", "BLEU", "mIoU", "AUROC", "top-1 accuracy", "exact match", "pass@1")
NAME_HEADS = (
    "Flash", "Deep", "Sparse", "Hyper", "Meta", "Graph", "Quant", "Neuro", "Auto", "Poly", "Omni",
    "Uni", "Turbo", "Fast", "Lite", "Mega", "Nano", "Proto", "Swift", "Echo", "Atlas", "Orbit",
    "Prism", "Vector", "Pixel", "Token", "Lattice", "Cortex", "Sigma", "Delta", "Gamma", "Helix",
    "Nova", "Astra", "Tensor", "Spectra", "Morph", "Chrono", "Geo", "Bio",
)  # fmt: skip
NAME_TAILS = (
    "Former", "Net", "GAN", "Diff", "Mix", "BERT", "Search", "Flow", "Seg", "Mamba", "LM", "Fusion",
    "Align", "Gen", "Bench", "Prompt", "Tune", "Router", "Cache", "Sketch", "Walk", "Field", "KAN",
    "Agent", "Coder", "Vision", "Speech", "Graph", "Hash", "Pool",
)  # fmt: skip
LIMITATIONS = (
    "computationally expensive for long sequences",
    "brittle under distribution shift",
    "difficult to scale beyond a few thousand examples",
    "sensitive to the choice of hyperparameters",
    "limited by the quality of the available annotations",
    "poorly understood from a theoretical point of view",
    "prone to overfitting in the low-data regime",
    "memory-bound on commodity hardware",
)
REQUIREMENTS = (
    "labelled data", "access to the model weights", "a differentiable simulator", "retraining",
    "task-specific architectures", "second-order information", "a pretrained teacher model",
)  # fmt: skip
RATES = (
    r"1/\sqrt{T}",
    r"\log T / T",
    r"d/\epsilon^2",
    r"n \log n",
    r"\sqrt{d T \log T}",
    r"\kappa \log(1/\epsilon)",
)
FIELDS = {
    "cs.LG": "machine learning",
    "cs.CV": "computer vision",
    "cs.CL": "natural language processing",
    "cs.AI": "artificial intelligence",
    "cs.RO": "robotics",
    "stat.ML": "statistical learning",
    "math.OC": "optimization",
    "cs.IR": "information retrieval",
    "cs.CR": "computer security",
    "cs.DC": "distributed computing",
    "cs.DS": "algorithm design",
    "cs.IT": "information theory",
    "eess.SP": "signal processing",
    "eess.AS": "audio processing",
    "quant-ph": "quantum computing",
    "cond-mat.str-el": "condensed matter physics",
    "astro-ph.GA": "galactic astrophysics",
    "q-bio.QM": "computational biology",
    "econ.EM": "econometrics",
    "math.PR": "probability theory",
    "physics.flu-dyn": "fluid dynamics",
}
CATEGORY_WEIGHTS = (30, 18, 16, 10, 4, 4, 3, 3, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
# Pre-2007 identifiers: archive (as in the id) and the category it is listed under.
OLD_ARCHIVES = (
    ("hep-th", "hep-th"),
    ("hep-ph", "hep-ph"),
    ("astro-ph", "astro-ph"),
    ("cond-mat", "cond-mat.stat-mech"),
    ("gr-qc", "gr-qc"),
    ("quant-ph", "quant-ph"),
    ("math", "math.AG"),
    ("math", "math.PR"),
    ("cs", "cs.DS"),
    ("cs", "cs.LG"),
    ("physics", "physics.comp-ph"),
)
FIRST_NAMES = (
    "Wei", "Yuki", "Anna", "James", "Maria", "David", "Olga", "Rahul", "Priya", "Jun", "Hao",
    "Sofia", "Lukas", "Ahmed", "Fatima", "Chen", "Elena", "Mikhail", "Ines", "Kenji", "Seo-yeon",
    "Min-jun", "Tomás", "José", "Zoë", "Łukasz", "Søren", "Jürgen", "Chloé", "Amélie", "Thomas",
    "Sarah", "Daniel", "Laura", "Ana", "Mohammed", "Ayşe", "Nikolai", "Arjun", "Mei", "Xiaoyu",
    "Yifan", "Zhiwei", "Ravi", "Hiroshi", "Emma", "Noah", "Olivia", "Lars", "Ingrid",
)  # fmt: skip
LAST_NAMES = (
    "Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Smith", "Johnson", "Müller",
    "Schmidt", "García", "Martínez", "Rossi", "Bianchi", "Kim", "Park", "Lee", "Nguyen", "Tanaka",
    "Suzuki", "Sato", "Ivanov", "Petrov", "Kowalski", "Nowak", "Dubois", "Lefèvre", "Jensen",
    "Hansen", "Andersson", "Singh", "Patel", "Kumar", "Gupta", "Cohen", "Levi", "Öztürk", "Yılmaz",
    "O'Brien", "Murphy", "Silva", "Santos", "Costa", "de Souza", "van der Berg", "Novák", "Horvat",
    "Fernández", "Brown", "Taylor", "Wilson", "Davies", "Evans",
)  # fmt: skip
LICENSES = (
    None,
    "http://arxiv.org/licenses/nonexclusive-distrib/1.0/",
    "http://arxiv.org/licenses/nonexclusive-distrib/1.0/",
    "http://creativecommons.org/licenses/by/4.0/",
    "http://creativecommons.org/licenses/by/4.0/",
    "http://creativecommons.org/licenses/by-nc-sa/4.0/",
    "http://creativecommons.org/publicdomain/zero/1.0/",
)
VENUES = ("NeurIPS", "ICML", "ICLR", "CVPR", "ACL", "EMNLP", "AAAI", "KDD", "STOC", "SODA", "COLT")
JOURNALS = ("Phys. Rev. D", "Phys. Rev. Lett.", "J. Mach. Learn. Res.", "Ann. Statist.", "JHEP")
TITLE_SMALL_WORDS = frozenset({"a", "an", "and", "for", "from", "in", "of", "on", "the", "to"})

INTRO_SENTENCES = (
    "{Task} is a fundamental problem in {field}, with applications ranging from {task2} to "
    "{task3}.",
    "Recent advances in {adj2} {nouns2} have enabled remarkable progress on {task}.",
    "{Adj} {nouns} have emerged as a powerful tool for {task} in {field}.",
    "Understanding the {property} of {adj} {nouns} remains an open question in {field}.",
)
PROBLEM_SENTENCES = (
    "However, existing approaches remain {limitation}.",
    "However, most existing methods rely on {a_adj2} {noun2}, which is {limitation}.",
    "Despite their success, current {nouns2} are {limitation}, especially under {condition}.",
)
METHOD_SENTENCES = (
    "In this paper, we propose {method}, {a_adj} {noun} for {task} that exploits {adj2} {nouns2}.",
    "We introduce {method}, a novel framework that combines {adj2} {nouns2} with {adj3} {nouns3}.",
    "To address this, we present {method}, which learns {a_adj} {noun} directly from {adj2} data.",
)
BODY_SENTENCES = (
    "Our key insight is that {adj2} {nouns2} can be compressed without sacrificing {property}.",
    "Theoretically, we prove that {method} is consistent under mild assumptions on the {noun2}.",
    "We establish a convergence rate of ${rate}$, matching the known lower bound up to "
    "logarithmic factors.",
    "We further show that the learned {noun} transfers to {task2} with little or no fine-tuning.",
    "Ablation studies confirm that each component of {method} contributes to its {property}.",
    "Moreover, {method} scales linearly with the number of {nouns2} and runs {factor}x faster "
    "than prior work on a single GPU.",
    "We analyse the {property} of {adj2} {nouns2} under {condition} and identify {n} distinct "
    "failure modes.",
    "Unlike previous work, our method does not require {requirement}.",
    "We also release {a_adj2} benchmark of {big} annotated examples for {task}.",
    "Our analysis reveals a sharp phase transition in the {property} of {adj2} {nouns2} as the "
    "number of {nouns3} grows.",
    "The resulting {noun} is {adj2}, easy to implement, and compatible with standard {nouns3}.",
    "We complement our theory with simulations on {adj2} {nouns2} with up to $10^{n}$ parameters.",
)
RESULT_SENTENCES = (
    "Extensive experiments on {dataset} and {dataset2} demonstrate that {method} outperforms "
    "strong baselines by {pct}% while using {factor}x fewer parameters.",
    "On {dataset}, {method} improves {metric} from {m1} to {m2}, establishing a new state of the "
    "art.",
    "Experiments on {n} benchmarks, including {dataset} and {dataset2}, show consistent gains "
    "over {adj2} {nouns2}.",
)
CLOSING_SENTENCES = (
    "Finally, we discuss limitations of our approach and directions for future work.",
    "Code and pretrained models will be made publicly available.",
    "These findings shed new light on the role of {adj2} {nouns2} in {field}.",
    "Our results suggest that {adj2} {nouns2} are a promising alternative to {adj3} {nouns3} for "
    "{task2}.",
)
TITLE_TEMPLATES = (
    "{Method}: {Adj} {Nouns} for {Task}",
    "{Adj} {Nouns} for {Adj2} {Task}",
    "On the {Property} of {Adj} {Nouns} for {Task}",
    "Towards {Adj} {Task} with {Adj2} {Nouns}",
    "Learning {Adj} {Nouns} from {Adj2} {Nouns2}",
    "{Method}: Scaling {Adj} {Nouns} to {Task}",
    "When Do {Adj} {Nouns} Help {Task} under {Condition}?",
    "{Adj} and {Adj2} {Nouns} via {Adj3} {Nouns2}",
    "{A_Adj} {Noun} Approach to {Task} under {Condition}",
    "{Adj} {Nouns} Are {Adj2} {Nouns2}",
    "Rethinking {Adj} {Nouns} for {Task} in {Field}",
    "Provable Guarantees for {Adj} {Nouns} in {Adj2} {Task}",
    "{Method}: {Adj} {Noun} Meets {Adj2} {Noun2}",
)
PLACEHOLDER = re.compile(r"\{(\w+)\}")
WORD = re.compile(r"\w+")


def plural(noun: str) -> str:
    if noun.endswith(("s", "x", "sh", "ch")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def with_article(phrase: str) -> str:
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def title_case(phrase: str) -> str:
    return " ".join(
        word if word in TITLE_SMALL_WORDS or word[0].isupper() else word[0].upper() + word[1:]
        for word in phrase.split()
    )


TITLE_ADJECTIVES = tuple(title_case(adjective) for adjective in ADJECTIVES)
TITLE_WORDS = {
    "Adj": TITLE_ADJECTIVES,
    "Noun": tuple(title_case(noun) for noun in NOUNS),
    "Nouns": tuple(title_case(plural(noun)) for noun in NOUNS),
    "Property": tuple(title_case(value) for value in PROPERTIES),
    "Condition": tuple(title_case(value) for value in CONDITIONS),
}
ASCII_LAST_NAMES = tuple(
    re.sub(r"[^a-z]", "", unicodedata.normalize("NFKD", name).lower()) for name in LAST_NAMES
)


def dedupe_key(title: str) -> str:
    """The same case-, width- and punctuation-blind key Paperboy dedupes titles on."""
    return " ".join(WORD.findall(unicodedata.normalize("NFKC", title).casefold()))


WRAP_PATTERNS: dict[int, re.Pattern[str]] = {}


def wrap(text: str, width: int, joiner: str) -> str:
    """Greedy word wrap at spaces (words are never longer than `width` here)."""
    pattern = WRAP_PATTERNS.get(width)
    if pattern is None:
        pattern = WRAP_PATTERNS[width] = re.compile(rf"(.{{1,{width}}})(?: +|$)")
    return joiner.join(pattern.findall(text))


def arxiv_date(moment: datetime) -> str:
    return f"{moment:%a}, {moment.day} {moment:%b %Y %H:%M:%S} GMT"


class SnapshotGenerator:
    """Deterministic (per seed) generator of Kaggle-snapshot-shaped records with unique ids and
    unique titles (unique under Paperboy's title dedupe key)."""

    def __init__(self, seed: int) -> None:
        self.rng = Random(seed)
        self.title_keys: set[str] = set()
        self.month_index = 0  # new-style ids: months since 2019-01
        self.month_number = 0
        self.month_size = self._month_size()
        self.old_counter = 0  # old-style ids: archive/YYMMNNN, 500 a month from 1992-01
        self.random = self.rng.random
        self.context: dict[str, str] = {}

    def pick(self, options: Sequence[T]) -> T:
        """`Random.choice`, a little faster (and as deterministic)."""
        return options[int(self.random() * len(options))]

    def _month_size(self) -> int:
        return self.rng.randint(14_000, 22_000)

    def _new_style_id(self) -> tuple[str, datetime]:
        self.month_number += 1
        if self.month_number > self.month_size:
            self.month_index += 1
            self.month_number = 1
            self.month_size = self._month_size()
        year, month = 2019 + self.month_index // 12, self.month_index % 12 + 1
        arxiv_id = f"{year % 100:02d}{month:02d}.{self.month_number:05d}"
        return arxiv_id, self._moment_in(year, month)

    def _old_style_id(self, archive: str) -> tuple[str, datetime]:
        index, number = divmod(self.old_counter, 500)
        self.old_counter += 1
        year, month = 1992 + index // 12, index % 12 + 1
        return f"{archive}/{year % 100:02d}{month:02d}{number + 1:03d}", self._moment_in(
            year, month
        )

    def _moment_in(self, year: int, month: int) -> datetime:
        rng = self.rng
        return datetime(
            year, month, rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59),
            rng.randint(0, 59), tzinfo=UTC,
        )  # fmt: skip

    def _method(self) -> str:
        rng = self.rng
        name = self.pick(NAME_HEADS) + self.pick(NAME_TAILS)
        return name + (f"-{rng.randint(2, 4)}" if rng.random() < 0.1 else "")

    def _authors(self) -> tuple[str, list[list[str]]]:
        rng = self.rng
        roll = rng.random()
        count = rng.randint(120, 450) if roll < 0.002 else rng.randint(1, 3 if roll < 0.4 else 9)
        shown: list[str] = []
        parsed: list[list[str]] = []
        for _ in range(count):
            last = self.pick(LAST_NAMES)
            first = self.pick(FIRST_NAMES)
            if rng.random() < 0.25:
                first = first[0] + "."
            suffix = "Jr" if rng.random() < 0.01 else ""
            shown.append(f"{first} {last}" + (f" {suffix}" if suffix else ""))
            parsed.append([last, first, suffix])
        text = shown[0] if count == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
        return text, parsed

    def _title_word(self, match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "Method":
            return self._method()
        if name == "A_Adj":
            adj = self.pick(TITLE_ADJECTIVES)
            return ("An " if adj[0] in "AEIOU" else "A ") + adj
        if name == "Task":
            return title_case(self.context["task"])
        if name == "Field":
            return title_case(self.context["field"])
        return self.pick(TITLE_WORDS[name.rstrip("23")])

    def _title(self) -> str:
        for attempt in range(50):
            title = PLACEHOLDER.sub(self._title_word, self.pick(TITLE_TEMPLATES))
            if attempt >= 40:  # practically never: disambiguate the way arXiv authors do
                title += f" (Part {attempt - 39})"
            key = dedupe_key(title)
            if key not in self.title_keys:
                self.title_keys.add(key)
                return wrap(title, 72, "\n  ")
        raise RuntimeError("could not generate a unique title")

    def _sentence(self, template: str) -> str:
        rng = self.rng
        context = self.context

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in context:
                return context[name]
            if name in ("adj2", "adj3"):
                return self.pick(ADJECTIVES)
            if name == "a_adj2":
                return with_article(self.pick(ADJECTIVES))
            if name in ("noun2",):
                return self.pick(NOUNS)
            if name in ("nouns2", "nouns3"):
                return plural(self.pick(NOUNS))
            if name in ("task2", "task3"):
                return self.pick(TASKS)
            if name == "property":
                return self.pick(PROPERTIES)
            if name == "condition":
                return self.pick(CONDITIONS)
            if name == "limitation":
                return self.pick(LIMITATIONS)
            if name == "requirement":
                return self.pick(REQUIREMENTS)
            if name == "rate":
                return self.pick(RATES)
            if name == "metric":
                return self.pick(METRICS)
            if name in ("pct", "factor"):
                return f"{rng.uniform(1.2, 38.0):.1f}"
            if name == "n":
                return str(rng.randint(3, 12))
            if name == "big":
                return f"{rng.randint(2, 900) * 1000:,}"
            if name == "m1":
                return f"{rng.uniform(40, 80):.1f}"
            if name == "m2":
                return f"{rng.uniform(80, 95):.1f}"
            raise KeyError(name)

        sentence = PLACEHOLDER.sub(fill, template)
        return sentence[0].upper() + sentence[1:]

    def _abstract(self) -> str:
        rng = self.rng
        target = min(max(int(rng.gauss(1000, 220)), 450), 2000)
        parts = [
            self._sentence(self.pick(INTRO_SENTENCES)),
            self._sentence(self.pick(PROBLEM_SENTENCES)),
            self._sentence(self.pick(METHOD_SENTENCES)),
        ]
        length = sum(len(part) + 1 for part in parts)
        ending = [self._sentence(self.pick(RESULT_SENTENCES))]
        if rng.random() < 0.6:
            ending.append(self._sentence(self.pick(CLOSING_SENTENCES)))
        length += sum(len(part) + 1 for part in ending)
        for body in rng.sample(BODY_SENTENCES, len(BODY_SENTENCES)):
            if length >= target:
                break
            sentence = self._sentence(body)
            parts.append(sentence)
            length += len(sentence) + 1
        return "  " + wrap(" ".join(parts + ending), 80, "\n") + "\n"

    def record(self) -> dict[str, Any]:
        rng = self.rng
        if rng.random() < 0.03:
            archive, primary = self.pick(OLD_ARCHIVES)
            arxiv_id, created = self._old_style_id(archive)
            categories = [primary]
            field = primary.split(".")[0] + " research"
        else:
            arxiv_id, created = self._new_style_id()
            primary = rng.choices(tuple(FIELDS), weights=CATEGORY_WEIGHTS)[0]
            categories = [primary]
            field = FIELDS[primary]
        for _ in range(self.pick((0, 0, 1, 1, 1, 2, 3))):
            extra = self.pick(tuple(FIELDS))
            if extra not in categories:
                categories.append(extra)
        adj = self.pick(ADJECTIVES)
        noun = self.pick(NOUNS)
        dataset, dataset2 = rng.sample(DATASETS, 2)
        context = {
            "adj": adj,
            "Adj": adj[0].upper() + adj[1:],
            "a_adj": with_article(adj),
            "noun": noun,
            "nouns": plural(noun),
            "task": self.pick(TASKS),
            "field": field,
            "method": self._method(),
            "dataset": dataset,
            "dataset2": dataset2,
        }
        context["Task"] = context["task"][0].upper() + context["task"][1:]
        self.context = context
        authors, authors_parsed = self._authors()
        versions = [{"version": "v1", "created": arxiv_date(created)}]
        moment = created
        for number in range(2, self.pick((1, 1, 1, 2, 2, 3, 4)) + 1):
            moment += timedelta(days=rng.randint(1, 200), seconds=rng.randint(0, 86_399))
            versions.append({"version": f"v{number}", "created": arxiv_date(moment)})
        update_date = (moment + timedelta(days=rng.randint(0, 3))).date().isoformat()
        comments: str | None = None
        roll = rng.random()
        if roll < 0.75:
            figures = rng.randint(1, 15)
            comments = f"{rng.randint(4, 60)} pages, {figures} figure{'s' if figures > 1 else ''}"
            if roll < 0.2:
                comments += f", accepted at {self.pick(VENUES)} {created.year + 1}"
            if roll < 0.06:
                owner = self.pick(ASCII_LAST_NAMES)
                comments += f". Code: https://github.com/{owner}-lab/{context['method'].lower()}"
        has_journal = rng.random() < 0.15
        journal_ref = (
            f"{self.pick(JOURNALS)} {rng.randint(1, 120)}, {rng.randint(1000, 99999)} "
            f"({created.year + 1})"
            if has_journal
            else None
        )
        doi = f"10.{rng.randint(1000, 9999)}/{arxiv_id.replace('/', '.')}" if has_journal else None
        return {
            "id": arxiv_id,
            "submitter": authors_parsed[0][1] + " " + authors_parsed[0][0],
            "authors": authors,
            "title": self._title(),
            "comments": comments,
            "journal-ref": journal_ref,
            "doi": doi,
            "report-no": f"MIT-CTP/{rng.randint(3000, 5999)}" if rng.random() < 0.02 else None,
            "categories": " ".join(categories),
            "license": self.pick(LICENSES),
            "abstract": self._abstract(),
            "versions": versions,
            "update_date": update_date,
            "authors_parsed": authors_parsed,
        }


@dataclass(slots=True)
class GeneratedFile:
    path: Path
    records: int
    size_bytes: int
    seconds: float
    mean_abstract_chars: float


def generate_file(path: Path, records: int, seed: int) -> GeneratedFile:
    started = time.perf_counter()
    generator = SnapshotGenerator(seed)
    abstract_chars = 0
    with path.open("wb", buffering=1 << 20) as out:
        for _ in range(records):
            record = generator.record()
            abstract_chars += len(record["abstract"])
            out.write(orjson.dumps(record))
            out.write(b"\n")
    return GeneratedFile(
        path=path,
        records=records,
        size_bytes=path.stat().st_size,
        seconds=time.perf_counter() - started,
        mean_abstract_chars=abstract_chars / max(records, 1),
    )


# --------------------------------------------------------------------------------------------
# Child processes: each load runs in a fresh interpreter and reports its own peak RSS
# --------------------------------------------------------------------------------------------


def memory_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB. VmHWM belongs to the process's own address
    space, so it starts afresh at exec and never counts the parent's memory."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float("nan"), peak / (1024 * 1024 if sys.platform == "darwin" else 1024)
    values = {
        line.split(":")[0]: int(line.split()[1]) / 1024
        for line in status.splitlines()
        if line.startswith(("VmRSS:", "VmHWM:"))
    }
    return values["VmRSS"], values["VmHWM"]


def ingest_settings(url: str, batch_size: int | None) -> Settings:
    if batch_size is None:
        return Settings(database_url=url)
    return Settings(database_url=url, ingest_batch_size=batch_size)


async def child_ingest(path: str, url: str, batch_size: int | None) -> dict[str, Any]:
    settings = ingest_settings(url, batch_size)
    engine = create_engine(url)
    try:
        rss_start, _ = memory_mb()
        started = time.perf_counter()
        report = await ingest_job(
            path, session_factory=create_session_factory(engine), settings=settings
        )
        seconds = time.perf_counter() - started
    finally:
        await engine.dispose()
    _, peak = memory_mb()
    return {
        "seconds": seconds,
        "records": report.records,
        "inserted": report.inserted,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "rejected": report.rejected,
        "rejections": report.rejections[:5],
        "error": report.error,
        "batch_size": settings.ingest_batch_size,
        "rss_start_mb": rss_start,
        "peak_rss_mb": peak,
    }


def read_copy_batches(path: str, now: datetime) -> Iterator[list[tuple[Any, ...]]]:
    """The baseline's parse: plain `orjson.loads` per line, tuples built with minimal work."""
    batch: list[tuple[Any, ...]] = []
    with open(path, "rb") as lines:
        for line in lines:
            obj = orjson.loads(line)
            title = obj["title"]
            authors = [f"{first} {last}" for last, first, *_ in obj["authors_parsed"]]
            batch.append(
                (
                    obj["id"],
                    title,
                    title.lower(),
                    obj["abstract"],
                    orjson.dumps(authors).decode(),
                    orjson.dumps(obj["categories"].split()).decode(),
                    SOURCE,
                    now,
                    now,
                )
            )
            if len(batch) >= COPY_BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


async def child_copy(path: str, dsn: str) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    try:
        rss_start, _ = memory_mb()
        parse_seconds = 0.0
        rows = 0
        started = time.perf_counter()
        async with connection.transaction():
            batches = read_copy_batches(path, datetime.now(UTC))
            while True:
                parse_started = time.perf_counter()
                batch = next(batches, None)
                parse_seconds += time.perf_counter() - parse_started
                if batch is None:
                    break
                await connection.copy_records_to_table("paper", records=batch, columns=COPY_COLUMNS)
                rows += len(batch)
        seconds = time.perf_counter() - started  # includes the commit
    finally:
        await connection.close()
    _, peak = memory_mb()
    return {
        "seconds": seconds,
        "parse_seconds": parse_seconds,
        "copy_seconds": seconds - parse_seconds,
        "rows": rows,
        "rss_start_mb": rss_start,
        "peak_rss_mb": peak,
    }


# Profiling: stage timers wrapped around Paperboy's own functions (in this child process only).
# Every call's duration is kept, so that per-batch costs that grow with the table show up.
SAMPLES: defaultdict[str, list[float]] = defaultdict(list)


def _statement_label(statement: Any) -> str:
    try:
        text = " ".join(str(statement).split())
    except Exception:
        text = type(statement).__name__
    return text[:88]


class TimedSession(AsyncSession):
    async def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        label = "sql: " + _statement_label(statement)
        started = time.perf_counter()
        try:
            return await super().execute(statement, *args, **kwargs)
        finally:
            SAMPLES[label].append(time.perf_counter() - started)

    async def commit(self) -> None:
        started = time.perf_counter()
        try:
            await super().commit()
        finally:
            SAMPLES["session.commit"].append(time.perf_counter() - started)


def _timed_sync(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SAMPLES[label].append(time.perf_counter() - started)

    return wrapper


def _timed_async(label: str, function: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await function(*args, **kwargs)
        finally:
            SAMPLES[label].append(time.perf_counter() - started)

    return wrapper


def _timed_parser(label: str, function: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        results = function(*args, **kwargs)
        samples = SAMPLES[label]
        while True:
            started = time.perf_counter()
            item = next(results, None)
            elapsed = time.perf_counter() - started
            if item is None:
                if samples:
                    samples[-1] += elapsed
                return
            samples.append(elapsed)
            yield item

    return wrapper


def summarise_samples() -> dict[str, dict[str, float]]:
    """Total, calls, and the mean of the first and of the last five calls, per stage."""
    return {
        label: {
            "seconds": sum(samples),
            "calls": len(samples),
            "first_ms": 1000 * sum(samples[:5]) / len(samples[:5]),
            "last_ms": 1000 * sum(samples[-5:]) / len(samples[-5:]),
        }
        for label, samples in SAMPLES.items()
        if samples
    }


def install_stage_timers() -> list[str]:
    """Wrap Paperboy's stages in timers, in this process only. Each is patched in every module
    that calls it through a global name, so the timers survive code moving between app.jobs and
    app.ingest.upsert; returns the stages that could not be found."""
    stages: tuple[tuple[tuple[Any, ...], str, str, str], ...] = (
        (
            (app.jobs, app.ingest.upsert, app.ingest.normalise),
            "parse_source",
            PARSE_LABEL,
            "iterator",
        ),
        ((app.jobs, app.ingest.upsert, app.ingest.normalise), "normalise", "normalise", "sync"),
        (
            (app.jobs, app.ingest.upsert, app.ingest.normalise),
            "merge_duplicates",
            "merge_duplicates",
            "sync",
        ),
        ((app.jobs,), "upsert_papers", "upsert_papers", "async"),
        ((app.jobs,), "_record_run", "_record_run", "async"),
        ((app.ingest.upsert,), "_load_staging", "upsert: _load_staging (tuples + COPY)", "async"),
        ((asyncpg.Connection,), "copy_records_to_table", "upsert: COPY into staging", "async"),
    )
    wrappers = {"iterator": _timed_parser, "sync": _timed_sync, "async": _timed_async}
    missing = []
    for owners, name, label, kind in stages:
        found = [owner for owner in owners if hasattr(owner, name)]
        for owner in found:
            setattr(owner, name, wrappers[kind](label, getattr(owner, name)))
        if not found:
            missing.append(name)
    return missing


def _short_path(file: str) -> str:
    """`app/ingest.py` rather than `ingest.py`: this script has the same file name."""
    path = Path(file)
    return f"{path.parent.name}/{path.name}" if path.parent.name else file


THREAD_PROFILERS: list[cProfile.Profile] = []


def _profile_new_thread(*_: Any) -> None:
    """Installed with `threading.setprofile`: the first event in a new thread (a parse worker,
    say) starts a profiler of its own there, since one cProfile.Profile sees one thread only."""
    profiler = cProfile.Profile()
    THREAD_PROFILERS.append(profiler)
    profiler.enable()


async def child_profile(path: str, url: str, batch_size: int | None, mode: str) -> dict[str, Any]:
    settings = ingest_settings(url, batch_size)
    engine = create_engine(url)
    profiler = cProfile.Profile()
    missing: list[str] = []
    if mode == "stages":
        missing = install_stage_timers()
    factory = create_session_factory(engine)
    if mode == "stages":
        factory.class_ = TimedSession
    try:
        started = time.perf_counter()
        if mode == "cprofile":
            threading.setprofile(_profile_new_thread)
            profiler.enable()
        report = await ingest_job(path, session_factory=factory, settings=settings)
        if mode == "cprofile":
            profiler.disable()
            threading.setprofile(None)
        seconds = time.perf_counter() - started
    finally:
        await engine.dispose()
    result: dict[str, Any] = {"seconds": seconds, "inserted": report.inserted, "mode": mode}
    if mode == "stages":
        result["stages"] = summarise_samples()
        result["missing"] = missing
    else:
        stats = pstats.Stats(profiler)
        for thread_profiler in THREAD_PROFILERS:
            stats.add(thread_profiler)
        result["threads"] = 1 + len(THREAD_PROFILERS)
        rows: list[tuple[str, int, float, float]] = [
            (f"{_short_path(file)}:{line}({function})", calls, total, cumulative)
            for (file, line, function), (_, calls, total, cumulative, _) in stats.stats.items()  # type: ignore[attr-defined]
        ]
        result["by_tottime"] = sorted(rows, key=lambda row: -row[2])[:30]
        result["by_cumtime"] = [
            row
            for row in sorted(rows, key=lambda row: -row[3])
            if not row[0].startswith(("asyncio/", "~", "<", "bench/"))
        ][:30]
    return result


def run_child(args: argparse.Namespace) -> None:
    code = code_fingerprint()  # of the app/ this interpreter has just imported
    result: dict[str, Any]
    if args.child == "ingest":
        result = asyncio.run(child_ingest(args.child_path, args.child_url, args.batch_size))
    elif args.child == "copy":
        result = asyncio.run(child_copy(args.child_path, args.child_url))
    else:
        result = asyncio.run(
            child_profile(args.child_path, args.child_url, args.batch_size, args.child)
        )
    result["code"] = code
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")


APP_DIR = Path(app.jobs.__file__).resolve().parent


def code_fingerprint() -> str:
    """A hash of Paperboy's source, so a run can tell whether app/ changed under it."""
    digest = hashlib.sha256()
    for path in sorted(APP_DIR.rglob("*.py")):
        digest.update(path.relative_to(APP_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def describe_code() -> str:
    def git(*arguments: str) -> str:
        command = ["git", "-C", str(APP_DIR.parent), *arguments]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        changed = [line[3:] for line in git("status", "--porcelain", "--", "app").splitlines()]
    except (OSError, subprocess.CalledProcessError):
        return f"app/ fingerprint {code_fingerprint()} (not a git checkout)"
    dirty = f" + uncommitted changes to {', '.join(changed)}" if changed else ""
    return f"git {head}{dirty}; app/ fingerprint {code_fingerprint()}"


# --------------------------------------------------------------------------------------------
# The parent: databases, orchestration, report
# --------------------------------------------------------------------------------------------


class Databases:
    """Creates uniquely named databases on the server and drops every one of them at the end."""

    def __init__(self, url_base: str) -> None:
        self.base = make_url(url_base.rstrip("/"))
        self.prefix = f"paperboy_bench_{os.getpid()}"
        self.created: list[str] = []

    def sqlalchemy_url(self, database: str) -> str:
        return self.base.set(database=database).render_as_string(hide_password=False)

    def asyncpg_dsn(self, database: str) -> str:
        url = self.base.set(drivername="postgresql", database=database)
        return url.render_as_string(hide_password=False)

    @asynccontextmanager
    async def admin(self) -> AsyncIterator[Any]:
        connection = await asyncpg.connect(self.asyncpg_dsn("postgres"))
        try:
            yield connection
        finally:
            await connection.close()

    async def create_migrated(self, suffix: str) -> str:
        name = f"{self.prefix}_{suffix}"
        async with self.admin() as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.created.append(name)
            await admin.execute(f'CREATE DATABASE "{name}"')
        engine = create_engine(self.sqlalchemy_url(name))
        try:
            await migrate(engine)
        finally:
            await engine.dispose()
        return name

    async def checkpoint(self) -> None:
        """Flush dirty buffers left by the previous step so that it does not bill the next."""
        async with self.admin() as admin:
            await admin.execute("CHECKPOINT")

    async def count_papers(self, name: str) -> int:
        connection = await asyncpg.connect(self.asyncpg_dsn(name))
        try:
            return int(await connection.fetchval("SELECT count(*) FROM paper"))
        finally:
            await connection.close()

    async def drop_all(self) -> None:
        async with self.admin() as admin:
            while self.created:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.created.pop()}" WITH (FORCE)')


async def spawn(
    mode: str,
    path: Path | str,
    url: str,
    batch_size: int | None,
    *,
    code_root: Path | None = None,
) -> dict[str, Any]:
    """Run one load in a child process; with `code_root`, the child imports the `app` package
    found there (another version of Paperboy) instead of this checkout's."""
    command = [
        sys.executable,
        str(SCRIPT),
        "--child",
        mode,
        "--child-path",
        str(path),
        "--child-url",
        url,
    ]
    if batch_size is not None:
        command += ["--batch-size", str(batch_size)]
    env = None
    if code_root is not None:
        env = os.environ | {"PYTHONPATH": os.pathsep.join([str(code_root), str(ROOT)])}
    # In `code_root` the child's own children (`python -m app.ingest.parsing_worker`, which puts
    # the working directory first on the path) import the same version of the code.
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, env=env, cwd=code_root
    )
    try:
        stdout, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"child {mode!r} exited with status {process.returncode}")
    for line in reversed(stdout.decode().splitlines()):
        if line.startswith(RESULT_MARKER):
            result: dict[str, Any] = json.loads(line.removeprefix(RESULT_MARKER))
            return result
    raise RuntimeError(f"child {mode!r} printed no result")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)


@dataclass(slots=True)
class Results:
    first: dict[str, Any]
    again: dict[str, Any]
    copy: dict[str, Any]
    flat: dict[str, Any] | None = None
    stages: dict[str, Any] | None = None
    cprofile: dict[str, Any] | None = None


async def run_benchmark(
    args: argparse.Namespace, data: GeneratedFile, double: GeneratedFile | None, console: Console
) -> Results:
    databases = Databases(args.database_url_base)
    try:
        paperboy_db = await databases.create_migrated("paperboy")
        copy_db = await databases.create_migrated("copy")
        url = databases.sqlalchemy_url(paperboy_db)

        await databases.checkpoint()
        console.print(f"[bold]Paperboy ingest[/] of {data.records:,} records (first load) ...")
        first = await spawn("ingest", data.path, url, args.batch_size)
        check(first["error"] is None, f"first ingest failed: {first['error']}")
        check(
            first["inserted"] == data.records and first["rejected"] == 0,
            f"first ingest inserted {first['inserted']} of {data.records}, rejected "
            f"{first['rejected']}: {first['rejections']}",
        )
        check(await databases.count_papers(paperboy_db) == data.records, "paper count is off")

        await databases.checkpoint()
        console.print("[bold]Paperboy re-ingest[/] of the same file ...")
        again = await spawn("ingest", data.path, url, args.batch_size)
        check(again["error"] is None, f"re-ingest failed: {again['error']}")
        check(again["inserted"] == 0, f"re-ingest inserted {again['inserted']} papers")

        await databases.checkpoint()
        console.print(
            "[bold]raw COPY[/] baseline (orjson.loads + asyncpg copy_records_to_table) ..."
        )
        copy = await spawn("copy", data.path, databases.asyncpg_dsn(copy_db), None)
        check(copy["rows"] == data.records, f"COPY wrote {copy['rows']} rows")
        check(await databases.count_papers(copy_db) == data.records, "COPY row count is off")
        results = Results(first=first, again=again, copy=copy)

        if double is not None:
            flat_db = await databases.create_migrated("flat")
            await databases.checkpoint()
            console.print(
                f"[bold]Paperboy ingest[/] of {double.records:,} records (--check-flat) ..."
            )
            results.flat = await spawn(
                "ingest", double.path, databases.sqlalchemy_url(flat_db), args.batch_size
            )
            check(results.flat["inserted"] == double.records, "2x ingest inserted too few")

        if args.profile:
            for mode in ("stages", "cprofile"):
                profile_db = await databases.create_migrated(mode)
                await databases.checkpoint()
                console.print(f"[bold]profiling[/] a Paperboy ingest ({mode}) ...")
                result = await spawn(
                    mode, data.path, databases.sqlalchemy_url(profile_db), args.batch_size
                )
                setattr(results, mode, result)
        return results
    finally:
        await databases.drop_all()


# --------------------------------------------------------------------------------------------
# Hostile inputs (--hostile): memory against inputs built to exhaust it, now and before
# --------------------------------------------------------------------------------------------

HOSTILE_BASELINE_REF = "abff949"  # the last commit before the ingest hardening
RSS_GOAL_MB = 300
ONE_LINE_BYTES = 300 * 1000 * 1000
DAILY_BYTES = 56 * 1000 * 1000
LIMIT_RECORDS_BYTES = 200 * 1000 * 1000
# Peak RSS reported when these inputs were first tried (issue 14), for reference.
REPORTED_MB = {"one-line": 1270, "daily": 927}


@dataclass(slots=True)
class HostileInput:
    key: str
    label: str
    source: str  # a path or a URL, as given to `ingest_job`
    size_bytes: int


def write_one_line_jsonl_gz(path: Path) -> int:
    """A gzip of JSON Lines whose first line is one 300 MB record, then two ordinary ones: it
    compresses to about 0.3 MB, so only reading it line by line costs memory."""
    import gzip

    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(b'{"id": "2401.00001", "title": "One line", "abstract": "')
        chunk = b"a" * (1 << 20)
        for _ in range(ONE_LINE_BYTES // len(chunk)):
            out.write(chunk)
        out.write(b'"}\n')
        for number in (2, 3):
            out.write(
                b'{"id": "2401.%05d", "title": "Ordinary %d", "abstract": "Fine."}\n'
                % (number, number)
            )
    return path.stat().st_size


def write_daily_papers(path: Path, seed: int) -> int:
    """A daily-papers list (the huggingface.co/api/daily_papers shape) of about 56 MB: items
    of a few kB with realistic fields, generated from the snapshot generator's titles."""
    generator = SnapshotGenerator(seed)
    written = 0
    with path.open("wb", buffering=1 << 20) as out:
        out.write(b"[")
        number = 0
        while written < DAILY_BYTES:
            record = generator.record()
            number += 1
            item = {
                "paper": {
                    "id": record["id"],
                    "title": record["title"],
                    "summary": record["abstract"],
                    "authors": [{"name": f"{first} {last}"} for last, first, *_ in
                                record["authors_parsed"]],
                    "publishedAt": "2026-12-01T08:00:00.000Z",
                    "upvotes": number % 500,
                    "ai_summary": record["abstract"][:600],
                    "ai_keywords": record["title"].lower().split()[:8],
                },
                "publishedAt": "2026-12-01T08:00:00.000Z",
                "title": record["title"],
                "numComments": number % 40,
                "submittedBy": {"name": "bench", "fullname": "Bench Generator"},
            }  # fmt: skip
            encoded = (b"," if number > 1 else b"") + orjson.dumps(item)
            out.write(encoded)
            written += len(encoded)
        out.write(b"]")
    return path.stat().st_size


def write_limit_records(path: Path) -> int:
    """About 200 MB of JSON Lines whose every record sits at the normaliser's limits (a title of
    500 characters, an abstract of 10,000, 200 authors of 280 characters, 50 categories): each
    is stored, and a batch of 5,000 of them would hold hundreds of MB of text."""
    words = [
        "attention",
        "sparse",
        "kernel",
        "manifold",
        "estimator",
        "gradient",
        "operator",
        "lattice",
    ]
    written, number = 0, 0
    with path.open("wb", buffering=1 << 20) as out:
        while written < LIMIT_RECORDS_BYTES:
            number += 1
            title = f"Limit record {number} " + " ".join(words[i % 8] for i in range(80))
            record = {
                "id": f"2501.{number:05d}",
                "title": title[:500],
                "abstract": (" ".join(words[(i + number) % 8] for i in range(1500)))[:10_000],
                "authors_parsed": [
                    [f"Last{n}" + "l" * 130, f"First{n}" + "f" * 130, ""] for n in range(200)
                ],
                "categories": " ".join(f"cat.{n}" + "x" * 55 for n in range(50)),
                "update_date": "2025-01-02",
            }
            line = orjson.dumps(record) + b"\n"
            out.write(line)
            written += len(line)
    return path.stat().st_size


class FileServer:
    """Serves one file over HTTP on 127.0.0.1 from a thread (Content-Length, 1 MB writes)."""

    def __init__(self, path: Path) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        served = path

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(served.stat().st_size))
                self.end_headers()
                with served.open("rb") as body:
                    while chunk := body.read(1 << 20):
                        self.wfile.write(chunk)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/daily_papers"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def baseline_tree(ref: str, into: Path) -> Path:
    """Paperboy's app/ as it was at `ref`, extracted from git into `into`."""
    import io
    import tarfile

    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "app"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def outcome(result: dict[str, Any]) -> str:
    if result["error"]:
        return f"failed: {result['error'][:60]}"
    reasons = "; ".join(r["reason"][:40] for r in result["rejections"][:1])
    return f"{result['inserted']:,} stored, {result['rejected']:,} rejected" + (
        f" ({reasons})" if reasons else ""
    )


async def run_hostile(
    args: argparse.Namespace, inputs: list[HostileInput], workdir: Path, console: Console
) -> list[tuple[HostileInput, str, dict[str, Any]]]:
    baseline = baseline_tree(args.baseline_ref, workdir / "baseline")
    databases = Databases(args.database_url_base)
    results: list[tuple[HostileInput, str, dict[str, Any]]] = []
    try:
        for hostile in inputs:
            for code, root in ((f"before ({args.baseline_ref})", baseline), ("Paperboy", None)):
                name = await databases.create_migrated(f"{hostile.key}_{len(results)}")
                console.print(f"[bold]{code}[/] ingests {hostile.label} ...")
                result = await spawn(
                    "ingest",
                    hostile.source,
                    databases.sqlalchemy_url(name),
                    args.batch_size,
                    code_root=root,
                )
                results.append((hostile, code, result))
        return results
    finally:
        await databases.drop_all()


def print_hostile(
    results: list[tuple[HostileInput, str, dict[str, Any]]], console: Console
) -> None:
    table = Table(title=f"Peak RSS on hostile inputs (goal: <= {RSS_GOAL_MB} MB for any input)")
    for column in ("input", "code", "outcome", "seconds", "peak RSS MB", "reported before MB"):
        table.add_column(
            column, justify="left" if column in ("input", "code", "outcome") else "right"
        )
    for hostile, code, result in results:
        peak = result["peak_rss_mb"]
        shown = f"{peak:,.0f}"
        if code == "Paperboy":
            shown = f"[{'green' if peak <= RSS_GOAL_MB else 'red'}]{shown}[/]"
        table.add_row(
            hostile.label,
            code,
            outcome(result),
            f"{result['seconds']:,.1f}",
            shown,
            f"{REPORTED_MB[hostile.key]:,}"
            if code != "Paperboy" and hostile.key in REPORTED_MB
            else "",
        )
    console.print(table)
    console.print(
        "[dim]peak RSS = VmHWM of the child process that ran the ingest (interpreter and imports "
        "included). 'before' runs the same harness on app/ as it was at the baseline commit.[/]"
    )


def hostile_main(args: argparse.Namespace, console: Console) -> int:
    with tempfile.TemporaryDirectory(prefix="paperboy-hostile-") as scratch:
        workdir = Path(scratch)
        console.print("generating the hostile inputs ...")
        one_line = workdir / "one-line.jsonl.gz"
        daily = workdir / "daily_papers.json"
        limits = workdir / "limit-records.jsonl"
        one_line_size = write_one_line_jsonl_gz(one_line)
        daily_size = write_daily_papers(daily, args.seed)
        limits_size = write_limit_records(limits)
        with FileServer(daily) as server:
            inputs = [
                HostileInput(
                    "one-line",
                    f"{ONE_LINE_BYTES / 1e6:,.0f} MB one-line JSONL, gzipped to "
                    f"{one_line_size / 1e3:,.0f} kB (file)",
                    str(one_line),
                    one_line_size,
                ),
                HostileInput(
                    "daily",
                    f"{daily_size / 1e6:,.0f} MB daily-papers JSON (URL)",
                    server.url,
                    daily_size,
                ),
                HostileInput(
                    "limits",
                    f"{limits_size / 1e6:,.0f} MB JSONL, every record at the field limits (file)",
                    str(limits),
                    limits_size,
                ),
            ]
            results = asyncio.run(run_hostile(args, inputs, workdir, console))
    print_hostile(results, console)
    return 0


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def print_report(
    results: Results, data: GeneratedFile, double: GeneratedFile | None, console: Console
) -> None:
    first, again, copy = results.first, results.again, results.copy
    n = data.records
    runs = [first, again, results.flat, results.stages, results.cprofile]
    fingerprints = sorted({run["code"] for run in runs if run is not None})
    if len(fingerprints) > 1:
        console.print(
            f"[bold red]warning:[/] app/ changed while the benchmark ran (fingerprints "
            f"{', '.join(fingerprints)}): the Paperboy runs did not all measure the same code"
        )
    baseline_rate = n / copy["seconds"]
    table = Table(
        title=f"Ingest of {n:,} arXiv-snapshot records "
        f"({data.size_bytes / 1e6:,.0f} MB, mean abstract {data.mean_abstract_chars:,.0f} chars, "
        f"batch size {first['batch_size']:,})"
    )
    table.add_column("run")
    table.add_column("seconds", justify="right")
    table.add_column("papers/s", justify="right")
    table.add_column("ratio vs raw COPY (parse+copy)", justify="right")
    table.add_column("peak RSS MB", justify="right")
    rows = (
        ("Paperboy ingest (first load)", first["seconds"], first["inserted"], first["peak_rss_mb"]),
        (
            "Paperboy re-ingest [dim](records/s)[/]",
            again["seconds"],
            again["records"],
            again["peak_rss_mb"],
        ),
        ("raw COPY (parse + copy)", copy["seconds"], copy["rows"], copy["peak_rss_mb"]),
        ("raw COPY (copy only)", copy["copy_seconds"], copy["rows"], None),
    )
    for label, seconds, papers, peak in rows:
        rate = papers / seconds
        table.add_row(
            label,
            f"{seconds:,.2f}",
            fmt_rate(rate),
            f"{rate / baseline_rate:.2f}x",
            f"{peak:,.0f}" if peak is not None else "(same process)",
        )
    console.print(table)
    console.print(
        f"[dim]peak RSS = VmHWM of the child process that ran the load (interpreter and imports "
        f"included: {first['rss_start_mb']:,.0f} MB before the Paperboy ingest began, "
        f"{copy['rss_start_mb']:,.0f} MB before the COPY). Re-ingest: {again['unchanged']:,} "
        f"unchanged, {again['updated']:,} updated, {again['inserted']:,} inserted. "
        f"raw COPY parse alone: {copy['parse_seconds']:,.2f} s.[/]"
    )
    rate = first["inserted"] / first["seconds"]
    ratio = rate / baseline_rate
    console.print(
        f"target: >= {TARGET_PAPERS_PER_SECOND:,} papers/s and >= {TARGET_RATIO}x raw COPY"
    )
    verdict = rate >= TARGET_PAPERS_PER_SECOND and ratio >= TARGET_RATIO
    console.print(
        f"Paperboy first load: {fmt_rate(rate)} papers/s, {ratio:.2f}x raw COPY -> "
        + ("[green]MEETS the target[/]" if verdict else "[red]MISSES the target[/]")
    )

    if results.flat is not None and double is not None:
        flat = Table(title="Peak RSS vs input size (--check-flat)")
        for column in (
            "records",
            "file MB",
            "seconds",
            "papers/s",
            "RSS at start MB",
            "peak RSS MB",
        ):
            flat.add_column(column, justify="right")
        for generated, result in ((data, first), (double, results.flat)):
            flat.add_row(
                f"{generated.records:,}",
                f"{generated.size_bytes / 1e6:,.0f}",
                f"{result['seconds']:,.2f}",
                fmt_rate(result["inserted"] / result["seconds"]),
                f"{result['rss_start_mb']:,.0f}",
                f"{result['peak_rss_mb']:,.0f}",
            )
        console.print(flat)
        growth = results.flat["peak_rss_mb"] - first["peak_rss_mb"]
        console.print(f"peak RSS grows by {growth:+,.1f} MB when the input doubles")

    if results.stages is not None:
        print_stages(results.stages, console)
    if results.cprofile is not None:
        print_cprofile(results.cprofile, console)


def print_stages(result: dict[str, Any], console: Console) -> None:
    stages: dict[str, dict[str, float]] = result["stages"]
    total = result["seconds"]
    table = Table(title=f"Where a Paperboy ingest spends its {total:,.2f} s (stage timers)")
    table.add_column("stage")
    for column in ("calls", "seconds", "% of total", "first 5 calls ms", "last 5 calls ms"):
        table.add_column(column, justify="right")
    empty = {"seconds": 0.0, "calls": 0, "first_ms": 0.0, "last_ms": 0.0}

    def seconds(name: str) -> float:
        return stages.get(name, empty)["seconds"]

    def add(name: str, label: str | None = None, value: float | None = None) -> None:
        stage = stages.get(name, empty)
        value = stage["seconds"] if value is None else value
        per_batch = stage["calls"] > 0 and name not in (PARSE_LABEL, "normalise")
        table.add_row(
            label or name,
            f"{stage['calls']:,.0f}" if stage["calls"] else "",
            f"{value:,.2f}",
            f"{100 * value / total:.1f}",
            f"{stage['first_ms']:,.1f}" if per_batch else "",
            f"{stage['last_ms']:,.1f}" if per_batch else "",
        )

    top = (PARSE_LABEL, "normalise", "merge_duplicates", "upsert_papers")
    for name in top[:-1]:
        add(name)
    add("upsert_papers", "upsert_papers (per batch)")
    load = seconds("upsert: _load_staging (tuples + COPY)")
    copy = seconds("upsert: COPY into staging")
    add("", "  build staging tuples (Python)", load - copy)
    add("upsert: COPY into staging", "  COPY into staging (asyncpg)")
    for name, _ in sorted(stages.items(), key=lambda item: -item[1]["seconds"]):
        if name.startswith("sql: "):
            add(name, "  " + name)
    add("_record_run")
    add("session.commit", "session.commit (per batch)")
    accounted = sum(seconds(name) for name in (*top, "_record_run", "session.commit"))
    if accounted <= total:
        add("", "other (event loop, SQLAlchemy, jobs loop, timers)", total - accounted)
    console.print(table)
    if accounted > total:
        console.print(
            f"[dim]The stages add up to {accounted:,.2f} s, more than the {total:,.2f} s "
            "wall-clock: they overlap (parsing runs in a thread while a batch is written).[/]"
        )
    if result.get("missing"):
        console.print(f"[yellow]not timed (not found in app/):[/] {', '.join(result['missing'])}")
    sql = sum(stage["seconds"] for name, stage in stages.items() if name.startswith("sql: "))
    database = copy + sql + seconds("session.commit")
    python = (
        seconds(PARSE_LABEL) + seconds("normalise") + seconds("merge_duplicates") + (load - copy)
    )
    console.print(
        f"Python-side parse/normalise/merge/tuples: {python:,.2f} s ({100 * python / total:.0f}%); "
        f"database (COPY + SQL + commits, wall-clock awaited): {database:,.2f} s "
        f"({100 * database / total:.0f}%)"
    )


def print_cprofile(result: dict[str, Any], console: Console) -> None:
    for key, title in (("by_tottime", "own time"), ("by_cumtime", "cumulative time")):
        threads = result.get("threads", 1)
        table = Table(title=f"cProfile of a Paperboy ingest ({result['seconds']:,.2f} s wall-clock "
                      f"under the profiler, {threads} thread{'s' if threads > 1 else ''} profiled; "
                      f"thread times overlap): top functions by {title}")  # fmt: skip
        for column in ("function", "calls", "tottime s", "cumtime s"):
            table.add_column(column, justify="left" if column == "function" else "right")
        for function, calls, total, cumulative in result[key][:25]:
            table.add_row(function, f"{calls:,}", f"{total:,.2f}", f"{cumulative:,.2f}")
        console.print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--records", type=int, default=DEFAULT_RECORDS, metavar="N", help="default: %(default)s"
    )
    parser.add_argument(
        "--database-url-base",
        default=DEFAULT_URL_BASE,
        help="server to create the scratch databases on (default: %(default)s)",
    )
    parser.add_argument(
        "--keep-file", type=Path, metavar="PATH", help="write the generated JSONL here and keep it"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="generator seed (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, help="Paperboy ingest_batch_size (default: the Settings default)"
    )
    parser.add_argument(
        "--check-flat", action="store_true", help="also load 2x N to show peak RSS stays flat"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile one Paperboy ingest of the file"
    )
    parser.add_argument(
        "--hostile",
        action="store_true",
        help="measure peak RSS on hostile inputs, now and at --baseline-ref, instead",
    )
    parser.add_argument(
        "--baseline-ref",
        default=HOSTILE_BASELINE_REF,
        help="git revision of the code --hostile compares with (default: %(default)s)",
    )
    parser.add_argument(
        "--child", choices=("ingest", "copy", "stages", "cprofile"), help=argparse.SUPPRESS
    )
    parser.add_argument("--child-path", help=argparse.SUPPRESS)
    parser.add_argument("--child-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.records < 1:
        parser.error("--records must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return 0
    # Wide enough for the table when the output is piped to a file or a CI log.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    if args.hostile:
        console.print(f"Paperboy code: {describe_code()}")
        return hostile_main(args, console)
    made: list[Path] = []

    def scratch_file() -> Path:
        handle, name = tempfile.mkstemp(prefix="paperboy-bench-", suffix=".jsonl")
        os.close(handle)
        made.append(Path(name))
        return Path(name)

    try:
        path = args.keep_file if args.keep_file else scratch_file()
        console.print(f"generating {args.records:,} records (seed {args.seed}) into {path} ...")
        data = generate_file(path, args.records, args.seed)
        console.print(
            f"  {data.size_bytes / 1e6:,.1f} MB in {data.seconds:,.1f} s, "
            f"mean abstract {data.mean_abstract_chars:,.0f} chars"
        )
        double = None
        if args.check_flat:
            double = generate_file(scratch_file(), 2 * args.records, args.seed)
            console.print(f"  and {double.records:,} records ({double.size_bytes / 1e6:,.1f} MB)")
        console.print(f"Paperboy code: {describe_code()}")
        results = asyncio.run(run_benchmark(args, data, double, console))
        print_report(results, data, double, console)
    finally:
        for scratch in made:
            scratch.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
