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

Rare class (issue 14): the same PhraseBank with the negative rows subsampled (fixed seed) to ~3 % of all rows,
written to a file and passed as `data`; a kept sentence keeps its split (a row's split depends only on its
text), so its validation and test rows are the balanced split's, less most negatives. There the default recipe
runs with and without `train.class_weights`, and both baselines with and without class_weight="balanced"
(C chosen on validation for each); validation and test side by side, with the rare class's own F1.

    .venv/bin/python benchmarks/quality.py [--seeds 1,2,3] [--only frozen,top2,all6,250,rare,rare-cw,...]
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

RARE_LABEL, RARE_SHARE, RARE_SEED = "negative", 0.03, 14


def rare_data(path: Path, share: float = RARE_SHARE, seed: int = RARE_SEED) -> Path:
    """The bundled PhraseBank with its RARE_LABEL rows subsampled (seeded, so always the same rows) to `share`
    of all rows; the other rows all kept, in the file's order. Writes a CSV at `path` and returns it."""
    import pandas as pd

    from schemas.config import BUNDLED_DATA

    frame = pd.read_csv(BUNDLED_DATA, dtype=str, keep_default_na=False)
    rare = frame[frame["label"] == RARE_LABEL]
    n_keep = round(share * (len(frame) - len(rare)) / (1 - share))
    kept = frame.drop(rare.index.difference(rare.sample(n=n_keep, random_state=seed).index))
    path.parent.mkdir(parents=True, exist_ok=True)
    kept.to_csv(path, index=False)
    return path


DATASETS = {"rare": rare_data}  # key -> writer of the file passed as `data` (None: the bundled PhraseBank)
CONFIGS = {  # key -> (description, overrides on top of the defaults and data.conflicts=drop[, dataset key])
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
    # Rare class: negatives cut to ~3 % of the rows (rare_data); class weighting selected on validation macro-F1
    "rare": ("rare negatives: default (no class weights)", {}, "rare"),
    "rare-cw": ("rare negatives: balanced class weights", {"train.class_weights": True}, "rare"),
}


def dataset_of(key: str) -> str | None:
    return CONFIGS[key][2] if len(CONFIGS[key]) > 2 else None
RUNS = Path(__file__).resolve().parent / "quality-runs.json"
BASELINES = Path(__file__).resolve().parent / "quality-baselines.json"  # deterministic: computed once


def run_steps(workdir: Path, overrides: dict, data: Path | None, until: str):
    """The retrain DAG (flows/dag.py) as plain functions up to the step `until`, for a configuration (`overrides`
    on top of the defaults and data.conflicts=drop); returns (cfg, results by step name, backbone)."""
    from core.model.backbone import Backbone
    from flows import dag
    from schemas.config import RetrainConfig

    cfg = RetrainConfig.from_parameters(data=data, workdir=workdir, overrides={"data.conflicts": "drop", **overrides})
    backbone = Backbone.resolve(cfg.model.backbone)
    return cfg, dag.run(dag.PlainSteps(cfg), cfg, until=until, backbone=backbone), backbone


def prepare(workdir: Path, overrides: dict, data: Path | None = None):
    """Run the data steps for a configuration (validate to embed); returns (cfg, features, augmented, backbone)."""
    cfg, done, backbone = run_steps(workdir, overrides, data, until="embed")
    return cfg, done["embed"], done["augment"], backbone


def train_and_score(workdir: Path, overrides: dict, data: Path | None = None) -> dict:
    """One configuration and seed: validation figures of the kept epoch, test figures, wall seconds."""
    started = time.perf_counter()
    _, done, _ = run_steps(workdir, overrides, data, until="evaluate")
    model, features, test = done["finetune"], done["embed"], done["evaluate"].meta["test"]
    seconds = round(time.perf_counter() - started, 1)
    val = validation_metrics(model, features, workdir)
    return {"val_accuracy": model.meta["best_val_accuracy"], "val_macro_f1": model.meta["best_val_macro_f1"],
            "accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "n": test["n"],
            "per_class_f1": {label: v["f1"] for label, v in test["per_class"].items()},
            "val_per_class_f1": {label: v["f1"] for label, v in val["per_class"].items()},
            "val_n": val["n"], "val_support": {label: v["support"] for label, v in val["per_class"].items()},
            "test_support": {label: v["support"] for label, v in test["per_class"].items()},
            "confusion_val": val["confusion_matrix"]["rows_true_cols_predicted"],
            "confusion_test": test["confusion_matrix"]["rows_true_cols_predicted"],
            "seconds": seconds, "epochs": model.meta["epochs_run"],
            "best_epoch": model.meta["best_epoch"], "selection": model.meta["selection"],
            "regime": model.meta.get("regime")}


