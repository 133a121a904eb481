"""Seed ensembles (issue 14): what `train.ensemble = 3` adds over one model, and what it costs.

On the split and data of benchmarks/quality.py's `top2` configuration (the default recipe, the bundled PhraseBank
with data.conflicts=drop; its `prepare`, the same feature cache layout), one run of the pipeline's finetune with
`train.ensemble=3` and `seed=S` trains members with seeds S, S+1, S+2: each is the single model a `seed=S+i` run
trains, so the members' figures are checked against quality-runs.json's `top2` runs of those seeds (a second
path: the same models trained in another process), and the ensemble is compared with the mean ± sd of its own
three members. Validation figures of the ensemble are those finetune records (members' validation probabilities
averaged); they are re-computed here through `core.model.inference.predict_stored` on the saved model (another path).
Test figures come from the pipeline's evaluate on the saved ensemble; each member is scored on the same stored
test features through its own part of the saved model (`core.model.graph.members_of`).

Cost, measured in the same run: each member's training time (finetune's per-member log lines, timestamped as they
arrive) against the ensemble's whole finetune (k members, assembling and saving the model), and the inference
time of the whole saved model on the test sentences (token ids in) against one member's (shared bottom + that
member's top), each scored twice and the faster kept.

    .venv/bin/python benchmarks/ensemble.py [--seeds 1,4] [--k 3] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flows  # noqa: E402,F401
from benchmarks.quality import CONFIGS, RUNS, mean_sd, prepare, validation_metrics  # noqa: E402
from benchmarks.results import table, write_section  # noqa: E402

OUT = Path(__file__).resolve().parent / "ensemble-runs.json"
CONFIG = "top2"  # quality.py's configuration whose split, data and recipe the ensembles use


class MemberClock(logging.Handler):
    """Records when finetune reports each member finished (its log line), on the benchmark's clock."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.marks: list[float] = []

    def emit(self, record):
        if record.getMessage().startswith("finetune: member "):
            self.marks.append(time.perf_counter())


def _f1_acc(y, proba) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    predicted = proba.argmax(axis=1)
    return (float(accuracy_score(y, predicted)),
            float(f1_score(y, predicted, labels=list(range(proba.shape[1])), average="macro", zero_division=0)))


def _score_part(part, split, frozen_blocks: int):
    import numpy as np

    from core.model.inference import forward, pad_hidden, predict_in_order

    run = forward(part)
    if frozen_blocks < 6:
        proba = predict_in_order(lambda rows: run(pad_hidden([split.hidden[i] for i in rows])),
                                 [len(h) for h in split.hidden])
    else:
        proba = predict_in_order(lambda rows: run(split.embeddings[rows]), np.zeros(len(split.labels)), 1024)
    proba = np.asarray(proba, dtype=np.float64)
    return proba / proba.sum(axis=1, keepdims=True)


