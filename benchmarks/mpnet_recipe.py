"""The training recipe for all-mpnet-base-v2 at full size, chosen on validation (issue 26: "re-tuned for the
bigger body, not assumed from MiniLM's").

Each configuration runs the pipeline's own steps (`benchmarks.quality.train_and_score`: validate .. evaluate on
the bundled data, `data.conflicts=drop`, the default split, `model.backbone=all-mpnet-base-v2`) with one or
more seeds, in one workdir whose feature cache holds the frozen bottom of every sentence (filled once, by the
first run or an earlier `flows.retrain` into the same workdir: pass it as WORKDIR). Reported per configuration:
the *validation* macro-F1 and accuracy of the kept epoch (what chooses), the test figures (shown, never used to
choose), the epochs run, wall and CPU seconds of the training run (the features already cached) and the load
average it ran under. Second path: test macro-F1 recomputed from the run's test confusion matrix.

    .venv/bin/python benchmarks/mpnet_recipe.py [--only frozen,top2,...] [--seeds 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flows  # noqa: E402,F401
from benchmarks.quality import train_and_score  # noqa: E402
from benchmarks.results import table, write_section  # noqa: E402

BODY = "all-mpnet-base-v2"
RUNS = Path(__file__).resolve().parent / "mpnet-recipe-runs.json"
# key -> (description, overrides on top of the defaults). Joint fine-tuning named explicitly (auto picks it at
# full size anyway), so each key trains what it says whatever the regime rule becomes.
CONFIGS = {
    "frozen": ("head alone on the frozen body (train.regime=frozen)", {"train.regime": "frozen"}),
    "top1": ("top 1 block, MiniLM's rates (blocks 1e-4, head 1e-3)",
             {"train.regime": "finetune", "train.unfreeze_top": 1}),
    # MiniLM's budget named explicitly: since BODY_TRAIN_DEFAULTS, an unset budget means MPNet's half budget.
    "top2": ("top 2 blocks, MiniLM's recipe (blocks 1e-4, head 1e-3, min_steps 400, min_epochs 4)",
             {"train.regime": "finetune", "train.unfreeze_top": 2, "train.min_steps": 400, "train.min_epochs": 4}),
    "top2-lr5e-5": ("top 2 blocks, blocks at 5e-5", {"train.regime": "finetune", "train.unfreeze_top": 2,
                                                     "train.finetune_learning_rate": 5e-5}),
    "top2-lr2e-4": ("top 2 blocks, blocks at 2e-4", {"train.regime": "finetune", "train.unfreeze_top": 2,
                                                     "train.finetune_learning_rate": 2e-4}),
    "top2-steps800": ("top 2 blocks, twice the step budget (min_steps 800)",
                      {"train.regime": "finetune", "train.unfreeze_top": 2, "train.min_steps": 800}),
    "top2-2ep": ("top 2 blocks, half the step budget (min_steps 200, min_epochs 2: 2 epochs at full size)",
                 {"train.regime": "finetune", "train.unfreeze_top": 2, "train.min_steps": 200,
                  "train.min_epochs": 2}),
    "top4": ("top 4 blocks, MiniLM's rates", {"train.regime": "finetune", "train.unfreeze_top": 4}),
    "top4-2ep": ("top 4 blocks, half the step budget (min_steps 200, min_epochs 2)",
                 {"train.regime": "finetune", "train.unfreeze_top": 4, "train.min_steps": 200,
                  "train.min_epochs": 2}),
}


def macro_f1_from_confusion(confusion: list[list[int]]) -> float:
    """Macro-F1 from a confusion matrix (rows true, columns predicted): the second path for the test figure."""
    n = len(confusion)
    f1s = []
    for k in range(n):
        tp = confusion[k][k]
        predicted = sum(confusion[i][k] for i in range(n))
        actual = sum(confusion[k])
        f1s.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return sum(f1s) / n


def from_summary(key: str, summary: dict, cpu_seconds: float | None) -> dict:
    """A run record from a flows.retrain summary.json (the same fields `train_and_score` returns, where the
    summary has them): validation figures of the kept epoch, test figures, the finetune stage's seconds."""
    training, test = summary["training"], summary["metrics"]["test"]
    confusion = test["confusion_matrix"]["rows_true_cols_predicted"]
    record = {"config": key, "seed": summary["config"]["seed"], "source": f"flows.retrain run {summary['run_id']}",
              "val_accuracy": training["best_val_accuracy"], "val_macro_f1": training["best_val_macro_f1"],
              "accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "n": test["n"],
              "confusion_test": confusion, "epochs": training["epochs_run"], "best_epoch": training["best_epoch"],
              "seconds": summary["stages"]["finetune"]["seconds"], "cpu_seconds": cpu_seconds,
              "run_seconds": summary["seconds"], "load_start": None,
              "test_macro_f1_from_confusion": macro_f1_from_confusion(confusion)}
    assert abs(record["test_macro_f1_from_confusion"] - record["macro_f1"]) < 1e-9, record
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated configuration keys (default: all)")
    parser.add_argument("--seeds", default="1", help="comma-separated seeds")
    parser.add_argument("--workdir", default="", help="workdir whose feature cache to use and fill")
    parser.add_argument("--summary", action="append", default=[], metavar="KEY=PATH",
                        help="record a `python -m flows.retrain` run of configuration KEY from its summary.json "
                             "(its finetune stage's seconds; CPU seconds from the caller's measurement, if any, "
                             "as KEY=PATH:CPU_SECONDS)")
    args = parser.parse_args()
    runs = json.loads(RUNS.read_text()) if RUNS.exists() else []
    for item in args.summary:
        key, _, path = item.partition("=")
        path, _, cpu = path.partition(":")
        record = from_summary(key, json.loads(Path(path).read_text()), float(cpu) if cpu else None)
        runs = [r for r in runs if not (r["config"] == key and r["seed"] == record["seed"])] + [record]
        RUNS.write_text(json.dumps(runs, indent=1))
    keys = [k for k in args.only.split(",") if k] or list(CONFIGS)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp) / "work"
        for key in keys:
            for seed in [int(s) for s in args.seeds.split(",") if s]:
                if any(r["config"] == key and r["seed"] == seed for r in runs):
                    continue
                load = os.getloadavg()[0]
                cpu = time.process_time()
                result = train_and_score(workdir, {"model.backbone": BODY, "seed": seed, **CONFIGS[key][1]})
                result.update(config=key, seed=seed, cpu_seconds=round(time.process_time() - cpu, 1),
                              load_start=round(load, 2), load_end=round(os.getloadavg()[0], 2),
                              test_macro_f1_from_confusion=macro_f1_from_confusion(result["confusion_test"]))
                assert abs(result["test_macro_f1_from_confusion"] - result["macro_f1"]) < 1e-9, result
                runs.append(result)
                RUNS.write_text(json.dumps(runs, indent=1))
                print(json.dumps({k: result[k] for k in ("config", "seed", "val_macro_f1", "val_accuracy",
                                                         "accuracy", "macro_f1", "epochs", "seconds",
                                                         "cpu_seconds", "load_start")}), file=sys.stderr, flush=True)
    write(runs)