def validation_metrics(model, features, workdir: Path) -> dict:
    """The kept model's figures on the validation rows (per class, confusion matrix), as evaluate scores test."""
    from core.metrics import classification_metrics
    from core.model.classifier import SplitFeatures, load_classifier
    from core.model.inference import predict_stored

    val = SplitFeatures(features, workdir, "val")
    proba = predict_stored(load_classifier(model, workdir), val.embeddings, val.hidden,
                           int(features.meta["frozen_blocks"]))
    return classification_metrics(val.labels, proba, list(features.meta["labels"]))


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
    labels = list(features.meta["labels"])
    support = {name: np.bincount(y[name], minlength=len(labels)).tolist() for name in y}

    def scores(val_f1, c, weighting, model):
        predicted, predicted_val = model.predict(x["test"]), model.predict(x["val"])
        return {"C": c, "class_weight": weighting or "none", "val_macro_f1": val_f1,
                "val_accuracy": accuracy_score(y["val"], predicted_val),
                "accuracy": accuracy_score(y["test"], predicted),
                "macro_f1": f1_score(y["test"], predicted, average="macro"),
                "per_class_f1": f1_score(y["test"], predicted, average=None).tolist(),
                "val_per_class_f1": f1_score(y["val"], predicted_val, average=None).tolist()}

    out = {}
    for name, x in (("TF-IDF (1-2 grams) + logistic regression", tfidf),
                    ("frozen all-MiniLM-L6-v2 embeddings + logistic regression", embedded)):
        fits = []  # in this order the first best wins a tie: smaller C first, then no weighting
        for c in (0.1, 0.3, 1, 3, 10, 30, 100):
            for weighting in (None, "balanced"):
                model = LogisticRegression(C=c, max_iter=5000, class_weight=weighting).fit(x["train"], y["train"])
                fits.append((f1_score(y["val"], model.predict(x["val"]), average="macro"), c, weighting, model))
        best = max(fits, key=lambda fit: fit[0])  # max keeps the first of equals
        by_weighting = {w or "none": scores(*max((f for f in fits if f[2] == w), key=lambda fit: fit[0]))
                        for w in (None, "balanced")}
        out[name] = {**scores(*best), "labels": labels, "support": support, "by_weighting": by_weighting}
    return out


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def load_baselines() -> dict[str, dict]:
    """dataset ("phrasebank", "rare") -> baseline name -> figures; the file once held the PhraseBank's alone."""
    stored = json.loads(BASELINES.read_text()) if BASELINES.exists() else {}
    return stored if not stored or "phrasebank" in stored else {"phrasebank": stored}


def group_of(runs: list[dict], key: str) -> list[dict]:
    return sorted((r for r in runs if r["config"] == key), key=lambda r: r["seed"])


