"""Seed ensembles (`train.ensemble = k`, issue 14): k members by the recipe, seeds seed..seed+k-1, one saved model
that averages their probabilities.

On small real slices with the real backbone: the saved ensemble's probabilities are the mean of the single
models that runs with the members' seeds train (so each member is that single model), its card records each
member's kept epoch and validation figures and the ensemble's own, every scoring path agrees on it (stored
features taken after its own frozen blocks and after fewer, the whole model on token ids, and, through the flow,
the four paths of CONTRACT.md), and `train.ensemble = 1` saves the single model's layout and card.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_four_paths_agree, first_per_label, write_csv

FAST = {"train.regime": "finetune", "train.max_epochs": 2, "train.min_epochs": 2, "train.min_val_per_class": 1, "augment.n_aug": 0,
        "data.conflicts": "drop", "evaluate.min_test_per_class": 0}


def _prepare(workdir: Path, backbone, unfreeze_top: int, rows: int = 40):
    """The real data steps on `rows` PhraseBank sentences per label: (cfg, features, augmented)."""
    from tasks.augment import augment
    from schemas.config import RetrainConfig
    from tasks.embed import embed
    from tasks.split import split
    from tasks.tokenization import tokenize
    from tasks.validate import validate

    data = write_csv(workdir / "d.csv", first_per_label(rows))
    cfg = RetrainConfig.from_parameters(data=str(data), workdir=workdir,
                                        overrides={**FAST, "train.unfreeze_top": unfreeze_top})
    splits = split(validate(cfg.data, workdir), cfg.split, 0, cfg.data.min_per_class, workdir)
    augmented = augment(splits, cfg.augment, 0, workdir)
    tokenized = tokenize(augmented, cfg.tokenize, backbone, workdir)
    return cfg, embed(tokenized, backbone, unfreeze_top, workdir), augmented, tokenized


def _texts(workdir: Path, tokenized, row_ids) -> list[list[int]]:
    """The model's token ids of the rows `row_ids`, in that order."""
    import pyarrow.parquet as pq

    table = pq.read_table(tokenized.resolve(workdir)).to_pandas().set_index("row_id")
    return [list(map(int, ids)) for ids in table.loc[list(row_ids), "token_ids"]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, backbone):
    """One block unfrozen, 2 epochs: an ensemble of 2 (seed 7: members 7, 8) and the single models of seeds 7
    and 8, on the same stored features."""
    from tasks.finetune import finetune

    workdir = tmp_path_factory.mktemp("ensemble")
    cfg, features, augmented, tokenized = _prepare(workdir, backbone, unfreeze_top=1)
    ensemble = finetune(features, cfg.train.model_copy(update={"ensemble": 2}), 7, backbone, workdir)
    singles = [finetune(features, cfg.train, seed, backbone, workdir) for seed in (7, 8)]
    return workdir, features, tokenized, ensemble, singles


def _split(features, workdir, name):
    from core.model.classifier import SplitFeatures

    return SplitFeatures(features, workdir, name)


def test_the_saved_ensemble_is_the_mean_of_the_single_models_of_its_seeds(trained, backbone):
    from core.model.classifier import load_classifier
    from core.model.inference import predict_stored, predict_token_ids

    workdir, features, tokenized, ensemble, singles = trained
    test = _split(features, workdir, "test")
    val_rows = _split(features, workdir, "val").row_ids
    sequences = _texts(workdir, tokenized, test.row_ids) + _texts(workdir, tokenized, val_rows)
    whole = predict_token_ids(load_classifier(ensemble, workdir), sequences)
    members = [predict_token_ids(load_classifier(single, workdir), sequences) for single in singles]
    np.testing.assert_allclose(whole, np.mean(members, axis=0), atol=1e-5)
    # The members differ (else the mean would prove nothing), and the ensemble is neither of them.
    assert np.abs(members[0] - members[1]).max() > 1e-3

    stored = predict_stored(load_classifier(ensemble, workdir), test.embeddings, test.hidden,
                            int(features.meta["frozen_blocks"]))
    stored_members = [predict_stored(load_classifier(s, workdir), test.embeddings, test.hidden, 5) for s in singles]
    np.testing.assert_allclose(stored, np.mean(stored_members, axis=0), atol=1e-6)
    np.testing.assert_allclose(stored, whole[: len(stored)], atol=2e-3)  # float16 stored inputs


def test_the_card_records_each_member_and_the_ensembles_validation_figures(trained):
    from core.model.fitting import ensemble_figures
    from core.model.classifier import load_classifier, read_card
    from core.model.inference import predict_stored

    workdir, features, _, ensemble, singles = trained
    card = read_card(ensemble, workdir)
    assert card["train"]["ensemble"] == 2 and card["seed"] == 7 and card["unfreeze_top"] == 1
    members = card["ensemble"]["member_figures"]
    assert [m["seed"] for m in members] == [7, 8] and card["ensemble"]["members"] == 2
    for member, single in zip(members, singles):
        for key in ("best_epoch", "epochs_run", "best_val_loss", "best_val_macro_f1", "best_val_accuracy"):
            assert member[key] == single.meta[key], key
    assert card["best_epoch"] == [s.meta["best_epoch"] for s in singles]
    assert set(card["history"]) == {"joint, member 1 (seed 7)", "joint, member 2 (seed 8)"}
    # The ensemble's validation figures: its members' validation probabilities averaged, as the saved model does.
    val = _split(features, workdir, "val")
    proba = predict_stored(load_classifier(ensemble, workdir), val.embeddings, val.hidden, 5)
    figures = ensemble_figures(proba, val.labels, len(card["labels"]))
    assert card["best_val_macro_f1"] == card["ensemble"]["val_macro_f1"] == pytest.approx(figures["val_macro_f1"])
    assert card["best_val_accuracy"] == pytest.approx(figures["val_accuracy"])
    assert ensemble.meta["ensemble"] == card["ensemble"]


