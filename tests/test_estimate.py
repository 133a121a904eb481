"""The honest estimate at tiny sizes: no hold-out when the test split cannot measure, a cross-validated estimate
with Nadeau & Bengio's interval instead, the final model on every labelled row, and a gate that says it cannot
compare and follows `gate.unmeasurable`; with enough rows, the measured path as before."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from core.estimate import corrected_resampled_t, repeated_folds, unmeasurable
from tests.conftest import first_per_label, write_csv


def test_the_test_split_is_unmeasurable_below_the_expected_rows_of_the_smallest_class():
    why = unmeasurable({"a": 8, "b": 30, "c": 120}, 0.2, 20)
    assert why["class"] == "a" and why["rows"] == 8 and why["expected_test_rows"] == 1.6
    assert why["rows_needed_per_class"] == 100 and why["more_rows_needed"] == 92
    assert why["short_classes"] == {"a": 8, "b": 30} and "evaluate.min_test_per_class=20" in why["reason"]
    assert unmeasurable({"a": 100, "b": 400}, 0.2, 20) is None  # 20 expected test rows: measured
    assert unmeasurable({"a": 8, "b": 8}, 0.2, 0) is None  # the rule off


def test_the_corrected_interval_is_nadeau_and_bengios_and_wider_than_the_naive_one():
    from scipy.stats import t

    scores = [0.5, 0.6, 0.55, 0.7, 0.45, 0.65, 0.5, 0.6, 0.58, 0.52]
    out = corrected_resampled_t(scores, n_train=80, n_test=20, confidence=0.95)
    s2 = np.var(scores, ddof=1)
    half = t.ppf(0.975, 9) * math.sqrt((1 / 10 + 20 / 80) * s2)
    assert out["mean"] == pytest.approx(np.mean(scores), abs=1e-5)
    assert out["low"] == pytest.approx(np.mean(scores) - half, abs=1e-5)
    assert out["high"] == pytest.approx(np.mean(scores) + half, abs=1e-5)
    naive = t.ppf(0.975, 9) * math.sqrt(s2 / 10)
    assert out["high"] - out["low"] > 2 * naive * 1.8  # (1/10 + 1/4) / (1/10) = 3.5x the variance


def test_the_reported_figure_is_the_pooled_one_with_the_folds_corrected_half_width():
    from core.estimate import pooled_estimate

    folds = [0.2, 0.5, 0.4, 0.3, 0.6]
    out = pooled_estimate([0.55, 0.6], folds, n_train=16, n_test=4)
    naive = corrected_resampled_t(folds, 16, 4)
    assert out["mean"] == 0.575 and out["fold_mean"] == naive["mean"] == 0.4
    assert out["high"] - out["mean"] == pytest.approx(naive["mean"] - naive["low"], abs=1e-5)


def test_repeated_folds_score_every_row_once_per_repeat_and_fit_the_smallest_class():
    labels = np.repeat([0, 1, 2], [3, 8, 8])
    folds, k = repeated_folds(labels, folds=5, repeats=2, seed=1)
    assert k == 3 and len(folds) == 6  # k lowered to the 3 rows of class 0
    for repeat in range(2):
        scored = np.concatenate([test for _, test in folds[repeat * k:(repeat + 1) * k]])
        assert sorted(scored) == list(range(len(labels)))
    assert all(set(labels[train]) == {0, 1, 2} and not set(train) & set(test) for train, test in folds)
    with pytest.raises(ValueError):
        repeated_folds(np.array([0, 1, 1, 1]), 5, 1, 0)


def test_the_split_keeps_no_hold_out_when_the_test_split_cannot_measure(tmp_path: Path):
    import pyarrow.parquet as pq

    from schemas.config import DataConfig, SplitConfig
    from tasks.split import split
    from tasks.validate import validate

    for per_class, expect_estimate in ((8, True), (120, False)):
        validated = validate(DataConfig(path=write_csv(tmp_path / f"d{per_class}.csv", first_per_label(per_class)),
                                        conflicts="drop"), tmp_path)
        ref = split(validated, SplitConfig(), 0, 3, tmp_path, min_test_per_class=20)
        table = pq.read_table(ref.resolve(tmp_path)).to_pandas()
        if expect_estimate:
            assert set(table["split"]) == {"train"} and len(table) == 3 * per_class
            assert ref.meta["estimate"]["more_rows_needed"] == 92 and not ref.meta["unmeasured_classes"]["warnings"]
        else:
            assert set(table["split"]) == {"train", "val", "test"} and "estimate" not in ref.meta


TINY = {"augment.n_aug": 0, "train.pair_iterations": 2, "data.min_per_class": 3, "evaluate.cv_folds": 3,
        "evaluate.cv_repeats": 1}


@pytest.fixture(scope="module")
def tiny_runs(prefect_api, tmp_path_factory):
    """Three real runs (the real backbone and flow) on 8 PhraseBank rows per class in one workdir: the first
    (no champion), then two more seeds with gate.unmeasurable keep and promote."""
    from flows.retrain import retrain

    root = tmp_path_factory.mktemp("tiny")
    data = write_csv(root / "tiny.csv", first_per_label(8))
    runs = {}
    for key, extra in (("first", {}), ("keep", {"seed": 5}), ("promote", {"seed": 6, "gate.unmeasurable": "promote"})):
        path = retrain(data=str(data), workdir=str(root / "work"), overrides={**TINY, **extra})
        runs[key] = json.loads(Path(path).read_text())
    return {"root": root, "runs": runs}


def test_a_tiny_run_trains_on_every_row_and_reports_a_cross_validated_estimate(tiny_runs):
    summary = tiny_runs["runs"]["first"]
    assert summary["split"]["split_rows"] == {"train": 24} and summary["dataset"]["rows_used"] == 24
    version = Path(summary["model"]["path"])
    card = json.loads((version / "model.json").read_text())
    # the registered model saw every labelled row (and the default 2 label-template rows per class)
    assert card["train_rows"] == {"labelled": 24, "augmented": 0, "label_templates": 6}
    assert summary["training"]["regime"] == "fewshot"
    test, estimate = summary["metrics"]["test"], summary["metrics"]["estimate"]
    assert test["n"] == 0 and test["macro_f1"] is None  # no test figure is claimed
    figures = estimate["estimate"]
    assert figures["fits"] == 3 and figures["rows"] == 24 and len(figures["per_fold"]) == 3
    # each fold: 16 labelled rows and the 6 template rows train, the other 8 labelled rows are scored
    assert all(f["test_rows"] == 8 and f["train_rows"] == 16 + 6 for f in figures["per_fold"])
    for metric in ("macro_f1", "accuracy"):
        f = figures[metric]
        assert 0 <= f["low"] <= f["mean"] <= f["high"] <= 1
        assert f["fold_mean"] == pytest.approx(np.mean([fold[metric] for fold in figures["per_fold"]]), abs=1e-5)
    # one repeat of equal folds: pooled accuracy is the folds' mean (macro-F1 is not: it does not average)
    assert figures["accuracy"]["mean"] == pytest.approx(figures["accuracy"]["fold_mean"], abs=1e-5)
    assert "Nadeau & Bengio" in figures["method"] and figures["regime"] == "fewshot"
    assert summary["stages"]["estimate"]["state"] == "Completed"
    gate = summary["gate"]
    assert gate["decision"] == "promote" and summary["promoted"] and gate["n"] == 0
    assert "too small to measure" in gate["reason"] and "first model is promoted on the estimate" in gate["reason"]
    assert "label at least 92 more rows per class" in gate["reason"]
    report = (version / "report.html").read_text()
    assert "Cross-validated estimate (no test split)" in report and "not a test figure" in report
    from flows.registry import list_versions

    assert "none (CV estimate)" in list_versions(tiny_runs["root"] / "work", "default")


def test_the_gate_keeps_the_champion_or_promotes_on_the_estimate_as_set(tiny_runs):
    first, keep, promote = (tiny_runs["runs"][k] for k in ("first", "keep", "promote"))
    assert keep["model"]["version"] != first["model"]["version"]
    assert keep["gate"]["decision"] == "keep champion" and not keep["promoted"]
    assert "The gate cannot compare" in keep["gate"]["reason"] and "gate.unmeasurable=keep" in keep["gate"]["reason"]
    assert f"champion {first['model']['version']}'s own estimate" in keep["gate"]["reason"]
    assert promote["gate"]["decision"] == "promote" and promote["promoted"]
    assert "gate.unmeasurable=promote: promoted on the estimate" in promote["gate"]["reason"]


def test_with_enough_rows_the_measured_path_runs_and_a_champion_without_hold_out_is_not_compared(tiny_runs):
    """30 rows per class with evaluate.min_test_per_class=5 (6 expected test rows each): the old path (hold-out
    split, test metrics, no estimate); the champion trained on every row of the tiny runs, so it may have seen
    today's test rows: the gate does not score it on them (gate.on_split_change decides)."""
    from flows.retrain import retrain

    root = tiny_runs["root"]
    data = write_csv(root / "more.csv", first_per_label(30))
    summary = json.loads(Path(retrain(data=str(data), workdir=str(root / "work"), overrides={
        **TINY, "evaluate.min_test_per_class": 5, "train.regime": "frozen"})).read_text())
    assert set(summary["split"]["split_rows"]) == {"train", "val", "test"} and "estimate" not in summary["split"]
    assert "estimate" not in summary["metrics"] and summary["metrics"]["test"]["n"] == summary["split"]["split_rows"]["test"]
    assert summary["gate"]["estimate"] is None and summary["gate"]["test"].startswith("paired bootstrap")
    assert "trained on every labelled row" in summary["gate"]["reason"]
    assert "majority-class predictor" in summary["gate"]["reason"]
