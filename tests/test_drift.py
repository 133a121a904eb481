"""drift: real shifts are flagged, sampling noise is not; `validate.drift=fail` stops the run."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tasks.config import DataConfig, ValidateConfig
from tasks.drift import drift
from tasks.errors import InvalidData
from tasks.validate import validate
from tests.conftest import first_per_label, phrasebank_rows, write_csv


def _validated(tmp_path: Path, name: str, rows):
    return validate(DataConfig(path=write_csv(tmp_path / f"{name}.csv", rows), conflicts="drop",
                               min_per_class=1), tmp_path)


def _report(tmp_path, reference_rows, current_rows, cfg=ValidateConfig()):
    reference = _validated(tmp_path, "reference", reference_rows)
    current = _validated(tmp_path, "current", current_rows)
    return drift(current, reference, cfg, tmp_path).meta["report"]


def test_first_run_has_no_reference(tmp_path: Path):
    current = _validated(tmp_path, "current", first_per_label(20))
    assert drift(current, None, ValidateConfig(), tmp_path).meta["report"]["status"] == "no reference"


def test_two_samples_of_the_same_data_do_not_drift(tmp_path: Path):
    rows = phrasebank_rows()
    random.Random(1).shuffle(rows)
    report = _report(tmp_path, rows[:1500], rows[1500:3000])
    assert report["status"] == "ok", report
    small = _report(tmp_path, rows[:60], rows[60:120])
    assert small["status"] == "ok", small


def test_more_of_the_same_data_does_not_drift(tmp_path: Path):
    report = _report(tmp_path, first_per_label(200), first_per_label(200) + first_per_label(40, skip=200))
    assert report["status"] == "ok", report


def test_shifted_label_proportions_drift(tmp_path: Path):
    reference = first_per_label(200)
    current = [r for r in first_per_label(300) if r["label"] == "negative"] + first_per_label(40, skip=300)
    report = _report(tmp_path, reference, current)
    assert "labels" in report["drifted"] and "unseen_tokens" not in report["drifted"], report
    assert report["checks"]["labels"]["cramers_v"] >= 0.1


def test_new_vocabulary_and_longer_texts_drift(tmp_path: Path):
    rng = random.Random(0)
    reference = first_per_label(150)
    current = [{"text": " ".join("".join(rng.choice("qxzjvkw") for _ in range(7)) for _ in range(40)),
                "label": r["label"]} for r in first_per_label(150, skip=150)]
    report = _report(tmp_path, reference, current)
    assert set(report["drifted"]) == {"length", "unseen_tokens"}, report
    assert report["checks"]["unseen_tokens"]["current_unseen_share"] > 0.9


def test_a_new_label_is_always_reported(tmp_path: Path):
    reference = first_per_label(30)
    current = first_per_label(30) + [{"text": "The outlook was withdrawn entirely", "label": "mixed"}]
    report = _report(tmp_path, reference, current)
    assert report["checks"]["labels"]["new_labels"] == ["mixed"] and "labels" in report["drifted"]


def test_drift_fail_policy_is_invalid_data(tmp_path: Path):
    current = [r for r in first_per_label(300) if r["label"] == "negative"] + first_per_label(40, skip=300)
    with pytest.raises(InvalidData) as caught:
        _report(tmp_path, first_per_label(200), current, ValidateConfig(drift="fail"))
    failures = caught.value.failures
    assert all(f.location == "file" and "validate.drift=warn" in f.rule for f in failures)
    assert any("data drift in labels" in f.rule for f in failures)
