"""The training recipe, in one place, on the frozen backbone's stored outputs (the finetune step's machinery).

What trains: with `train.unfreeze_top = 0`, the head alone (dropout, optional hidden layer, softmax) on
the stored pooled sentence embeddings; with n > 0, the top n blocks *and a fresh head together*, from the
stored input of the first trainable block, so the frozen part never runs again. The saved model joins
backbone and head again: token ids in, probabilities out, loadable in safe mode.

The recipe, and the trap each piece avoids (measured in benchmarks/quality.py, selected on validation data):
- Head and blocks train together from the start. The earlier recipe first trained the head to convergence,
  then the blocks: an over-confident head leaves the blocks little gradient to learn from (issue 14's
  measurements: 0.788 -> 0.805 test macro-F1 at seed 1 by training jointly).
- AdamW, weight decay decoupled from the gradient (Loshchilov & Hutter 2019, "Decoupled Weight Decay
  Regularization"), not applied to biases and LayerNorm, as BERT's recipe does (Devlin et al. 2019).
- A learning rate per part: the head at `learning_rate` (it starts from random; "auto" is 1e-3 beside
  trainable blocks, 3e-2 alone, where it must move far from random in few steps), the blocks at
  `finetune_learning_rate`, each lower block by a further factor `layer_decay` (layer-wise decay, Howard &
  Ruder 2018 "ULMFiT"; Clark et al. 2020 "ELECTRA").
- Linear warm-up over `warmup` of the steps, then cosine decay to 0 (keras CosineDecay): a random head's
  first gradients are large, and a constant rate keeps training noisy to the end.
- Gradient clipping at global norm `clip_norm`.
- Batches re-drawn every epoch: rows are shuffled, cut into chunks of `chunk_batches` batches, and sorted
  by length only inside a chunk, so padding stays small but a batch's company changes every epoch.
- A budget in optimizer steps, not epochs: small data needs more epochs for the same number of updates,
  `epochs = clamp(ceil(min_steps / steps_per_epoch), min_epochs, max_epochs)`. The head alone costs a
  fraction of a second per epoch, so it gets `max_epochs`.
- The best epoch by *validation macro-F1* (what the gate and the users judge), its weights restored;
  training stops after `patience` epochs without a gain. A validation split with fewer than
  `min_val_per_class` rows of some class cannot select (one sentence moves macro-F1 by points): then the
  whole budget is trained and the last epoch kept, and the card and run report say so.
- Seed ensembles (`train.ensemble = k`, default 1): k members trained one after another by this recipe on the
  same stored features (the frozen part still computed once), member i with seed `seed + i`, each keeping its
  own best epoch; one saved model runs the shared frozen bottom once and averages the k members'
  probabilities (`core.model.graph.build_ensemble`). Measured in benchmarks/ensemble.py.

Regimes (`train.regime`): the recipe above is "finetune". With a few labelled rows per class it is the wrong
method (20 optimizer steps at 8 rows per class, a validation split of a handful of sentences to select on),
so "fewshot" does what SetFit does (Tunstall et al. 2022, arXiv:2209.11055): contrastive tuning of the top
blocks on same/different-label pairs of the training rows (`core.model.contrastive`: cosine-similarity loss
on the pooled, L2-normalised embeddings, from the stored frozen-bottom output), then a head fitted on the tuned
embeddings (scikit-learn logistic regression, copied into the Keras head's softmax layer, or the softmax head
trained as above); nothing is selected on validation, the validation figures are reported. "frozen" trains
the head alone on the frozen embeddings. "auto" picks "fewshot" while the smallest class has fewer than
`train.fewshot_below` training rows, else "finetune"; the card, the log and summary.json say which and why.
Every regime saves the same model layout (`build_classifier` / `build_ensemble`), so serving, evaluation, the
gate and prediction do not know which trained it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from core.model.backbone import Backbone, fresh_backbone, load_backbone
from core.model.classifier import SplitFeatures
from core.model.hardware import dtype_policy
from core.storage.artifacts import ArtifactRef
from schemas.config import TrainConfig

log = logging.getLogger(__name__)


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Balanced class weights (n / (k * count)), as scikit-learn computes them."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    out = {i: 1.0 for i in range(n_classes)}
    out.update({int(c): float(w) for c, w in zip(present, weights)})
    return out


def resolve_regime(cfg: TrainConfig, train: SplitFeatures, labels: list[str], features: ArtifactRef,
                   backbone: Backbone) -> tuple[str, str, TrainConfig, int]:
    """The regime that trains on `train` (`choose_regime`), why, the training settings it runs with and the
    number of frozen bottom blocks: "frozen" trains the head alone on the stored pooled embeddings whatever
    blocks the features allow (`unfreeze_top` 0, every block frozen)."""
    frozen_blocks = int(features.meta["frozen_blocks"])
    regime, reason = choose_regime(cfg, train, labels, int(features.meta["unfreeze_top"]))
    if regime == "frozen":
        cfg, frozen_blocks = cfg.model_copy(update={"unfreeze_top": 0}), backbone.architecture.blocks
    return regime, reason, cfg, frozen_blocks


LABEL_TEMPLATE = "This sentence is {}."


def training_rows(train, regime: str, labels: list[str], cfg: TrainConfig, features: ArtifactRef,
                  backbone: Backbone, workdir: Path):
    """The rows `regime` trains on: `train` plus `cfg.label_templates` template rows per class in the few-shot
    regime (`with_label_templates`), `train` itself otherwise; the finetune step and every fold of the estimate
    step use this one rule."""
    if regime == "fewshot" and cfg.label_templates:
        return with_label_templates(train, labels, cfg.label_templates, features, backbone, workdir)
    return train


def with_label_templates(train, labels: list[str], copies: int, features: ArtifactRef, backbone: Backbone,
                         workdir: Path):
    """`train` plus `copies` rows per class of "This sentence is {label}." (SetFit's label templates:
    `setfit.data.add_templated_examples`, template "This sentence is {}", Tunstall et al. 2022), as a
    `SplitFeatures`-like object; their frozen-bottom features come through the feature cache (tokenized as the
    stored rows were, `features.meta["sequence_length"]`). The added rows are marked `is_augmented` (they are
    not labelled rows: the regime rule and the estimate's folds do not count them); identical copies of a
    sentence are identical rows, so `copies` weighs the template against the user's rows."""
    from core.model.backbone import encode_for_model
    from core.model.features import cached_features

    texts = [LABEL_TEMPLATE.format(label) for label in labels]
    sequences = encode_for_model(backbone.path, texts, int(features.meta["sequence_length"]))
    embeddings, hidden, _ = cached_features(backbone, sequences, int(features.meta["frozen_blocks"]), workdir)
    order = np.repeat(np.arange(len(labels)), copies)
    return _Added(train, np.array([f"template:{labels[i]}:{n % copies}" for n, i in enumerate(order)], dtype=object),
                  order.astype(np.int32), np.asarray(embeddings, np.float32)[order],
                  [hidden[i] for i in order] if hidden is not None and train.hidden is not None else None)


class _Added:
    """Rows appended to a `SplitFeatures` (marked augmented)."""

    def __init__(self, base, row_ids, labels, embeddings, hidden):
        self.row_ids = np.concatenate([base.row_ids, row_ids])
        self.labels = np.concatenate([base.labels, labels]).astype(np.int32)
        self.embeddings = np.concatenate([base.embeddings, embeddings]).astype(np.float32)
        self.is_augmented = np.concatenate([base.is_augmented, np.ones(len(labels), bool)])
        self.hidden = base.hidden + list(hidden) if hidden is not None else base.hidden


def fit(regime: str, train, val, weights: dict[int, float], cfg: TrainConfig, seed: int, backbone: Backbone,
        frozen_blocks: int, n_labels: int, mixed: bool, select: bool, val_probabilities: bool = False):
    """Train one model of `regime` ("fewshot", "finetune" or "frozen", as `resolve_regime` gives it) on `train`,
    scoring `val` (a `SplitFeatures`, or any object with its attributes); the one training path of the
    finetune step and of the cross-validated estimate (`tasks.estimate`). Returns (per-epoch curve, backbone
    with the trained blocks, head, budget, `val` probabilities (n_val, n_labels) or None). `select`: keep the
    best epoch by validation macro-F1 (joint fine-tuning only); few-shot never selects and always returns its
    validation probabilities."""
    if regime == "fewshot":
        return _train_fewshot(train, val, weights, cfg, seed, backbone, frozen_blocks, n_labels, mixed)
    return _train(train, val, weights, cfg, seed, backbone, frozen_blocks, n_labels, mixed, select=select,
                  val_probabilities=val_probabilities)


def ensemble_figures(proba: np.ndarray, y_val: np.ndarray, n_labels: int) -> dict[str, float]:
    """Validation loss, accuracy and macro-F1 of averaged probabilities, computed as for one model each epoch
    (`core.model.training.ValidationScores`)."""
    from core.model.training import ValidationScores

    logs: dict[str, float] = {}
    ValidationScores(lambda: proba, y_val).on_epoch_end(0, logs)
    return {key: round(float(logs[key]), 5) for key in ("val_loss", "val_accuracy", "val_macro_f1")}


def selection_rule(y_val: np.ndarray, labels: list[str], min_per_class: int) -> str | None:
    """None when the validation split can select the best epoch; else why not (and so: the fixed budget)."""
    counts = np.bincount(y_val, minlength=len(labels))
    short = [f"{label} ({count})" for label, count in zip(labels, counts) if count < min_per_class]
    if not short:
        return None
    return (f"fixed step budget, last epoch kept: the validation split has fewer than {min_per_class} rows of "
            f"{', '.join(short)}, too few to select an epoch on")


def epochs_for(n_rows: int, cfg: TrainConfig, trains_blocks: bool) -> tuple[int, int]:
    """(epochs, steps per epoch): enough epochs for `cfg.min_steps` optimizer steps, within
    [`cfg.min_epochs`, `cfg.max_epochs`]; the head alone (cheap) trains `cfg.max_epochs`."""
    steps_per_epoch = max(1, -(-n_rows // cfg.batch_size))
    if not trains_blocks:
        return cfg.max_epochs, steps_per_epoch
    wanted = -(-cfg.min_steps // steps_per_epoch)
    return int(min(max(wanted, cfg.min_epochs), cfg.max_epochs)), steps_per_epoch


def _train(train: SplitFeatures, val: SplitFeatures, weights: dict[int, float], cfg: TrainConfig, seed: int,
           backbone: Backbone, frozen_blocks: int, n_labels: int, mixed: bool, select: bool,
           val_probabilities: bool = False):
    """Train the head (and the blocks above the `frozen_blocks` bottom ones) jointly; returns the per-epoch
    curve, the backbone holding the trained blocks, the trained head, the step budget used and (if
    `val_probabilities`) the kept weights' validation probabilities (else None)."""
    import keras

    from core.model.inference import forward, pad_hidden, predict_in_order
    from core.model.graph import build_head, build_top
    from core.model.training import (EpochLog, PartwiseAdamW, TrainingBatches, ValidationScores,
                                     learning_rate_schedule, seed_dropout)

    unfreeze_top = backbone.architecture.blocks - frozen_blocks
    trains_blocks = unfreeze_top > 0
    epochs, steps_per_epoch = epochs_for(len(train.labels), cfg, trains_blocks)
    plan = {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "steps": epochs * steps_per_epoch}
    head = build_head(n_labels, cfg, train.embeddings.shape[1], seed=seed)
    if trains_blocks:
        with dtype_policy(mixed):  # only the backbone's blocks: pooling and the softmax stay float32
            trained_backbone = fresh_backbone(backbone.path)
        trainer = build_top(trained_backbone, head, frozen_blocks)
        inputs, val_lengths, run = train.hidden, [len(h) for h in val.hidden or []], forward(trainer)
        predict_val = lambda: predict_in_order(  # noqa: E731
            lambda rows: run(pad_hidden([val.hidden[i] for i in rows])), val_lengths)
    else:
        trained_backbone = load_backbone(backbone.path)
        # Train through a wrapper that shares the head's layers: the saved classifier then carries no optimizer.
        trainer = keras.Model(head.inputs, head.outputs, name="head_trainer")
        inputs, run = train.embeddings, forward(trainer)
        predict_val = lambda: predict_in_order(  # noqa: E731
            lambda rows: run(val.embeddings[rows]), np.zeros(len(val.labels)), 1024)
    seed_dropout(trainer, seed)
    optimizer = PartwiseAdamW(
        learning_rate_schedule(cfg.head_learning_rate(), plan["steps"], cfg.warmup),
        multipliers=block_multipliers(trained_backbone, frozen_blocks, cfg) if trains_blocks else {},
        weight_decay=cfg.weight_decay, global_clipnorm=cfg.clip_norm or None)
    trainer.compile(optimizer=keras.optimizers.LossScaleOptimizer(optimizer) if mixed else optimizer,
                    loss=keras.losses.SparseCategoricalCrossentropy())
    sample_weight = np.array([weights[int(y)] for y in train.labels], dtype=np.float32)
    callbacks = [ValidationScores(predict_val, val.labels)]
    if select:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_macro_f1", mode="max", patience=cfg.patience,
                                                       restore_best_weights=True))
    callbacks.append(EpochLog(epochs, f"finetune/top{unfreeze_top}" if trains_blocks else "finetune/head"))
    batches = TrainingBatches(inputs, train.labels, sample_weight, cfg.batch_size, seed, cfg.chunk_batches)
    # shuffle=False: the batches already shuffle from `seed`; Keras' own shuffle of a PyDataset's batch order
    # draws from Python's global `random`, which the Prefect engine's threads draw from too, so the order
    # (and the model) would depend on what else ran in the process.
    curve = trainer.fit(batches, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks).history
    if val_probabilities and not len(val.labels):  # no hold-out (estimate mode): nothing to score
        return curve, trained_backbone, head, plan, np.zeros((0, n_labels), np.float32)
    return curve, trained_backbone, head, plan, (predict_val() if val_probabilities else None)


def choose_regime(cfg: TrainConfig, train: SplitFeatures, labels: list[str], unfreeze_top: int) -> tuple[str, str]:
    """The regime that trains (`train.regime`, "auto" resolved) and why, in words for the log and the card.

    "auto": "fewshot" while the smallest class has fewer than `cfg.fewshot_below` training rows (the user's own,
    augmented copies not counted), else "finetune". "fewshot" needs trainable blocks: with none
    (`unfreeze_top`, the stored features' cut, is 0: no token-level features) it falls back to "frozen", and says
    so."""
    original = ~train.is_augmented
    counts = np.bincount(train.labels[original], minlength=len(labels))
    regime, reason = regime_rule(cfg, dict(zip(labels, counts.tolist())))
    if regime == "fewshot" and unfreeze_top == 0:
        blocks = "train.unfreeze_top" if cfg.fewshot_unfreeze_top is None else "train.fewshot_unfreeze_top"
        regime, reason = "frozen", (f"{reason}; but {blocks}=0 leaves no block to tune, so the head alone trains on "
                                    "the frozen embeddings")
    return regime, reason


def regime_rule(cfg: TrainConfig, class_counts: dict[str, int]) -> tuple[str, str]:
    """`train.regime` with "auto" resolved from the user's training rows per class (label -> count, augmented
    copies not counted), and why; `choose_regime` without the fallback for a cut that leaves no block."""
    if cfg.regime != "auto":
        return cfg.regime, f"train.regime={cfg.regime}"
    which, smallest = min(class_counts.items(), key=lambda item: item[1]) if class_counts else ("?", 0)
    if smallest < cfg.fewshot_below:
        return "fewshot", (f"train.regime=auto: the smallest class ({which!r}) has {smallest} training rows, fewer "
                           f"than train.fewshot_below={cfg.fewshot_below}: contrastive body tuning, then a head")
    return "finetune", (f"train.regime=auto: every class has at least train.fewshot_below={cfg.fewshot_below} "
                        f"training rows (smallest: {which!r}, {smallest}): head and top blocks trained jointly")


def trained_blocks(cfg: TrainConfig, split_meta: dict) -> int:
    """How many top transformer blocks the coming training trains, from the split step's `meta` (its
    `labels` and `split_class_counts`, "train/<label>" -> rows): `cfg.fewshot_unfreeze_top` where the regime
    rule picks "fewshot" and it is set, else `cfg.unfreeze_top`. The embed step stores the frozen bottom's
    output below exactly these blocks, so each regime trains its own number of them (all-mpnet-base-v2: 4
    jointly, 2 in the few-shot regime, `schemas.config.BODY_TRAIN_DEFAULTS`). Self-training's pseudo-labelled
    rows (`train.unlabelled`) come later and are not counted: should they lift the smallest class past
    `train.fewshot_below`, "finetune" trains the blocks stored for "fewshot"."""
    counts = {label: int(split_meta.get("split_class_counts", {}).get(f"train/{label}", 0))
              for label in split_meta["labels"]}
    regime, _ = regime_rule(cfg, counts)
    if regime == "fewshot" and cfg.fewshot_unfreeze_top is not None:
        return cfg.fewshot_unfreeze_top
    return cfg.unfreeze_top


def _train_fewshot(train: SplitFeatures, val: SplitFeatures, weights: dict[int, float], cfg: TrainConfig,
                   seed: int, backbone: Backbone, frozen_blocks: int, n_labels: int, mixed: bool):
    """The few-shot regime (module docstring, "Regimes"): contrastive tuning of the blocks above the
    `frozen_blocks` bottom ones on pairs of the training rows, then the head on the tuned embeddings.

    Returns what `_train` returns: the per-epoch curve (contrastive `loss`; validation figures of the model a
    head fitted at that epoch's end would give), the backbone holding the tuned blocks, the head, the budget
    (pairs, epochs, steps) and the validation probabilities of the final model."""
    import keras

    from core.model.contrastive import PairBatches, build_siamese, contrastive_pairs
    from core.model.graph import build_top_encoder
    from core.model.inference import forward, pad_hidden, predict_in_order
    from core.model.training import EpochLog, PartwiseAdamW, learning_rate_schedule, seed_dropout

    with dtype_policy(mixed):  # only the backbone's blocks: pooling, the cosine and the head stay float32
        trained_backbone = fresh_backbone(backbone.path)
    encoder = build_top_encoder(trained_backbone, frozen_blocks)
    first, second, target = contrastive_pairs(train.labels, cfg.pair_iterations, seed)
    pairs = PairBatches(train.hidden, first, second, target, cfg.pair_batch_size, seed)
    plan = {"pairs": int(len(target)), "epochs": cfg.contrastive_epochs, "steps_per_epoch": len(pairs),
            "steps": cfg.contrastive_epochs * len(pairs), "head": cfg.fewshot_head}
    siamese = build_siamese(encoder)
    seed_dropout(siamese, seed)
    optimizer = PartwiseAdamW(learning_rate_schedule(cfg.contrastive_learning_rate, max(plan["steps"], 1), cfg.warmup),
                              weight_decay=cfg.weight_decay, global_clipnorm=cfg.clip_norm or None)
    siamese.compile(optimizer=keras.optimizers.LossScaleOptimizer(optimizer) if mixed else optimizer,
                    loss=keras.losses.MeanSquaredError())
    run = forward(encoder)

    def embed(split: SplitFeatures) -> np.ndarray:
        if not len(split.labels):
            return np.zeros((0, trained_backbone.hidden_dim), np.float32)
        return predict_in_order(lambda rows: run(pad_hidden([split.hidden[i] for i in rows])),
                                [len(h) for h in split.hidden]).astype(np.float32)

    class HeadOnTuned(keras.callbacks.Callback):
        """After each contrastive epoch: fit the head on the tuned training embeddings, score validation."""

        def on_epoch_end(self, epoch, logs=None):
            self.head, proba = _fewshot_head(embed(train), train.labels, embed(val), val, weights, cfg, seed,
                                             backbone, n_labels, mixed)
            if logs is not None and len(val.labels):
                logs.update(ensemble_figures(proba, val.labels, n_labels))
            self.val_proba = proba

    head_fit = HeadOnTuned()
    blocks = backbone.architecture.blocks - frozen_blocks
    callbacks = [head_fit, EpochLog(cfg.contrastive_epochs, f"finetune/fewshot top{blocks}")]
    if len(target):
        # repeat(): each epoch re-runs the generator (a new pair order), steps_per_epoch tells Keras where it ends
        curve = siamese.fit(pairs.dataset().repeat(), steps_per_epoch=len(pairs), epochs=cfg.contrastive_epochs,
                            shuffle=False, verbose=0, callbacks=callbacks).history
    else:  # one row per class and one class cannot both hold: no pair at all means nothing to tune
        head_fit.on_epoch_end(0, logs := {})
        curve = {"loss": [float("nan")], **{k: [v] for k, v in logs.items()}}
    for key in ("val_loss", "val_accuracy", "val_macro_f1"):
        curve.setdefault(key, [float("nan")] * len(curve["loss"]))
    return curve, trained_backbone, head_fit.head, plan, head_fit.val_proba


def _fewshot_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, val: SplitFeatures,
                  weights: dict[int, float], cfg: TrainConfig, seed: int, backbone: Backbone, n_labels: int,
                  mixed: bool):
    """The few-shot regime's head on tuned embeddings, as a Keras head model (`build_head`'s layout: embedding
    -> probabilities), and its validation probabilities. "logistic": scikit-learn's LogisticRegression (lbfgs,
    C=`cfg.fewshot_c`, SetFit's default head) copied into the softmax layer, so the saved model needs no
    scikit-learn; "softmax": the head trained by the recipe (`_train`, the head alone) on the tuned embeddings."""
    from core.model.contrastive import logistic_head_weights
    from core.model.graph import build_head

    if cfg.fewshot_head == "softmax":
        tuned_train, tuned_val = _Tuned(x_train, y_train), _Tuned(x_val, val.labels)
        head_cfg = cfg.model_copy(update={"unfreeze_top": 0})
        _, _, head, _, proba = _train(tuned_train, tuned_val, weights, head_cfg, seed, backbone,
                                      backbone.architecture.blocks, n_labels, mixed, select=False,
                                      val_probabilities=True)
        return head, proba
    from sklearn.linear_model import LogisticRegression

    sample_weight = np.array([weights[int(y)] for y in y_train], dtype=np.float64)
    model = LogisticRegression(C=cfg.fewshot_c, max_iter=5000).fit(x_train, y_train, sample_weight=sample_weight)
    head = build_head(n_labels, cfg.model_copy(update={"hidden_units": 0}), x_train.shape[1], seed=seed)
    kernel, bias = np.zeros((x_train.shape[1], n_labels), np.float32), np.full(n_labels, -1e4, np.float32)
    fitted_kernel, fitted_bias = logistic_head_weights(model.coef_, model.intercept_, len(model.classes_))
    kernel[:, model.classes_], bias[model.classes_] = fitted_kernel, fitted_bias  # a class with no row: never
    head.get_layer("head_output").set_weights([kernel, bias])
    proba = head.predict(x_val, verbose=0) if len(x_val) else np.zeros((0, n_labels), np.float32)
    return head, proba


class _Tuned:
    """Tuned embeddings dressed as `SplitFeatures` for the head-alone recipe."""

    def __init__(self, embeddings: np.ndarray, labels: np.ndarray):
        self.embeddings, self.labels, self.hidden = embeddings, labels, None
        self.is_augmented = np.zeros(len(labels), bool)


def block_multipliers(backbone, frozen_blocks: int, cfg: TrainConfig) -> dict[str, float]:
    """Learning-rate multiplier (relative to the head's) of each trainable block's variables (the blocks above
    the `frozen_blocks` bottom ones), by layer name: `finetune_learning_rate / learning_rate`, times
    `layer_decay` per block below the top one."""
    from core.model.graph import transformer_blocks

    blocks = transformer_blocks(backbone)
    base = cfg.finetune_learning_rate / cfg.head_learning_rate()
    return {block.name: base * cfg.layer_decay ** (len(blocks) - 1 - index)
            for index, block in enumerate(blocks) if index >= frozen_blocks}