def write(runs: list[dict]) -> None:
    """The RESULTS.md section from the raw runs."""
    sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
    rows = []
    for key, (description, _) in CONFIGS.items():
        group = [r for r in runs if r["config"] == key]
        if not group:
            continue
        mean = (lambda name: statistics.mean(r[name] for r in group) if all(r.get(name) is not None for r in group)
                else float("nan"))
        f1, acc, test_f1 = ([r[name] for r in group] for name in ("val_macro_f1", "accuracy", "macro_f1"))
        rows.append([f"`{key}`: {description}", len(group), f"{statistics.mean(f1):.3f} ± {sd(f1):.3f}",
                     f"{mean('val_accuracy'):.3f}", f"{statistics.mean(acc):.3f} ± {sd(acc):.3f} / "
                                                    f"{statistics.mean(test_f1):.3f} ± {sd(test_f1):.3f}",
                     f"{mean('epochs'):.1f}", f"{mean('seconds'):.0f}",
                     *[(f"{mean(name):.{digits}f}" if mean(name) == mean(name) else "-")
                       for name, digits in (("cpu_seconds", 0), ("load_start", 1))]])
    body = table(["configuration", "seeds", "val macro-F1 ± sd (chooses)", "val accuracy",
                  "test accuracy / macro-F1 ± sd (shown only)", "epochs", "wall s", "CPU s", "load avg at start"], rows)
    body += ("\n\nall-mpnet-base-v2, full training split (3,334 rows), validation split 500 rows, test 1,002; one "
             "workdir whose feature cache held every sentence's frozen bottom (wall and CPU seconds are the "
             "training run's, the embedding excluded). Test macro-F1 checked against a recomputation from each "
             "run's test confusion matrix. Rows recorded from a `python -m flows.retrain` run (`--summary`) give its finetune "
             "stage's wall seconds (no CPU figure). Wall seconds were taken on 2 cores shared with other jobs (load "
             "average at start in the last column): compare epochs and CPU seconds, not wall time. "
             "Raw runs: benchmarks/mpnet-recipe-runs.json.")
    per_seed = [f"`{r['config']}` seed {r['seed']}: val {r['val_macro_f1']:.3f}, test {r['accuracy']:.3f} / "
                f"{r['macro_f1']:.3f} (from the confusion matrix: {r['test_macro_f1_from_confusion']:.3f}), "
                f"{r['epochs']} epochs, {r['seconds']:.0f} s" + (f", {r['source']}" if r.get("source") else "")
                for r in sorted(runs, key=lambda r: (list(CONFIGS).index(r["config"]), r["seed"]))]
    body += "\n\nPer run:\n" + "\n".join(f"- {line}" for line in per_seed)
    write_section("mpnet_recipe", body)


if __name__ == "__main__":
    main()
