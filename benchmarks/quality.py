"""Quality on the bundled data: ours against the baselines, validation and test side by side, over seeds.

One fixed split (the default `split.salt`; the seed changes only training). For each configuration the
pipeline's own step functions run in one process (validate, split, augment, tokenize, embed, finetune,
evaluate: the frozen part is computed once and shared through the feature cache) and each seed reports
the *validation* figures of the epoch it kept and the *test* figures of that model. Settings are chosen on
validation (the "selection" group below: the recipe's learning rates and class weighting); the test split
is read once per configuration and seed, for reporting. The baselines are fitted on the same training rows,
with their regularisation strength chosen on the same validation rows:
- TF-IDF (1-2 grams) + logistic regression;
- logistic regression on the frozen backbone's pooled embeddings (the features our head starts from).
"cold s" is the first seed's wall time with a fresh feature cache, "s" the mean over seeds.

    .venv/bin/python benchmarks/quality.py [--seeds 1,2,3] [--only frozen,top2,all6,250,...]
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

CONFIGS = {  # key -> (description, overrides on top of the defaults and data.conflicts=drop)
    "top2": ("default: top 2 blocks (unfreeze_top=2)", {}),
    "frozen": ("frozen backbone, head alone (unfreeze_top=0)", {"train.unfreeze_top": 0}),
    "all6": ("all 6 blocks (unfreeze_top=6)", {"train.unfreeze_top": 6}),
    "250": ("250 training rows, defaults", {"data.max_train_rows": 250}),
    # Selection of the recipe's settings, on validation figures (test shown, never used to choose):
    "sel-blocks2e-4": ("selection: blocks at 2e-4", {"train.finetune_learning_rate": 2e-4}),
    "sel-head1e-4": ("selection: head at 1e-4 (= blocks)", {"train.learning_rate": 1e-4}),
    "sel-cw": ("selection: balanced class weights", {"train.class_weights": True}),
    "sel-frozen-head1e-2": ("selection: frozen, head at 1e-2", {"train.unfreeze_top": 0, "train.learning_rate": 1e-2}),
    "sel-frozen-head1e-3": ("selection: frozen, head at 1e-3", {"train.unfreeze_top": 0, "train.learning_rate": 1e-3}),
}
RUNS = Path(__file__).resolve().parent / "quality-runs.json"
BASELINES = Path(__file__).resolve().parent / "quality-baselines.json"  # deterministic: computed once


def prepare(workdir: Path, overrides: dict, data: Path | None = None):
    """Run the data steps for a configuration; returns (cfg, features, augmented, backbone)."""
    from tasks.augment import augment
    from tasks.backbone import Backbone
    from tasks.config import RetrainConfig
    from tasks.embed import embed
    from tasks.split import split
    from tasks.tokenize import tokenize
    from tasks.validate import validate

    cfg = RetrainConfig.from_parameters(data=data, workdir=workdir, overrides={"data.conflicts": "drop", **overrides})
    backbone = Backbone.resolve(None)
    splits = split(validate(cfg.data, workdir), cfg.split, cfg.data.max_train_rows, cfg.data.min_per_class, workdir)
    augmented = augment(splits, cfg.augment, cfg.seed, workdir)
    tokenized = tokenize(augmented, cfg.tokenize, backbone, workdir)
    return cfg, embed(tokenized, backbone, cfg.train.unfreeze_top, workdir), augmented, backbone


def train_and_score(workdir: Path, overrides: dict, data: Path | None = None) -> dict:
    """One configuration and seed: validation figures of the kept epoch, test figures, wall seconds."""
    from tasks.evaluate import evaluate
    from tasks.finetune import finetune

    started = time.perf_counter()
    cfg, features, augmented, backbone = prepare(workdir, overrides, data)
    model = finetune(features, cfg.train, cfg.seed, backbone, workdir)
    test = evaluate(model, features, augmented, workdir).meta["test"]
    return {"val_accuracy": model.meta["best_val_accuracy"], "val_macro_f1": model.meta["best_val_macro_f1"],
            "accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "n": test["n"],
            "per_class_f1": {label: v["f1"] for label, v in test["per_class"].items()},
            "seconds": round(time.perf_counter() - started, 1), "epochs": model.meta["epochs_run"],
            "best_epoch": model.meta["best_epoch"], "selection": model.meta["selection"]}


def baselines(workdir: Path, overrides: dict | None = None, data: Path | None = None) -> dict[str, dict]:
    """TF-IDF + LR and frozen-embedding + LR on the same split; C chosen on validation macro-F1."""
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    _, features, augmented, _ = prepare(workdir, {**(overrides or {}), "train.unfreeze_top": 0}, data)
    table_ = pq.read_table(features.resolve(workdir), columns=["row_id", "split", "label_id", "embedding",
                                                               "is_augmented"]).to_pandas()
    texts = pq.read_table(augmented.resolve(workdir), columns=["row_id", "text"]).to_pandas().set_index("row_id")
    table_ = table_[~table_["is_augmented"]]
    part = {name: table_[table_["split"].astype(object) == name] for name in ("train", "val", "test")}
    y = {name: frame["label_id"].to_numpy() for name, frame in part.items()}
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    tfidf = {"train": vectorizer.fit_transform(texts.loc[part["train"]["row_id"], "text"])}
    tfidf.update({name: vectorizer.transform(texts.loc[part[name]["row_id"], "text"]) for name in ("val", "test")})
    embedded = {name: np.stack(frame["embedding"].to_numpy()) for name, frame in part.items()}
    out = {}
    for name, x in (("TF-IDF (1-2 grams) + logistic regression", tfidf),
                    ("frozen all-MiniLM-L6-v2 embeddings + logistic regression", embedded)):
        best = None
        for c in (0.1, 0.3, 1, 3, 10, 30, 100):
            for weighting in (None, "balanced"):
                model = LogisticRegression(C=c, max_iter=5000, class_weight=weighting).fit(x["train"], y["train"])
                val_f1 = f1_score(y["val"], model.predict(x["val"]), average="macro")
                if best is None or val_f1 > best[0]:
                    best = (val_f1, c, weighting, model)
        val_f1, c, weighting, model = best
        predicted = model.predict(x["test"])
        out[name] = {"C": c, "class_weight": weighting or "none", "val_macro_f1": val_f1,
                     "val_accuracy": accuracy_score(y["val"], model.predict(x["val"])),
                     "accuracy": accuracy_score(y["test"], predicted),
                     "macro_f1": f1_score(y["test"], predicted, average="macro"),
                     "per_class_f1": f1_score(y["test"], predicted, average=None).tolist()}
    return out


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(CONFIGS)} (default: all)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the RESULTS.md section from the raw "
                                                                   "runs, train nothing")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    only = [key.strip() for key in args.only.split(",") if key.strip()] or list(CONFIGS)
    runs = json.loads(RUNS.read_text()) if RUNS.exists() else []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "work"  # one feature cache for all: the frozen part is computed once per cut
        base = json.loads(BASELINES.read_text()) if BASELINES.exists() else baselines(workdir)
        BASELINES.write_text(json.dumps(base, indent=1))
        for key in [] if args.report_only else only:
            _, overrides = CONFIGS[key]
            for seed in seeds:
                if any(r["config"] == key and r["seed"] == seed for r in runs):
                    continue
                result = {"config": key, "seed": seed, **train_and_score(workdir, {**overrides, "seed": seed})}
                print(json.dumps(result), file=sys.stderr, flush=True)
                runs.append(result)
                RUNS.write_text(json.dumps(runs, indent=1))
    base_rows = [[name, f"C={b['C']}, {b['class_weight']}", f"{b['val_accuracy']:.3f} / {b['val_macro_f1']:.3f}",
                  f"{b['accuracy']:.3f} / {b['macro_f1']:.3f}"] for name, b in base.items()]
    ours = []
    for key, (description, _) in CONFIGS.items():
        group = sorted((r for r in runs if r["config"] == key), key=lambda r: r["seed"])
        if group:
            ours.append([description, len(group),
                         f"{mean_sd([r['val_accuracy'] for r in group])} / {mean_sd([r['val_macro_f1'] for r in group])}",
                         f"{mean_sd([r['accuracy'] for r in group])} / {mean_sd([r['macro_f1'] for r in group])}",
                         f"{group[0]['seconds']:.0f}", f"{statistics.mean(r['seconds'] for r in group):.0f}"])
    body = (table(["baseline (same split)", "chosen on validation", "val accuracy / macro-F1",
                   "test accuracy / macro-F1"], base_rows) + "\n\n"
            + table(["ours", "seeds", "val accuracy / macro-F1 (mean ± sd)", "test accuracy / macro-F1 (mean ± sd)",
                     "cold s", "s"], ours)
            + f"\n\nTest split: {runs[0]['n'] if runs else '?'} sentences. Validation figures are those of the "
              "epoch each run kept. Rows marked \"selection\" compare one setting against the default on "
              "validation; the defaults were chosen on those columns, never on test. Raw runs: "
              "benchmarks/quality-runs.json.")
    write_section("quality", body)


if __name__ == "__main__":
    main()
