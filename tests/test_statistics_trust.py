"""Figures an operator acts on: what the gate can detect, a changed split, log loss, verified models, durable writes."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import norm

from core import registry
from schemas.config import GateConfig, SplitConfig
from tasks.gate import gate, split_change
from core.metrics import paired_bootstrap
from core.storage.artifacts import ArtifactRef, sha256_file

LABELS = ["negative", "neutral", "positive"]


def _predictions(n: int, accuracy: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(3, n, p=[0.12, 0.59, 0.29])
    return y, np.where(rng.random(n) < accuracy, y, rng.integers(0, 3, n))


# ------------------------------------------------------------------------------------------ what the gate can detect

def test_the_detectable_difference_is_a_power_calculation_on_the_bootstrap_standard_error():
    y, champion = _predictions(1000, 0.75, 0)
    rng = np.random.default_rng(1)
    challenger = np.where(rng.random(1000) < 0.2, np.where(rng.random(1000) < 0.8, y, champion), champion)
    boot = paired_bootstrap(y, challenger, champion, 3, 2000, 0.95)
    assert boot["standard_error"] > 0
    assert boot["detectable_difference"] == pytest.approx((norm.ppf(0.95) + norm.ppf(0.8)) * boot["standard_error"])
    assert boot["promotion_threshold"] == pytest.approx(boot["difference"] - boot["lower_bound"])
    # the one-sided 95 % half-width of a near-normal bootstrap is about 1.645 standard errors
    assert boot["promotion_threshold"] == pytest.approx(1.645 * boot["standard_error"], rel=0.15)


def test_fifty_test_rows_cannot_see_a_five_point_gain_and_a_thousand_can():
    """The same kind of model pair (the challenger changes 30 % of the champion's answers, 70 % of them to the
    right one): the detectable difference shrinks like 1 / sqrt(n) (median of 5 draws each)."""
    figures = {}
    for n in (50, 1000):
        found = []
        for seed in range(5):
            y, champion = _predictions(n, 0.75, seed)
            rng = np.random.default_rng(100 + seed)
            changed = np.where(rng.random(n) < 0.7, y, rng.integers(0, 3, n))
            challenger = np.where(rng.random(n) < 0.3, changed, champion)
            found.append(paired_bootstrap(y, challenger, champion, 3, 2000, 0.95)["detectable_difference"])
        figures[n] = float(np.median(found))
    assert figures[50] > 0.05 > figures[1000]
    assert 2 < figures[50] / figures[1000] < 8  # sqrt(20) = 4.5, up to the noise of five draws each


def _evaluation(workdir: Path, n: int, accuracy: float = 0.8, seed: int = 5) -> ArtifactRef:
    """An evaluation artifact as evaluate writes it (predictions.parquet, labels and majority baseline in meta)."""
    y, predicted = _predictions(n, accuracy, seed)
    folder = workdir / "artifacts" / "evaluate" / f"fake{n}"
    folder.mkdir(parents=True)
    frame = pd.DataFrame({"row_id": [f"{i:016x}" for i in range(n)], "text": [f"sentence {i}" for i in range(n)],
                          "label": [LABELS[i] for i in y], "predicted_label": [LABELS[i] for i in predicted]})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "predictions.parquet")
    return ArtifactRef(path=folder.relative_to(workdir).as_posix(), sha256="0" * 64, rows=n,
                       meta={"labels": LABELS, "test": {"majority_baseline": {"label": "neutral"}}})


def test_every_decision_reports_what_its_split_can_detect_and_warns_when_it_is_over_five_points(tmp_path, caplog):
    small = _evaluation(tmp_path, 50)
    with caplog.at_level(logging.INFO, logger="tasks.gate"):
        decision = gate(small, None, GateConfig(), "m", None, tmp_path)
    assert decision.detectable_difference > 0.05 and decision.power == 0.8
    assert decision.detectable_note.startswith("too few test rows") and "more than 5 points" in decision.detectable_note
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "too few test rows" in r.getMessage()]
    assert warned, "the log says it plainly"
    summary_gate = json.loads(decision.model_dump_json())  # what summary.json stores
    assert summary_gate["detectable_difference"] == decision.detectable_difference

    from core.reports.dashboard import run_markdown

    test = {"accuracy": 0.8, "macro_f1": 0.7, "n": 50, "majority_baseline": {"accuracy": 0.6, "macro_f1": 0.25},
            "confusion_matrix": {"labels": LABELS, "rows_true_cols_predicted": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}}
    summary = {"run_id": "r", "dataset": {"path": "d.csv", "sha256": "0" * 64, "rows": 250, "rows_used": 250,
                                          "duplicates_dropped": 0, "conflicts_dropped": 0, "labels": LABELS},
               "metrics": {"test": test}, "gate": summary_gate, "model": {"name": "m", "version": "v"}}
    assert f"What this test split can detect: {decision.detectable_note}" in run_markdown(summary)

    large = gate(_evaluation(tmp_path, 2000), None, GateConfig(), "m", None, tmp_path)
    assert large.detectable_difference < 0.05 and not large.detectable_note.startswith("too few")


# ------------------------------------------------------------------------------------------ a changed split

def _champion(workdir: Path, split: dict, name: str = "m", version: str = "v1") -> None:
    folder = registry.version_dir(workdir, name, version)
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"weights")
    (folder / "lineage.json").write_text(json.dumps({"config": {"split": split},
                                                     "files_sha256": {"model.keras": sha256_file(folder / "model.keras")}}))
    registry.promote(workdir, name, version, "test")


def test_a_changed_split_is_not_comparable_and_the_setting_decides(tmp_path: Path):
    _champion(tmp_path, SplitConfig().model_dump(mode="json"))
    assert split_change(tmp_path, "m", "v1", SplitConfig()) is None
    resalted = SplitConfig(salt="another-salt")
    why = split_change(tmp_path, "m", "v1", resalted)
    assert "salt 'retrain-split-v1' -> 'another-salt'" in why
    assert "test_fraction" in split_change(tmp_path, "m", "v1", SplitConfig(test_fraction=0.3))

    evaluation = _evaluation(tmp_path, 400)
    # default: gated against the majority-class predictor, as a first model, never against the champion
    baseline = gate(evaluation, None, GateConfig(), "m", None, tmp_path, split=resalted)
    assert baseline.champion_version == "v1" and "majority-class predictor" in baseline.reason
    assert "split settings changed" in baseline.reason and baseline.promote is (baseline.lower_bound > 0)
    keep = gate(evaluation, None, GateConfig(on_split_change="keep"), "m", None, tmp_path, split=resalted)
    assert keep.promote is False and keep.test.startswith("none") and "gate.on_split_change=keep" in keep.reason
    promote = gate(evaluation, None, GateConfig(on_split_change="promote"), "m", None, tmp_path, split=resalted)
    assert promote.promote is True and promote.decision == "promote"


# ------------------------------------------------------------------------------------------ smaller items

def test_log_loss_uses_clipped_then_renormalised_probabilities():
    from core.metrics import classification_metrics

    y = np.array([0, 1, 2, 0])
    proba = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn warns when the rows it is given do not sum to one
        metrics = classification_metrics(y, proba, LABELS)
    clipped = np.clip(proba, 1e-7, 1)
    clipped /= clipped.sum(axis=1, keepdims=True)
    assert metrics["log_loss"] == pytest.approx(-np.log(clipped[np.arange(4), y]).mean(), rel=1e-12)


def test_batch_prediction_refuses_a_version_whose_files_changed(tmp_path: Path):
    from core.registry import resolve_version

    _champion(tmp_path, {})
    assert resolve_version(tmp_path, "m", "champion") == registry.version_dir(tmp_path, "m", "v1")
    (registry.version_dir(tmp_path, "m", "v1") / "model.keras").write_bytes(b"tampered")
    with pytest.raises(registry.RegistryError, match="damaged"):
        resolve_version(tmp_path, "m", "champion")
    with pytest.raises(registry.RegistryError, match="damaged"):
        resolve_version(tmp_path, "m", "v1")


def test_atomic_writes_fsync_the_file_and_then_its_folder_after_the_rename(tmp_path: Path, monkeypatch):
    from core.storage import artifacts as io

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", os.path.realpath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)

    def durable(dest: Path) -> bool:
        folder = os.path.realpath(dest.parent)
        renamed = events.index(("rename", os.path.realpath(dest)))
        return ("fsync", folder) in events[renamed + 1:] and any(e[0] == "fsync" for e in events[:renamed])

    io.write_json_atomic(tmp_path / "pointer.json", {"version": "v1"})
    assert durable(tmp_path / "pointer.json"), events
    events.clear()
    ref = io.store_json(tmp_path, "step", {"a": 1})
    assert durable(ref.resolve(tmp_path)), events
    events.clear()
    with io.staging(io.artifact_dir(tmp_path, "folder"), is_dir=True) as staged:
        (staged / "x.json").write_text("{}")
        ref = io.store_dir(tmp_path, "folder", staged, rows=0, meta={})
    assert durable(ref.resolve(tmp_path)), events

