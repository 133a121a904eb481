"""The classifier's Keras graph, in the pieces that let the frozen part be computed once.

With the top `n` of the backbone's 6 blocks trainable, the network splits at block `cut = 6 - n`:
- the *bottom* (embeddings and blocks 0..cut-1) is frozen: its token-level output for a sentence never
  changes, so `tasks.embed` computes it once and training reads it from disk;
- the *top* (blocks cut..5, masked mean pooling, L2 normalisation, head) is what trains.
With `n = 0` the bottom is the whole encoder and its stored output is the pooled sentence embedding.
The saved model joins the pieces again (`build_classifier`): token ids in, probabilities out.
The piecewise graph calls the backbone's own layers in the backbone's order, so it computes exactly what
`backbone(...)` computes (a test checks it).
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from pathlib import Path

import keras
import numpy as np

from core.run import faults
from schemas.config import TrainConfig
from core.model.inference import length_batches, pad_batch, pad_hidden, padded_length  # noqa: F401
from core.model.layers import L2Normalize, MaskedMeanPooling, ZerosLike

HIDDEN = 384
N_BLOCKS = 6
log = logging.getLogger(__name__)


def token_inputs() -> dict[str, keras.KerasTensor]:
    """The model's inputs: padded `token_ids` and the `padding_mask` (1 for real tokens)."""
    return {
        "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input(shape=(None,), dtype="int32", name="padding_mask"),
    }


def pooled(backbone, inputs: dict[str, keras.KerasTensor]) -> keras.KerasTensor:
    """Unit-length masked mean of the backbone's last hidden states, as sentence-transformers pools."""
    sequence = backbone({
        "token_ids": inputs["token_ids"],
        "segment_ids": ZerosLike(name="segment_ids")(inputs["token_ids"]),
        "padding_mask": inputs["padding_mask"],
    })["sequence_output"]
    return L2Normalize(name="normalize")(MaskedMeanPooling(name="mean_pool")(sequence, inputs["padding_mask"]))


def transformer_blocks(backbone) -> list:
    """The backbone's transformer blocks, bottom first."""
    return [layer for layer in backbone.layers if layer.name.startswith("transformer_layer_")]


def embedded(backbone, token_ids: keras.KerasTensor) -> keras.KerasTensor:
    """The backbone's embedding layers, in its own order: token ids (batch, length) int32 -> the input of
    block 0 (batch, length, hidden) float. Single-segment input (segment ids all 0)."""
    x = backbone.get_layer("token_embedding")(token_ids)
    positions = backbone.get_layer("position_embedding")(x)
    segments = backbone.get_layer("segment_embedding")(ZerosLike(name="segment_ids")(token_ids))
    x = backbone.get_layer("embeddings_add")((x, positions, segments))
    return backbone.get_layer("embeddings_dropout")(backbone.get_layer("embeddings_layer_norm")(x))


def build_bottom(backbone, cut: int) -> keras.Model:
    """token ids -> {"hidden": output of block cut-1 (token level), "embedding": final pooled embedding}.

    One pass through the frozen backbone yields both what the head trains on first and what the top
    blocks train on next.
    """
    backbone.trainable = False
    inputs = token_inputs()
    token_ids, mask = inputs["token_ids"], inputs["padding_mask"]
    x = embedded(backbone, token_ids)
    hidden = x
    for index, block in enumerate(transformer_blocks(backbone)):
        if index == cut:
            hidden = x
        x = block(x, padding_mask=mask)
    outputs = {"embedding": L2Normalize(name="normalize")(MaskedMeanPooling(name="mean_pool")(x, mask))}
    if cut < N_BLOCKS:
        outputs["hidden"] = hidden
    return keras.Model(inputs, outputs, name="bottom")


def build_top(backbone, head: keras.Model, cut: int, name: str = "top") -> keras.Model:
    """{"hidden", "padding_mask"} -> probabilities: blocks cut..5 of `backbone`, pooling, `head`."""
    hidden = keras.Input(shape=(None, backbone.hidden_dim), name="hidden")
    mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
    x = hidden
    for block in transformer_blocks(backbone)[cut:]:
        x = block(x, padding_mask=mask)
    x = L2Normalize(name="top_normalize")(MaskedMeanPooling(name="top_mean_pool")(x, mask))
    return keras.Model({"hidden": hidden, "padding_mask": mask}, head(x), name=name)


