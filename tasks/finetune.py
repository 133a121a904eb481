"""Step 5b, finetune: train the classifier on the frozen backbone's stored outputs, in two phases.

Phase 1 trains the head (dropout, optional hidden layer, softmax with L1/L2) on the pooled sentence
embeddings: an epoch costs a fraction of a second. With `train.unfreeze_top = n > 0`, phase 2 then trains
the top n blocks together with the head, at a lower learning rate, from the stored output of the frozen
bottom blocks, so the frozen part never runs again. Starting phase 2 from a trained head is what the
transfer-learning literature recommends: a random head would send large, destructive gradients into the
pre-trained blocks. Each phase stops early on the validation loss and restores its best weights; class
weights (on by default) keep a minority class from being ignored. The saved model joins backbone and head
again: token ids in, probabilities out, loadable in safe mode.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from tasks.backbone import Backbone, find_backbone, fresh_backbone, load_backbone
from tasks.caching import step_task
from tasks.config import TrainConfig
from tasks.hardware import dtype_policy, optimizer, resolve_mixed_precision, strategy, visible_gpus
from tasks.io import ArtifactRef, CorruptArtifact, artifact_dir, read_parquet, staging, store_dir, write_json_atomic

log = logging.getLogger(__name__)
MODEL_FILE = "model.keras"
CARD_FILE = "model.json"
N_BLOCKS = 6


class SplitFeatures:
    """The stored features of one split: embeddings, label ids and (when blocks are unfrozen) hidden states."""

    def __init__(self, features: ArtifactRef, workdir: Path, split: str):
        table = read_parquet(features, workdir).to_pandas()
        rows = table[table["split"].astype(object) == split]
        self.row_ids = rows["row_id"].to_numpy(dtype=object)
        self.embeddings = (np.stack(rows["embedding"].to_numpy()).astype(np.float32) if len(rows)
                           else np.zeros((0, 384), np.float32))
        self.labels = rows["label_id"].to_numpy(dtype=np.int32)
        self.hidden = None
        if features.meta["cut"] < N_BLOCKS:
            self.hidden = [np.frombuffer(blob, dtype=np.float16).reshape(n, -1)
                           for blob, n in zip(rows["hidden"], rows["n_tokens"])]


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Balanced class weights (n / (k * count)), as scikit-learn computes them."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    out = {i: 1.0 for i in range(n_classes)}
    out.update({int(c): float(w) for c, w in zip(present, weights)})
    return out


def finetune(features: ArtifactRef, cfg: TrainConfig, seed: int, backbone: Backbone, workdir: Path) -> ArtifactRef:
    """Train head (and top blocks), then save the whole classifier (`model.keras`) and its card (`model.json`).

    Returns the reference of the model folder; `meta` has the best epoch, validation loss and curves.
    """
    import keras

    from tasks.model import build_classifier, save_reproducibly

    labels = list(features.meta["labels"])
    cut = int(features.meta["cut"])
    train, val = SplitFeatures(features, workdir, "train"), SplitFeatures(features, workdir, "val")
    weights = class_weights(train.labels, len(labels)) if cfg.class_weights else {i: 1.0 for i in range(len(labels))}
    keras.utils.set_random_seed(seed)
    gpus = visible_gpus()
    mixed = resolve_mixed_precision(cfg.mixed_precision, gpus)
    with strategy(gpus):
        curves, trained_backbone, head = _train(train, val, weights, cfg, seed, backbone, cut, len(labels), mixed)

    last = curves["top" if cut < N_BLOCKS else "head"]
    best = int(np.argmin(last["val_loss"]))
    history = {phase: {k: [round(float(v), 5) for v in vals] for k, vals in curve.items()}
               for phase, curve in curves.items()}
    summary = {"best_epoch": best + 1, "epochs_run": len(last["loss"]), "best_val_loss": round(float(last["val_loss"][best]), 5),
               "phases": {phase: len(curve["loss"]) for phase, curve in curves.items()}}
    card = {
        "labels": labels,
        "backbone_sha256": backbone.sha256,
        "unfreeze_top": N_BLOCKS - cut,
        "tokenizer": {"strip_accents": True, "lowercase": True, "sequence_length": features.meta["sequence_length"]},
        "train": cfg.model_dump(mode="json"),
        "hardware": {"gpus": gpus, "mixed_precision": mixed},
        "seed": seed,
        "history": history,
        "features_sha256": features.sha256,
        **summary,
    }
    classifier = build_classifier(trained_backbone, head)
    with staging(artifact_dir(workdir, "finetune"), is_dir=True) as folder:
        save_reproducibly(classifier, folder / MODEL_FILE)
        write_json_atomic(folder / CARD_FILE, card)
        ref = store_dir(workdir, "finetune", folder, rows=len(train.labels),
                        meta={"labels": labels, "cut": cut, "history": history, **summary,
                              "rows_in": int(len(train.labels) + len(val.labels))})
    log.info("finetune: best epoch %d of %d, val_loss %.4f", best + 1, len(last["loss"]), last["val_loss"][best])
    return ref


def _train(train: SplitFeatures, val: SplitFeatures, weights: dict[int, float], cfg: TrainConfig, seed: int,
           backbone: Backbone, cut: int, n_labels: int, mixed: bool):
    """Phase 1 (the head, in float32: it is tiny) and phase 2 (the top blocks, float16 compute when `mixed`).

    Returns the training curves, the backbone that holds the trained blocks, and the trained head.
    """
    import keras

    from tasks.model import EpochLog, HiddenStateBatches, build_head, build_top

    head = build_head(n_labels, cfg, train.embeddings.shape[1])
    # Train through a wrapper that shares the head's layers: the saved classifier then carries no optimizer.
    head_trainer = keras.Model(head.inputs, head.outputs, name="head_trainer")
    head_trainer.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                         loss=keras.losses.SparseCategoricalCrossentropy(),
                         metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    curves = {"head": head_trainer.fit(
        train.embeddings, train.labels, validation_data=(val.embeddings, val.labels), epochs=cfg.max_epochs,
        batch_size=cfg.batch_size, class_weight=weights, verbose=0, shuffle=True,
        callbacks=[_early_stopping(cfg.patience), EpochLog(cfg.max_epochs, "finetune/head")],
    ).history}
    if cut == N_BLOCKS:
        return curves, load_backbone(backbone.path), head

    with dtype_policy(mixed):  # only the backbone's blocks: pooling and the softmax stay float32
        trained_backbone = fresh_backbone(backbone.path)
    top = build_top(trained_backbone, head, cut)
    top.compile(optimizer=optimizer(cfg.finetune_learning_rate, mixed),
                loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    sample_weight = np.array([weights[int(y)] for y in train.labels], dtype=np.float32)
    curves["top"] = top.fit(
        HiddenStateBatches(train.hidden, train.labels, sample_weight, cfg.batch_size, seed, shuffle=True),
        validation_data=HiddenStateBatches(val.hidden, val.labels, np.ones(len(val.labels), np.float32),
                                           cfg.batch_size, seed, shuffle=False),
        epochs=cfg.max_epochs, verbose=0,
        callbacks=[_early_stopping(cfg.finetune_patience), EpochLog(cfg.max_epochs, f"finetune/top{N_BLOCKS - cut}")],
    ).history
    return curves, trained_backbone, head


def _early_stopping(patience: int):
    import keras

    return keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)


def load_classifier(model: ArtifactRef, workdir: Path):
    """The saved classifier of a finetune artifact, after checking its hash."""
    if not model.is_intact(workdir):
        raise CorruptArtifact(f"model {model.resolve(workdir)} is missing or altered")
    return load_classifier_file(model.resolve(workdir) / MODEL_FILE)


def load_classifier_file(path: Path):
    """A saved classifier, loaded with Keras safe mode on (no arbitrary code from the file)."""
    import keras

    import tasks.layers  # noqa: F401  (registers the custom layers before loading)

    return keras.saving.load_model(path, safe_mode=True)


def predict_features(classifier, features: SplitFeatures, cut: int) -> np.ndarray:
    """Class probabilities of the saved classifier for stored features: its top blocks and head only."""
    from tasks.model import HiddenStateBatches, build_top

    head = classifier.get_layer("head")
    if cut >= N_BLOCKS:
        return head.predict(features.embeddings, batch_size=1024, verbose=0).astype(np.float64)
    top = build_top(find_backbone(classifier), head, cut)
    n = len(features.labels)
    batches = HiddenStateBatches(features.hidden, features.labels, np.ones(n, np.float32), 64, 0, shuffle=False)
    proba = np.zeros((n, head.output_shape[-1]), dtype=np.float64)
    for index in range(len(batches)):
        inputs, _, _ = batches[index]
        proba[batches.batches[index]] = top.predict_on_batch(inputs)
    return proba


def read_card(model: ArtifactRef, workdir: Path) -> dict:
    """The model's card: labels, tokenizer settings, training parameters and curves."""
    return json.loads((model.resolve(workdir) / CARD_FILE).read_text())


finetune_task = step_task(finetune)