def _timed(fn, repeats: int = 2) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def run_ensemble(workdir: Path, seed: int, k: int, data: Path | None = None, extra: dict | None = None) -> dict:
    """One ensemble of k on top2's split: its figures, its members' figures and the costs."""
    import keras
    import numpy as np
    import pyarrow.parquet as pq

    from core.model.backbone import encode_for_model
    from tasks.evaluate import evaluate
    from core.model.classifier import SplitFeatures, load_classifier
    from tasks.finetune import finetune
    from core.model.inference import predict_stored, predict_token_ids
    from core.model.graph import members_of

    overrides = {**CONFIGS[CONFIG][1], "seed": seed, "train.ensemble": k, **(extra or {})}
    started = time.perf_counter()
    cfg, features, augmented, backbone = prepare(workdir, overrides, data)
    prepared = time.perf_counter()
    clock = MemberClock()
    logging.getLogger("tasks.finetune").addHandler(clock)
    try:
        model = finetune(features, cfg.train, cfg.seed, backbone, workdir)
    finally:
        logging.getLogger("tasks.finetune").removeHandler(clock)
    trained = time.perf_counter()
    evaluation = evaluate(model, features, augmented, workdir)
    evaluated = time.perf_counter()
    test = evaluation.meta["test"]
    member_seconds = [b - a for a, b in zip([prepared, *clock.marks[:-1]], clock.marks)]
    assert len(member_seconds) == k, clock.marks

    frozen_blocks = int(features.meta["frozen_blocks"])
    classifier = load_classifier(model, workdir)
    val_split, test_split = SplitFeatures(features, workdir, "val"), SplitFeatures(features, workdir, "test")
    val_again = validation_metrics(model, features, workdir)  # the saved ensemble through predict_stored
    ensemble_test = predict_stored(classifier, test_split.embeddings, test_split.hidden, frozen_blocks)
    members = []
    member_test = []
    for part, figures in zip(members_of(classifier, frozen_blocks), model.meta["ensemble"]["member_figures"]):
        proba = _score_part(part, test_split, frozen_blocks)
        val_proba = _score_part(part, val_split, frozen_blocks)
        member_test.append(proba)
        accuracy, macro_f1 = _f1_acc(test_split.labels, proba)
        val_accuracy, val_macro_f1 = _f1_acc(val_split.labels, val_proba)
        members.append({"seed": figures["seed"], "best_epoch": figures["best_epoch"],
                        "epochs_run": figures["epochs_run"], "val_accuracy": figures["best_val_accuracy"],
                        "val_macro_f1": figures["best_val_macro_f1"], "val_accuracy_rescored": val_accuracy,
                        "val_macro_f1_rescored": val_macro_f1, "accuracy": accuracy, "macro_f1": macro_f1})

    # Inference cost: the whole saved model on the test texts (token ids in) against one member alone.
    card = json.loads((model.resolve(workdir) / "model.json").read_text())
    texts = pq.read_table(evaluation.resolve(workdir) / "predictions.parquet").to_pandas()["text"].tolist()
    sequences = encode_for_model(backbone.path, texts, int(card["tokenizer"]["sequence_length"]))
    if frozen_blocks < 6:
        bottom, ensemble = classifier.get_layer("bottom"), classifier.get_layer("ensemble")
        inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in ("token_ids", "padding_mask")}
        member_1 = ensemble.get_layer("member_1")
        single = keras.Model(inputs, member_1({"hidden": bottom(inputs), "padding_mask": inputs["padding_mask"]}))
    else:
        from core.model.graph import build_classifier
        from core.model.backbone import find_backbone

        single = build_classifier(find_backbone(classifier), classifier.get_layer("head").get_layer("member_1"))
    ensemble_infer_s, whole = _timed(lambda: predict_token_ids(classifier, sequences))
    single_infer_s, single_whole = _timed(lambda: predict_token_ids(single, sequences))
    return {
        "config": CONFIG, "seed": seed, "k": k, "n_test": test["n"], "n_val": int(len(val_split.labels)),
        "val_accuracy": model.meta["best_val_accuracy"], "val_macro_f1": model.meta["best_val_macro_f1"],
        "val_accuracy_rescored": val_again["accuracy"], "val_macro_f1_rescored": val_again["macro_f1"],
        "accuracy": test["accuracy"], "macro_f1": test["macro_f1"],
        "members": members,
        "checks": {
            "ensemble_vs_mean_of_members_test_max_abs":
                float(np.abs(ensemble_test - np.mean(member_test, axis=0)).max()),
            "whole_model_vs_stored_features_test_max_abs": float(np.abs(whole - ensemble_test).max()),
            "member_1_whole_vs_stored_test_max_abs": float(np.abs(single_whole - member_test[0]).max()),
        },
        "seconds": {"prepare": round(prepared - started, 1), "finetune": round(trained - prepared, 1),
                    "members": [round(s, 1) for s in member_seconds],
                    "assemble_and_save": round(trained - clock.marks[-1], 1),
                    "evaluate": round(evaluated - trained, 1),
                    "inference_whole_ensemble": round(ensemble_infer_s, 2),
                    "inference_whole_single": round(single_infer_s, 2)},
    }


