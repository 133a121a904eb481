"""Step 6, evaluate: score the saved model on the held-out test split and write metrics and predictions.

The test sentences went through the same frozen bottom the saved model contains, so only the saved model's
trainable part (its top blocks and head) is applied to their stored features (a test proves this equals
running the whole saved model on token ids). Metrics come from scikit-learn; the majority-class baseline
stands beside them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.tables import predictions_schema
from core.storage.caching import step_task
from core.model.classifier import METRICS_FILE, PREDICTIONS_FILE, SplitFeatures, load_classifier
from core.model.inference import predict_stored
from core.storage.artifacts import ArtifactRef, artifact_dir, read_parquet, staging, store_dir, write_json_atomic
from core.metrics import classification_metrics

log = logging.getLogger(__name__)


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


evaluate_task = step_task(evaluate)