def build_head(n_labels: int, cfg: TrainConfig, input_dim: int = HIDDEN, seed: int = 0,
               name: str = "head") -> keras.Model:
    """embedding (batch, input_dim) float32 -> class probabilities (batch, n_labels): dropout, an optional
    hidden layer, softmax with L1/L2 on its kernel. Its initial weights and dropout masks follow `seed` alone."""
    seeds = iter(range(seed % 2**20 * 1000 + 1, seed % 2**20 * 1000 + 10))
    glorot = lambda: keras.initializers.GlorotUniform(seed=next(seeds))  # noqa: E731
    inputs = keras.Input(shape=(input_dim,), name="embedding")
    x = keras.layers.Dropout(cfg.dropout, seed=next(seeds), name="head_dropout")(inputs)
    if cfg.hidden_units:
        x = keras.layers.Dense(cfg.hidden_units, activation="gelu", name="head_hidden", kernel_initializer=glorot(),
                               kernel_regularizer=keras.regularizers.L1L2(cfg.l1, cfg.l2))(x)
        x = keras.layers.Dropout(cfg.dropout, seed=next(seeds), name="head_hidden_dropout")(x)
    outputs = keras.layers.Dense(n_labels, activation="softmax", name="head_output", kernel_initializer=glorot(),
                                 kernel_regularizer=keras.regularizers.L1L2(cfg.l1, cfg.l2))(x)
    return keras.Model(inputs, outputs, name=name)


def seed_dropout(model: keras.Model, seed: int) -> None:
    """Give every random layer of `model` (the backbone blocks' dropout) a state drawn from `seed` alone.

    Why: a Keras layer built without a seed draws one from Python's global `random` when it is made
    (`keras.random.SeedGenerator`), and the Prefect engine, the Dask client and any other thread in the
    process draw from that same generator; a model trained after a different history of draws, in a
    different process, is a different model. Re-seeding after construction makes training depend on `seed`
    and the data only.
    """
    layers = model._flatten_layers(include_self=True, recursive=True)  # noqa: SLF001 (Keras' own layer walk)
    generators = [g for layer in layers for g in getattr(layer, "_seed_generators", [])]
    for index, generator in enumerate(generators):
        generator.state.assign(np.array([(seed * 100_003 + index + 1) % (2**31 - 1), 0], dtype=generator.state.dtype))


def build_classifier(backbone, head: keras.Model) -> keras.Model:
    """The servable model: token ids and padding mask in, class probabilities out (nothing trainable)."""
    backbone.trainable = False
    head.trainable = False
    # A fixed name: Keras numbers unnamed layers per process ("bert_backbone_1" after an embed step ran in
    # the same process), which would make the saved file depend on what ran before, not on the model.
    backbone.name = "backbone"
    inputs = token_inputs()
    return keras.Model(inputs, head(pooled(backbone, inputs)), name="classifier")


def build_shared_bottom(backbone, cut: int) -> keras.Model:
    """token ids -> the input of block `cut` (token level): the frozen part an ensemble's members share, the
    backbone's own layers in the backbone's order (as `build_bottom` computes the stored `hidden`)."""
    inputs = token_inputs()
    token_ids, mask = inputs["token_ids"], inputs["padding_mask"]
    x = embedded(backbone, token_ids)
    for block in transformer_blocks(backbone)[:cut]:
        x = block(x, padding_mask=mask)
    return keras.Model(inputs, x, name="bottom")


