"""The few-shot regime (contrastive body tuning, then a head) and `train.regime`: pairs, the head's transfer from
scikit-learn, the rule, and a real run whose saved model scores the same on every path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.model.contrastive import contrastive_pairs, logistic_head_weights
from schemas.config import TrainConfig


@pytest.mark.parametrize("labels", [[0, 0, 0, 1, 1, 1, 2, 2, 2], [0, 1, 0, 1, 1, 1, 1, 0], [3, 3, 1, 1]])
@pytest.mark.parametrize("iterations", [1, 5])
def test_pairs_are_balanced_labelled_right_and_never_a_row_with_itself(labels, iterations):
    labels = np.array(labels)
    first, second, target = contrastive_pairs(labels, iterations, seed=7)
    n = len(labels)
    assert len(target) == 2 * iterations * n
    assert (target == 1).sum() == (target == 0).sum() == iterations * n
    np.testing.assert_array_equal(target, (labels[first] == labels[second]).astype(np.float32))
    assert (first != second).all() and (first < second).all()
    assert list(target[:4]) == [1, 0, 1, 0]  # positives and negatives alternate
    # every distinct pair of a kind is used before any is used twice
    positives = {(a, b) for a, b, t in zip(first, second, target) if t == 1}
    distinct = sum(1 for i in range(n) for j in range(i + 1, n) if labels[i] == labels[j])
    assert len(positives) == min(distinct, iterations * n)
    again = contrastive_pairs(labels, iterations, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip((first, second, target), again))


def test_pairs_of_one_class_or_one_row_per_class_hold_the_kind_that_exists():
    first, second, target = contrastive_pairs(np.array([0, 1, 2]), 2, seed=0)  # no positive pair exists
    assert len(target) == 6 and (target == 0).all()
    first, second, target = contrastive_pairs(np.array([4, 4, 4]), 2, seed=0)  # no negative pair exists
    assert len(target) == 6 and (target == 1).all()


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_the_logistic_head_in_a_softmax_layer_gives_scikit_learns_probabilities(n_classes):
    from scipy.special import softmax
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(n_classes)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    y = np.arange(60) % n_classes
    model = LogisticRegression(C=0.7, max_iter=5000).fit(x, y)
    kernel, bias = logistic_head_weights(model.coef_, model.intercept_, n_classes)
    assert kernel.shape == (8, n_classes) and bias.shape == (n_classes,)
    np.testing.assert_allclose(softmax(x @ kernel + bias, axis=1), model.predict_proba(x), atol=1e-5)


class _Rows:
    def __init__(self, labels, augmented=None):
        self.labels = np.array(labels, np.int32)
        self.is_augmented = np.zeros(len(labels), bool) if augmented is None else np.array(augmented)


@pytest.mark.parametrize("counts, regime", [((8, 8, 8), "fewshot"), ((31, 50, 40), "fewshot"), ((32, 32, 90), "finetune")])
def test_auto_picks_few_shot_below_the_threshold_by_the_smallest_class(counts, regime):
    from core.model.fitting import choose_regime

    labels = np.repeat(np.arange(3), counts)
    chosen, reason = choose_regime(TrainConfig(fewshot_below=32), _Rows(labels), ["a", "b", "c"], 2)
    assert chosen == regime and "train.regime=auto" in reason and str(min(counts)) in reason


@pytest.mark.parametrize("regime", ["auto", "fewshot", "finetune", "frozen"])
@pytest.mark.parametrize("counts", [(8, 8, 0), (8, 70, 70), (64, 64, 65), (65, 65, 65), (900, 70, 80)])
def test_the_blocks_stored_for_training_are_those_of_the_regime_that_then_trains(counts, regime):
    """`trained_blocks` (before embed, from the split's counts) and `choose_regime` (after it, from the training
    rows) agree on the regime, so each regime trains its own number of blocks: the few-shot one's where set."""
    from core.model.fitting import choose_regime, trained_blocks

    labels = ["a", "b", "c"]
    meta = {"labels": labels, "split_class_counts": {f"train/{k}": n for k, n in zip(labels, counts) if n}
            | {f"val/{k}": 500 for k in labels}}  # other splits do not count
    rows = _Rows(np.repeat(np.arange(3), counts))
    for fewshot_blocks in (None, 1, 3):
        cfg = TrainConfig(regime=regime, unfreeze_top=4, fewshot_unfreeze_top=fewshot_blocks)
        blocks = trained_blocks(cfg, meta)
        chosen, _ = choose_regime(cfg, rows, labels, blocks)
        expected = fewshot_blocks if chosen == "fewshot" and fewshot_blocks is not None else 4
        assert blocks == expected
        assert chosen == regime if regime != "auto" else chosen == ("fewshot" if min(counts) < 65 else "finetune")


def test_augmented_copies_do_not_count_as_labelled_rows_and_named_regimes_are_obeyed():
    from core.model.fitting import choose_regime

    labels = np.repeat(np.arange(2), 40)
    augmented = np.arange(80) % 40 >= 10  # 10 original rows of each class, 30 copies
    assert choose_regime(TrainConfig(), _Rows(labels, augmented), ["a", "b"], 2)[0] == "fewshot"
    for regime in ("fewshot", "finetune", "frozen"):
        assert choose_regime(TrainConfig(regime=regime), _Rows(labels), ["a", "b"], 2) == (regime, f"train.regime={regime}")
    chosen, reason = choose_regime(TrainConfig(regime="fewshot"), _Rows(labels), ["a", "b"], 0)
    assert chosen == "frozen" and "no block to tune" in reason


