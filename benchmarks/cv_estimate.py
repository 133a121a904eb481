"""Is the cross-validated estimate honest? Estimate mode's figure against the test figure, on the same rows.

At tiny sizes a run keeps no hold-out and reports a repeated stratified k-fold estimate with Nadeau & Bengio's
corrected resampled t-interval (`tasks/estimate.py`). Here, for each size (8 and 16 rows per class) and seed, the
labelled rows are the learning curve's training rows (`benchmarks.learning_curve.sample`: the same rows, seeds and
regime as its "auto" column); on them:
- the estimate, exactly as a run computes it (`tasks.estimate.cross_validate`, the default `evaluate.*` settings
  and the default training settings: `train.regime=auto`, the few-shot regime at these sizes), and
- the test figure of the model trained on all of those rows (`core.model.fitting.fit`, the run's training path, same
  seed), scored on the pipeline's whole test split of the bundled data (1,002 sentences, never seen by either),
  with the learning curve's recorded "auto" test figure (the same rows and seed through the whole pipeline) beside
  it as a second path.
Does the interval cover the test figure? Writes benchmarks/cv-estimate-runs.json and the "cv_estimate" section.

    nice -n 10 .venv/bin/python benchmarks/cv_estimate.py [--sizes 8pc,16pc] [--seeds 1,2,3] [--workdir DIR]
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

RUNS = Path(__file__).resolve().parent / "cv-estimate-runs.json"
CURVE = Path(__file__).resolve().parent / "learning-curve-runs.json"


def main() -> None:
    import keras
    import numpy as np
    import pyarrow.parquet as pq

    from benchmarks.learning_curve import sample
    from benchmarks.quality import run_steps
    from benchmarks.regime_selection import Rows
    from core.metrics import macro_f1_many
    from schemas.config import EvaluateConfig, TrainConfig
    from tasks.estimate import cross_validate
    from core.model.classifier import SplitFeatures
    from core.model.fitting import fit, resolve_regime

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="8pc,16pc")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--workdir", default="", help="keep the workdir (its feature cache) here between runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or Path(tmp) / "work")
        _, done, backbone = run_steps(workdir, {}, None, until="embed")
        features = done["embed"]
        frame = pq.read_table(done["split"].resolve(workdir), columns=["row_id", "text", "label", "split"]).to_pandas()
        train_all, test = SplitFeatures(features, workdir, "train"), SplitFeatures(features, workdir, "test")
        position = {rid: i for i, rid in enumerate(train_all.row_ids)}
        labels = list(features.meta["labels"])
        curve = {(r["size"], r["seed"]): r.get("auto", {}).get("macro_f1") for r in json.loads(CURVE.read_text())}
        for size in [s for s in args.sizes.split(",") if s]:
            for seed in [int(s) for s in args.seeds.split(",") if s]:
                if any(r["size"] == size and r["seed"] == seed and "fold_mean" in r["estimate"]["macro_f1"]
                       for r in _runs()):
                    continue  # (a run recorded before the pooled figure existed is done again)
                cut = sample(frame, size, seed)
                rows = Rows(train_all, [position[r] for r in cut.loc[cut["split"] == "train", "row_id"]])
                cfg, evaluate = TrainConfig(label_templates=0), EvaluateConfig()  # as the learning curve ran
                started = time.perf_counter()
                resolved = resolve_regime(cfg, rows, labels, features, backbone)
                estimate = cross_validate(rows, labels, rows.row_ids, np.zeros(len(rows.labels), bool), resolved,
                                          evaluate, seed, backbone)
                regime, _, run_cfg, frozen_blocks = resolved
                keras.backend.clear_session()
                keras.utils.set_random_seed(seed)
                *_, proba = fit(regime, rows, test, {i: 1.0 for i in range(len(labels))}, run_cfg, seed, backbone,
                                frozen_blocks, len(labels), False, select=False, val_probabilities=True)
                predicted = np.asarray(proba).argmax(axis=1)
                f1 = float(macro_f1_many(test.labels[None], predicted[None], len(labels))[0])
                result = {"size": size, "seed": seed, "rows": len(rows.labels), "regime": regime,
                          "estimate": {k: estimate[k] for k in ("macro_f1", "accuracy", "folds", "repeats", "fits")},
                          "test_macro_f1": round(f1, 5), "test_accuracy": round(float((predicted == test.labels).mean()), 5),
                          "test_n": int(len(test.labels)), "learning_curve_auto_macro_f1": curve.get((size, seed)),
                          "seconds": round(time.perf_counter() - started, 1)}
                print(json.dumps(result), file=sys.stderr, flush=True)
                runs = _runs()
                runs.append(result)
                RUNS.write_text(json.dumps(runs, indent=1))
    write(_runs())


def _runs() -> list[dict]:
    return json.loads(RUNS.read_text()) if RUNS.exists() else []


def _figures(r: dict) -> tuple[dict | None, dict]:
    """(the pooled estimate with its interval or None, the folds' mean with the same half-width) of a run; a run
    recorded before the pooled figure existed has only the second (its `mean` was the folds' mean)."""
    f1 = r["estimate"]["macro_f1"]
    half = (f1["high"] - f1["low"]) / 2 if 0 < f1["low"] and f1["high"] < 1 else None
    if "fold_mean" not in f1:
        return None, f1
    fold = {"mean": f1["fold_mean"]}
    if half is not None:
        fold.update(low=max(0.0, f1["fold_mean"] - half), high=min(1.0, f1["fold_mean"] + half))
    return f1, fold


def write(runs: list[dict]) -> None:
    """The RESULTS.md section: each run's estimates and intervals beside the test figure, and the coverage."""
    latest = {}
    for r in runs:  # the newest record of each (size, seed)
        latest[(r["size"], r["seed"])] = r
    runs = sorted(latest.values(), key=lambda r: (int(r["size"][:-2]), r["seed"]))
    rows, covered, bias = [], 0, []
    for r in runs:
        pooled, fold = _figures(r)
        shown = pooled or fold
        hit = shown["low"] <= r["test_macro_f1"] <= shown["high"] if "low" in shown else False
        covered += hit
        bias.append(shown["mean"] - r["test_macro_f1"])
        interval = lambda f: (f"{f['mean']:.3f} [{f['low']:.3f}, {f['high']:.3f}]" if "low" in f  # noqa: E731
                              else f"{f['mean']:.3f}")
        lc = r.get("learning_curve_auto_macro_f1")
        rows.append([r["size"].replace("pc", " per class"), r["seed"], r["rows"],
                     interval(pooled) if pooled else "not recorded", interval(fold), f"{r['test_macro_f1']:.3f}",
                     f"{lc:.3f}" if lc is not None else "-", f"{shown['mean'] - r['test_macro_f1']:+.3f}",
                     "yes" if hit else "**no**", r["seconds"]])
    body = (
        "Estimate mode's cross-validated macro-F1 (repeated stratified k-fold, the defaults `evaluate.cv_folds=5` x "
        "`evaluate.cv_repeats=2`, each fold trained in the run's regime, few-shot here, label templates off as in the learning curve's run; the figure pooled over each repeat's out-of-fold predictions, 95 % interval: the half-width of the corrected resampled "
        "t-interval, Nadeau & Bengio 2003) on the learning curve's training rows, against the test macro-F1 of the "
        "model trained on all of those rows (same seed, same training function) on the bundled data's whole test "
        "split; the learning curve's recorded `auto` figure (same rows and seed, through the pipeline) beside it.\n\n"
        + table(["size", "seed", "rows", "CV estimate, pooled [95 % interval]", "folds' mean [same half-width]",
                 "test macro-F1", "learning curve (auto)", "estimate - test", "covered", "seconds"], rows)
        + f"\n\nCovered (the reported figure: pooled where recorded, else the folds' mean): {covered} of {len(runs)}; "
        f"estimate - test: mean {statistics.mean(bias):+.3f}"
        + (f", sd {statistics.stdev(bias):.3f}" if len(bias) > 1 else "")
        + ". Seconds: the estimate's fits and the final fit, on the shared 2-core machine under load.\n\n"
        "    nice -n 10 .venv/bin/python benchmarks/cv_estimate.py --sizes 8pc,16pc --seeds 1,2,3\n")
    write_section("cv_estimate", body)


if __name__ == "__main__":
    main()
