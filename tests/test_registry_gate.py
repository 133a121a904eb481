"""Registry, champion/challenger gate and batch prediction: a worse model never replaces a better one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from flows import predict as predict_cli
from flows import registry as registry_cli
from flows.retrain import retrain
from core import registry
from tests.conftest import assert_four_paths_agree, first_per_label, write_csv

BASE = {"train.unfreeze_top": 0, "augment.n_aug": 0, "data.min_per_class": 3, "data.conflicts": "drop"}


# ------------------------------------------------------------------------------------------ registry

def _fake_version(workdir: Path, version: str, name: str = "m") -> None:
    folder = registry.version_dir(workdir, name, version)
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"x")
    (folder / "lineage.json").write_text(json.dumps({"model_sha256": version}))
    (folder / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.5, "macro_f1": 0.5}}))


def test_promote_rollback_and_prune_keep_the_champion_and_its_predecessor(tmp_path: Path):
    for v in ("v1", "v2", "v3", "v4", "v5"):
        _fake_version(tmp_path, v)
    for v in ("v1", "v2", "v3"):
        registry.promote(tmp_path, "m", v, "test")
    assert registry.promote(tmp_path, "m", "v3", "again")["previous"] == "v2"  # idempotent: no new entry
    assert len(registry.promotion_log(tmp_path, "m")) == 3
    assert registry.rollback(tmp_path, "m")["version"] == "v2"
    assert registry.rollback(tmp_path, "m")["version"] == "v1"
    with pytest.raises(registry.RegistryError, match="nothing to roll back to"):
        registry.rollback(tmp_path, "m")
    registry.promote(tmp_path, "m", "v3", "test")
    removed, freed = registry.prune_versions(tmp_path, "m", keep_latest=1)
    assert set(removed) == {"v2", "v4"} and freed > 0  # v3 champion, v1 its predecessor, v5 newest
    assert {v["version"] for v in registry.versions(tmp_path, "m")} == {"v1", "v3", "v5"}


def test_a_promotion_cut_short_before_its_log_entry_still_rolls_back_right(tmp_path: Path):
    from core import faults

    for v in ("v1", "v2", "v3"):
        _fake_version(tmp_path, v)
    registry.promote(tmp_path, "m", "v1", "test")
    registry.promote(tmp_path, "m", "v2", "test")
    faults.arm("promote:before-log=bug")
    try:
        with pytest.raises(faults.InjectedBug):
            registry.promote(tmp_path, "m", "v3", "test")
    finally:
        faults.arm(None)
    assert registry.champion(tmp_path, "m")["version"] == "v3"  # the pointer is the truth
    assert registry.champion_stack(tmp_path, "m") == ["v1", "v2", "v3"]
    assert registry.rollback(tmp_path, "m")["version"] == "v2"
    assert registry.protected_versions(tmp_path, "m") == {"v1", "v2", "v3"}


def test_a_damaged_champion_pointer_is_reported_not_trusted(tmp_path: Path):
    _fake_version(tmp_path, "v1")
    (registry.model_root(tmp_path, "m") / registry.CHAMPION).write_text('{"version": "v1"')
    with pytest.raises(registry.RegistryError, match="damaged"):
        registry.champion(tmp_path, "m")
    registry.promote(tmp_path, "m", "v1", "repair")
    assert registry.champion(tmp_path, "m")["version"] == "v1"


# ------------------------------------------------------------------------------------------ the gate, end to end

@pytest.fixture(scope="module")
def runs(prefect_api, tmp_path_factory):
    """Real runs in one workdir: weak first, strong, unchanged re-run (twice), weak challenger."""
    root = tmp_path_factory.mktemp("gate")
    data = write_csv(root / "data.csv", first_per_label(200))
    workdir = root / "work"

    def run(**overrides):
        return json.loads(Path(retrain(data=str(data), workdir=str(workdir),
                                       overrides={**BASE, **overrides})).read_text())

    out = {"root": root, "data": data, "workdir": workdir}
    out["weak_first"] = run(**{"data.max_train_rows": 12, "train.max_epochs": 1, "seed": 1})
    # A deliberately weak champion (by hand if the gate did not promote it), for the strong one to challenge.
    registry.promote(workdir, "default", out["weak_first"]["model"]["version"], "weak champion for the test")
    out["strong"] = run(**{"train.max_epochs": 30})
    out["unchanged"] = run(**{"train.max_epochs": 30})
    out["unchanged_again"] = run(**{"train.max_epochs": 30})
    out["weak"] = run(**{"data.max_train_rows": 12, "train.max_epochs": 1, "seed": 2})
    return out


def test_first_model_must_beat_the_majority_baseline(runs):
    gate = runs["weak_first"]["gate"]
    assert gate["champion_version"] is None and "majority-class predictor" in gate["reason"]
    assert runs["weak_first"]["promoted"] is (gate["lower_bound"] > 0)


def test_a_stronger_challenger_is_promoted_with_its_evidence(runs):
    summary = runs["strong"]
    gate = summary["gate"]
    assert summary["promoted"] is True and gate["decision"] == "promote"
    assert gate["champion_version"] == runs["weak_first"]["model"]["version"]
    assert gate["lower_bound"] > 0 and gate["interval"][0] <= gate["difference"] <= gate["interval"][1]
    assert gate["n"] == summary["metrics"]["test"]["n"] and gate["mcnemar_p"] is not None
    assert registry.champion(runs["workdir"], "default")["version"] == summary["model"]["version"]


def test_an_unchanged_rerun_does_not_promote(runs):
    """The invariant that catches scoring-path bugs: an identical model scores identically, so the gate's
    difference against its own champion is exactly 0."""
    summary = runs["unchanged"]
    assert summary["promoted"] is False and summary["gate"]["difference"] == 0.0
    assert summary["gate"]["champion_scored_on"] == "stored test features"
    assert summary["gate"]["challenger_macro_f1"] == summary["gate"]["baseline_macro_f1"]
    assert summary["model"]["version"] == runs["strong"]["model"]["version"]  # registered once
    assert registry.champion(runs["workdir"], "default")["version"] == runs["strong"]["model"]["version"]


def test_the_champions_scores_are_computed_once_per_test_split(runs):
    """A second unchanged re-run reads the champion's test probabilities back (same version, same rows)
    and still scores it exactly as the challenger."""
    gate = runs["unchanged_again"]["gate"]
    assert gate["champion_scored_on"] == "stored test features (cached)"
    assert gate["difference"] == 0.0 and gate["challenger_macro_f1"] == gate["baseline_macro_f1"]
    assert gate["challenger_macro_f1"] == runs["unchanged"]["gate"]["challenger_macro_f1"]


def test_a_weakened_challenger_is_rejected(runs):
    summary = runs["weak"]
    assert summary["promoted"] is False and summary["gate"]["decision"] == "keep champion"
    assert summary["gate"]["champion_version"] == runs["strong"]["model"]["version"]
    assert registry.champion(runs["workdir"], "default")["version"] == runs["strong"]["model"]["version"]


def test_four_paths_agree_with_a_frozen_backbone(runs, tmp_path):
    champion = registry.version_dir(runs["workdir"], "default", runs["strong"]["model"]["version"])
    gaps = assert_four_paths_agree(runs["workdir"], champion, tmp_path)
    assert max(gaps.values()) < 1e-4  # nothing float16 on this path: the head sees the same float32 embedding


# What a serving user runs: TensorFlow and TensorFlow Text alone, in a fresh process, on the registered folder.
SERVING_USER = """
import sys
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