def build_ensemble(backbones: list, heads: list[keras.Model], cut: int) -> keras.Model:
    """The servable model of a seed ensemble (`train.ensemble = k`): token ids and padding mask in, the mean of
    the k members' class probabilities out (nothing trainable).

    Member i is its own trained top (blocks cut..5 of `backbones[i]`, pooling, `heads[i]`) on one shared frozen
    bottom, computed once: `bottom` (embeddings and blocks 0..cut-1 of `backbones[0]`, untrained in every
    member) -> `ensemble` ({"hidden", "padding_mask"} -> `member_1` ... `member_k` -> their mean). With no
    block trained (cut = 6) the members differ in their heads alone: `build_classifier` of the backbone and
    a `head` that averages the k heads, the single model's layout. `stored_part` finds either layout's part
    that runs on stored features.
    """
    for backbone in backbones:
        backbone.trainable = False
    for index, head in enumerate(heads, start=1):
        head.trainable = False
        head.name = f"member_{index}" if cut >= N_BLOCKS else "head"
    if cut >= N_BLOCKS:
        embedding = keras.Input(shape=(heads[0].inputs[0].shape[-1],), name="embedding")
        mean = keras.layers.Average(name="ensemble_mean")([head(embedding) for head in heads])
        return build_classifier(backbones[0], keras.Model(embedding, mean, name="head"))
    hidden = keras.Input(shape=(None, backbones[0].hidden_dim), name="hidden")
    mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
    members = [build_top(backbone, head, cut, name=f"member_{index}")
               for index, (backbone, head) in enumerate(zip(backbones, heads), start=1)]
    mean = keras.layers.Average(name="ensemble_mean")([m({"hidden": hidden, "padding_mask": mask}) for m in members])
    ensemble = keras.Model({"hidden": hidden, "padding_mask": mask}, mean, name="ensemble")
    inputs = token_inputs()
    bottom = build_shared_bottom(backbones[0], cut)
    return keras.Model(inputs, ensemble({"hidden": bottom(inputs), "padding_mask": inputs["padding_mask"]}),
                       name="classifier")


def _is_ensemble_of_tops(classifier) -> bool:
    return any(layer.name == "ensemble" for layer in classifier.layers)


def encoder_depth(classifier) -> int:
    """The number of transformer blocks between a saved classifier's token ids and its pooling (6 here): the
    backbone's, or an ensemble's shared bottom plus one member's top."""
    if _is_ensemble_of_tops(classifier):
        member = classifier.get_layer("ensemble").get_layer("member_1")
        return len(transformer_blocks(classifier.get_layer("bottom"))) + len(transformer_blocks(member))
    from core.model.backbone import find_backbone

    return len(transformer_blocks(find_backbone(classifier)))


def stored_part(classifier, cut: int) -> tuple[keras.Model, bool]:
    """The part of a saved classifier that runs on stored features cut at block `cut`, and whether it takes the
    token-level input of block `cut` ({"hidden", "padding_mask"}; else the pooled embedding, when `cut` is
    the encoder's depth). A single model: its head alone, or `build_top` of its backbone from `cut`. An
    ensemble of tops: its `ensemble` part, preceded by the shared bottom's blocks cut.. when `cut` is lower
    than the first block its members trained. `cut` must not be above that block (the features would hold
    the output of a block the ensemble trained)."""
    if not _is_ensemble_of_tops(classifier):
        from core.model.backbone import find_backbone

        head, backbone = classifier.get_layer("head"), find_backbone(classifier)
        if cut >= len(transformer_blocks(backbone)):
            return head, False
        return build_top(backbone, head, cut), True
    ensemble, bottom = classifier.get_layer("ensemble"), classifier.get_layer("bottom")
    shared = transformer_blocks(bottom)
    if cut > len(shared):
        raise ValueError(f"features cut at block {cut} hold the output of blocks the ensemble trained "
                         f"(its members train from block {len(shared)})")
    if cut == len(shared):
        return ensemble, True
    hidden = keras.Input(shape=(None, HIDDEN), name="hidden")
    mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
    x = hidden
    for block in shared[cut:]:
        x = block(x, padding_mask=mask)
    return keras.Model({"hidden": hidden, "padding_mask": mask}, ensemble({"hidden": x, "padding_mask": mask}),
                       name="top"), True


def members_of(classifier, cut: int) -> list[keras.Model]:
    """Each member of a saved ensemble as its own part on stored features cut at block `cut` (the layout
    `stored_part` takes): for checking the ensemble against its members and scoring them one by one."""
    if _is_ensemble_of_tops(classifier):
        ensemble, bottom = classifier.get_layer("ensemble"), classifier.get_layer("bottom")
        members = [layer for layer in ensemble.layers if layer.name.startswith("member_")]
        if cut == len(transformer_blocks(bottom)):
            return members
        out = []
        for member in members:
            hidden = keras.Input(shape=(None, HIDDEN), name="hidden")
            mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
            x = hidden
            for block in transformer_blocks(bottom)[cut:]:
                x = block(x, padding_mask=mask)
            out.append(keras.Model({"hidden": hidden, "padding_mask": mask},
                                   member({"hidden": x, "padding_mask": mask}), name=member.name))
        return out
    from core.model.backbone import find_backbone

    head, backbone = classifier.get_layer("head"), find_backbone(classifier)
    heads = [layer for layer in head.layers if layer.name.startswith("member_")] or [head]
    if cut >= len(transformer_blocks(backbone)):
        return heads
    return [build_top(backbone, h, cut, name=h.name) for h in heads]


