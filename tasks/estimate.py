"""Step 5c, estimate: at tiny sizes, the cross-validated estimate of quality that stands in for the test split.

When the split found the test split too small to measure (`split.meta["estimate"]`, `core.estimate.unmeasurable`)
every labelled row trained the model and there is no test row. This step then estimates how well a model trained
this way does on unseen rows: repeated stratified k-fold cross-validation on the labelled rows
(`evaluate.cv_folds` x `evaluate.cv_repeats`), each fold trained by the run's own training function
(`core.model.fitting.fit`) in the run's regime, on the stored features of the frozen bottom (no sentence runs through
the backbone again), and scored on its held-out rows. The augmented copies of a held-out row never train its
fold. Macro-F1 and accuracy of the out-of-fold predictions pooled per repeat, with the half-width of Nadeau &
Bengio's corrected resampled t-interval over the folds' scores (`core.estimate.pooled_estimate`). One model per fold: with `train.ensemble` > 1 the estimate is of one
member (an ensemble is k times the cost; it is not expected to do worse).

Outside estimate mode the step does nothing and says so (`meta["mode"] = "measured"`): the test split measures.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from core.estimate import pooled_estimate, repeated_folds
from core.storage.artifacts import ArtifactRef, read_parquet, store_json
from core.storage.caching import step_task
from core.model.backbone import Backbone
from schemas.config import EvaluateConfig, TrainConfig

log = logging.getLogger(__name__)


class Rows:
    """A subset of a `SplitFeatures` (by positions), with its attributes, for `core.model.fitting.fit`."""

    def __init__(self, full, index: np.ndarray):
        index = np.asarray(index, dtype=np.int64)
        self.row_ids, self.labels = full.row_ids[index], full.labels[index]
        self.embeddings, self.is_augmented = full.embeddings[index], full.is_augmented[index]
        self.hidden = [full.hidden[i] for i in index] if full.hidden is not None else None


def cross_validate(train, labels: list[str], sources: np.ndarray, pseudo: np.ndarray, resolved: tuple,
                   evaluate: EvaluateConfig, seed: int, backbone: Backbone) -> dict:
    """Repeated stratified k-fold of the run's training on `train` (a `SplitFeatures` of every training row,
    augmented and pseudo-labelled ones included); `sources`: each row's source row id (an original row's own id),
    so a held-out row's augmented copies leave its fold's training rows with it; `pseudo`: True for the
    pseudo-labelled rows (`train.unlabelled`), which train every fold and are never scored; `resolved`: the
    run's `resolve_regime` (regime, reason, training settings, frozen blocks). Folds are drawn over the original
    labelled rows.

    Returns the estimate: `macro_f1` and `accuracy` (each `corrected_resampled_t`'s mean, sd, interval), the
    per-fold figures, k, repeats, rows, the regime and the seconds taken."""
    from core.metrics import macro_f1_many
    from core.model.hardware import resolve_mixed_precision, strategy, visible_gpus
    from core.model.fitting import class_weights, fit

    import keras

    original = np.flatnonzero(~train.is_augmented & ~pseudo)
    regime, reason, cfg, frozen_blocks = resolved
    gpus = visible_gpus()
    mixed = resolve_mixed_precision(cfg.mixed_precision, gpus)
    folds, k = repeated_folds(train.labels[original], evaluate.cv_folds, evaluate.cv_repeats, seed)
    started = time.perf_counter()
    per_fold = []
    y_all = train.labels[original]
    out_of_fold = np.full((evaluate.cv_repeats, len(original)), -1, np.int64)  # each repeat predicts every row once
    for number, (fold_train, fold_test) in enumerate(folds, start=1):
        held_out = set(train.row_ids[original[fold_test]])  # a held-out row and its augmented copies
        trains = np.array([i for i in range(len(train.labels)) if sources[i] not in held_out], dtype=np.int64)
        fold_train_rows, fold_test_rows = Rows(train, trains), Rows(train, original[fold_test])
        weights = (class_weights(fold_train_rows.labels, len(labels)) if cfg.class_weights
                   else {i: 1.0 for i in range(len(labels))})
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        with strategy(gpus):
            *_, proba = fit(regime, fold_train_rows, fold_test_rows, weights, cfg, seed, backbone, frozen_blocks,
                            len(labels), mixed, select=False, val_probabilities=True)
        y, predicted = fold_test_rows.labels, np.asarray(proba).argmax(axis=1)
        out_of_fold[(number - 1) // k, fold_test] = predicted
        f1 = float(macro_f1_many(y[None], predicted[None], len(labels))[0])
        per_fold.append({"fold": number, "train_rows": int(len(trains)), "test_rows": int(len(y)),
                         "macro_f1": round(f1, 5), "accuracy": round(float((predicted == y).mean()), 5)})
        log.info("estimate: fold %d of %d: macro-F1 %.4f, accuracy %.4f on %d held-out rows (%d trained)",
                 number, len(folds), f1, per_fold[-1]["accuracy"], len(y), len(trains))
    n_train = float(np.mean([f["train_rows"] for f in per_fold]))
    n_test = float(np.mean([f["test_rows"] for f in per_fold]))
    return {
        "method": (f"repeated stratified {k}-fold cross-validation ({evaluate.cv_repeats} repeats, "
                   f"{len(folds)} fits) on all {len(original)} labelled rows, each fold trained as the run trains "
                   f"(regime {regime}); figure: the out-of-fold predictions pooled per repeat (Forman & Scholz "
                   "2010); interval: its half-width from the folds' scores, Nadeau & Bengio's corrected resampled t "
                   "(2003)"),
        "folds": k, "repeats": evaluate.cv_repeats, "fits": len(folds), "rows": int(len(original)),
        "confidence": evaluate.confidence, "regime": regime, "regime_reason": reason,
        "macro_f1": pooled_estimate([float(macro_f1_many(y_all[None], p[None], len(labels))[0]) for p in out_of_fold],
                                    [f["macro_f1"] for f in per_fold], n_train, n_test, evaluate.confidence),
        "accuracy": pooled_estimate([float((p == y_all).mean()) for p in out_of_fold],
                                    [f["accuracy"] for f in per_fold], n_train, n_test, evaluate.confidence),
        "per_fold": per_fold, "seconds": round(time.perf_counter() - started, 1),
    }


def estimate(features: ArtifactRef, augmented: ArtifactRef, splits: ArtifactRef, train_cfg: TrainConfig,
             cfg: EvaluateConfig, seed: int, backbone: Backbone, workdir: Path) -> ArtifactRef:
    """The cross-validated estimate when `splits.meta["estimate"]` says the test split cannot measure; else a
    record that the test split measures. Returns a JSON artifact's reference; `meta["mode"]` is "estimate" or
    "measured", `meta["estimate"]` the figures (`cross_validate`) and `meta["why"]` the split's reason."""
    from core.model.classifier import SplitFeatures
    from core.model.fitting import resolve_regime, training_rows

    why = splits.meta.get("estimate")
    if not why:
        return store_json(workdir, "estimate", {"mode": "measured"}, meta={"mode": "measured"})
    labels = list(features.meta["labels"])
    train = SplitFeatures(features, workdir, "train")
    source = read_parquet(augmented, workdir, columns=["row_id", "source_id"]).to_pandas()
    source = dict(zip(source["row_id"], source["source_id"]))
    sources = np.array([source.get(r, r) for r in train.row_ids], dtype=object)
    columns = ["split", "pseudo_labelled"] if "pseudo_labelled" in pq.read_schema(features.resolve(workdir)).names else None
    pseudo = (read_parquet(features, workdir, columns=columns, filters=[("split", "==", "train")])
              .column("pseudo_labelled").to_numpy(zero_copy_only=False).astype(bool)
              if columns else np.zeros(len(train.labels), bool))
    log.info("estimate: %s; estimating quality by %d x %d-fold cross-validation on the labelled rows",
             why["reason"], cfg.cv_repeats, cfg.cv_folds)
    resolved = resolve_regime(train_cfg, train, labels, features, backbone)  # template rows do not count in it
    before = len(train.labels)  # template rows (few-shot) train every fold, as in the run; never held out
    train = training_rows(train, resolved[0], labels, resolved[2], features, backbone, workdir)
    sources = np.concatenate([sources, train.row_ids[before:]])
    pseudo = np.concatenate([pseudo, np.zeros(len(train.labels) - before, bool)])
    figures = cross_validate(train, labels, sources, pseudo, resolved, cfg, seed, backbone)
    f1, acc = figures["macro_f1"], figures["accuracy"]
    log.info("estimate: cross-validated macro-F1 %.4f [%.4f, %.4f], accuracy %.4f [%.4f, %.4f] (%.0f %% corrected "
             "resampled t-interval over %d fits; an estimate, not a test figure) in %.0f s", f1["mean"], f1["low"],
             f1["high"], acc["mean"], acc["low"], acc["high"], 100 * cfg.confidence, figures["fits"], figures["seconds"])
    payload = {"mode": "estimate", "why": why, "estimate": figures}
    return store_json(workdir, "estimate", payload, rows=figures["rows"], meta=payload)


estimate_task = step_task(estimate)
