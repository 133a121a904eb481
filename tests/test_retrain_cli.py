"""The retrain command line as users and schedulers see it (CONTRACT.md): output, summary.json, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import assert_four_paths_agree, first_per_label, run_cli, write_csv

STAGES = ("validate", "split", "augment", "tokenize", "embed", "finetune", "evaluate", "promote")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real run of the whole flow on 150 PhraseBank sentences, then the same command again.

    The workdir is given as a file:// URL, as a deployment with fsspec-style storage settings would give it.
    """
    home = tmp_path_factory.mktemp("flow")
    data = write_csv(home / "slice.csv", first_per_label(50))
    args = ("--data", str(data), "--workdir", (home / "work").as_uri(), "--set", "train.max_epochs=4",
            "--set", "augment.n_aug=1", "--set", "train.regime=finetune",
            "--set", "evaluate.min_test_per_class=0")
    first = run_cli("flows.retrain", *args, home=home)
    second = run_cli("flows.retrain", *args, home=home)
    return home, first, second


def _summary(result) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.is_absolute() and path.name == "summary.json"
    return json.loads(path.read_text())


def test_summary_has_the_contract_keys(trained):
    home, first, _ = trained
    summary = _summary(first)
    assert summary["run_id"] and summary["runner"] == "threads" and summary["promoted"] is True
    dataset = summary["dataset"]
    assert dataset["rows"] == 150 and dataset["rows_used"] == 150 and len(dataset["sha256"]) == 64
    for stage in STAGES:
        assert summary["stages"][stage]["state"] == "Completed"
        assert summary["stages"][stage]["seconds"] >= 0
    assert summary["stages"]["augment"]["rows_out"] > summary["stages"]["augment"]["rows_in"]
    test = summary["metrics"]["test"]
    assert 0 <= test["accuracy"] <= 1 and 0 <= test["macro_f1"] <= 1
    assert set(test["per_class"]) == {"negative", "neutral", "positive"}
    assert set(test["per_class"]["neutral"]) >= {"precision", "recall", "f1"}
    assert np.sum(test["confusion_matrix"]["rows_true_cols_predicted"]) == test["n"] > 0
    assert summary["model"]["version"] and Path(summary["model"]["path"]).is_dir()


def test_logs_go_to_stderr_and_only_the_path_to_stdout(trained):
    _, first, _ = trained
    assert len(first.stdout.strip().splitlines()) == 1
    assert "finetune" in first.stderr and "embed: batch" in first.stderr


def test_unchanged_rerun_is_served_from_cache(trained):
    _, first, second = trained
    one, two = _summary(first), _summary(second)
    assert one["run_id"] != two["run_id"]
    for stage in STAGES[:-1]:
        assert two["stages"][stage]["state"] == "Cached", stage
    assert two["metrics"]["test"] == one["metrics"]["test"]
    assert one["drift"]["status"] == "no reference"
    assert two["drift"]["status"] == "ok" and two["drift"]["reference_run_id"] == one["run_id"]


def test_registered_model_is_self_contained(trained):
    """The champion loads in safe mode and, fed token ids, reproduces the evaluation's probabilities."""
    from core.model.backbone import Backbone, encode_texts, special_ids
    from core.model.inference import pad_batch

    home, first, second = trained
    summary = _summary(first)
    version = Path(summary["model"]["path"])
    champion = json.loads((version.parent.parent / "champion.json").read_text())
    again = _summary(second)
    assert champion["version"] == version.name, "an unchanged re-run must not replace the champion"
    assert again["promoted"] is False and again["gate"]["decision"] != "promote"
    assert again["gate"]["difference"] == 0.0  # the same model scores identically on every path
    import core.model.layers  # noqa: F401

    model = keras.saving.load_model(version / "model.keras", safe_mode=True)
    predictions = pq.read_table(version / "predictions.parquet").to_pandas()
    texts = {r["text"]: r for r in first_per_label(50)}
    from core.text.identity import row_id

    by_id = {row_id(t): t for t in texts}
    sentences = [by_id[r] for r in predictions["row_id"]]
    card = json.loads((version / "model.json").read_text())
    preset = Backbone.resolve(None).path
    cls_id, sep_id, _ = special_ids(preset)
    length = card["tokenizer"]["sequence_length"]
    ids = [[cls_id, *x[: length - 2], sep_id] for x in encode_texts(preset, sentences)]
    proba = model.predict_on_batch(pad_batch(ids))
    expected = predictions[[f"prob_{label}" for label in card["labels"]]].to_numpy()
    np.testing.assert_allclose(proba, expected, atol=2e-3)
    import tensorflow as tf

    exported = tf.saved_model.load(str(version / "saved_model"))  # kept alive: `serve` refers to its variables
    served = exported.serve_token_ids(pad_batch(ids)).numpy()
    np.testing.assert_allclose(served, proba, atol=1e-5)
    metrics = json.loads((version / "metrics.json").read_text())["test"]
    assert metrics["ci95"]["accuracy"][0] <= metrics["accuracy"] <= metrics["ci95"]["accuracy"][1]
    assert 0 <= metrics["ece"] <= 1 and metrics["log_loss"] > 0


def test_four_paths_agree_with_two_blocks_unfrozen(trained, prefect_api, tmp_path):
    home, first, _ = trained
    version = Path(_summary(first)["model"]["path"])
    assert json.loads((version / "model.json").read_text())["unfreeze_top"] == 2
    assert_four_paths_agree(home / "work", version, tmp_path)


def test_object_storage_url_is_refused_with_the_fix(tmp_path: Path):
    result = run_cli("flows.retrain", "--workdir", "s3://bucket/retrain", home=tmp_path)
    assert result.returncode == 2 and "mount s3:// storage as a volume" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_data_exits_65_with_rows_and_no_traceback(tmp_path: Path):
    rows = first_per_label(10)
    rows[2]["text"] = ""
    rows[12]["label"] = " "
    data = write_csv(tmp_path / "bad.csv", rows)
    result = run_cli("flows.retrain", "--data", str(data), "--workdir", str(tmp_path / "work"), home=tmp_path)
    assert result.returncode == 65, result.stderr[-2000:]
    assert "line 4, column 'text': text is empty" in result.stderr
    assert "line 14, column 'label': label is empty" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "work" / "models").exists()
    assert result.stdout.strip() == ""


def test_missing_file_exits_66(tmp_path: Path):
    result = run_cli("flows.retrain", "--data", str(tmp_path / "absent.csv"), "--workdir", str(tmp_path),
                     home=tmp_path)
    assert result.returncode == 66 and "absent.csv does not exist" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("bad", ["train.max_epoch=3", "train.max_epochs=many", "noequals"])
def test_bad_setting_exits_2_and_says_why(tmp_path: Path, bad: str):
    result = run_cli("flows.retrain", "--set", bad, "--workdir", str(tmp_path), home=tmp_path)
    assert result.returncode == 2
    assert "max_epoch" in result.stderr or "KEY=VALUE" in result.stderr
    if bad.startswith("train.max_epoch="):
        assert "Did you mean 'train.max_epochs'" in result.stderr