def _renumber_shared_objects(config: object, ids: dict[int, int]) -> object:
    """Replace Keras's `shared_object_id`s (Python object ids, different in every process) by 1, 2, 3...
    in order of first appearance: the sharing is kept, the process-specific numbers are not."""
    if isinstance(config, dict):
        return {key: (ids.setdefault(value, len(ids) + 1) if key == "shared_object_id" else
                      _renumber_shared_objects(value, ids)) for key, value in config.items()}
    if isinstance(config, list):
        return [_renumber_shared_objects(value, ids) for value in config]
    return config


def save_reproducibly(model: keras.Model, path: Path) -> None:
    """Save `model` as a `.keras` file whose bytes depend only on the model. Keras stamps the save time into
    metadata.json and the zip entries, and Python object ids into config.json, which would give identical
    weights a new content hash on every save (and a new registry version for the same model)."""
    path = Path(path)
    raw = path.with_name(f".{path.name}.raw.keras")
    model.save(raw)
    try:
        with zipfile.ZipFile(raw) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
            for item in sorted(source.infolist(), key=lambda i: i.filename):
                data = source.read(item.filename)
                if item.filename == "metadata.json":
                    metadata = json.loads(data)
                    metadata.pop("date_saved", None)
                    data = json.dumps(metadata, sort_keys=True).encode()
                elif item.filename == "config.json":
                    data = json.dumps(_renumber_shared_objects(json.loads(data), {})).encode()
                target.writestr(zipfile.ZipInfo(item.filename, date_time=(1980, 1, 1, 0, 0, 0)), data,
                                compress_type=zipfile.ZIP_DEFLATED)
    finally:
        raw.unlink(missing_ok=True)


class EpochLog(keras.callbacks.Callback):
    """Logs each epoch's training loss and validation figures, so training progress shows in the run's logs."""

    def __init__(self, max_epochs: int, prefix: str = "finetune"):
        super().__init__()
        self.max_epochs, self.prefix = max_epochs, prefix

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        faults.point("finetune:epoch")
        log.info("%s: epoch %d/%d loss %.4f val_loss %.4f val_accuracy %.3f val_macro_f1 %.3f (%.1fs)", self.prefix,
                 epoch + 1, self.max_epochs, logs.get("loss", float("nan")), logs.get("val_loss", float("nan")),
                 logs.get("val_accuracy", float("nan")), logs.get("val_macro_f1", float("nan")),
                 time.perf_counter() - self.started)


class ValidationScores(keras.callbacks.Callback):
    """Scores the validation split after each epoch, through `core.model.inference` (rows in order), and adds
    `val_loss`, `val_accuracy` and `val_macro_f1` to the epoch's logs, for early stopping and the curves.

    `predict_val()` returns the current model's probabilities (n, k) for the validation rows, in the order
    of `y_val`. Placed before EarlyStopping in the callback list, so that it sees this epoch's figures.
    """

    def __init__(self, predict_val, y_val: np.ndarray):
        super().__init__()
        self.predict_val, self.y_val = predict_val, np.asarray(y_val)

    def on_epoch_end(self, epoch, logs=None):
        from sklearn.metrics import f1_score, log_loss

        proba = np.asarray(self.predict_val(), dtype=np.float64)
        proba = proba / proba.sum(axis=1, keepdims=True)  # float32 softmax sums drift by ~1e-7
        k = proba.shape[1]
        predicted = proba.argmax(axis=1)
        if logs is not None:
            logs["val_loss"] = float(log_loss(self.y_val, np.clip(proba, 1e-7, 1), labels=list(range(k))))
            logs["val_accuracy"] = float((predicted == self.y_val).mean())
            logs["val_macro_f1"] = float(f1_score(self.y_val, predicted, labels=list(range(k)), average="macro",
                                                  zero_division=0))