def report(runs: list[dict]) -> str:
    quality = {r["seed"]: r for r in json.loads(RUNS.read_text()) if r["config"] == CONFIG} if RUNS.exists() else {}
    rows, checks, costs = [], [], []
    for run in runs:
        seeds = [m["seed"] for m in run["members"]]
        members = run["members"]
        rows.append([f"{len(members)} single models (its members), seeds {','.join(map(str, seeds))}", len(members),
                     mean_sd([m["val_accuracy"] for m in members]), mean_sd([m["val_macro_f1"] for m in members]),
                     mean_sd([m["accuracy"] for m in members]), mean_sd([m["macro_f1"] for m in members])])
        rows.append([f"**ensemble of {run['k']}** (`train.ensemble={run['k']}`, seed={run['seed']})", 1,
                     f"{run['val_accuracy']:.3f}", f"{run['val_macro_f1']:.3f}", f"{run['accuracy']:.3f}",
                     f"{run['macro_f1']:.3f}"])
        best = max(members, key=lambda m: m["val_macro_f1"])
        rows.append([f"best member on validation (seed {best['seed']})", 1, f"{best['val_accuracy']:.3f}",
                     f"{best['val_macro_f1']:.3f}", f"{best['accuracy']:.3f}", f"{best['macro_f1']:.3f}"])
        for m in members:
            q = quality.get(m["seed"])
            checks.append([m["seed"], f"{m['best_epoch']} of {m['epochs_run']}",
                           f"{m['val_macro_f1']:.4f} / {q['val_macro_f1']:.4f}" if q
                           else f"{m['val_macro_f1']:.4f} / -",
                           f"{m['macro_f1']:.4f} / {q['macro_f1']:.4f}" if q else f"{m['macro_f1']:.4f} / -",
                           f"{m['accuracy']:.4f} / {q['accuracy']:.4f}" if q else f"{m['accuracy']:.4f} / -",
                           f"{q['best_epoch']} of {q['epochs']}" if q else "-"])
        s = run["seconds"]
        single = statistics.mean(s["members"])
        costs.append([f"seed={run['seed']}", ", ".join(f"{x:.0f}" for x in s["members"]), f"{single:.0f}",
                      f"{s['finetune']:.0f}", f"{s['finetune'] / single:.2f}",
                      f"{s['inference_whole_single']:.1f}", f"{s['inference_whole_ensemble']:.1f}",
                      f"{s['inference_whole_ensemble'] / s['inference_whole_single']:.2f}"])
    n_test = runs[0]["n_test"] if runs else "?"
    n_val = runs[0]["n_val"] if runs else "?"
    text = ("Seed ensembles on quality's `top2` split (default recipe: top 2 blocks, bundled PhraseBank, "
            f"{n_val} validation and {n_test} test sentences). The members are the single models a run with their "
            "seed trains; the ensemble saves one model that averages their probabilities.\n\n")
    text += table(["model", "models", "val accuracy", "val macro-F1", "test accuracy", "test macro-F1"], rows)
    for run in runs:
        members = run["members"]
        s = run["seconds"]
        text += (f"\n\nseed={run['seed']}: the ensemble's test macro-F1 is "
                 f"{run['macro_f1'] - statistics.mean(m['macro_f1'] for m in members):+.3f} over its members' mean "
                 f"(validation {run['val_macro_f1'] - statistics.mean(m['val_macro_f1'] for m in members):+.3f}), "
                 f"test accuracy {run['accuracy'] - statistics.mean(m['accuracy'] for m in members):+.3f}; for "
                 f"{s['finetune'] / statistics.mean(s['members']):.1f}x the training time and "
                 f"{s['inference_whole_ensemble'] / s['inference_whole_single']:.1f}x the inference time of one model.")
    text += ("\n\nSecond path: each member against quality.py's `top2` run of the same seed "
             "(benchmarks/quality-runs.json), figures here / there:\n\n")
    text += table(["seed", "epoch kept", "val macro-F1", "test macro-F1", "test accuracy", "quality's epoch kept"],
                  checks)
    notes = [n for run in runs for n in run.get("second_path_notes", [])]
    if notes:
        text += "\n\n" + "\n".join(f"- {n}" for n in notes)
    text += ("\n\nCost, in the same run (wall seconds on a shared 2-core CPU with other jobs beside it, so each "
             "member's seconds are noisy; ratios are what to read): "
             "training = finetune's time per member and for the whole ensemble (members, assembling and saving); "
             f"inference = the whole saved model on the {n_test} test sentences (token ids in), one member "
             "(shared bottom + its top) against the ensemble, faster of two passes:\n\n")
    text += table(["ensemble", "s per member", "single (mean)", "ensemble finetune s", "training ratio",
                   "inference s, single", "inference s, ensemble", "inference ratio"], costs)
    checks_text = []
    for run in runs:
        c = run["checks"]
        checks_text.append(f"seed={run['seed']}: saved ensemble vs mean of its members' probabilities (stored test "
                           f"features) max |diff| {c['ensemble_vs_mean_of_members_test_max_abs']:.1e}; whole model "
                           f"on token ids vs stored features {c['whole_model_vs_stored_features_test_max_abs']:.1e}; "
                           f"validation macro-F1 recorded {run['val_macro_f1']:.4f}, re-scored through "
                           f"predict_stored {run['val_macro_f1_rescored']:.4f}")
    text += "\n\nChecks: " + "; ".join(checks_text) + ". Raw runs: benchmarks/ensemble-runs.json."
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    runs = json.loads(OUT.read_text()) if OUT.exists() else []
    if not args.report_only:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp) / "work"
            for seed in [int(s) for s in args.seeds.split(",")]:
                if any(r["seed"] == seed and r["k"] == args.k for r in runs):
                    continue
                result = run_ensemble(workdir, seed, args.k)
                print(json.dumps(result), file=sys.stderr, flush=True)
                runs.append(result)
                OUT.write_text(json.dumps(runs, indent=1))
    write_section("ensemble", report(sorted(runs, key=lambda r: (r["k"], r["seed"]))))


if __name__ == "__main__":
    main()
