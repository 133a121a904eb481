"""The training recipe's pieces (tasks/finetune.py): schedule, per-part rates, re-drawn batches, step budget,
selection of the best epoch by validation macro-F1 with its weights restored, and the small-data fallback."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from schemas.config import TrainConfig
from core.model.fitting import epochs_for, selection_rule
from core.model.training import PartwiseAdamW, TrainingBatches, learning_rate_schedule


def test_schedule_warms_up_linearly_then_decays_to_zero():
    schedule = learning_rate_schedule(1e-3, steps=200, warmup=0.1)
    rates = np.array([float(schedule(step)) for step in range(201)])
    assert rates[0] == 0.0 and rates[20] == pytest.approx(1e-3)
    np.testing.assert_allclose(rates[:21], np.linspace(0, 1e-3, 21), rtol=1e-5, atol=1e-12)
    assert (np.diff(rates[20:]) <= 1e-12).all() and rates[200] == pytest.approx(0.0, abs=1e-9)
    assert rates.argmax() == 20


def test_each_part_moves_at_its_own_rate_and_decay_skips_biases():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(keras.layers.Dense(4, name="block")(inputs)))
    optimizer = PartwiseAdamW(1e-2, multipliers={"block": 0.1}, weight_decay=0.0)
    model.compile(optimizer=optimizer, loss="mse")
    before = [w.copy() for w in model.get_weights()]
    model.train_on_batch(np.ones((8, 4), np.float32), np.full((8, 3), 5.0, np.float32))
    moved = [np.abs(a - b).max() for a, b in zip(model.get_weights(), before)]
    block_kernel, head_kernel = moved[0], moved[2]
    assert head_kernel == pytest.approx(1e-2, rel=1e-3)  # Adam's first step: the rate itself
    assert block_kernel == pytest.approx(1e-3, rel=1e-3)

    decaying = keras.Model(inputs, keras.layers.Dense(3, name="d")(inputs))
    decaying.compile(optimizer=PartwiseAdamW(1e-1, weight_decay=0.5), loss="mse")
    kernel, bias = decaying.get_weights()
    decaying.set_weights([kernel, np.ones_like(bias)])
    # Zero input and target: the kernel's gradient is 0, so only the decoupled decay moves it.
    decaying.train_on_batch(np.zeros((2, 4), np.float32), np.ones((2, 3), np.float32))
    new_kernel, _ = decaying.get_weights()
    np.testing.assert_allclose(new_kernel, kernel * (1 - 0.1 * 0.5), rtol=1e-5)


def test_batches_are_redrawn_every_epoch_cover_every_row_and_keep_padding_small():
    rng = np.random.default_rng(0)
    hidden = [np.zeros((int(n), 2), np.float16) for n in rng.integers(3, 60, 300)]
    labels, weights = np.zeros(300, np.int32), np.ones(300, np.float32)
    batches = TrainingBatches(hidden, labels, weights, batch_size=16, seed=1, chunk_batches=4)
    first = [tuple(sorted(b)) for b in batches.batches]
    assert sorted(np.concatenate(batches.batches).tolist()) == list(range(300))
    batches.on_epoch_end()
    second = [tuple(sorted(b)) for b in batches.batches]
    assert sorted(np.concatenate(batches.batches).tolist()) == list(range(300))
    assert len(set(first) & set(second)) < len(first) // 4  # most batches have new company
    lengths = np.array([len(h) for h in hidden])
    padded = sum(batches[i][0]["padding_mask"].size for i in range(len(batches)))
    random_padding = sum(16 * lengths[rng.permutation(300)[i:i + 16]].max() for i in range(0, 300, 16))
    assert padded < 0.75 * random_padding


def test_the_step_budget_gives_small_data_more_epochs():
    cfg = TrainConfig(min_steps=400, min_epochs=4, max_epochs=20, batch_size=32)
    assert epochs_for(3400, cfg, trains_blocks=True) == (4, 107)   # 428 steps
    assert epochs_for(1000, cfg, trains_blocks=True) == (13, 32)   # 416 steps
    assert epochs_for(250, cfg, trains_blocks=True) == (20, 8)     # capped at max_epochs
    assert epochs_for(250, cfg, trains_blocks=False) == (20, 8)    # the head alone: max_epochs, it is cheap


def test_mpnet_gets_its_own_step_budget_unless_the_user_sets_one():
    from schemas.config import RetrainConfig

    minilm, mpnet = RetrainConfig.from_parameters(), RetrainConfig.from_parameters(
        overrides={"model.backbone": "all-mpnet-base-v2"})
    assert (minilm.train.min_steps, minilm.train.min_epochs) == (400, 4)   # MiniLM's recipe unchanged
    assert (mpnet.train.min_steps, mpnet.train.min_epochs) == (200, 2)
    assert epochs_for(3334, mpnet.train, trains_blocks=True) == (2, 105)   # 2 epochs at full size, MiniLM's 4
    assert epochs_for(250, mpnet.train, trains_blocks=True) == (20, 8)     # small data: the same cap as MiniLM
    mine = RetrainConfig.from_parameters(overrides={"model.backbone": "all-mpnet-base-v2", "train.min_steps": 400})
    assert (mine.train.min_steps, mine.train.min_epochs) == (400, 2)       # a value given wins, the other stays
    assert RetrainConfig.model_validate(mpnet.model_dump(mode="json", by_alias=True)) == mpnet  # round trip
    # four blocks trained jointly, two tuned by the few-shot regime; MiniLM: two in both
    assert (mpnet.train.unfreeze_top, mpnet.train.fewshot_unfreeze_top) == (4, 2)
    assert (minilm.train.unfreeze_top, minilm.train.fewshot_unfreeze_top) == (2, None)
    # a user's train.unfreeze_top speaks for both regimes (0: the head alone, few-shot included)
    head_alone = RetrainConfig.from_parameters(overrides={"model.backbone": "all-mpnet-base-v2", "train.unfreeze_top": 0})
    assert (head_alone.train.unfreeze_top, head_alone.train.fewshot_unfreeze_top) == (0, None)
    # every other setting is MiniLM's default
    body = {"min_steps", "min_epochs", "unfreeze_top", "fewshot_unfreeze_top"}
    assert mpnet.train.model_dump(exclude=body) == minilm.train.model_dump(exclude=body)


def test_a_validation_split_too_small_to_select_on_is_named():
    labels = ["negative", "neutral", "positive"]
    assert selection_rule(np.array([0] * 10 + [1] * 12 + [2] * 10), labels, 10) is None
    why = selection_rule(np.array([0] * 3 + [1] * 12 + [2] * 10), labels, 10)
    assert "fixed step budget" in why and "negative (3)" in why and "neutral" not in why


@pytest.fixture(scope="module")
def frozen_features(tmp_path_factory, backbone):
    """The real pipeline's data steps on 240 PhraseBank sentences, frozen backbone."""
    from tasks.augment import augment
    from schemas.config import RetrainConfig
    from tasks.embed import embed
    from tasks.split import split
    from tasks.tokenization import tokenize
    from tasks.validate import validate
    from tests.conftest import first_per_label, write_csv

    workdir = tmp_path_factory.mktemp("recipe")
    data = write_csv(workdir / "d.csv", first_per_label(80))
    cfg = RetrainConfig.from_parameters(data=str(data), workdir=workdir,
                                        overrides={"train.unfreeze_top": 0, "augment.n_aug": 0,
                                                   "data.conflicts": "drop"})
    splits = split(validate(cfg.data, workdir), cfg.split, 0, cfg.data.min_per_class, workdir)
    augmented = augment(splits, cfg.augment, 0, workdir)
    return workdir, embed(tokenize(augmented, cfg.tokenize, backbone, workdir), backbone, 0, workdir)