class PartwiseAdamW(keras.optimizers.Adam):
    """AdamW (decoupled weight decay, Loshchilov & Hutter 2019) with a learning-rate multiplier per part.

    Keras optimizers take one learning rate; fine-tuning wants the randomly initialised head to move faster
    than pre-trained blocks, and lower blocks slower than upper ones. `multipliers` maps a layer name (a
    segment of the variable's path, e.g. `transformer_layer_5`) to a factor on the schedule's rate;
    variables of no listed layer (the head) get 1. Weight decay is applied at each variable's own rate and
    not to 1-D variables (biases, LayerNorm), as in BERT's recipe. Adam is scale-invariant in the gradient,
    so scaling gradients could not do this: the rate itself is scaled, in `update_step`.
    """

    def __init__(self, learning_rate, multipliers: dict[str, float] | None = None, weight_decay: float = 0.01,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.multipliers = dict(multipliers or {})
        self.decoupled_weight_decay = float(weight_decay)
        self._factor_by_key: dict[int, float] = {}

    def build(self, variables):
        super().build(variables)
        for variable in variables:
            parts = variable.path.split("/")
            factor = next((m for name, m in self.multipliers.items() if name in parts), 1.0)
            self._factor_by_key[self._var_key(variable)] = factor

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factor_by_key.get(self._var_key(variable), 1.0)
        rate = keras.ops.cast(learning_rate, variable.dtype) * factor
        if self.decoupled_weight_decay and len(variable.shape) > 1:
            variable.assign_sub(variable * (rate * self.decoupled_weight_decay))
        super().update_step(gradient, variable, rate)

    def get_config(self):
        return {**super().get_config(), "multipliers": self.multipliers, "weight_decay": self.decoupled_weight_decay}


def learning_rate_schedule(peak: float, steps: int, warmup: float):
    """Linear warm-up from 0 to `peak` over `warmup` of the `steps`, then cosine decay to 0 (keras
    CosineDecay, Loshchilov & Hutter 2017 "SGDR", with the warm-up of Goyal et al. 2017)."""
    warmup_steps = int(round(warmup * steps))
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=max(steps - warmup_steps, 1), alpha=0.0,
                                                  warmup_target=peak, warmup_steps=warmup_steps)


class TrainingBatches(keras.utils.PyDataset):
    """Training batches, re-drawn every epoch, grouped by length only inside random chunks.

    `inputs` is either a float array (n, d) of pooled embeddings (the head alone) or a list of per-row token
    states (n_tokens, d) (the top blocks). Each epoch the rows are shuffled (from `seed`), cut into chunks
    of `chunk_batches * batch_size` rows and sorted by length inside each chunk, then cut into batches in a
    shuffled order: a batch's company changes every epoch, while padding stays small. Each item is
    (inputs, labels, sample weights). Training only: inference goes through `core.model.inference`.
    """

    def __init__(self, inputs, labels: np.ndarray, weights: np.ndarray, batch_size: int, seed: int,
                 chunk_batches: int = 4):
        super().__init__()
        self.inputs, self.labels, self.weights = inputs, labels, weights
        self.ragged = not isinstance(inputs, np.ndarray)
        self.lengths = np.array([len(h) for h in inputs]) if self.ragged else np.ones(len(labels), int)
        self.batch_size, self.chunk = batch_size, max(1, chunk_batches) * batch_size
        self.rng = np.random.default_rng(seed)
        self.on_epoch_end()

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __getitem__(self, index: int):
        rows = self.batches[index]
        if self.ragged:
            x = pad_hidden([self.inputs[i] for i in rows])
        else:
            x = self.inputs[rows]
        return x, self.labels[rows], self.weights[rows]

    def on_epoch_end(self):
        order = self.rng.permutation(len(self.labels))
        chunks = [order[i: i + self.chunk] for i in range(0, len(order), self.chunk)]
        rows = np.concatenate([c[np.argsort(self.lengths[c], kind="stable")] for c in chunks]) if chunks else order
        batches = [rows[i: i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        self.batches = [batches[i] for i in self.rng.permutation(len(batches))]
        # Keras (TensorFlow backend) infers the batch shapes from the first two batches and keeps any
        # dimension they agree on fixed; make them differ in length so the sequence axis stays variable.
        if self.ragged and len(self.batches) > 2:
            width = [padded_length(self.lengths[b].max()) for b in self.batches]
            if width[0] == width[1]:
                other = next((j for j in range(2, len(width)) if width[j] != width[0]), None)
                if other is not None:
                    self.batches[1], self.batches[other] = self.batches[other], self.batches[1]