saved_model, inputs, outputs = sys.argv[1:]
data = np.load(inputs)
texts = data["texts"].tolist()
exported = tf.saved_model.load(saved_model)
out = {}
for size in (1, 7, len(texts)):
    batches = [exported.serve(text=tf.constant(texts[i: i + size])) for i in range(0, len(texts), size)]
    out[f"proba_{size}"] = np.concatenate([b["probabilities"].numpy() for b in batches])
    out[f"label_{size}"] = np.concatenate([b["predicted_label"].numpy() for b in batches]).astype(str)
out["by_ids"] = exported.serve_token_ids({"token_ids": data["token_ids"], "padding_mask": data["padding_mask"]}).numpy()
out["labels"] = exported.labels().numpy().astype(str)
default = exported.signatures["serving_default"]
out["inputs"] = np.array(sorted(default.structured_input_signature[1]))
out["outputs"] = np.array(sorted(default.structured_outputs))
out["empty"] = np.array(exported.serve(text=tf.constant([], tf.string))["probabilities"].shape)
out["imported"] = np.array([m for m in ("keras_hub", "core", "tasks") if m in sys.modules], dtype=str)
np.savez(outputs, **out)
"""


def test_the_saved_model_serves_raw_text_as_evaluate_scored_it(runs, tmp_path):
    """`serve(text=...)` on the version's test sentences, batches of 1, 7 and all: evaluate's probabilities (to
    1e-4) and labels, rows in input order; `serve_token_ids` still takes the ids; each weight is stored once."""
    import subprocess
    import sys

    import tensorflow as tf

    from core.model.backbone import Backbone, encode_for_model
    from core.model.inference import pad_batch
    from core.model.classifier import load_classifier_file

    version = registry.version_dir(runs["workdir"], "default", runs["strong"]["model"]["version"])
    card = json.loads((version / "model.json").read_text())
    evaluated = pq.read_table(version / "predictions.parquet").to_pandas()
    texts, labels = evaluated["text"].tolist(), card["labels"]
    expected = evaluated[[f"prob_{label}" for label in labels]].to_numpy()
    assert len(texts) > 7 and len(texts) % 7  # the batches of 7 end with a short one
    ids = pad_batch(encode_for_model(Backbone.resolve(None).path, texts, card["tokenizer"]["sequence_length"]))
    np.savez(tmp_path / "in.npz", texts=np.array(texts, dtype=str), **ids)
    done = subprocess.run([sys.executable, "-c", SERVING_USER, str(version / "saved_model"), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")

    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-4
    for size in (1, 7, len(texts)):
        np.testing.assert_allclose(out[f"proba_{size}"], expected, atol=1e-4, err_msg=f"batches of {size}")
        assert out[f"proba_{size}"].dtype == np.float32
        assert (out[f"label_{size}"] == evaluated["predicted_label"].to_numpy())[clear].all(), f"batches of {size}"
    np.testing.assert_allclose(out["by_ids"], expected, atol=1e-4)
    assert out["labels"].tolist() == labels
    assert out["inputs"].tolist() == ["text"] and out["outputs"].tolist() == ["predicted_label", "probabilities"]
    assert out["empty"].tolist() == [0, len(labels)]
    assert out["imported"].tolist() == []  # TensorFlow and TensorFlow Text are all a serving user needs

    stored = tf.train.load_checkpoint(str(version / "saved_model" / "variables" / "variables"))
    values = sum(int(np.prod(shape)) for name, shape in stored.get_variable_to_shape_map().items()
                 if name != "_CHECKPOINTABLE_OBJECT_GRAPH")
    assert values == load_classifier_file(version / "model.keras").count_params()  # not twice (keras#23553)


def test_reevaluation_is_a_new_logged_record_that_matches_the_evaluation(runs):
    from flows.reevaluation import LOG, latest, recorded_texts, reevaluate

    version = runs["strong"]["model"]["version"]
    folder = registry.version_dir(runs["workdir"], "default", version)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    entry = reevaluate(runs["workdir"], "default", version)
    recorded = json.loads((folder / "metrics.json").read_text())["test"]
    assert entry["new"]["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-9)
    assert entry["new"]["macro_f1"] == pytest.approx(recorded["macro_f1"], abs=1e-9)
    assert entry["changed_predictions"] == 0 and latest(folder)["test"]["n"] == recorded["n"]
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before  # nothing overwritten
    registry.verify(runs["workdir"], "default", version)
    logged = (registry.model_root(runs["workdir"], "default") / LOG).read_text().splitlines()
    assert json.loads(logged[-1])["version"] == version
    # A version registered before predictions recorded their texts: found again in the lineage's dataset.
    old = pq.read_table(folder / "predictions.parquet").to_pandas()
    assert recorded_texts(folder, old.drop(columns=["text"]), None) == old["text"].tolist()


def test_predict_matches_the_evaluation_and_sums_to_one(runs, capsys):
    champion = registry.version_dir(runs["workdir"], "default", runs["strong"]["model"]["version"])
    evaluated = pq.read_table(champion / "predictions.parquet").to_pandas()
    from core.text.identity import row_id

    by_id = {row_id(r["text"]): r for r in first_per_label(200)}
    inputs = pd.DataFrame([{"sentence": by_id[r]["text"], "ref": r} for r in evaluated["row_id"]])
    inputs.to_csv(runs["root"] / "to_score.csv", index=False)
    out = runs["root"] / "scored.parquet"
    code = predict_cli.main(["--data", str(runs["root"] / "to_score.csv"), "--out", str(out), "--workdir",
                             str(runs["workdir"]), "--text-col", "sentence"])
    assert code == 0 and capsys.readouterr().out.strip().splitlines()[-1] == str(out.resolve())
    scored = pq.read_table(out).to_pandas()
    probs = [c for c in scored.columns if c.startswith("prob_")]
    assert list(scored.columns[:2]) == ["sentence", "ref"] and len(scored) == len(inputs)
    np.testing.assert_allclose(scored[probs].sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(scored[probs].to_numpy(), evaluated[probs].to_numpy(), atol=2e-3)
    assert (scored["predicted_label"] == evaluated["predicted_label"]).mean() > 0.98


def test_predict_rejects_bad_rows_and_a_missing_version(runs, tmp_path, capsys):
    bad = write_csv(tmp_path / "bad.csv", [{"text": "Sales rose"}, {"text": "  "}], fields=("text",))
    assert predict_cli.main(["--data", str(bad), "--out", str(tmp_path / "o.parquet"), "--workdir",
                             str(runs["workdir"])]) == 65
    assert "line 3, column 'text': text is empty" in capsys.readouterr().err
    assert not (tmp_path / "o.parquet").exists()
    assert predict_cli.main(["--data", str(bad), "--out", str(tmp_path / "o.parquet"), "--workdir",
                             str(runs["workdir"]), "--model", "nope"]) == 1
    assert "has no version 'nope'" in capsys.readouterr().err


def test_registry_cli_lists_shows_and_rolls_back(runs, capsys):
    workdir = str(runs["workdir"])
    assert registry_cli.main(["--workdir", workdir, "list"]) == 0
    listing = capsys.readouterr().out
    assert runs["strong"]["model"]["version"] in listing and "*" in listing
    assert registry_cli.main(["--workdir", workdir, "show", "champion"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["lineage"]["run_id"] == runs["strong"]["run_id"] and "labels" in shown["card"]
    before = registry.champion(runs["workdir"], "default")
    if before["previous"]:
        assert registry_cli.main(["--workdir", workdir, "rollback"]) == 0
        assert registry.champion(runs["workdir"], "default")["version"] == before["previous"]
        registry.promote(runs["workdir"], "default", before["version"], "restore after test")


def test_a_changed_label_set_follows_the_policy(runs):
    relabelled = [{"text": r["text"], "label": {"neutral": "other", "negative": "bad", "positive": "good"}[r["label"]]}
                  for r in first_per_label(200)]
    data = write_csv(runs["root"] / "relabelled.csv", relabelled)
    summary = json.loads(Path(retrain(data=str(data), workdir=str(runs["workdir"]),
                                      overrides={**BASE, "train.max_epochs": 3})).read_text())
    assert summary["gate"]["test"].startswith("none") and "label set changed" in summary["gate"]["reason"]
    assert summary["promoted"] is True


def test_prune_keeps_the_data_the_champion_was_trained_on(tmp_path: Path):
    """Drift compares new data with the champion's training data: pruning must not delete it."""
    from core.run.prune import prune

    _fake_version(tmp_path, "v1")
    lineage = registry.version_dir(tmp_path, "m", "v1") / "lineage.json"
    lineage.write_text(json.dumps({"model_sha256": "v1", "validated_sha256": "ab" * 32}))
    registry.promote(tmp_path, "m", "v1", "test")
    kept = tmp_path / "artifacts" / "validate" / f"{'ab' * 8}.parquet"
    gone = tmp_path / "artifacts" / "validate" / f"{'cd' * 8}.parquet"
    for path in (kept, gone):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"data")
    prune(tmp_path, keep=0, grace_seconds=0)
    assert kept.exists() and not gone.exists()


def test_the_registry_lock_is_re_entrant_in_a_thread_and_excludes_other_processes(tmp_path: Path):
    import subprocess
    import sys

    with registry.locked(tmp_path, "m"):
        with registry.locked(tmp_path, "m"):  # re-entrant: a promotion inside a registration
            pass
        other = subprocess.run([sys.executable, "-c", (
            "import sys; from pathlib import Path; from core import registry\n"
            "try:\n    registry.locked(Path(sys.argv[1]), 'm', timeout=0.5).__enter__()\n"
            "except registry.RegistryError as exc:\n    print(exc); sys.exit(3)\n"), str(tmp_path)],
            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        assert other.returncode == 3 and "was held for over" in other.stdout
    free = subprocess.run([sys.executable, "-c", (
        "import sys; from pathlib import Path; from core import registry\n"
        "with registry.locked(Path(sys.argv[1]), 'm', timeout=5):\n    print('held')\n"), str(tmp_path)],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert free.returncode == 0 and "held" in free.stdout
