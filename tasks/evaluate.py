"""Step 6, evaluate: score the saved model on the held-out test split and write metrics and predictions.

The test sentences went through the same frozen bottom the saved model contains, so only the saved model's
trainable part (its top blocks and head) is applied to their stored features (a test proves this equals
running the whole saved model on token ids). Metrics come from scikit-learn; the majority-class baseline
stands beside them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.tables import predictions_schema
from core.storage.caching import step_task
from tasks.finetune import SplitFeatures, load_classifier
from core.model.inference import predict_stored
from core.storage.artifacts import ArtifactRef, artifact_dir, read_parquet, staging, store_dir, write_json_atomic
from core.metrics import bootstrap_intervals

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.parquet"


ECE_BINS = 15


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the support-weighted gap between confidence and accuracy over equal-width confidence bins."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(gap)


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro-F1 (each with a bootstrap 95 % interval), per-class precision/recall/F1, confusion
    matrix, log loss, expected calibration error, and the majority-class baseline.

    A class with no test row is not measured: its per-class entry says `"measured": false`, it is listed in
    `unmeasured_classes`, and `macro_f1` (scikit-learn, zero_division=0) counts it as 0, as the contract has
    it; `macro_f1_measured` is the macro-F1 over the measured classes only (None if none is)."""
    from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, log_loss,
                                 precision_recall_fscore_support)

    ids = list(range(len(labels)))
    y_pred = proba.argmax(axis=1)
    clipped = np.clip(proba, 1e-7, 1)  # log loss: clipped at 1e-7, then renormalised to sum to 1
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    majority = int(np.bincount(y_true, minlength=len(labels)).argmax()) if len(y_true) else 0
    baseline = np.full_like(y_true, majority)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "macro_f1_measured": float(f1[support > 0].mean()) if (support > 0).any() else None,
        "log_loss": float(log_loss(y_true, clipped / clipped.sum(axis=1, keepdims=True), labels=ids)),
        "ece": expected_calibration_error(y_true, proba),
        "ci95": bootstrap_intervals(y_true, y_pred, len(labels)) if len(y_true) else {},
        "per_class": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(support[i]), "measured": bool(support[i] > 0)}
            for i, label in enumerate(labels)
        },
        "unmeasured_classes": [label for i, label in enumerate(labels) if support[i] == 0],
        "confusion_matrix": {"labels": labels, "rows_true_cols_predicted":
                             confusion_matrix(y_true, y_pred, labels=ids).tolist()},
        "majority_baseline": {
            "label": labels[majority],
            "accuracy": float(accuracy_score(y_true, baseline)),
            "macro_f1": float(f1_score(y_true, baseline, labels=ids, average="macro", zero_division=0)),
        },
    }


def unmeasured_metrics(labels: list[str]) -> dict:
    """The test metrics when there is no test row (estimate mode): `classification_metrics`' keys, with n 0,
    every figure null, every class unmeasured, an all-zero confusion matrix."""
    return {
        "n": 0, "accuracy": None, "macro_f1": None, "macro_f1_measured": None, "log_loss": None, "ece": None,
        "ci95": {},
        "per_class": {label: {"precision": None, "recall": None, "f1": None, "support": 0, "measured": False}
                      for label in labels},
        "unmeasured_classes": list(labels),
        "confusion_matrix": {"labels": labels, "rows_true_cols_predicted": [[0] * len(labels) for _ in labels]},
        "majority_baseline": {"label": None, "accuracy": None, "macro_f1": None},
    }


def evaluate(model: ArtifactRef, features: ArtifactRef, augmented: ArtifactRef, workdir: Path,
             estimate: ArtifactRef | None = None) -> ArtifactRef:
    """Score `model` on the test rows of `features`; write `metrics.json` and `predictions.parquet`.

    `predictions.parquet` has one row per test sentence, in the features' row order: `row_id`, `text` (from
    `augmented`), `label`, `predicted_label` and one `prob_<label>` per label, so errors can be read and
    the rows re-scored. Returns the reference of the evaluation folder; `meta` holds the test metrics.
    In estimate mode (`estimate.meta["mode"] == "estimate"`, `tasks.estimate`) there is no test row: the test
    metrics are `unmeasured_metrics` (n 0, figures null) and the cross-validated estimate stands beside them
    under `estimate` in `metrics.json` and `meta`, labelled as what it is.
    """
    labels = list(features.meta["labels"])
    test = SplitFeatures(features, workdir, "test")
    y_test = test.labels
    cross_validated = estimate.meta if estimate is not None and estimate.meta.get("mode") == "estimate" else None
    if cross_validated:
        metrics, proba = unmeasured_metrics(labels), np.zeros((0, len(labels)), np.float64)
    else:
        proba = predict_stored(load_classifier(model, workdir), test.embeddings, test.hidden,
                               int(features.meta["frozen_blocks"]))
        metrics = classification_metrics(y_test, proba, labels)
    predictions = pd.DataFrame({"row_id": test.row_ids, "text": test_texts(augmented, workdir, test.row_ids)})
    predictions["label"] = [labels[i] for i in y_test]
    predictions["predicted_label"] = [labels[i] for i in proba.argmax(axis=1)]
    for i, label in enumerate(labels):
        predictions[f"prob_{label}"] = proba[:, i]
    if not len(predictions):  # estimate mode: no test row; the empty columns keep their types
        predictions = predictions.astype({"row_id": str, "text": str, "label": str, "predicted_label": str})
    predictions_schema(labels).validate(predictions)
    extra = {"estimate": {k: cross_validated[k] for k in ("why", "estimate")}} if cross_validated else {}
    with staging(artifact_dir(workdir, "evaluate"), is_dir=True) as folder:
        write_json_atomic(folder / METRICS_FILE, {"test": metrics, **extra})
        pq.write_table(pa.Table.from_pandas(predictions, preserve_index=False), folder / PREDICTIONS_FILE,
                       compression="zstd")
        ref = store_dir(workdir, "evaluate", folder, rows=len(y_test),
                        meta={"test": metrics, "labels": labels, "model_sha256": model.sha256,
                              "rows_in": int(len(y_test)), **extra})
    if cross_validated:
        figures = cross_validated["estimate"]
        log.info("evaluate: no test split (%s); cross-validated estimate, not a test figure: macro-F1 %.4f [%.4f, "
                 "%.4f], accuracy %.4f [%.4f, %.4f]", cross_validated["why"]["reason"], figures["macro_f1"]["mean"],
                 figures["macro_f1"]["low"], figures["macro_f1"]["high"], figures["accuracy"]["mean"],
                 figures["accuracy"]["low"], figures["accuracy"]["high"])
        return ref
    log.info("evaluate: test accuracy %.4f, macro-F1 %.4f on %d sentences (majority baseline %.4f)",
             metrics["accuracy"], metrics["macro_f1"], metrics["n"], metrics["majority_baseline"]["accuracy"])
    return ref


def test_texts(augmented: ArtifactRef, workdir: Path, row_ids) -> list[str]:
    """The texts of `row_ids` (in that order) from the augmented table."""
    table = read_parquet(augmented, workdir, columns=["row_id", "text"]).to_pandas().set_index("row_id")
    return table.loc[list(row_ids), "text"].tolist()


def read_metrics(evaluation: ArtifactRef, workdir: Path) -> dict:
    """The metrics an evaluation wrote."""
    return json.loads((evaluation.resolve(workdir) / METRICS_FILE).read_text())


evaluate_task = step_task(evaluate)
