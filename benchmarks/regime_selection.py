"""Regime selection: which training regime wins at which size, measured on validation rows only.

For each size (8, 16, 32, 64 rows per class) and seed, the training rows are the learning curve's sample for
that size and seed (`benchmarks.learning_curve.sample`: the same rows every method of the learning curve sees);
each regime (`train.regime` = fewshot, finetune, frozen; the rest of the settings the defaults) trains on them
through `tasks.finetune`'s own functions, on the stored features of the whole bundled data (computed once by
the pipeline's steps), and is scored on the *whole validation split* (500 sentences), never on test. Epoch
selection on validation is switched off for "finetune" (`train.min_val_per_class` huge): a user with these
sizes has a validation split too small to select on (fewer than 10 rows of a class up to 64 per class), so
the fixed budget is what they get; the full validation split is here to measure, not to select.

Writes benchmarks/regime-selection-runs.json and the "regime_selection" section of RESULTS.md: the validation
macro-F1 of each regime at each size (mean ± sd over seeds) and the threshold `train.fewshot_below` it implies.

    .venv/bin/python benchmarks/regime_selection.py [--sizes 8pc,16pc,32pc,64pc] [--seeds 3] [--regimes ...]
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

RUNS = Path(__file__).resolve().parent / "regime-selection-runs.json"
REGIMES = ("fewshot", "finetune", "frozen")


class Rows:
    """A subset of stored split features (what `tasks.finetune` trains on), by position."""

    def __init__(self, full, index):
        import numpy as np

        index = np.asarray(index)
        self.row_ids, self.labels = full.row_ids[index], full.labels[index]
        self.embeddings, self.is_augmented = full.embeddings[index], full.is_augmented[index]
        self.hidden = [full.hidden[i] for i in index] if full.hidden is not None else None


def score(regime: str, train, val, overrides: dict, seed: int, backbone, frozen_blocks: int, n_labels: int,
          body: str | None = None) -> dict:
    """Train one regime on `train` with `tasks.finetune`'s functions; validation figures and seconds. The
    settings are the defaults for the body `body` names (`schemas.config.BODY_TRAIN_DEFAULTS`) under `overrides`;
    the blocks trained are those above `frozen_blocks`, the stored features' cut."""
    import keras
    import numpy as np

    from schemas.config import RetrainConfig
    from core.model.fitting import _train, _train_fewshot, ensemble_figures

    settings = {"min_val_per_class": 10**9, **overrides, "regime": regime}
    cfg = RetrainConfig.from_parameters(overrides={**({"model.backbone": body} if body else {}),
                                                   **{f"train.{k}": v for k, v in settings.items()}}).train
    weights = {i: 1.0 for i in range(n_labels)}
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    if regime == "fewshot":
        _, _, _, plan, proba = _train_fewshot(train, val, weights, cfg, seed, backbone, frozen_blocks, n_labels, False)
    elif regime == "frozen":
        cfg = cfg.model_copy(update={"unfreeze_top": 0})
        _, _, _, plan, proba = _train(train, val, weights, cfg, seed, backbone, backbone.architecture.blocks,
                                      n_labels, False, select=False, val_probabilities=True)
    else:
        _, _, _, plan, proba = _train(train, val, weights, cfg, seed, backbone, frozen_blocks, n_labels, False,
                                      select=False, val_probabilities=True)
    seconds = time.perf_counter() - started
    figures = ensemble_figures(np.asarray(proba), val.labels, n_labels)
    from sklearn.metrics import confusion_matrix

    # Kept so the figure can be recomputed by a second path (`check`).
    confusion = confusion_matrix(val.labels, np.asarray(proba).argmax(axis=1), labels=list(range(n_labels)))
    return {**figures, "val_confusion": confusion.tolist(), "seconds": round(seconds, 1), "steps": plan["steps"]}


def check(runs: list[dict]) -> int:
    """The second path for the validation figures: each run's macro-F1 recomputed from its stored confusion
    matrix (`benchmarks.mpnet_recipe.macro_f1_from_confusion`) must equal the one `score` recorded; returns how
    many runs were checked (older runs kept no matrix). Raises AssertionError naming the first run that differs."""
    from benchmarks.mpnet_recipe import macro_f1_from_confusion

    checked = [r for r in runs if "val_confusion" in r]
    for r in checked:
        again = macro_f1_from_confusion(r["val_confusion"])
        assert abs(again - r["val_macro_f1"]) < 1e-4 and sum(map(sum, r["val_confusion"])) == r["val_rows"], (
            f"{r['data']} {r['size']} seed {r['seed']} {r['regime']}: {again:.5f} from the confusion matrix, "
            f"{r['val_macro_f1']} recorded")
    return len(checked)


