"""Frozen body + logistic regression on the pipeline's own split, both bodies side by side (issue 26's baseline row).

The pipeline's validate and split steps on the bundled data (`data.conflicts=drop`, the default split), then each
body's pooled, L2-normalised sentence embeddings through the pipeline's own path (`encode_for_model`, the feature
cache of WORKDIR: a workdir where a run on that body already embedded the rows computes nothing again), then
scikit-learn's `LogisticRegression` (lbfgs, multinomial, class weights balanced) with C chosen on the validation
rows' macro-F1 from a grid, scored once on the test rows. Training sizes: 250 rows (3 seeds, stratified draws) and
all training rows (deterministic: one fit). Usage: .venv/bin/python benchmarks/mpnet_frozen_lr.py [WORKDIR]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import table, write_section  # noqa: E402
from tests.conftest import PHRASEBANK  # noqa: E402

GRID = [0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100]
BODIES = ("all-minilm-l6-v2", "all-mpnet-base-v2")


def split_rows(workdir: Path):
    from core.storage.artifacts import read_parquet
    from schemas.config import DataConfig, SplitConfig
    from tasks.split import split
    from tasks.validate import validate

    validated = validate(DataConfig(path=PHRASEBANK, conflicts="drop"), workdir)
    ref = split(validated, SplitConfig(), 0, 5, workdir)
    return read_parquet(ref, workdir).to_pandas()


def embeddings(body: str, texts: list[str], workdir: Path) -> tuple[np.ndarray, float]:
    from core.model.backbone import Backbone, encode_for_model
    from core.model.features import cached_features
    from tasks.tokenization import choose_length
    from schemas.config import TokenizeConfig

    backbone = Backbone.resolve(body)
    ids = encode_for_model(backbone.path, texts, 512)
    length = choose_length(np.array([len(x) for x in ids]), TokenizeConfig())
    started = time.perf_counter()
    values, _, _ = cached_features(backbone, encode_for_model(backbone.path, texts, length),
                                   backbone.architecture.blocks, workdir)
    return values, time.perf_counter() - started


def fit_score(x, y, train, val, test):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    best = None
    for c in GRID:
        model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(x[train], y[train])
        score = f1_score(y[val], model.predict(x[val]), average="macro")
        if best is None or score > best[0]:
            best = (score, c, model)
    predicted = best[2].predict(x[test])
    return accuracy_score(y[test], predicted), f1_score(y[test], predicted, average="macro"), best[1]


def main(argv: list[str]) -> None:
    workdir = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="mpnet-lr-"))
    frame = split_rows(workdir)
    texts, labels = frame["text"].tolist(), frame["label"].astype(str).to_numpy()
    y = np.unique(labels, return_inverse=True)[1]
    parts = {name: np.flatnonzero(frame["split"].to_numpy() == name) for name in ("train", "val", "test")}
    rows = []
    for body in BODIES:
        x, seconds = embeddings(body, texts, workdir)
        for size in (250, len(parts["train"])):
            figures = []
            for seed in (range(3) if size < len(parts["train"]) else [0]):
                rng = np.random.default_rng(seed)
                train = parts["train"]
                if size < len(train):  # stratified draw: each class in its share
                    train = np.concatenate([rng.choice(train[y[train] == k], max(1, round(size * np.mean(y[train] == k))),
                                                       replace=False) for k in np.unique(y)])
                figures.append(fit_score(x, y, train, parts["val"], parts["test"]))
            acc, f1 = np.array([f[0] for f in figures]), np.array([f[1] for f in figures])
            sd = lambda a: f" ± {a.std(ddof=1):.3f}" if len(a) > 1 else ""  # noqa: E731
            rows.append([body, size, len(figures), f"{acc.mean():.3f}{sd(acc)}", f"{f1.mean():.3f}{sd(f1)}",
                         ", ".join(str(f[2]) for f in figures), f"{seconds:.0f}"])
            print(rows[-1], file=sys.stderr)
    body = (f"Frozen body + logistic regression, the pipeline's split of the bundled data ({len(parts['train'])} "
            f"training, {len(parts['val'])} validation, {len(parts['test'])} test rows); C from {GRID} on validation "
            "macro-F1; test figures (mean ± sd over seeds).\n\n"
            + table(["body", "training rows", "seeds", "test accuracy", "test macro-F1", "C chosen",
                     "embedding s (a few: read from the feature cache)"], rows))
    write_section("mpnet_frozen_lr", body)


if __name__ == "__main__":
    main(sys.argv[1:])
