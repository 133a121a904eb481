"""Issue 15, items 8 and 9, where a run reports them: a class the test split cannot measure (metrics, gate, run
report) and the sentences augmentation left untouched because they are not English (summary.json)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.config import GateConfig, RetrainConfig
from core.metrics import classification_metrics
from tasks.gate import gate
from core.storage.artifacts import ArtifactRef
from core.reports.dashboard import run_markdown
from core.run.runner import StepRunner

LABELS = ["negative", "neutral", "positive"]


def _proba(predicted: list[int]) -> np.ndarray:
    proba = np.full((len(predicted), len(LABELS)), 0.1)
    proba[np.arange(len(predicted)), predicted] = 0.8
    return proba


def test_a_class_without_test_rows_is_marked_unmeasured_and_macro_f1_over_measured_classes_leaves_it_out():
    y = np.array([0, 0, 1, 1, 1, 0])  # no 'positive' row
    predicted = [0, 1, 1, 1, 2, 0]
    metrics = classification_metrics(y, _proba(predicted), LABELS)
    assert metrics["unmeasured_classes"] == ["positive"]
    assert {label: figures["measured"] for label, figures in metrics["per_class"].items()} == \
        {"negative": True, "neutral": True, "positive": False}
    assert metrics["per_class"]["positive"]["support"] == 0
    f1 = {label: figures["f1"] for label, figures in metrics["per_class"].items()}
    # the contract's macro-F1 (scikit-learn, zero_division=0) counts the unmeasured class as 0; the other does not
    assert metrics["macro_f1"] == pytest.approx((f1["negative"] + f1["neutral"] + 0.0) / 3)
    assert metrics["macro_f1_measured"] == pytest.approx((f1["negative"] + f1["neutral"]) / 2)
    assert metrics["macro_f1_measured"] > metrics["macro_f1"]

    every = classification_metrics(np.array([0, 1, 2]), _proba([0, 1, 2]), LABELS)
    assert every["unmeasured_classes"] == [] and all(f["measured"] for f in every["per_class"].values())
    assert every["macro_f1_measured"] == every["macro_f1"] == 1.0


def _evaluation(workdir: Path, y: list[int], predicted: list[int]) -> ArtifactRef:
    folder = workdir / "artifacts" / "evaluate" / "fake"
    folder.mkdir(parents=True)
    frame = pd.DataFrame({"row_id": [f"{i:016x}" for i in range(len(y))], "text": [f"s {i}" for i in range(len(y))],
                          "label": [LABELS[i] for i in y], "predicted_label": [LABELS[i] for i in predicted]})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "predictions.parquet")
    return ArtifactRef(path=folder.relative_to(workdir).as_posix(), sha256="0" * 64, rows=len(y),
                       meta={"labels": LABELS, "test": {"majority_baseline": {"label": "neutral"}}})


def test_the_gate_says_which_classes_its_test_rows_do_not_measure(tmp_path: Path):
    rng = np.random.default_rng(0)
    y = rng.choice([0, 1], 60).tolist()  # 'positive' never occurs in the test rows
    predicted = [t if rng.random() < 0.8 else 2 for t in y]
    decision = gate(_evaluation(tmp_path, y, predicted), None, GateConfig(bootstrap_samples=200), "m", None, tmp_path)
    assert "Not measured: 'positive' has no test rows" in decision.reason
    assert decision.reason.startswith("challenger macro-F1")  # the comparison's own sentence stays first

    full = gate(_evaluation(tmp_path / "w2", [0, 1, 2] * 20, [0, 1, 2] * 20), None,
                GateConfig(bootstrap_samples=200), "m", None, tmp_path / "w2")
    assert "Not measured" not in full.reason


def _summary(split: dict, test_extra: dict) -> dict:
    """A summary as summary.json holds it, with only the sections run_markdown reads."""
    test = {"accuracy": 0.8, "macro_f1": 0.5, "n": 10, "majority_baseline": {"accuracy": 0.6, "macro_f1": 0.25},
            "confusion_matrix": {"labels": LABELS, "rows_true_cols_predicted": [[3, 1, 0], [0, 5, 1], [0, 0, 0]]},
            **test_extra}
    return {"run_id": "r", "dataset": {"path": "d.csv", "sha256": "0" * 64, "rows": 40, "rows_used": 40,
                                       "duplicates_dropped": 0, "conflicts_dropped": 0, "labels": LABELS},
            "split": split, "metrics": {"test": test},
            "gate": {"decision": "keep champion", "reason": "challenger macro-F1 ..."},
            "model": {"name": "m", "version": "v"}}


def test_the_run_report_shows_the_split_warnings_and_the_unmeasured_test_classes():
    warning = ("class 'positive' has no test rows (6 rows: 5 train, 1 validation, 0 test), so it is not measured "
               "there (test metrics and the gate do not cover it); add rows of it (about 10 or more give each split "
               "a row on average), or raise split.val_fraction / split.test_fraction")
    split = {"labels": LABELS, "split_rows": {"train": 28, "val": 2, "test": 10},
             "unmeasured_classes": {"val": [], "test": ["positive"], "warnings": [warning]}}
    markdown = run_markdown(_summary(split, {"unmeasured_classes": ["positive"], "macro_f1_measured": 0.75}))
    assert f"- warning: {warning}" in markdown
    assert "Not measured (no test rows): 'positive'; macro-F1 counts each as 0; over the measured classes it is " \
           "0.7500" in markdown
    assert markdown.index("Not measured (no test rows)") > markdown.index("## Evaluation on the test split")

    plain = run_markdown(_summary({"labels": LABELS, "split_rows": {"train": 28, "val": 2, "test": 10},
                                   "unmeasured_classes": {"val": [], "test": [], "warnings": []}}, {}))
    assert "warning" not in plain and "Not measured" not in plain
    older = _summary({"split_rows": {"train": 28}}, {})  # a summary from before these keys existed still renders
    assert "Not measured" not in run_markdown(older)


def test_summary_copies_the_augment_steps_skipped_not_english_counts(tmp_path: Path):
    record = StepRunner(RetrainConfig(workdir=tmp_path), "r")
    record.refs["validate"] = ArtifactRef(path="v", sha256="1" * 64, meta={
        "source_sha256": "2" * 64, "rows_read": 10, "rows_used": 10, "duplicates_dropped": 0, "conflicts_dropped": 0,
        "labels": LABELS})
    record.refs["augment"] = ArtifactRef(path="a", sha256="3" * 64, meta={
        "rows_in": 10, "rows_out": 14, "augmented_rows": 4, "n_aug": 1, "strengths": {"sr": 0.1}, "labels": LABELS,
        "shards": 1, "skipped_not_english": 3, "skipped_languages": {"de": 2, "fr": 1}})
    augment = record.summary()["augment"]
    assert augment["skipped_not_english"] == 3 and augment["skipped_languages"] == {"de": 2, "fr": 1}
    assert augment["augmented_rows"] == 4 and "shards" not in augment