def main() -> None:
    import pyarrow.parquet as pq

    from benchmarks.learning_curve import sample
    from benchmarks.quality import run_steps
    from core.model.classifier import SplitFeatures

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="8pc,16pc,32pc,64pc")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument("--set", action="append", default=[], help="train.KEY=VALUE for every regime (a variant)")
    parser.add_argument("--tag", default="", help="a name for the variant, kept in each run")
    parser.add_argument("--data", default="", help="a labelled file (text, label) instead of the bundled PhraseBank, "
                        "or wordnet-verbs / wordnet-nouns (benchmarks/wordnet_tasks.py)")
    parser.add_argument("--workdir", default="", help="keep the workdir (and its feature cache) here between runs")
    parser.add_argument("--unfreeze-top", type=int, default=2, help="trainable top blocks (the stored features' split)")
    parser.add_argument("--backbone", default="", help="model.backbone (default: the product's default body); its "
                        "training defaults apply (BODY_TRAIN_DEFAULTS)")
    args = parser.parse_args()
    overrides = {k.removeprefix("train."): v for k, _, v in (s.partition("=") for s in args.set)}
    runs = json.loads(RUNS.read_text()) if RUNS.exists() else []
    from benchmarks.wordnet_tasks import data_file

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or Path(tmp) / "work")
        data = data_file(args.data, Path(tmp))
        dataset = args.data or "phrasebank"
        body = {"model.backbone": args.backbone} if args.backbone else {}
        _, done, backbone = run_steps(workdir, {"train.unfreeze_top": args.unfreeze_top, **body}, data, until="embed")
        features = done["embed"]
        frame = pq.read_table(done["split"].resolve(workdir), columns=["row_id", "text", "label", "split"]).to_pandas()
        train_all, val = SplitFeatures(features, workdir, "train"), SplitFeatures(features, workdir, "val")
        position = {rid: i for i, rid in enumerate(train_all.row_ids)}
        labels, frozen_blocks = list(features.meta["labels"]), int(features.meta["frozen_blocks"])
        for size in [s for s in args.sizes.split(",") if s]:
            for seed in range(1, args.seeds + 1):
                cut = sample(frame, size, seed)
                ids = cut.loc[cut["split"] == "train", "row_id"]
                train = Rows(train_all, [position[r] for r in ids])
                if int(overrides.get("label_templates", 0)):  # as the finetune step adds them (few-shot only)
                    from core.model.fitting import with_label_templates

                    train = with_label_templates(train, labels, int(overrides["label_templates"]), features,
                                                 backbone, workdir)
                for regime in [r for r in args.regimes.split(",") if r]:
                    if any(r["size"] == size and r["seed"] == seed and r["regime"] == regime
                           and r.get("tag", "") == args.tag and r.get("data", "phrasebank") == dataset
                           and r.get("backbone", "") == args.backbone and r.get("unfreeze_top", 2) == args.unfreeze_top
                           for r in runs):
                        continue
                    result = {"data": dataset, "size": size, "seed": seed, "regime": regime, "tag": args.tag,
                              "overrides": overrides, "backbone": args.backbone, "unfreeze_top": args.unfreeze_top,
                              "train_rows": len(train.labels), "val_rows": len(val.labels),
                              **score(regime, train, val, overrides, seed, backbone, frozen_blocks, len(labels),
                                      args.backbone or None)}
                    print(json.dumps(result), file=sys.stderr, flush=True)
                    runs.append(result)
                    save(result)
                    del result
    runs = json.loads(RUNS.read_text())
    print(f"checked: {check(runs)} runs' validation macro-F1 equal to their confusion matrices'", file=sys.stderr)
    write(runs)


def save(result: dict) -> None:
    """Append one run to the runs file, re-read first: several variants may run side by side."""
    stored = json.loads(RUNS.read_text()) if RUNS.exists() else []
    RUNS.write_text(json.dumps(stored + [result], indent=1))


def write(runs: list[dict]) -> None:
    """The RESULTS.md section: validation macro-F1 per regime and size, and the threshold it implies."""
    sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
    tags = sorted({r.get("tag", "") for r in runs})
    columns = [(tag, regime) for tag in tags for regime in REGIMES if any(r["regime"] == regime and r.get("tag", "") == tag
                                                                          for r in runs)]
    rows = []
    from benchmarks.learning_curve import SIZES

    for body, dataset, size in [(b, d, s) for b in sorted({r.get("backbone", "") for r in runs})
                                for d in ("phrasebank", "wordnet-verbs", "wordnet-nouns") for s in SIZES]:
        group = [r for r in runs if r["size"] == size and r.get("data", "phrasebank") == dataset
                 and r.get("backbone", "") == body]
        if not group:
            continue
        blocks = sorted({f"{r['regime']} {r.get('unfreeze_top', 2)}" for r in group if r["regime"] != "frozen"})
        rows_label = size.replace("pc", " per class") if size.endswith("pc") else f"{size} stratified"
        row = [f"{dataset}, {body} (blocks: {', '.join(blocks)})" if body else dataset, rows_label]
        for tag, regime in columns:
            f1 = [r["val_macro_f1"] for r in group if r["regime"] == regime and r.get("tag", "") == tag]
            secs = [r["seconds"] for r in group if r["regime"] == regime and r.get("tag", "") == tag]
            row.append(f"{statistics.mean(f1):.3f} ± {sd(f1):.3f} ({len(f1)}; {statistics.mean(secs):.0f} s)"
                       if f1 else "-")
        rows.append(row)
    head = [f"{regime}{' [' + tag + ']' if tag else ''}: val macro-F1 (seeds; s)" for tag, regime in columns]
    body = table(["data", "training rows", *head], rows)
    sizes = ", ".join(f"{d} {n}" for d, n in sorted({(r.get("data", "phrasebank"), r["val_rows"]) for r in runs}))
    body += (f"\n\nValidation macro-F1 on the whole validation split ({sizes} sentences) of models trained on the learning "
             "curve's training rows for each size and seed (benchmarks/learning_curve.py's `sample`); no test row is "
             "read. Epoch selection off (the fixed budget a user of this size gets). A body named in the first column "
             "is trained with its own defaults (BODY_TRAIN_DEFAULTS), the blocks each regime trained beside it; "
             "the default body trains 2 in both. Seconds: training alone, on the "
             "stored features, on the shared 2 cores under load. Raw runs: benchmarks/regime-selection-runs.json.")
    write_section("regime_selection", body)


if __name__ == "__main__":
    main()