def rare_report(runs: list[dict], base: dict | None) -> str:
    """The rare-class table (validation and test side by side, the rare class's own F1) and the class-weight
    decision on validation macro-F1, on the balanced PhraseBank and on the rare cut."""
    rows = []
    for name, b in (base or {}).items():
        k = b["labels"].index(RARE_LABEL)
        for weighting, w in b["by_weighting"].items():
            rows.append([f"{name}, class_weight={weighting} (C={w['C']})", "-", f"{w['val_accuracy']:.3f}",
                         f"{w['val_macro_f1']:.3f}", f"{w['val_per_class_f1'][k]:.3f}", f"{w['accuracy']:.3f}",
                         f"{w['macro_f1']:.3f}", f"{w['per_class_f1'][k]:.3f}"])
    for key in ("rare", "rare-cw"):
        group = group_of(runs, key)
        if group:
            rows.append([f"ours, {CONFIGS[key][0]}", len(group), mean_sd([r["val_accuracy"] for r in group]),
                         mean_sd([r["val_macro_f1"] for r in group]),
                         mean_sd([r["val_per_class_f1"][RARE_LABEL] for r in group]),
                         mean_sd([r["accuracy"] for r in group]), mean_sd([r["macro_f1"] for r in group]),
                         mean_sd([r["per_class_f1"][RARE_LABEL] for r in group])])
    decision = []
    for data, plain, weighted in (("balanced PhraseBank", "top2", "sel-cw"), ("rare negatives (~3 %)", "rare", "rare-cw")):
        a, b = {r["seed"]: r for r in group_of(runs, plain)}, {r["seed"]: r for r in group_of(runs, weighted)}
        common = sorted(set(a) & set(b))
        if not common:
            continue
        diffs = [b[s]["val_macro_f1"] - a[s]["val_macro_f1"] for s in common]
        test_diffs = [b[s]["macro_f1"] - a[s]["macro_f1"] for s in common]
        decision.append([data, ",".join(map(str, common)), mean_sd([a[s]["val_macro_f1"] for s in common]),
                         mean_sd([b[s]["val_macro_f1"] for s in common]), f"{statistics.mean(diffs):+.3f}",
                         f"{sum(d > 0 for d in diffs)} of {len(diffs)}", f"{statistics.mean(test_diffs):+.3f}"])
    if not rows:
        return ""
    text = ("\n\n### Rare class: negatives cut to ~3 % of the rows\n\n"
            f"The bundled PhraseBank with its `{RARE_LABEL}` rows subsampled (pandas `sample`, random_state="
            f"{RARE_SEED}) to {RARE_SHARE:.0%} of all rows; every other row kept (benchmarks/quality.py `rare_data`). ")
    if base:
        b = next(iter(base.values()))
        k = b["labels"].index(RARE_LABEL)
        counts = {split: b["support"][split] for split in ("train", "val", "test")}
        text += ("Rows after validation (duplicates and conflicts dropped): "
                 + ", ".join(f"{split} {sum(c)} ({c[k]} {RARE_LABEL})" for split, c in counts.items()) + ". ")
    group = group_of(runs, "rare") + group_of(runs, "rare-cw")
    if group:
        text += f"Epoch selection in these runs: {sorted({r['selection'] for r in group})}. "
    text += ("Baselines: C chosen on validation macro-F1 for each weighting. F1 of the rare class is that of "
             f"`{RARE_LABEL}`.\n\n")
    text += table(["method (rare split)", "seeds", "val accuracy", "val macro-F1", f"val F1 {RARE_LABEL}",
                   "test accuracy", "test macro-F1", f"test F1 {RARE_LABEL}"], rows)
    if decision:
        text += ("\n\nClass weighting (`train.class_weights`), decided on validation macro-F1 over the seeds both "
                 "settings ran (test difference shown, not used):\n\n"
                 + table(["data", "seeds", "val macro-F1, no weights", "val macro-F1, balanced weights",
                          "val Δ (weights - none)", "seeds where weights win", "test Δ"], decision))
    return text


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
    stored = load_baselines()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "work"  # one feature cache for all: the frozen part is computed once per cut
        data = {key: writer(Path(tmp) / f"{key}.csv") for key, writer in DATASETS.items()}
        needed = ["phrasebank"] + ([] if args.report_only else
                                   sorted({dataset_of(key) for key in only} - {None}))
        for dataset in needed:
            if dataset not in stored:  # deterministic: computed once
                stored[dataset] = baselines(workdir, data=data.get(dataset))
                BASELINES.write_text(json.dumps(stored, indent=1))
                print(json.dumps({"baselines": dataset, **stored[dataset]}), file=sys.stderr, flush=True)
        for key in [] if args.report_only else only:
            overrides = CONFIGS[key][1]
            for seed in seeds:
                if any(r["config"] == key and r["seed"] == seed for r in runs):
                    continue
                result = {"config": key, "seed": seed,
                          **train_and_score(workdir, {**overrides, "seed": seed}, data.get(dataset_of(key)))}
                print(json.dumps(result), file=sys.stderr, flush=True)
                runs.append(result)
                RUNS.write_text(json.dumps(runs, indent=1))
    base = stored["phrasebank"]
    base_rows = [[name, f"C={b['C']}, {b['class_weight']}", f"{b['val_accuracy']:.3f} / {b['val_macro_f1']:.3f}",
                  f"{b['accuracy']:.3f} / {b['macro_f1']:.3f}"] for name, b in base.items()]
    ours = []
    for key, (description, *_) in CONFIGS.items():
        group = group_of(runs, key)
        if group and dataset_of(key) is None:
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
              "benchmarks/quality-runs.json."
            + rare_report(runs, stored.get("rare")))
    write_section("quality", body)


if __name__ == "__main__":
    main()