def test_stored_features_taken_lower_run_the_shared_frozen_block_first(trained, backbone, tmp_path):
    """The gate scores a champion on the challenger's stored features, which may start a block lower than the
    blocks the champion trained: the ensemble's shared frozen block runs first, then its members."""
    from core.model.classifier import load_classifier
    from core.model.inference import predict_stored, predict_token_ids
    from core.model.graph import encoder_depth

    workdir, _, _, ensemble, _ = trained
    _, lower, _, tokenized = _prepare(tmp_path, backbone, unfreeze_top=2)
    classifier = load_classifier(ensemble, workdir)
    assert encoder_depth(classifier) == 6
    test = _split(lower, tmp_path, "test")
    stored = predict_stored(classifier, test.embeddings, test.hidden, 4)
    whole = predict_token_ids(classifier, _texts(tmp_path, tokenized, test.row_ids))
    np.testing.assert_allclose(stored, whole, atol=2e-3)
    with pytest.raises(ValueError, match="blocks the ensemble trained"):
        predict_stored(classifier, test.embeddings, test.hidden, 6)


@pytest.fixture(scope="module")
def frozen(tmp_path_factory, backbone):
    """The data steps with the backbone wholly frozen (stored pooled embeddings): (workdir, cfg, features)."""
    workdir = tmp_path_factory.mktemp("frozen")
    cfg, features, _, _ = _prepare(workdir, backbone, unfreeze_top=0)
    return workdir, cfg, features


def test_an_ensemble_of_heads_on_the_frozen_backbone(frozen, backbone):
    from tasks.finetune import finetune
    from core.model.classifier import load_classifier
    from core.model.inference import predict_stored

    workdir, cfg, features = frozen
    ensemble = finetune(features, cfg.train.model_copy(update={"ensemble": 3}), 3, backbone, workdir)
    singles = [finetune(features, cfg.train, seed, backbone, workdir) for seed in (3, 4, 5)]
    test = _split(features, workdir, "test")
    stored = predict_stored(load_classifier(ensemble, workdir), test.embeddings, None, 6)
    members = [predict_stored(load_classifier(s, workdir), test.embeddings, None, 6) for s in singles]
    np.testing.assert_allclose(stored, np.mean(members, axis=0), atol=1e-6)
    assert [m["seed"] for m in ensemble.meta["ensemble"]["member_figures"]] == [3, 4, 5]


def test_ensemble_one_is_the_single_model(frozen, backbone):
    """`train.ensemble = 1` (the default) saves the single model: backbone + head, no `ensemble` in the card,
    a scalar kept epoch; the same bytes as a run that does not name the setting."""
    from core.model.classifier import MODEL_FILE, load_classifier, read_card
    from tasks.finetune import finetune
    from core.storage.artifacts import sha256_file

    workdir, cfg, features = frozen
    assert cfg.train.ensemble == 1
    model = finetune(features, cfg.train, 3, backbone, workdir)
    card = read_card(model, workdir)
    assert "ensemble" not in card and isinstance(card["best_epoch"], int) and set(card["history"]) == {"head"}
    assert [layer.name for layer in load_classifier(model, workdir).layers][-1] == "head"
    again = finetune(features, cfg.train.model_copy(update={"ensemble": 1}), 3, backbone, workdir)
    assert sha256_file(again.resolve(workdir) / MODEL_FILE) == sha256_file(model.resolve(workdir) / MODEL_FILE)


def test_ensemble_setting_is_validated():
    from schemas.config import ConfigError, RetrainConfig

    assert RetrainConfig.from_parameters(overrides={"train.ensemble": "3"}).train.ensemble == 3
    for bad in (0, 11):
        with pytest.raises(ConfigError, match="train.ensemble"):
            RetrainConfig.from_parameters(overrides={"train.ensemble": bad})


def test_four_paths_agree_on_an_ensemble(tmp_path, prefect_api):
    """The whole flow with `train.ensemble=2` and one block unfrozen: evaluate, the gate (stored features and
    whole model), flows.predict and the exported SavedModel give one answer."""
    from flows.retrain import retrain

    data = write_csv(tmp_path / "slice.csv", first_per_label(40))
    summary = json.loads(Path(retrain(data=str(data), workdir=str(tmp_path / "work"), overrides={
        "train.ensemble": 2, "train.unfreeze_top": 1, "train.regime": "finetune", "train.max_epochs": 2, "train.min_epochs": 2,
        "augment.n_aug": 0, "evaluate.min_test_per_class": 0})).read_text())
    version = Path(summary["model"]["path"])
    card = json.loads((version / "model.json").read_text())
    assert card["train"]["ensemble"] == 2 and len(card["ensemble"]["member_figures"]) == 2
    assert_four_paths_agree(tmp_path / "work", version, tmp_path)