def test_a_few_shot_run_serves_the_same_answer_on_every_path_and_says_why_it_was_chosen(prefect_api, tmp_path):
    """A real run at 12 rows per class (the real backbone, the real flow): `train.regime=auto` picks the few-shot
    regime and the log, summary.json and the card say so; the tuned model is saved in the usual layout and
    evaluate, the gate, `flows.predict` and the SavedModel agree on it; the tuning changed the top blocks and
    nothing below them; an unchanged re-run is cached."""
    from core.model.backbone import Backbone, find_backbone, load_backbone
    from core.model.graph import transformer_blocks
    from flows.retrain import retrain
    from core.model.classifier import load_classifier_file
    from tests.conftest import assert_four_paths_agree, first_per_label, write_csv

    data = write_csv(tmp_path / "few.csv", first_per_label(24))
    overrides = {"augment.n_aug": 0, "train.pair_iterations": 2, "data.min_per_class": 3, "evaluate.min_test_per_class": 0}
    workdir = tmp_path / "work"
    summary = json.loads(Path(retrain(data=str(data), workdir=str(workdir), overrides=overrides)).read_text())
    training = summary["training"]
    assert training["regime"] == "fewshot" and "fewer than train.fewshot_below=65" in training["regime_reason"]
    assert training["budget"]["pairs"] > 0 and "few-shot" in training["selection"]
    version = Path(summary["model"]["path"])
    card = json.loads((version / "model.json").read_text())
    assert card["regime"] == "fewshot" and card["unfreeze_top"] == 2
    tuned = find_backbone(load_classifier_file(version / "model.keras"))
    original = load_backbone(Backbone.resolve(None).path)
    changed = [not all(np.array_equal(a, b) for a, b in zip(t.get_weights(), o.get_weights()))
               for t, o in zip(transformer_blocks(tuned), transformer_blocks(original))]
    assert changed == [False] * 4 + [True] * 2
    assert_four_paths_agree(workdir, version, tmp_path)
    again = json.loads(Path(retrain(data=str(data), workdir=str(workdir), overrides=overrides)).read_text())
    assert again["stages"]["finetune"]["state"] == "Cached"
    assert again["training"]["regime"] == "fewshot"


def test_the_frozen_regime_trains_the_head_alone_on_features_stored_for_two_blocks(prefect_api, tmp_path):
    """`train.regime=frozen` with the default `train.unfreeze_top=2` (features stored after block 4): the saved
    model's blocks are the pre-trained ones, the card says no block trained, and the four paths agree."""
    from core.model.backbone import Backbone, find_backbone, load_backbone
    from core.model.graph import transformer_blocks
    from flows.retrain import retrain
    from core.model.classifier import load_classifier_file
    from tests.conftest import assert_four_paths_agree, first_per_label, write_csv

    data = write_csv(tmp_path / "few.csv", first_per_label(24))
    workdir = tmp_path / "work"
    summary = json.loads(Path(retrain(data=str(data), workdir=str(workdir), overrides={
        "augment.n_aug": 0, "train.regime": "frozen", "data.min_per_class": 3,
        "evaluate.min_test_per_class": 0})).read_text())
    assert summary["training"]["regime"] == "frozen" and summary["embed"]["unfreeze_top"] == 2
    version = Path(summary["model"]["path"])
    assert json.loads((version / "model.json").read_text())["unfreeze_top"] == 0
    saved = find_backbone(load_classifier_file(version / "model.keras"))
    original = load_backbone(Backbone.resolve(None).path)
    assert all(np.array_equal(a, b) for s, o in zip(transformer_blocks(saved), transformer_blocks(original))
               for a, b in zip(s.get_weights(), o.get_weights()))
    assert_four_paths_agree(workdir, version, tmp_path)


def test_label_template_rows_join_the_training_rows_with_the_frozen_bottoms_features(backbone, tmp_path):
    """`train.label_templates=n`: n rows per class of "This sentence is {label}." (SetFit's templates), their
    stored-feature layout the training rows' own (embedding, frozen-bottom output per token), marked augmented so
    the regime rule and the estimate's folds do not count them as labelled rows."""
    from flows import dag
    from schemas.config import RetrainConfig
    from core.model.classifier import SplitFeatures
    from core.model.fitting import choose_regime, with_label_templates
    from tests.conftest import first_per_label, write_csv

    data = write_csv(tmp_path / "few.csv", first_per_label(8))
    cfg = RetrainConfig.from_parameters(data=str(data), workdir=tmp_path / "work", overrides={
        "augment.n_aug": 0, "data.min_per_class": 3})
    features = dag.run(dag.PlainSteps(cfg), cfg, until="embed", backbone=backbone)["embed"]
    labels = list(features.meta["labels"])
    train = SplitFeatures(features, cfg.workdir, "train")
    added = with_label_templates(train, labels, 2, features, backbone, cfg.workdir)
    n = len(train.labels)
    assert len(added.labels) == n + 2 * len(labels) and list(added.labels[n:]) == [0, 0, 1, 1, 2, 2]
    assert added.is_augmented[n:].all() and not added.is_augmented[:n].any()
    assert all(h.shape[1] == train.hidden[0].shape[1] and h.dtype == np.float16 for h in added.hidden[n:])
    np.testing.assert_allclose(np.linalg.norm(added.embeddings[n:], axis=1), 1, atol=1e-3)
    assert added.row_ids[n] == f"template:{labels[0]}:0"
    assert choose_regime(cfg.train, added, labels, 2) == choose_regime(cfg.train, train, labels, 2)