def _val_macro_f1(model_ref, features, workdir: Path) -> float:
    from sklearn.metrics import f1_score

    from core.model.classifier import SplitFeatures, load_classifier
    from core.model.inference import predict_stored

    val = SplitFeatures(features, workdir, "val")
    proba = predict_stored(load_classifier(model_ref, workdir), val.embeddings, val.hidden, 6)
    return f1_score(val.labels, proba.argmax(axis=1), average="macro", labels=[0, 1, 2], zero_division=0)


def test_the_best_epoch_by_validation_macro_f1_is_the_one_saved(frozen_features, backbone):
    from tasks.finetune import finetune

    workdir, features = frozen_features
    cfg = TrainConfig(unfreeze_top=0, max_epochs=12, patience=12, min_val_per_class=1, learning_rate=3e-3)
    model = finetune(features, cfg, 3, backbone, workdir)
    curve = model.meta["history"]["head"]["val_macro_f1"]
    assert model.meta["epochs_run"] == 12 and model.meta["best_epoch"] == int(np.argmax(curve)) + 1
    assert len(set(curve)) > 1, "the curve must move for the choice to mean anything"
    assert _val_macro_f1(model, features, workdir) == pytest.approx(max(curve), abs=1e-4)  # restored weights


def test_too_few_validation_rows_train_the_whole_budget_and_keep_the_last_epoch(frozen_features, backbone):
    from tasks.finetune import finetune

    workdir, features = frozen_features
    cfg = TrainConfig(unfreeze_top=0, max_epochs=6, patience=1, min_val_per_class=1000, learning_rate=3e-3)
    model = finetune(features, cfg, 3, backbone, workdir)
    assert model.meta["epochs_run"] == 6 and model.meta["best_epoch"] == 6
    assert model.meta["selection"].startswith("fixed step budget")
    curve = model.meta["history"]["head"]["val_macro_f1"]
    assert _val_macro_f1(model, features, workdir) == pytest.approx(curve[-1], abs=1e-4)


def test_the_model_depends_on_the_seed_and_data_only_not_on_other_threads_drawing_random_numbers(frozen_features,
                                                                                                 backbone):
    """The Prefect engine and the Dask client draw from Python's global `random` in their own threads while a
    step trains; Keras draws from it too unless told not to (layer seeds, its shuffle of a PyDataset's batch
    order). A run beside a busy drawing thread must train the same model, byte for byte, as a quiet one."""
    import random
    import threading

    from tasks.finetune import finetune

    workdir, features = frozen_features
    cfg = TrainConfig(unfreeze_top=0, max_epochs=3, min_val_per_class=1)
    quiet = finetune(features, cfg, 5, backbone, workdir)
    stop = threading.Event()

    def draw():
        while not stop.is_set():
            random.random()

    thread = threading.Thread(target=draw, daemon=True)
    thread.start()
    try:
        busy = finetune(features, cfg, 5, backbone, workdir)
    finally:
        stop.set()
        thread.join()
    assert busy.sha256 == quiet.sha256
    assert finetune(features, cfg, 6, backbone, workdir).sha256 != quiet.sha256  # the seed does matter
