"""Test quality on the bundled data, ours against baselines, mean and standard deviation over 3 seeds.

On one fixed split (the default `split.salt`; the seed changes only augmentation and training):
- baselines: TF-IDF + logistic regression, and logistic regression on the frozen backbone's embeddings;
- ours with the default settings at `train.unfreeze_top` = 0, 2 and 6, all training rows;
- ours with `data.max_train_rows = 250`, default settings.
Each configuration runs the pipeline's step functions in one process (no Prefect start-up: add about 10 s for
a `make run`); "cold s" is the first seed's wall time with a fresh feature cache, "s" the mean.

    .venv/bin/python benchmarks/quality.py [--seeds 1,2,3] [--only frozen,top2,all6,250]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flows  # noqa: E402,F401
from benchmarks.results import table, write_section  # noqa: E402

CONFIGS = {  # name -> overrides (on top of the defaults and data.conflicts=drop)
    "frozen (unfreeze_top=0)": {"train.unfreeze_top": 0},
    "top 2 blocks (unfreeze_top=2)": {"train.unfreeze_top": 2},
    "all 6 blocks (unfreeze_top=6)": {"train.unfreeze_top": 6},
    "250 training rows, defaults": {"data.max_train_rows": 250},
}
KEYS = {"frozen": "frozen (unfreeze_top=0)", "top2": "top 2 blocks (unfreeze_top=2)",
        "all6": "all 6 blocks (unfreeze_top=6)", "250": "250 training rows, defaults"}
RUNS = Path(__file__).resolve().parent / "quality-runs.json"


def pipeline(workdir: Path, overrides: dict) -> dict:
    from tasks.augment import augment
    from tasks.backbone import Backbone
    from tasks.config import RetrainConfig
    from tasks.embed import embed
    from tasks.evaluate import evaluate
    from tasks.finetune import finetune
    from tasks.split import split
    from tasks.tokenize import tokenize
    from tasks.validate import validate

    cfg = RetrainConfig.from_parameters(workdir=workdir, overrides={"data.conflicts": "drop", **overrides})
    backbone = Backbone.resolve(None)
    started = time.perf_counter()
    validated = validate(cfg.data, workdir)
    splits = split(validated, cfg.split, cfg.data.max_train_rows, cfg.data.min_per_class, workdir)
    tokenized = tokenize(augment(splits, cfg.augment, cfg.seed, workdir), cfg.tokenize, backbone, workdir)
    features = embed(tokenized, backbone, cfg.train.unfreeze_top, workdir)
    model = finetune(features, cfg.train, cfg.seed, backbone, workdir)
    test = evaluate(model, features, workdir).meta["test"]
    return {"accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "n": test["n"],
            "seconds": round(time.perf_counter() - started, 1), "epochs": model.meta.get("phases"),
            "n_aug": cfg.augment.n_aug}


def baselines(workdir: Path) -> list[list[str]]:
    """TF-IDF + LR and frozen-embedding + LR on the same split (deterministic: one run each)."""
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from tasks.augment import augment
    from tasks.backbone import Backbone
    from tasks.config import AugmentConfig, RetrainConfig
    from tasks.embed import embed
    from tasks.split import split
    from tasks.tokenize import tokenize
    from tasks.validate import validate

    cfg = RetrainConfig.from_parameters(workdir=workdir, overrides={"data.conflicts": "drop"})
    splits = split(validate(cfg.data, workdir), cfg.split, 0, cfg.data.min_per_class, workdir)
    frame = pq.read_table(splits.resolve(workdir)).to_pandas()
    train, test = frame[frame["split"] == "train"], frame[frame["split"] == "test"]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    tfidf = LogisticRegression(C=10, max_iter=3000, class_weight="balanced").fit(
        vectorizer.fit_transform(train["text"]), train["label"])
    predicted = tfidf.predict(vectorizer.transform(test["text"]))
    rows = [["TF-IDF (1-2 grams) + logistic regression, balanced", f"{accuracy_score(test['label'], predicted):.3f}",
             f"{f1_score(test['label'], predicted, average='macro'):.3f}"]]
    backbone = Backbone.resolve(None)
    features = embed(tokenize(augment(splits, AugmentConfig(n_aug=0), 0, workdir), cfg.tokenize, backbone, workdir),
                     backbone, 0, workdir)
    table_ = pq.read_table(features.resolve(workdir)).to_pandas()
    is_train, is_test = table_["split"].astype(object) == "train", table_["split"].astype(object) == "test"
    x = np.stack(table_["embedding"].to_numpy())
    y = table_["label_id"].to_numpy()
    lr = LogisticRegression(C=1, max_iter=5000, class_weight="balanced").fit(x[is_train], y[is_train])
    predicted = lr.predict(x[is_test])
    rows.append(["frozen all-MiniLM-L6-v2 embeddings + logistic regression, balanced",
                 f"{accuracy_score(y[is_test], predicted):.3f}", f"{f1_score(y[is_test], predicted, average='macro'):.3f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(KEYS)} (default: all)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    only = {KEYS[key.strip()] for key in args.only.split(",") if key.strip()}
    runs = json.loads(RUNS.read_text()) if RUNS.exists() else []
    with tempfile.TemporaryDirectory() as tmp:
        base_rows = baselines(Path(tmp) / "baselines")
        for name, overrides in CONFIGS.items():
            if only and name not in only:
                continue
            workdir = Path(tmp) / name.split()[0]  # a fresh feature cache per configuration: the first seed is cold
            for seed in seeds:
                if any(r["config"] == name and r["seed"] == seed for r in runs):
                    continue
                result = {"config": name, "seed": seed, **pipeline(workdir, {**overrides, "seed": seed})}
                print(json.dumps(result), file=sys.stderr, flush=True)
                runs.append(result)
                RUNS.write_text(json.dumps(runs, indent=1))
    sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
    ours = []
    for name in CONFIGS:
        group = sorted((r for r in runs if r["config"] == name), key=lambda r: r["seed"])
        if group:
            acc, f1 = [r["accuracy"] for r in group], [r["macro_f1"] for r in group]
            ours.append([name, len(group), f"{statistics.mean(acc):.3f} ± {sd(acc):.3f}",
                         f"{statistics.mean(f1):.3f} ± {sd(f1):.3f}", f"{group[0]['seconds']:.0f}",
                         f"{statistics.mean(r['seconds'] for r in group):.0f}"])
    body = (table(["baseline (same split)", "test accuracy", "test macro-F1"], base_rows) + "\n\n"
            + table(["ours", "seeds", "test accuracy (mean ± sd)", "test macro-F1 (mean ± sd)", "cold s", "s"], ours)
            + f"\n\nTest split: {runs[0]['n'] if runs else '?'} sentences. Raw runs: benchmarks/quality-runs.json.")
    write_section("quality", body)


if __name__ == "__main__":
    main()
